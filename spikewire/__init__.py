"""spikewire: real-time hybrid spiking networks (biological, memristive, silicon) over ZeroMQ and LSL.

The code lives in the repository's top-level folders and installs as subpackages of this one, in layers
that import only downwards (DESIGN.md; import-linter's contracts in pyproject.toml enforce them):
``spikewire.core`` (settings schema, histograms), ``spikewire.streams`` (wire format, clock, both ends of
the link protocol), ``spikewire.nodes`` (element kinds, runtime, interlock, numba kernels),
``spikewire.config`` (network files, the session folder), ``spikewire.monitor`` (exporter, reports, plots,
NWB), ``spikewire.launch`` (supervisor, command line); ``spikewire.tools`` (fault proxy, mock rig) and
``spikewire.bench`` (benchmarks) sit on top.
"""

__version__ = "0.1.0"
