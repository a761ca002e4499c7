"""Silicon neurons: AdEx populations stepped at ``dt`` inside wall-clock-paced ticks.

Stands in for a neuromorphic chip (the Zurich INI neurons of the 2020 experiment). Each population has
an input port ``<pop>.input`` (spike events whose ``value`` is a synaptic current step in amperes,
``id`` the target neuron) and an output port ``<pop>.spikes``. An optional drive (nodes/drives.py) makes a
population a pacemaker (one synaptic kick every 1/rate s, all neurons) or Poisson-driven (independent kicks).

Timing (``convention``, default ``"brian2"``, Brian2's; details in nodes/kernels/adex.py): input arriving
at t lands in the step [t_k, t_k + dt) containing t (a time within 1e-3 dt of a step boundary counts as
on it, as in Brian2) and is added to I_syn after that step's update, so it first drives V from t_k + dt;
a spike is stamped t_k, the start of the step whose update crossed v_peak; ``t_ref`` counts from that
stamp. ``"nest"`` keeps spikewire's earlier convention, NEST's: input acts in the step containing it, a
spike is stamped with the end of its step, and V is held for t_ref after that stamp (the shortest
interval between spikes is t_ref + dt instead of t_ref).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from spikewire.core.settings import Settings, SettingsError, each, non_negative, non_empty, positive, setting
from spikewire.nodes.base import STEP_TOLERANCE, ClockedSettings, InPort, Node, OutPort, step_of
from spikewire.nodes.drives import Drive, DriveSettings
from spikewire.nodes.element import Role, element
from spikewire.nodes.figures import Figures, PopulationFigures
from spikewire.nodes.kernels import lazy

adex = lazy("adex")
from spikewire.streams.wire import Kind


PerNeuron = float | tuple[float, ...]


@dataclass(frozen=True)
class AdExParams(Settings):
    """AdEx neuron parameters (SI units); defaults are Brette & Gerstner (2005)'s regular-spiking cell.

    Every parameter is either one number for the whole population or an array with one value per neuron.
    Each is used exactly as Brian2 uses the same name in the same equations (tests/test_adex_vs_brian2.py
    passes them to Brian2 unchanged); ``SiliconSettings.convention`` says how times are counted.
    """

    c_m: PerNeuron = setting(281e-12, "Membrane capacitance [F].", check=each(positive), unit="F")
    g_l: PerNeuron = setting(30e-9, "Leak conductance [S].", check=each(positive), unit="S")
    e_l: PerNeuron = setting(-70.6e-3, "Leak reversal potential [V].", unit="V")
    v_t: PerNeuron = setting(-50.4e-3, "Threshold slope-factor midpoint V_T [V].", unit="V")
    delta_t: PerNeuron = setting(2e-3, "Slope factor Delta_T [V].", check=each(positive), unit="V")
    a: PerNeuron = setting(4e-9, "Subthreshold adaptation [S].", unit="S")
    tau_w: PerNeuron = setting(144e-3, "Adaptation time constant [s].", check=each(positive), unit="s")
    b: PerNeuron = setting(0.0805e-9, "Spike-triggered adaptation increment [A].", unit="A")
    v_reset: PerNeuron = setting(-70.6e-3, "Reset potential [V].", unit="V")
    v_peak: PerNeuron = setting(
        -40.4e-3, "Spike cut-off, usually V_T + 5 Delta_T [V]: a spike when a step's update takes V to it or "
        "above; the spike is stamped with that step's start (convention brian2) or end (nest).", unit="V")
    t_ref: PerNeuron = setting(
        2e-3, "Refractory period [s], counted from the spike's stamp: V held at v_reset (w evolves, no spike) "
        "in every step starting before stamp + t_ref (brian2: steps counted as int(t_ref / dt + 1e-3), "
        "Brian2's timestep(); the shortest interval between spikes is t_ref, or dt below 2 dt). nest: "
        "round(t_ref / dt) steps held after the spike's step; shortest interval t_ref + dt.",
        check=each(non_negative), unit="s")
    tau_syn: PerNeuron = setting(
        5e-3, "Synaptic current decay time constant [s]: I_syn is multiplied by exp(-dt / tau_syn) after "
        "every step's update; an input then adds to it (brian2), or adds before the update (nest).",
        check=each(positive), unit="s")
    i_bias: PerNeuron = setting(0.0, "Constant bias current [A].", unit="A")

    def arrays(self, n: int, key: str) -> dict[str, np.ndarray]:
        """Every parameter as a float64 array of length n (SettingsError if an array has another length)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and len(value) != n:
                raise SettingsError(f"{key}.{f.name}", f"has {len(value)} values for a population of {n}")
            out[f.name] = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), n))
        if (out["v_peak"] <= out["v_t"]).any():
            raise SettingsError(f"{key}.v_peak", "must be above v_t for every neuron")
        return out


