"""Drives: external input a neuron population gets on a clock (pacemaker, Poisson), its rate following a
schedule. Any neuron kind can use them; nothing here knows a neuron model.

A kind gives each population a ``drive`` table (``DriveSettings``), checks it against its step in its
settings' ``validate`` (``check_step``), and then, in its node::

    self.drive = Drive(cfg.drive, size, dt, rng)       # __init__
    self.drive.start(t0)                                # start
    self.drive.fill(self.syn_in, t_start, t_end)        # tick: add this tick's kicks to the input matrix

``syn_in`` is the population's input of one tick, one row per step and one column per neuron; a kick at
time t is an input at t, exactly like an event arriving on the population's input port at t (it lands in
the step containing t). A kind that computes ahead also keeps ``snapshot()``/``restore()`` with its model.
docs/elements.md shows a whole kind using one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from spikewire.core.settings import Settings, SettingsError, non_negative, setting
from spikewire.nodes.base import STEP_TOLERANCE


@dataclass(frozen=True)
class DriveSettings(Settings):
    """External drive of a population: synaptic kicks at a rate that may follow a schedule.

    ``pacemaker`` kicks every neuron together, regularly, its phase restarting at each schedule change;
    ``poisson`` kicks each neuron independently (a fresh exponential interval at each change, which is
    exact for a Poisson process). A kick at time t is an input at t, exactly like an event arriving on
    the population's input port at t: it lands in the step containing t, and acts as the kind's input does
    (silicon: after that step's update in convention brian2, in it in nest). A pacemaker's kicks fall at
    start + j / rate, j = 0, 1, ...
    """

    kind: Literal["none", "pacemaker", "poisson"] = setting("none", "none, pacemaker or poisson.")
    rate: float = setting(10.0, "Kicks per second (per neuron for poisson) [Hz].", check=non_negative, unit="Hz")
    weight: float = setting(4e-9, "Input step of one kick, in the unit of the population's input (silicon: a "
                            "synaptic current [A]; 4 nA fires one default AdEx spike).", unit="input unit")
    start: float = setting(0.0, "Session time the drive starts at ``rate`` [s]; a pacemaker's first kick.",
                           check=non_negative, unit="s")
    schedule: tuple[tuple[float, float], ...] = setting(
        (), "Rate changes as [[session time s, rate Hz], ...] in time order; replaces start/rate.", unit="s, Hz")

    def validate(self, key: str) -> None:
        last = -math.inf
        for i, (t, rate) in enumerate(self.schedule):
            if t < 0 or t < last:
                raise SettingsError(f"{key}.schedule[{i}]", f"times must be >= 0 and in order, got {t!r}")
            if rate < 0:
                raise SettingsError(f"{key}.schedule[{i}]", f"rate must be >= 0, got {rate!r}")
            last = t

    def segments(self) -> tuple[tuple[float, float], ...]:
        return self.schedule or ((self.start, self.rate),)

    def check_step(self, dt: float, key: str) -> None:
        """Refuse (SettingsError naming the rate) a rate beyond one kick per step of ``dt``: it cannot be
        honoured, and a rate like 1e12 would stall the tick computing kicks. ``key`` is the drive's."""
        rates = [(f"{key}.schedule[{i}]", r) for i, (_, r) in enumerate(self.schedule)]
        for where, rate in rates or [(f"{key}.rate", self.rate)]:
            if rate * dt > 1.0:
                raise SettingsError(where, f"must be at most one kick per step, 1/dt = {1 / dt:g} Hz, got {rate!r}")


class Drive:
    """Kicks of one population's drive, written into its synaptic input matrix tick by tick."""

    def __init__(self, cfg: DriveSettings, n: int, dt: float, rng: np.random.Generator):
        self.cfg = cfg
        self.dt = dt
        self.rng = rng
        self.active = cfg.kind != "none"
        self.random = cfg.kind == "poisson"  # draws as it goes: fill it tick by tick to draw as paced ticks do
        self.segments = cfg.segments()
        self.n = n if cfg.kind == "poisson" else 1
        self.next_kick = np.full(self.n, math.inf)
        self.seg = -1
        self.kicks = 0  # pacemaker kicks so far in the current segment
        self.t0 = 0.0

    def start(self, t0: float) -> None:
        self.t0 = t0
        self.seg = -1
        self.next_kick.fill(math.inf)

    def _enter(self, seg: int) -> None:
        self.seg = seg
        t, rate = self.segments[seg]
        self.kicks = 0
        if rate <= 0:
            self.next_kick.fill(math.inf)
        elif self.cfg.kind == "pacemaker":
            self.next_kick[0] = self.t0 + t
        else:
            self.next_kick[:] = self.t0 + t + self.rng.exponential(1.0 / rate, self.n)

    def _seg_start(self, seg: int) -> float:
        return self.t0 + self.segments[seg][0] if seg < len(self.segments) else math.inf

    def rate_at(self, t: float) -> float:
        rate = 0.0
        for start, r in self.segments:
            if self.t0 + start <= t:
                rate = r
        return rate

    def fill(self, syn_in: np.ndarray, t_start: float, t_end: float) -> None:
        """Add the kicks that fall in [t_start, t_end) to ``syn_in`` (one row per step of the tick).
        Times on a step boundary count as on it (``STEP_TOLERANCE``), so grid times land exactly."""
        if not self.active:
            return
        eps = STEP_TOLERANCE * self.dt
        last_step = syn_in.shape[0] - 1
        weight = self.cfg.weight
        while True:
            if self.seg < 0 or self._seg_start(self.seg + 1) <= t_start + eps:
                # enter the latest segment that has begun by now (a late start skips over empty ones)
                nxt = self.seg + 1
                while self._seg_start(nxt + 1) <= t_start + eps:
                    nxt += 1
                if self._seg_start(nxt) >= t_end - eps:
                    return
                self._enter(nxt)
            limit = min(t_end, self._seg_start(self.seg + 1)) - eps
            seg_start, rate = self._seg_start(self.seg), self.segments[self.seg][1]
            while True:
                due = np.flatnonzero(self.next_kick < limit)
                if not len(due):
                    break
                steps = np.clip(((self.next_kick[due] - t_start) / self.dt + STEP_TOLERANCE).astype(np.int64),
                                0, last_step)
                if self.cfg.kind == "pacemaker":
                    syn_in[steps[0]] += weight
                    self.kicks += 1
                    self.next_kick[0] = seg_start + self.kicks / rate  # no accumulated rounding
                else:
                    np.add.at(syn_in, (steps, due), weight)
                    self.next_kick[due] += self.rng.exponential(1.0 / rate, len(due))
            if limit + eps >= t_end:
                return
            self._enter(self.seg + 1)

    def snapshot(self):
        return self.next_kick.copy(), self.seg, self.kicks

    def restore(self, state) -> None:
        next_kick, self.seg, self.kicks = state
        self.next_kick[:] = next_kick
