"""What every node is: typed named ports, an outbox, and the hooks the runtime calls.

A node holds only element logic. It never touches a socket: the runtime hands it decoded events
(``on_events``), asks it to advance its clock-driven model (``tick``), and publishes whatever it put in
its outbox. So node logic is testable with arrays alone: set inputs, call ``tick``, read the outbox.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from spikewire.core.settings import Settings, SettingsError, in_range, non_negative, positive, setting, stated
from spikewire.nodes.element import UNIT_ROLES, Declaration, Population, Role
from spikewire.nodes.figures import Figures
from spikewire.streams.wire import EVENT_DTYPE, Kind


@dataclass(frozen=True)
class InPort:
    accepts: frozenset[Kind]
    doc: str = ""
    size: int | None = None
    """Ids the port takes are 0..size-1 (None: any id)."""
    values: tuple[float, float] | None = None
    """Plausible range of an event's ``value`` (inclusive), from the model. The runtime refuses events
    outside it before the node sees them (counted per link as ``out_of_range``). None: any finite value.
    A node's ``input_ranges`` setting overrides it."""
    named: bool = False
    """Every id below ``size`` is named by the node's configuration (a crossbar's table rows), so a source
    with fewer ids leaves some of them never driven: ``spikewire check`` refuses that link."""
    role: Role = Role.DATA
    """What its events mean to the element (nodes/element.py)."""
    group: str | None = None
    """The population or device set it feeds."""


@dataclass(frozen=True)
class OutPort:
    kind: Kind
    doc: str = ""
    size: int | None = None
    """Ids the port emits are 0..size-1 (None: not known before it runs)."""
    values: tuple[float, float] | None = None
    """Range of the values it emits, when the configuration fixes it (checked against the input's)."""
    named: bool = False
    """Its ids are named by the node's configuration (a crossbar table's ``post`` column)."""
    role: Role = Role.DATA
    """What its events mean (nodes/element.py): SPIKES and BIO_EVENTS ports are populations' spikes."""
    group: str | None = None
    """The population or device set it belongs to (None for a SPIKES/BIO_EVENTS port: the node's own name)."""


def _cpus(cpus: tuple[int, ...]) -> str | None:
    if any(c < 0 or c > 4095 for c in cpus) or len(set(cpus)) != len(cpus):
        return f"must be distinct CPU numbers 0-4095, got {list(cpus)}"
    return None


@dataclass(frozen=True)
class NodeSettings(Settings):
    """Keys every node table has, whatever its kind."""

    kind: str = setting("", "Element kind: silicon, memristor, biological (or a test kind).")
    site: str = setting("local", "Site (lab / host) this node runs at.")
    bind: str = setting("127.0.0.1", "Address the node's output ports bind to.")
    tick: float = setting(1e-3, "Wall-clock period of a clock-driven node's tick [s], 10 us to 1 s.",
                          check=in_range(1e-5, 1.0), unit="s")
    metrics_port: int = setting(0, "HTTP port of this node's Prometheus metrics (0: the network's "
                                "[monitor] base_port + the node's index).", check=in_range(0, 65535), unit="id")
    lsl_export: tuple[str, ...] = setting((), "Output ports also published as LSL streams "
                                          "('<network>.<node>.<port>'), for LabRecorder or any LSL client.")
    input_ranges: dict[str, tuple[float, float]] = setting(
        doc="Plausible event value range per input port, overriding the model's default: "
        "{ \"anpost.input\" = [-2e-8, 2e-8] }. Events outside it are refused and counted (out_of_range).",
        factory=dict, unit="input unit")
    lookahead: float = setting(0.1, "How far a clock-driven node may compute ahead while no input arrives [s] "
                               "(batches shrink while input keeps coming); outputs still leave no earlier than "
                               "they are final and input rolls the model back. 0 wakes the process every tick. "
                               "At most 1 s.", check=in_range(0.0, 1.0), unit="s")
    cpu: tuple[int, ...] = setting((), "CPUs the node's process may run on, e.g. [1] (Linux affinity; [], the "
                                   "default: any). Checked against the machine when the node starts, like bind. "
                                   "Give a latency-critical node a core no other node lists.",
                                   check=stated("distinct CPU numbers in [0, 4095]", _cpus), unit="id")
    priority: int = setting(0, "Real-time priority of the node's process: 0 normal, 1-99 SCHED_FIFO (needs root, "
                            "CAP_SYS_NICE or an rtprio limit; refused before the run starts where the OS does "
                            "not allow it).", check=in_range(0, 99), unit="1")
    spin: bool = setting(False, "Poll instead of sleeping between packets and deadlines: the lowest wake-up "
                         "latency, for all of one core. Needs cpu (a core of the node's own) and priority 0.")

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.spin and not self.cpu:
            raise SettingsError(f"{key}.spin", "needs cpu: a spinning node takes all of a core, so name one for it")
        if self.spin and self.priority:
            raise SettingsError(f"{key}.spin", "cannot go with priority > 0: a real-time process that never "
                                "sleeps starves everything else on its core, its own I/O thread included")