@dataclass(frozen=True)
class PopulationSettings(Settings):
    size: int = setting(1, "Number of neurons.", check=positive.within_memory(256, "neurons"), unit="count")
    neuron: AdExParams = setting(doc="Neuron parameters (numbers, or arrays of one value per neuron).",
                                 factory=AdExParams)
    drive: DriveSettings = setting(doc="External drive.", factory=DriveSettings)
    v_init: PerNeuron | None = setting(None, "Initial membrane potential [V]; by default each neuron's e_l "
                                               "(w and I_syn start at 0).", unit="V")

    def validate(self, key: str) -> None:
        self.neuron.arrays(self.size, f"{key}.neuron")
        if isinstance(self.v_init, tuple) and len(self.v_init) != self.size:
            raise SettingsError(f"{key}.v_init", f"has {len(self.v_init)} values for a population of {self.size}")


Convention = Literal["brian2", "nest"]


@dataclass(frozen=True)
class SiliconSettings(ClockedSettings):
    seed: int = setting(0, "Seed of the Poisson drives.", check=non_negative, unit="id")
    convention: Convention = setting(
        "brian2", "Timing of inputs, spikes and t_ref: brian2 (Brian2's: input acts after the update of the "
        "step containing it, a spike is stamped with the start of its step, t_ref counts from that stamp) "
        "or nest (spikewire's earlier one, NEST's: input acts in its step, a spike is stamped with the end "
        "of its step, V held round(t_ref / dt) steps after it).")
    populations: dict[str, PopulationSettings] = setting(doc="Populations by name.", factory=dict,
                                                          check=non_empty)

    def validate(self, key: str) -> None:
        super().validate(key)
        for name, pop in self.populations.items():
            pop.drive.check_step(self.dt, f"{key}.populations.{name}.drive")


