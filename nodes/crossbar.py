"""The Crossbar seam: what a memristor node asks of its devices, and the registry that finds a model.

A memristor node (nodes/memristor.py) owns one ``Crossbar``: ``rows x cols`` resistive devices addressed
by (wordline, bitline). The node decides *when* a device is read (an output per presynaptic event) and
*which* pulse it gets (its plasticity rule, nodes/plasticity.py); the crossbar only reads and pulses:

    read(wl, bl) -> float                         the resistance as read now [Ohm] (hot path)
    pulse(wl, bl, voltage, width) -> float        apply one pulse [V, s]; the new resistance [Ohm]
    read_many, pulse_many                         the same over index arrays, in order (default: a loop)
    r                                             every device's resistance as last known, (rows, cols)
    read_all() -> ndarray                         read the whole array (once, at start, before ready)
    restore(r)                                    set the state the node saved (non-volatile weights)

The node picks its crossbar by ``device.model`` (default ``"tiox"``, nodes/tiox.py). A package adds a model
without a line of spikewire changed, through the ``spikewire.crossbars`` entry-point group::

    [project.entry-points."spikewire.crossbars"]
    linear = "my_package.linear:LinearCrossbar"      # the name is the class's ``model``

and a network file selects it (its own parameters go in ``device.params``, checked by its ``Params``)::

    [nodes.southampton.device]
    model = "linear"
    params = { rate = 2e7 }

docs/elements.md walks through a whole one. The catch: ``read`` runs once per table row of every
presynaptic event, between a packet's arrival and its answer, so it must not block or allocate; an
instrument that cannot read that fast answers from ``r`` and refreshes it in its own thread (the
pattern of nodes/sdk_thread.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from spikewire.core.registry import Registry
from spikewire.core.settings import Settings, SettingsError, parse

ENTRY_POINT_GROUP = "spikewire.crossbars"


@dataclass(frozen=True)
class CrossbarSpec:
    """What a crossbar is built from: the memristor node's settings, resolved."""

    node: str
    """The memristor node's name (for logs and an instrument's own records)."""
    rows: int
    cols: int
    r_init: float
    """Every device's resistance at a fresh start [Ohm] (a model; an instrument reads its own)."""
    r_min: float
    """The device range [Ohm]: outputs map conductance over [1/r_max, 1/r_min]; a saved state outside it is
    refused."""
    r_max: float
    spread: float = 0.0
    """Device-to-device relative spread (a model's; seeded by ``seed``)."""
    read_noise: float = 0.0
    """Relative noise of each ``read`` (a model's; seeded by ``seed``)."""
    seed: int = 0
    params: Settings | None = None
    """The model's own parameters (``Crossbar.parameters``): its ``Params`` parsed from ``device.params``."""
    instrument: str = ""
    """Where an instrument is (``device.instrument``: a VISA resource, a serial port, a URL); "" for a model."""


class CrossbarError(ValueError):
    """A crossbar model that cannot be registered or loaded; ``str()`` is one line naming it."""