STEP_TOLERANCE = 1e-3
"""Fraction of a step by which a time may fall short of a step boundary and still count as on it.
A time meant to be exactly on the grid (a 50 Hz pacemaker's kick at 1.3 ms) is often a hair short after
float arithmetic, and flooring it would put it one step early (Brian2's ``timestep`` does the same)."""


def step_of(t: float, t_start: float, dt: float, last: int) -> int:
    """The step of a tick starting at ``t_start`` that contains time ``t``, clipped to [0, last]."""
    return min(max(int((t - t_start) / dt + STEP_TOLERANCE), 0), last)


@dataclass(frozen=True)
class ClockedSettings(NodeSettings):
    """Keys of a clock-driven node: its model steps ``dt`` inside wall-clock ticks of ``tick``."""

    dt: float = setting(1e-4, "Integration step [s].", check=positive, unit="s")

    @property
    def steps_per_tick(self) -> int:
        return int(round(self.tick / self.dt))

    def validate(self, key: str) -> None:
        super().validate(key)
        steps = self.tick / self.dt
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            raise SettingsError(f"{key}.tick", f"must be a whole number of dt ({self.dt!r}), got {self.tick!r}")


class Outbox:
    """Per-output-port buffers the node appends to and the runtime flushes after each hook."""

    def __init__(self, ports: dict[str, OutPort], capacity: int = 1024):
        self.buffers = {p: np.zeros(capacity, dtype=EVENT_DTYPE) for p in ports}
        self.counts = dict.fromkeys(ports, 0)
        self.dues: dict[str, dict[int, float]] = {}  # port -> {index: due} for events decided after their time

    def _room(self, port: str, extra: int) -> np.ndarray:
        buf = self.buffers[port]
        need = self.counts[port] + extra
        if need > len(buf):
            grown = np.zeros(max(need, 2 * len(buf)), dtype=EVENT_DTYPE)
            grown[: self.counts[port]] = buf[: self.counts[port]]
            self.buffers[port] = buf = grown
        return buf

    def emit(self, port: str, t: float, ident: int, value: float, due: float | None = None) -> None:
        """Add one event. ``due``: when the event became final, if later than ``t`` plus one model step
        (a biological PSP is one only once its window has passed without an action potential). A node
        with ``timed_outputs`` must give it for such events: its outputs may leave as soon as they are
        final, and without it an output would be taken as final when it happened."""
        buf = self._room(port, 1)
        n = self.counts[port]
        buf[n] = (t, ident, value)
        self.counts[port] = n + 1
        if due is not None:
            self.dues.setdefault(port, {})[n] = due

    def emit_many(self, port: str, t: np.ndarray, ident: np.ndarray, value: np.ndarray | float) -> None:
        k = len(t)
        if k == 0:
            return
        buf = self._room(port, k)
        n = self.counts[port]
        seg = buf[n : n + k]
        seg["t"] = t
        seg["id"] = ident
        seg["value"] = value
        self.counts[port] = n + k

    def pending(self):
        """(port, events) for every port with events; the views are valid until ``clear``."""
        for port, n in self.counts.items():
            if n:
                yield port, self.buffers[port][:n]

    def pending_dues(self):
        """(port, events, {index: due}) for every port with events (see ``emit``); valid until ``clear``."""
        for port, n in self.counts.items():
            if n:
                yield port, self.buffers[port][:n], self.dues.get(port, {})

    def clear(self) -> None:
        for port in self.counts:
            self.counts[port] = 0
        if self.dues:
            self.dues.clear()


