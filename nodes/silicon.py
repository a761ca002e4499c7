"""Silicon neurons: AdEx populations stepped at ``dt`` inside wall-clock-paced ticks.

Stands in for a neuromorphic chip (the Zurich INI neurons of the 2020 experiment). Each population has
an input port ``<pop>.input`` (spike events whose ``value`` is a synaptic current step in amperes,
``id`` the target neuron) and an output port ``<pop>.spikes``. An optional drive makes a population a
pacemaker (one synaptic kick every 1/rate s, all neurons) or Poisson-driven (independent kicks).
Input arriving during a tick lands in the step matching its arrival time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from spikewire.launch.settings import Settings, SettingsError, non_negative, non_empty, positive, setting
from spikewire.nodes.base import ClockedSettings, InPort, Node, OutPort
from spikewire.nodes.kernels import adex
from spikewire.streams.wire import Kind


@dataclass(frozen=True)
class AdExParams(Settings):
    """AdEx neuron parameters (SI units); defaults are Brette & Gerstner (2005)'s regular-spiking cell."""

    c_m: float = setting(281e-12, "Membrane capacitance [F].", check=positive)
    g_l: float = setting(30e-9, "Leak conductance [S].", check=positive)
    e_l: float = setting(-70.6e-3, "Leak reversal potential [V].")
    v_t: float = setting(-50.4e-3, "Threshold slope-factor midpoint V_T [V].")
    delta_t: float = setting(2e-3, "Slope factor Delta_T [V].", check=positive)
    a: float = setting(4e-9, "Subthreshold adaptation [S].")
    tau_w: float = setting(144e-3, "Adaptation time constant [s].", check=positive)
    b: float = setting(0.0805e-9, "Spike-triggered adaptation increment [A].")
    v_reset: float = setting(-70.6e-3, "Reset potential [V].")
    v_peak: float = setting(-40.4e-3, "Spike cut-off V_T + 5 Delta_T [V].")
    t_ref: float = setting(2e-3, "Refractory period [s].", check=non_negative)
    tau_syn: float = setting(5e-3, "Synaptic current decay time constant [s].", check=positive)
    i_bias: float = setting(0.0, "Constant bias current [A].")

    def validate(self, key: str) -> None:
        if self.v_peak <= self.v_t:
            raise SettingsError(f"{key}.v_peak", f"must be above v_t ({self.v_t!r}), got {self.v_peak!r}")


@dataclass(frozen=True)
class DriveSettings(Settings):
    """External drive of a population."""

    kind: Literal["none", "pacemaker", "poisson"] = setting("none", "none, pacemaker or poisson.")
    rate: float = setting(10.0, "Kicks per second (per neuron for poisson) [Hz].", check=non_negative)
    weight: float = setting(4e-9, "Synaptic current step of one kick [A]; 4 nA fires one AdEx spike.")
    start: float = setting(0.0, "Session time the drive starts [s].", check=non_negative)


@dataclass(frozen=True)
class PopulationSettings(Settings):
    size: int = setting(1, "Number of neurons.", check=positive)
    neuron: AdExParams = setting(doc="Neuron parameters.", factory=AdExParams)
    drive: DriveSettings = setting(doc="External drive.", factory=DriveSettings)
    v_init: float = setting(-70.6e-3, "Initial membrane potential [V].")


@dataclass(frozen=True)
class SiliconSettings(ClockedSettings):
    seed: int = setting(0, "Seed of the Poisson drives.", check=non_negative)
    populations: dict[str, PopulationSettings] = setting(doc="Populations by name.", factory=dict,
                                                          check=non_empty)


