"""spikewire: real-time hybrid spiking networks (biological, memristive, silicon) over ZeroMQ and LSL.

The code lives in the repository's top-level folders and installs as subpackages of this one:
``spikewire.streams`` (wire format, clock, transports), ``spikewire.nodes`` (elements, runtime, numba
kernels), ``spikewire.monitor`` (measurements and reports), ``spikewire.launch`` (network files,
supervisor, command line) and ``spikewire.bench`` (benchmarks).
"""

__version__ = "0.1.0"