class Node:
    """Base class of an element. Subclasses set ``kind`` and ``Settings`` and implement the hooks."""

    kind: ClassVar[str]
    Settings: ClassVar[type[NodeSettings]]
    keywords: ClassVar[tuple[str, ...]] = ()
    """Subject keywords the kind adds to a session's records ("memristor", "neuromorphic")."""
    supports_lookahead: ClassVar[bool] = False
    """True when ``snapshot``/``restore`` capture all model state, so the runtime may compute ahead."""
    timed_outputs: ClassVar[bool] = False
    """True when every output is final by the end of the model step its time falls in (``output_step`` after
    its time, or the tick's end if sooner), or carries ``due=`` (``Outbox.emit``): an output computed ahead
    then leaves when it is final instead of at its tick's deadline. False: at the deadline."""
    span_ticks: ClassVar[bool] = False
    """True when ``tick(t_start, t_end)`` may cover many periods at once (up to what ``reserve_span``
    granted), with ``timed_outputs``: a compute-ahead batch is then one call instead of one per tick."""
    interlocked: ClassVar[bool] = False
    """True for a node that stimulates tissue or programs devices: the safety interlock holds it (sets
    ``held``) while its input is stale or lossy. While held it must not program or stimulate (and count
    what it held back); the runtime also holds every STIMULUS packet it would publish."""

    def __init__(self, name: str, settings: NodeSettings,
                 ports: tuple[dict[str, InPort], dict[str, OutPort]] | None = None):
        self.name = name
        self.settings = settings
        inputs, outputs = ports if ports is not None else self.declared_ports(settings)
        self.inputs = inputs
        self.outputs = outputs
        self.outbox = Outbox(outputs)
        self.t0 = 0.0
        self.context: dict = {}
        """Set by the node process: ``network`` (name), ``network_dir``, ``reset_state`` (bool)."""
        self.phase_ends: tuple[float, ...] = ()
        """Session times at which the network's protocol phases end."""
        self.phase_marks: list[dict] = []
        """``status()`` at each phase end reached so far, taken on the model's own time line."""
        self.held = False
        """Set by the runtime's safety interlock (see ``interlocked``)."""

    @classmethod
    def ports(cls, settings: NodeSettings) -> tuple[dict[str, InPort], dict[str, OutPort]]:
        """The node's input and output ports, derived from its settings alone (used to validate links)."""
        raise NotImplementedError

    @classmethod
    def declared_ports(cls, settings: NodeSettings, key: str = "") -> tuple[dict[str, InPort], dict[str, OutPort]]:
        """``ports(settings)`` with the settings' ``input_ranges`` applied; SettingsError names a bad one."""
        inputs, outputs = cls.ports(settings)
        for port, (lo, hi) in settings.input_ranges.items():
            where = f"{key}.input_ranges.{port}" if key else f"input_ranges.{port}"
            if port not in inputs:
                raise SettingsError(where, f"no input port {port!r}; the inputs are: {', '.join(inputs) or '(none)'}")
            if not lo < hi:
                raise SettingsError(where, f"must be [low, high] with low < high, got [{lo!r}, {hi!r}]")
            inputs[port] = dataclasses.replace(inputs[port], values=(lo, hi))
        return inputs, outputs

    @classmethod
    def declare(cls, name: str, settings: NodeSettings) -> Declaration:
        """What the node owns, from its settings (nodes/element.py). Default: a population for every
        SPIKES or BIO_EVENTS output port, named by the port's group (or the node), sized by the port, on
        the grid of the settings' ``dt`` if it has one; no devices. A kind with devices overrides this."""
        inputs, outputs = cls.ports(settings)
        pops = []
        for port, out in outputs.items():
            if out.role in UNIT_ROLES:
                group = out.group or name
                feed = next((p for p, i in inputs.items()
                             if (i.group or name) == group and i.role in (Role.SYNAPTIC, Role.STIMULI)),
                            None)
                pops.append(Population(group, out.size or 0, port, out.role, feed, getattr(settings, "dt", None)))
        return Declaration(populations=tuple(pops), keywords=cls.keywords)

    @property
    def tick_period(self) -> float | None:
        """Seconds between ticks for a clock-driven node; None for a purely event-driven one."""
        return None

    @classmethod
    def preflight(cls, name: str, settings: NodeSettings, context: dict) -> None:
        """Checks of what the node will read or hold beyond its settings (a state file), run by ``spikewire
        run`` before any process starts, with the ``context`` the node will get; raise ValueError with
        one line to refuse the run. Default: nothing to check."""

    def load_state(self) -> None:
        """Restore persistent state (e.g. memristor weights) per ``context``; called before ready, so a
        bad state file stops the run before it starts."""

    def warm_up(self) -> None:
        """Compile and exercise every kernel (called before the node reports ready)."""

    def wait_for_consumers(self, timeout: float) -> None:
        """Wait, at most ``timeout`` s (or less, by the node's own settings), for consumers outside spikewire
        that the node feeds itself (a rig's stimulation inlet); called once every subscriber has joined,
        before the node reports ready. A node that gives up must say so loudly and hold, counted, what it
        cannot deliver. Default: nothing to wait for."""

    def start(self, t0: float) -> None:
        """The session starts at local_clock() == t0."""
        self.t0 = t0

    def on_events(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        """Events of ``kind`` arrived on input ``port`` at ``now`` (validated, and a kind the port accepts).

        An event-driven node answers at once. A clock-driven node receives them right before the tick
        that contains ``now`` and must apply them in that tick (and keep nothing pending beyond it)."""

    def tick(self, t_start: float, t_end: float) -> None:
        """Advance the clock-driven model over [t_start, t_end): one tick, or with ``span_ticks`` several."""

    def reserve_span(self, ticks: int) -> int:
        """Make room for ``tick`` spans of up to ``ticks`` periods (``span_ticks`` kinds); returns how many
        it will take (fewer where its buffers would grow too large)."""
        return 1

    @property
    def output_step(self) -> float:
        """How long after its time an output is final (``timed_outputs``): the model's step."""
        return getattr(self.settings, "dt", 0.0)

    def housekeeping(self, now: float) -> None:
        """Called every housekeeping period (~0.1 s) in the loop's slack, never between a packet's arrival
        and its answer: batched work such as saving state. Default: nothing."""

    def fds(self) -> list[int]:
        """File descriptors of the node's own I/O (a UDP socket, say) for the runtime to wait on."""
        return []

    def on_readable(self, fd: int, now: float) -> None:
        """``fd`` (one of ``fds()``) is readable: read it without blocking and emit what it brings."""

    def probe_route(self, port: str) -> tuple[str, ...]:
        """Output ports a loop probe arriving on input ``port`` is forwarded to (none: it stops here)."""
        return ()

    def snapshot(self) -> object:
        """All model state at a tick boundary (not the outbox), for ``restore`` after a rollback."""
        raise NotImplementedError(f"{type(self).__name__} does not support compute-ahead")

    def restore(self, state: object) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support compute-ahead")

    def take_log(self) -> list[dict]:
        """Model events since the last call (e.g. plasticity pulses with their times), for the session
        record; the runtime sends them with each status message. Default: none."""
        return []

    def mark_phases(self, t: float) -> None:
        """Record ``status`` for every protocol phase that has ended by session time ``t`` (called before
        the model moves past ``t``: at a tick's start, or before an event is handled)."""
        marks = self.phase_marks
        while len(marks) < len(self.phase_ends) and t >= self.t0 + self.phase_ends[len(marks)]:
            marks.append(self.status(t))

    def figures(self, now: float, final: bool = False) -> Figures:
        """The element's figures at ``now`` (nodes/figures.py): populations, devices, what it held or
        rejected. ``final``: the last call, at the end of the run (add what only a report needs). Keep it
        cheap: it is called once a second in the loop's slack and at every phase end."""
        return Figures(elapsed=now - self.t0)

    def status(self, now: float) -> dict:
        """``figures(now)`` as the JSON every status message carries."""
        return self.figures(now).to_dict()

    def summary(self, now: float) -> dict:
        """The final ``figures`` as JSON (the run report joins them with the links)."""
        return self.figures(now, final=True).to_dict()

    def close(self) -> None:
        """Release what the node holds (files, devices); called once at shutdown."""
