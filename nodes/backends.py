"""Backends of the biological node: where its neurons are, behind one interface.

The biological node (nodes/biological.py) owns what every source of biological neurons shares: its ports
(typed events out, CME stimuli in), the safety interlock, the per-neuron event counts and its figures. Its
``backend`` setting picks what it delegates the neurons to:

    model   the Izhikevich cells simulated in this process (nodes/biological.py)
    rig     a recording rig over LSL: spikes detected on its voltage stream, stimuli sent as commands
            (nodes/rig.py)

and a real amplifier's SDK (an Intan board, say) is one more class here beside them: subclass
``Backend``, give it a ``name``, register it with ``@backend``, and give ``BiologicalSettings`` a table
for its own settings (as ``rig`` is). A backend whose SDK blocks runs it in an ``SdkThread``
(nodes/sdk_thread.py) and hands the node that thread's ``fd`` through ``fds``.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np

from spikewire.nodes.base import OutPort
from spikewire.nodes.figures import Figures
from spikewire.streams.wire import BioEvent

Emit = Callable[..., None]  # emit(t, neuron, kind: BioEvent, due: float | None = None)
"""``emit(t, neuron, kind)``: the node counts a typed event and publishes it (at its source time ``t``)."""


class Backend:
    """Where a biological node's neurons are. Everything runs on the node's loop thread."""

    name: ClassVar[str]
    """The value of the node's ``backend`` setting that selects it."""
    computes_ahead: ClassVar[bool] = False
    """True when ``snapshot``/``restore`` capture all its state (a model): the node may compute ahead."""
    hard_limit: ClassVar[bool] = False
    """True when ``stim_limit`` is a hard limit of real hardware: ``input_ranges.stim`` may narrow it, never
    widen it."""

    @classmethod
    def validate(cls, settings, key: str) -> None:
        """Checks of the node's settings this backend needs (SettingsError naming the key)."""

    @classmethod
    def stim_limit(cls, settings) -> float:
        """The largest plausible stimulus amplitude [V], either sign: the ``stim`` port's value range."""
        raise NotImplementedError

    @classmethod
    def outputs(cls, settings) -> dict[str, OutPort]:
        """Output ports beyond ``events`` (a rig's plain ``spikes``). Default: none."""
        return {}

    def __init__(self, node: str, settings):
        self.node = node
        """The biological node's name."""
        self.settings = settings
        self.stimuli = np.zeros(settings.size, np.int64)
        """Stimuli delivered to each neuron."""

    def warm_up(self) -> None:
        """Compile kernels and open devices or streams (in the node process, before it reports ready)."""

    def wait_for_consumers(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for whatever must listen before stimuli can be delivered (Node's hook)."""

    def stimulate(self, events: np.ndarray, now: float) -> None:
        """Deliver stimulus ``events`` (ids valid, the interlock passed) that arrived at ``now``. ``events`` is
        the runtime's buffer: copy what is kept beyond the call."""
        raise NotImplementedError

    def tick(self, t_start: float, t_end: float, emit: Emit) -> None:
        """Advance over [t_start, t_end) and ``emit(t, neuron, kind, due=None)`` every typed event of it
        (``due``: when an event decided after its time became final; see ``Outbox.emit``)."""
        raise NotImplementedError

    def reserve_span(self, ticks: int) -> int:
        """With ``computes_ahead``: make ``tick`` take spans of up to ``ticks`` ticks at once, emitting every
        event with its own time (or ``due``); return how many it will take (1: tick by tick)."""
        return 1

    def fds(self) -> list[int]:
        """File descriptors the node's loop waits on for this backend (an SDK thread's wake-up)."""
        return []

    def on_readable(self, fd: int, now: float, emit: Emit) -> None:
        """``fd`` is readable: take what it brings without blocking, and ``emit`` it."""

    def figures(self, f: Figures, final: bool) -> None:
        """Add the backend's own figures (a rig's in ``f.rig``) and warnings to the node's ``f``."""

    def snapshot(self) -> object:
        raise NotImplementedError(f"backend {type(self).name!r} does not support compute-ahead")

    def restore(self, state: object) -> None:
        raise NotImplementedError(f"backend {type(self).name!r} does not support compute-ahead")

    def close(self) -> None:
        """Release devices and streams (once, at shutdown)."""


_BACKENDS: dict[str, type[Backend]] = {}


def backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: register a biological backend under its ``name``."""
    other = _BACKENDS.get(cls.name)
    if other is not None and other is not cls:
        raise ValueError(f"biological backend {cls.name!r} registered twice: {other.__module__} and {cls.__module__}")
    _BACKENDS[cls.name] = cls
    return cls


def backends() -> dict[str, type[Backend]]:
    """Every biological backend by name."""
    from spikewire.nodes import biological, rig  # noqa: F401  (their @backend registers the built-in ones)

    return _BACKENDS


def backend_class(name: str) -> type[Backend]:
    cls = backends().get(name)
    if cls is None:
        raise ValueError(f"must be one of {', '.join(map(repr, sorted(backends())))}, got {name!r}")
    return cls
