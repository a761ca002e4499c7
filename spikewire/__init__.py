"""spikewire: real-time hybrid spiking networks (biological, memristive, silicon) over ZeroMQ and LSL.

The code lives in the repository's top-level folders and installs as subpackages of this one, in layers
that import only downwards (DESIGN.md; import-linter's contracts in pyproject.toml enforce them):
``spikewire.core`` (settings schema, histograms), ``spikewire.streams`` (wire format, clock, both ends of
the link protocol), ``spikewire.nodes`` (element kinds, runtime, interlock, numba kernels),
``spikewire.config`` (network files, the session folder), ``spikewire.monitor`` (exporter, reports, plots,
NWB), ``spikewire.launch`` (supervisor, command line); ``spikewire.tools`` (fault proxy, mock rig) and
``spikewire.bench`` (benchmarks) sit on top.

Networks from Python (docs/python.md)::

    import spikewire as sw

    net = sw.load("launch/networks/paper_loop.toml")   # or sw.Network("name").node(...).link(...)
    net.set("nodes.zurich.populations.anpre.drive.rate", 20.0)
    summary = sw.run(net, duration=10)                  # a RunSummary: outcome, neurons, links, phases, ...

These names are imported on first use, so ``import spikewire`` stays light (no numba, ZeroMQ or supervisor).
"""

__version__ = "0.1.0"

_API = {
    "load": ("spikewire.config.build", "load"),
    "Network": ("spikewire.config.build", "NetworkBuilder"),
    "NetworkBuilder": ("spikewire.config.build", "NetworkBuilder"),
    "NetworkError": ("spikewire.config.network", "NetworkError"),
    "run": ("spikewire.launch.api", "run"),
    "RunSummary": ("spikewire.launch.api", "RunSummary"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'spikewire' has no attribute {name!r}")
    import importlib

    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