class Population:
    """State, parameters and preallocated buffers of one AdEx population; steps one tick at a time."""

    def __init__(self, name: str, cfg: PopulationSettings, n_steps: int, dt: float, rng: np.random.Generator,
                 convention: Convention = "brian2"):
        n = cfg.size
        p = cfg.neuron.arrays(n, name)
        self.name = name
        self.size = n
        self.cfg = cfg
        self.dt = dt
        v_init = p["e_l"] if cfg.v_init is None else cfg.v_init
        self.v = np.array(np.broadcast_to(np.asarray(v_init, dtype=np.float64), n))
        self.w = np.zeros(n)
        self.i_syn = np.zeros(n)
        self.refr = np.zeros(n, np.int32)
        self.coef = adex.coefficients(*(p[k] for k in ("c_m", "g_l", "e_l", "v_t", "delta_t", "a", "tau_w", "b",
                                                        "v_reset", "v_peak", "i_bias")))
        if convention == "brian2":
            # Brian2: refractory while timestep(t - lastspike) < timestep(t_ref), the spike's own step included
            self.refr_steps = np.maximum((p["t_ref"] / dt + STEP_TOLERANCE).astype(np.int64) - 1, 0).astype(np.int32)
            self.input_first, self.stamp_offset = False, 0
        else:
            self.refr_steps = np.round(p["t_ref"] / dt).astype(np.int32)
            self.input_first, self.stamp_offset = True, 1
        self.syn_decay = np.exp(-dt / p["tau_syn"])
        self.tick_steps = n_steps
        self.reserve(n_steps)
        self.spike_counts = np.zeros(n, np.int64)
        self.drive = Drive(cfg.drive, n, dt, rng)

    def reserve(self, steps: int) -> None:
        """Buffers for spans of up to ``steps`` model steps (input per step, the spikes they can hold)."""
        n = self.size
        self.syn_in = np.zeros((steps, n))
        cap = max(16, steps * n)
        self.spike_step = np.zeros(cap, np.int64)
        self.spike_id = np.zeros(cap, np.int64)

    def start(self, t0: float) -> None:
        self.drive.start(t0)

    def add_input(self, step: int, ids: np.ndarray, weights: np.ndarray) -> None:
        np.add.at(self.syn_in[step], ids, weights)

    def step(self, t_start: float, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        """Advance over [t_start, t_end) (whole steps; one tick or a span of them); returns (spike times,
        neuron ids)."""
        steps = int(round((t_end - t_start) / self.dt))
        syn_in = self.syn_in[:steps]
        n = self.tick_steps
        if self.drive.random and steps > n:  # a random drive draws tick by tick: the same stream as paced
            for i in range(0, steps, n):
                self.drive.fill(syn_in[i : i + n], t_start + i * self.dt, t_start + (i + n) * self.dt)
        else:
            self.drive.fill(syn_in, t_start, t_end)
        n = adex.adex_run(self.v, self.w, self.i_syn, self.refr, self.coef, self.refr_steps, self.syn_decay,
                          syn_in, self.input_first, self.dt, self.spike_step, self.spike_id)
        syn_in.fill(0.0)
        if n == 0:
            return self.spike_step[:0].astype(float), self.spike_id[:0]
        n = min(n, len(self.spike_step))
        ids = self.spike_id[:n]
        np.add.at(self.spike_counts, ids, 1)
        return t_start + (self.spike_step[:n] + self.stamp_offset) * self.dt, ids


SPAN_ELEMENTS = 1 << 20
"""A compute-ahead span's per-step input buffer holds at most this many values (8 MB): a large population
computes ahead in shorter spans rather than in a buffer of hundreds of megabytes."""
PLAUSIBLE_DEPOLARISATION = 100.0
"""A synaptic step is implausible when its charge alone would move the membrane by more than this many
times the distance from rest to the spike cut-off (at the defaults, |I| > ~0.17 uA against 4 nA kicks)."""


def _plausible_current(pop: PopulationSettings) -> tuple[float, float]:
    """The default value range of a population's synaptic input [A], from its neurons' parameters: a step
    I deposits I * tau_syn of charge, which moves V by I * tau_syn / c_m."""
    p = pop.neuron.arrays(pop.size, "neuron")
    i_max = float(np.max(PLAUSIBLE_DEPOLARISATION * p["c_m"] * np.abs(p["v_peak"] - p["e_l"]) / p["tau_syn"]))
    return (-i_max, i_max)


@element
class SiliconNode(Node):
    kind = "silicon"
    Settings = SiliconSettings
    keywords = ("neuromorphic",)
    supports_lookahead = True
    timed_outputs = True  # a spike is final at the end of its step
    span_ticks = True

    def __init__(self, name: str, settings: SiliconSettings):
        super().__init__(name, settings)
        self.n_steps = settings.steps_per_tick
        self.rng = rng = np.random.default_rng(settings.seed)
        self.pops = {p: Population(p, cfg, self.n_steps, settings.dt, rng, settings.convention)
                     for p, cfg in settings.populations.items()}
        self.pending: list[tuple[Population, float, np.ndarray]] = []
        self.rejected: dict[str, int] = {}

    @classmethod
    def ports(cls, settings: SiliconSettings):
        inputs = {f"{p}.input": InPort(frozenset({Kind.SPIKE}), f"synaptic input to {p} (value in A)", pop.size,
                                       _plausible_current(pop), role=Role.SYNAPTIC, group=p)
                  for p, pop in settings.populations.items()}
        outputs = {f"{p}.spikes": OutPort(Kind.SPIKE, f"spikes of {p}", pop.size, (1.0, 1.0), role=Role.SPIKES, group=p)
                   for p, pop in settings.populations.items()}
        return inputs, outputs

    @property
    def tick_period(self) -> float:
        return self.settings.tick

    def warm_up(self) -> None:
        adex.warm_up()

    def probe_route(self, port: str) -> tuple[str, ...]:
        return (port[: -len(".input")] + ".spikes",)

    def start(self, t0: float) -> None:
        super().start(t0)
        for pop in self.pops.values():
            pop.start(t0)

    def on_events(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        pop = self.pops[port[: -len(".input")]]
        ok = events["id"] < pop.size
        if not ok.all():
            self.rejected["unknown_id"] = self.rejected.get("unknown_id", 0) + int((~ok).sum())
            events = events[ok]
        if len(events):
            self.pending.append((pop, now, events.copy()))

    def reserve_span(self, ticks: int) -> int:
        neurons = sum(p.size for p in self.pops.values())
        ticks = max(1, min(ticks, SPAN_ELEMENTS // max(1, self.n_steps * neurons)))
        for pop in self.pops.values():
            pop.reserve(ticks * self.n_steps)
        return ticks

    def tick(self, t_start: float, t_end: float) -> None:
        if self.pending:
            keep = []
            # an arrival on the tick's end (to float rounding) belongs to the next tick's first step
            next_tick = t_end - STEP_TOLERANCE * self.settings.dt
            last_step = int(round((t_end - t_start) / self.settings.dt)) - 1
            for pop, arrival, events in self.pending:
                if arrival >= next_tick:
                    keep.append((pop, arrival, events))
                    continue
                step = step_of(arrival, t_start, self.settings.dt, last_step)
                pop.add_input(step, events["id"].astype(np.intp), events["value"].astype(float))
            self.pending = keep
        for name, pop in self.pops.items():
            times, ids = pop.step(t_start, t_end)
            if len(times):
                self.outbox.emit_many(f"{name}.spikes", times, ids, 1.0)

    def snapshot(self) -> object:
        pops = [(p.v.copy(), p.w.copy(), p.i_syn.copy(), p.refr.copy(), p.spike_counts.copy(), p.drive.snapshot())
                for p in self.pops.values()]
        # input held over for a later tick (it arrived on a tick's end) was delivered before the snapshot:
        # nobody delivers it again after a restore
        return pops, self.rng.bit_generator.state, dict(self.rejected), list(self.pending)

    def restore(self, state: object) -> None:
        pops, rng_state, rejected, pending = state
        for pop, (v, w, i_syn, refr, counts, drive) in zip(self.pops.values(), pops):
            pop.v[:], pop.w[:], pop.i_syn[:], pop.refr[:], pop.spike_counts[:] = v, w, i_syn, refr, counts
            pop.drive.restore(drive)
        self.rng.bit_generator.state = rng_state
        self.rejected = dict(rejected)
        self.pending = list(pending)

    def figures(self, now: float, final: bool = False) -> Figures:
        return Figures(elapsed=now - self.t0, rejected=dict(self.rejected),
                       populations={name: PopulationFigures.of(p.spike_counts) for name, p in self.pops.items()})