class Population:
    """State, parameters and preallocated buffers of one AdEx population; steps one tick at a time."""

    def __init__(self, name: str, cfg: PopulationSettings, n_steps: int, dt: float, rng: np.random.Generator):
        n = cfg.size
        p = cfg.neuron
        self.name = name
        self.size = n
        self.cfg = cfg
        self.dt = dt
        self.rng = rng
        full = lambda x: np.full(n, float(x))  # noqa: E731
        self.v = full(cfg.v_init)
        self.w = np.zeros(n)
        self.i_syn = np.zeros(n)
        self.refr = np.zeros(n, np.int32)
        self.params = (full(p.c_m), full(p.g_l), full(p.e_l), full(p.v_t), full(p.delta_t), full(p.a),
                       full(p.tau_w), full(p.b), full(p.v_reset), full(p.v_peak))
        self.refr_steps = np.full(n, int(round(p.t_ref / dt)), np.int32)
        self.syn_decay = full(math.exp(-dt / p.tau_syn))
        self.i_bias = full(p.i_bias)
        self.syn_in = np.zeros((n_steps, n))
        self.uniform = np.zeros((n_steps, n))
        cap = max(16, n_steps * n)
        self.spike_step = np.zeros(cap, np.int64)
        self.spike_id = np.zeros(cap, np.int64)
        self.spike_counts = np.zeros(n, np.int64)
        self.next_kick = math.inf
        self.drive_start = 0.0

    def start(self, t0: float) -> None:
        self.next_kick = t0 + self.cfg.drive.start if self.cfg.drive.kind == "pacemaker" else math.inf
        self.drive_start = t0 + self.cfg.drive.start

    def add_input(self, step: int, ids: np.ndarray, weights: np.ndarray) -> None:
        np.add.at(self.syn_in[step], ids, weights)

    def step(self, t_start: float, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        """Advance over [t_start, t_end); returns (spike times, neuron ids) of this tick."""
        drive = self.cfg.drive
        if drive.kind == "pacemaker" and drive.rate > 0:
            period = 1.0 / drive.rate
            while self.next_kick < t_end:
                k = min(max(int((self.next_kick - t_start) / self.dt), 0), self.syn_in.shape[0] - 1)
                self.syn_in[k] += drive.weight
                self.next_kick += period
        elif drive.kind == "poisson" and drive.rate > 0 and t_end > self.drive_start:
            self.rng.random(out=self.uniform)
            self.syn_in += (self.uniform < drive.rate * self.dt) * drive.weight
        n = adex.adex_run(self.v, self.w, self.i_syn, self.refr, *self.params, self.refr_steps, self.syn_decay,
                          self.i_bias, self.syn_in, self.dt, self.spike_step, self.spike_id)
        self.syn_in.fill(0.0)
        if n == 0:
            return self.spike_step[:0].astype(float), self.spike_id[:0]
        n = min(n, len(self.spike_step))
        ids = self.spike_id[:n]
        np.add.at(self.spike_counts, ids, 1)
        return t_start + (self.spike_step[:n] + 1) * self.dt, ids


class SiliconNode(Node):
    kind = "silicon"
    Settings = SiliconSettings
    supports_lookahead = True

    def __init__(self, name: str, settings: SiliconSettings):
        super().__init__(name, settings)
        self.n_steps = settings.steps_per_tick
        rng = np.random.default_rng(settings.seed)
        self.pops = {p: Population(p, cfg, self.n_steps, settings.dt, rng) for p, cfg in settings.populations.items()}
        self.pending: list[tuple[Population, float, np.ndarray]] = []
        self.rejected: dict[str, int] = {}

    @classmethod
    def ports(cls, settings: SiliconSettings):
        inputs = {f"{p}.input": InPort(frozenset({Kind.SPIKE}), f"synaptic input to {p} (value in A)")
                  for p in settings.populations}
        outputs = {f"{p}.spikes": OutPort(Kind.SPIKE, f"spikes of {p}") for p in settings.populations}
        return inputs, outputs

    @property
    def tick_period(self) -> float:
        return self.settings.tick

    def warm_up(self) -> None:
        adex.warm_up()

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

    def tick(self, t_start: float, t_end: float) -> None:
        if self.pending:
            keep = []
            for pop, arrival, events in self.pending:
                if arrival >= t_end:
                    keep.append((pop, arrival, events))
                    continue
                step = min(max(int((arrival - t_start) / self.settings.dt), 0), self.n_steps - 1)
                pop.add_input(step, events["id"].astype(np.intp), events["value"].astype(float))
            self.pending = keep
        for name, pop in self.pops.items():
            times, ids = pop.step(t_start, t_end)
            if len(times):
                self.outbox.emit_many(f"{name}.spikes", times, ids, 1.0)

    def snapshot(self) -> object:
        pops = [(p.v.copy(), p.w.copy(), p.i_syn.copy(), p.refr.copy(), p.spike_counts.copy(), p.next_kick)
                for p in self.pops.values()]
        rng = next(iter(self.pops.values())).rng
        return pops, rng.bit_generator.state, dict(self.rejected)

    def restore(self, state: object) -> None:
        pops, rng_state, rejected = state
        for pop, (v, w, i_syn, refr, counts, next_kick) in zip(self.pops.values(), pops):
            pop.v[:], pop.w[:], pop.i_syn[:], pop.refr[:], pop.spike_counts[:] = v, w, i_syn, refr, counts
            pop.next_kick = next_kick
        next(iter(self.pops.values())).rng.bit_generator.state = rng_state
        self.rejected = dict(rejected)
        self.pending = []

    def status(self, now: float) -> dict:
        return {"spikes": {name: int(p.spike_counts.sum()) for name, p in self.pops.items()}}

    def summary(self, now: float) -> dict:
        duration = max(now - self.t0, 1e-9)
        neurons = []
        for name, pop in self.pops.items():
            counts = pop.spike_counts
            if pop.size <= 16:
                neurons += [{"population": name, "neuron": str(i), "spikes": int(c), "rate_hz": c / duration}
                            for i, c in enumerate(counts)]
            else:
                total = int(counts.sum())
                neurons.append({"population": name, "neuron": f"all {pop.size}", "spikes": total,
                                "rate_hz": total / duration / pop.size})
        return {"neurons": neurons, "rejected": dict(self.rejected)}