class Crossbar:
    """A crossbar of resistive devices: the protocol a memristor node drives, with its defaults.

    A subclass sets ``model`` (its registry name) and implements ``read`` and ``pulse``; ``r`` must be a
    float64 array of shape (rows, cols) that the node may read at any time (figures once a second, the
    state file) and never writes. Everything runs on the node's loop thread.
    """

    model: ClassVar[str]
    """The name a network file gives as ``device.model``."""
    Params: ClassVar[type[Settings] | None] = None
    """The settings class of the model's own parameters (``device.params``), or None: it takes none."""
    persistent: ClassVar[bool] = True
    """True: the node keeps ``r`` in its state file and ``restore``s it at the next start (a simulated
    crossbar, whose devices live in this process). False: the devices keep their own state (an instrument):
    the node reads them at start (``read_all``), never restores over them, and keeps no state file."""

    r: np.ndarray
    r_min: float
    r_max: float

    def __init__(self, spec: CrossbarSpec):
        self.spec = spec
        self.r_min, self.r_max = spec.r_min, spec.r_max
        self.r = np.full((spec.rows, spec.cols), spec.r_init, dtype=np.float64)

    @classmethod
    def parameters(cls, device, key: str) -> Settings | None:
        """The model's parameters from the node's ``device`` table (nodes/memristor.py ``DeviceParams``),
        checked; SettingsError names a bad key. Default: ``Params`` parsed from ``device.params``."""
        if cls.Params is None:
            if device.params:
                raise SettingsError(f"{key}.params", f"model {cls.model!r} takes no parameters, got "
                                    f"{', '.join(sorted(device.params))}")
            return None
        return parse(cls.Params, dict(device.params), f"{key}.params")

    def read(self, wl: int, bl: int) -> float:
        """The resistance of device (wl, bl) as read for an output [Ohm]. On the hot path: never block."""
        raise NotImplementedError

    def pulse(self, wl: int, bl: int, voltage: float, width: float) -> float:
        """Apply one rectangular pulse of ``voltage`` [V] for ``width`` [s] to device (wl, bl), update ``r``
        and return the device's new resistance [Ohm] (an instrument: as read back after the pulse)."""
        raise NotImplementedError

    def read_many(self, wl: np.ndarray, bl: np.ndarray) -> np.ndarray:
        """``read`` of the devices (wl[i], bl[i]) in order, as a float64 array (the node reads a packet's rows
        at once). Default: one ``read`` each; a model overrides it to read in numpy."""
        return np.array([self.read(a, b) for a, b in zip(wl.tolist(), bl.tolist())], dtype=np.float64)

    def pulse_many(self, wl: np.ndarray, bl: np.ndarray, voltage: np.ndarray, width: np.ndarray) -> np.ndarray:
        """``pulse`` each device (wl[i], bl[i]) in order with voltage[i] [V] for width[i] [s]; the new
        resistances [Ohm]. Default: one ``pulse`` each (an instrument may program a batch in one command)."""
        return np.array([self.pulse(a, b, v, w) for a, b, v, w in zip(wl.tolist(), bl.tolist(), voltage.tolist(),
                                                                       width.tolist())], dtype=np.float64)

    def read_all(self) -> np.ndarray:
        """Read every device (called once, when ``persistent`` is False, right after ``warm_up`` and before
        the node reports ready); returns a (rows, cols) copy and leaves ``r`` equal to it. Default: ``r``."""
        return self.r.copy()

    def restore(self, r: np.ndarray) -> None:
        """Set every device to the saved resistances ``r`` (shape and range already checked by the node)."""
        self.r[:] = r

    def warm_up(self) -> None:
        """Compile kernels, open an instrument: everything slow, before the node reports ready (not in the
        constructor: tests build nodes where no instrument is attached)."""

    def close(self) -> None:
        """Release the instrument (called once at shutdown, after the node's last save)."""


class ModelCrossbar(Crossbar):
    """A simulated crossbar: state in ``r``, a seeded device-to-device spread of the initial resistance,
    and seeded read noise. A model subclasses it and writes ``pulse`` (and draws any spread of its own
    parameters from ``rng`` before calling ``super().__init__``, passing the same ``rng``)."""

    def __init__(self, spec: CrossbarSpec, rng: np.random.Generator | None = None):
        super().__init__(spec)
        self.rng = rng if rng is not None else np.random.default_rng(spec.seed)
        self.read_noise = spec.read_noise
        if spec.spread > 0:
            self.r = np.clip(self.r * (1 + spec.spread * self.rng.standard_normal(self.r.shape)),
                             spec.r_min, spec.r_max)

    def read(self, wl: int, bl: int) -> float:
        r = self.r.item(wl, bl)
        if self.read_noise:
            r *= 1.0 + self.read_noise * self.rng.standard_normal()
        return r

    def read_many(self, wl: np.ndarray, bl: np.ndarray) -> np.ndarray:
        r = self.r[wl, bl]
        if self.read_noise:  # the same draws, in the same order, as one read after another
            r *= 1.0 + self.read_noise * self.rng.standard_normal(len(r))
        return r


# --- the registry ------------------------------------------------------------------------------------
def _builtins() -> None:
    from spikewire.nodes import tiox  # noqa: F401  (its @crossbar registers the default model)


REGISTRY = Registry("crossbar model", "model", ENTRY_POINT_GROUP, lambda: Crossbar, CrossbarError, _builtins)
crossbar = REGISTRY.register
"""Class decorator: register a built-in crossbar model under its ``model`` name."""


def crossbars() -> dict[str, type[Crossbar]]:
    """Every crossbar model by name: the built-in ones and those of installed packages (loaded once)."""
    return REGISTRY.all()


def crossbar_class(name: str) -> type[Crossbar]:
    """The crossbar model called ``name``; CrossbarError (one line, listing the known ones) if none is."""
    known = crossbars()
    cls = REGISTRY.get(name)  # a broken plugin of this name: its own problem, in one line
    if cls is None:
        raise CrossbarError(f"must be one of {', '.join(map(repr, sorted(known)))} (installed crossbar models), "
                            f"got {name!r}")
    return cls
