"""`kind = "lif"`: a population of leaky integrate-and-fire neurons (kernel.py), SI units."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spikewire.core.settings import SettingsError, non_negative, positive, setting
from spikewire.nodes.base import STEP_TOLERANCE, ClockedSettings, InPort, Node, OutPort, step_of
from spikewire.nodes.element import Role
from spikewire.nodes.figures import Figures, PopulationFigures
from spikewire.nodes.kernels import lazy
from spikewire.streams.wire import Kind

kernel = lazy("spikewire_lif.kernel")  # numba loads only in a process that runs this kind


@dataclass(frozen=True)
class LifSettings(ClockedSettings):
    size: int = setting(1, "Number of neurons.", check=positive, unit="count")
    tau_m: float = setting(20e-3, "Membrane time constant [s].", check=positive, unit="s")
    tau_syn: float = setting(5e-3, "Synaptic current decay time constant [s].", check=positive, unit="s")
    r_m: float = setting(1e8, "Membrane resistance [ohm].", check=positive, unit="Ohm")
    v_rest: float = setting(-0.065, "Resting potential [V].", unit="V")
    v_reset: float = setting(-0.065, "Reset potential [V].", unit="V")
    v_th: float = setting(-0.050, "Threshold [V].", unit="V")
    t_ref: float = setting(2e-3, "Refractory period [s].", check=non_negative, unit="s")
    i_bias: float = setting(0.0, "Constant input current [A].", unit="A")

    def validate(self, key: str) -> None:
        super().validate(key)
        if not self.v_reset < self.v_th:
            raise SettingsError(f"{key}.v_th", f"must exceed v_reset ({self.v_reset!r}), got {self.v_th!r}")


class LifNode(Node):
    kind = "lif"
    Settings = LifSettings

    def __init__(self, name: str, settings: LifSettings):
        super().__init__(name, settings)
        s, n = settings, settings.size
        self.steps = s.steps_per_tick
        self.v, self.i_syn = np.full(n, s.v_rest), np.zeros(n)
        self.refr, self.counts = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.syn_in = np.zeros((self.steps, n))
        self.spike_step, self.spike_id = np.zeros(self.steps * n, np.int64), np.zeros(self.steps * n, np.int64)
        self.decay_m, self.decay_syn = math.exp(-s.dt / s.tau_m), math.exp(-s.dt / s.tau_syn)
        self.pending: list[tuple[float, np.ndarray]] = []

    @classmethod
    def ports(cls, settings: LifSettings):
        # A current that moves V past threshold from rest within one step is already absurd.
        limit = 100 * (settings.v_th - settings.v_rest) / settings.r_m
        return ({"input": InPort(frozenset({Kind.SPIKE}), "synaptic current steps [A]", settings.size,
                                 (-limit, limit), role=Role.SYNAPTIC)},
                {"spikes": OutPort(Kind.SPIKE, "spikes", settings.size, (1.0, 1.0), role=Role.SPIKES)})

    @property
    def tick_period(self) -> float:
        return self.settings.tick

    def warm_up(self) -> None:
        kernel.warm_up()

    def probe_route(self, port: str) -> tuple[str, ...]:
        return ("spikes",)

    def on_events(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        self.pending.append((now, events.copy()))

    def tick(self, t_start: float, t_end: float) -> None:
        s, keep = self.settings, []
        self.syn_in[:] = 0.0
        for arrival, events in self.pending:
            if arrival >= t_end - STEP_TOLERANCE * s.dt:  # on the tick's end: the next tick's first step
                keep.append((arrival, events))
                continue
            np.add.at(self.syn_in, (step_of(arrival, t_start, s.dt, self.steps - 1), events["id"]), events["value"])
        self.pending = keep
        n = kernel.lif_steps(self.v, self.i_syn, self.refr, self.syn_in, s.i_bias, self.decay_m, self.decay_syn,
                             s.r_m, s.v_rest, s.v_reset, s.v_th, round(s.t_ref / s.dt), self.spike_step, self.spike_id)
        if n:
            ids = self.spike_id[:n]
            np.add.at(self.counts, ids, 1)
            self.outbox.emit_many("spikes", t_start + (self.spike_step[:n] + 1) * s.dt, ids, 1.0)

    def figures(self, now: float, final: bool = False) -> Figures:
        return Figures(elapsed=now - self.t0, populations={self.name: PopulationFigures.of(self.counts)})
