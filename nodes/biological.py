"""Biological neurons: a node whose neurons a backend provides (nodes/backends.py), by default simulated
Izhikevich regular-spiking cells driven by CME stimulus pulses (``backend = "model"``, here), or a
recording rig (``backend = "rig"``, nodes/rig.py).

The model stands in for Padova's cultured hippocampal neuron until a rig is attached. Input port ``stim`` takes
stimulus events (``id`` the target neuron, ``value`` the CME pulse amplitude in volts); each adds
``stim_gain * amplitude`` to a stimulus current that decays with ``stim_tau``. White current noise gives
spontaneous firing. Output port ``events`` carries typed events as Padova reported them:

* ``STIMULATED_AP`` (1): an action potential within ``stim_window`` after a stimulus to that neuron
  (every AP of an evoked burst counts);
* ``SPONTANEOUS_AP`` (2): any other action potential;
* ``PSP`` (0): a stimulus that produced no action potential within ``stim_window`` (reported at the
  window's end, with the stimulus's time as its event time).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from spikewire.core.settings import (Settings, SettingsError, in_range, non_negative, positive, setting,
                                       stated)
from spikewire.nodes.backends import Backend, Emit, backend, backend_class
from spikewire.nodes.base import ClockedSettings, InPort, Node, OutPort, step_of
from spikewire.nodes.element import Role, element
from spikewire.nodes.figures import Figures, PopulationFigures
from spikewire.nodes.kernels import lazy

izhikevich = lazy("izhikevich")
from spikewire.nodes.rig import RigSettings
from spikewire.streams.wire import BioEvent, Kind


MAX_STIM_AMPLITUDE = 10.0
"""Default plausible CME stimulus amplitude [V], either sign: no lab applies more, and the 2020 loop used
0-1 V. A stimulus beyond it is refused before the node sees it (``input_ranges`` overrides it)."""


@dataclass(frozen=True)
class IzhikevichParams(Settings):
    """Izhikevich (2003) parameters in the model's own units, not SI: mV and ms, currents in mV/ms (they add to
    dv/dt), as Brian2's Izhikevich example writes them; defaults are regular spiking (pyramidal cell)."""

    a: float = setting(0.02, "Recovery time scale [1/ms].", unit="1/ms")
    b: float = setting(0.2, "Sensitivity of the recovery variable u to v [1/ms] (u is in mV/ms, v in mV).",
                       unit="1/ms")
    c: float = setting(-65.0, "Reset potential [mV].", unit="mV")
    d: float = setting(8.0, "Recovery increment of u after a spike [mV/ms].", unit="mV/ms")
    v_init: float = setting(-65.0, "Initial membrane potential [mV].", unit="mV")
    i_bias: float = setting(0.0, "Constant input current [mV/ms] (the model's current unit: it adds to dv/dt).",
                            unit="mV/ms")


def _installed_backend(name: str) -> str | None:
    try:
        backend_class(name)
    except ValueError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class BiologicalSettings(ClockedSettings):
    backend: str = setting("model", "model: the simulated neuron below; rig: a recording rig over LSL (see [rig]).",
                           check=stated("a registered backend (model, rig)", _installed_backend))
    rig: RigSettings = setting(doc="The rig, when backend = 'rig'.", factory=RigSettings)
    size: int = setting(1, "Number of neurons.", check=positive.within_memory(256, "neurons"), unit="count")
    neuron: IzhikevichParams = setting(doc="Izhikevich neuron parameters, in mV and ms (not SI), when backend = "
                                       "'model'.", factory=IzhikevichParams)
    stim_gain: float = setting(20.0, "Stimulus current step per volt of CME amplitude [(mV/ms)/V], 0 to "
                               "1000: at 1000, 1 V is ~100 times what fires the default cell.",
                               check=in_range(0.0, 1000.0), unit="(mV/ms)/V")
    stim_tau: float = setting(3e-3, "Decay time constant of the stimulus current [s].", check=positive, unit="s")
    stim_window: float = setting(20e-3, "An AP this soon after a stimulus counts as stimulated [s].",
                                 check=positive, unit="s")
    noise_sigma: float = setting(10.0, "Std of the white input current noise drawn each step [mV/ms] (its effect "
                                 "depends on dt).", check=non_negative, unit="mV/ms")
    seed: int = setting(0, "Seed of the noise.", check=non_negative, unit="id")

    def validate(self, key: str) -> None:
        super().validate(key)
        backend_class(self.backend).validate(self, key)


SPAN_ELEMENTS = 1 << 20
"""A compute-ahead span's per-step buffers hold at most this many values each (8 MB)."""


@backend
class IzhikevichModel(Backend):
    """The simulated culture: ``size`` Izhikevich cells, stimulus currents, white noise (module docstring)."""

    name = "model"
    computes_ahead = True

    @classmethod
    def stim_limit(cls, settings: BiologicalSettings) -> float:
        return MAX_STIM_AMPLITUDE

    def __init__(self, node: str, settings: BiologicalSettings):
        super().__init__(node, settings)
        s = settings
        n = s.size
        self.n_steps = s.steps_per_tick
        p = s.neuron
        self.v = np.full(n, p.v_init)
        self.u = p.b * self.v
        self.i_stim = np.zeros(n)
        self.abcd = tuple(np.full(n, x) for x in (p.a, p.b, p.c, p.d))
        self.i_bias = np.full(n, p.i_bias)
        self.stim_decay = np.full(n, math.exp(-s.dt / s.stim_tau))
        self.rng = np.random.default_rng(s.seed)
        self._reserve(self.n_steps)
        self.pending: list[tuple[float, np.ndarray]] = []
        # [time, neuron, answered]: stimuli whose window is still open; unanswered ones become PSPs
        self.open_stimuli: deque[list] = deque()

    def _reserve(self, steps: int) -> None:
        n = self.settings.size
        self.stim_in = np.zeros((steps, n))
        self.noise = np.zeros((steps, n))
        self.spike_step = np.zeros(max(16, steps * n), np.int64)
        self.spike_id = np.zeros_like(self.spike_step)

    def reserve_span(self, ticks: int) -> int:
        ticks = max(1, min(ticks, SPAN_ELEMENTS // max(1, self.n_steps * self.settings.size)))
        self._reserve(ticks * self.n_steps)
        return ticks

    def warm_up(self) -> None:
        izhikevich.warm_up()

    def stimulate(self, events: np.ndarray, now: float) -> None:
        if len(events):
            self.pending.append((now, events.copy()))

    def _apply_stimuli(self, t_start: float, t_end: float, stim_in: np.ndarray) -> None:
        keep = []
        dt = self.settings.dt
        for arrival, events in self.pending:
            if arrival >= t_end:
                keep.append((arrival, events))
                continue
            step = step_of(arrival, t_start, dt, len(stim_in) - 1)
            ids = events["id"].astype(np.intp)
            np.add.at(stim_in[step], ids, events["value"] * self.settings.stim_gain)
            np.add.at(self.stimuli, ids, 1)
            t_stim = t_start + step * dt
            self.open_stimuli.extend([t_stim, int(i), False] for i in ids)
        self.pending = keep

    def tick(self, t_start: float, t_end: float, emit: Emit) -> None:
        s = self.settings
        steps = int(round((t_end - t_start) / s.dt))  # one tick, or a span of them (reserve_span)
        stim_in, noise = self.stim_in[:steps], self.noise[:steps]
        self._apply_stimuli(t_start, t_end, stim_in)
        self.rng.standard_normal(out=noise)  # the same stream drawn tick by tick or at once
        noise *= s.noise_sigma
        n = izhikevich.izhikevich_run(self.v, self.u, self.i_stim, *self.abcd, self.i_bias, self.stim_decay,
                                      stim_in, noise, s.dt * 1e3, self.spike_step, self.spike_id)
        stim_in.fill(0.0)
        for j in range(min(n, len(self.spike_step))):
            t_spike = t_start + (self.spike_step[j] + 1) * s.dt
            neuron = int(self.spike_id[j])
            kind = BioEvent.SPONTANEOUS_AP
            for stim in self.open_stimuli:
                if stim[1] == neuron and stim[0] <= t_spike <= stim[0] + s.stim_window:
                    stim[2] = True
                    kind = BioEvent.STIMULATED_AP
            emit(t_spike, neuron, kind)
        while self.open_stimuli and self.open_stimuli[0][0] + s.stim_window < t_end:
            t_stim, neuron, answered = self.open_stimuli.popleft()
            if not answered:  # final once its window has passed without an action potential
                emit(t_stim, neuron, BioEvent.PSP, t_stim + s.stim_window)

    def snapshot(self) -> object:
        return (self.v.copy(), self.u.copy(), self.i_stim.copy(), self.stimuli.copy(),
                [list(st) for st in self.open_stimuli], self.rng.bit_generator.state)

    def restore(self, state: object) -> None:
        v, u, i_stim, stimuli, open_stimuli, rng_state = state
        self.v[:], self.u[:], self.i_stim[:], self.stimuli[:] = v, u, i_stim, stimuli
        self.open_stimuli = deque(list(st) for st in open_stimuli)
        self.rng.bit_generator.state = rng_state
        self.pending = []


@element
class BiologicalNode(Node):
    kind = "biological"
    interlocked = True  # stimulates (a rig's tissue, or the model cell)
    Settings = BiologicalSettings
    supports_lookahead = True

    def __init__(self, name: str, settings: BiologicalSettings):
        super().__init__(name, settings)
        self.backend: Backend = backend_class(settings.backend)(name, settings)
        self.supports_lookahead = self.backend.computes_ahead  # a rig is the model: nothing to compute ahead
        self.timed_outputs = self.span_ticks = self.backend.computes_ahead  # events final at their step's end
        self.counts = np.zeros((settings.size, 3), np.int64)  # per neuron: PSP, stimulated AP, spontaneous AP
        self.rejected: dict[str, int] = {}
        self.held_stimuli = 0  # stimulus events the safety interlock held back
        # a COPY port (a rig's plain spikes) repeats every action potential of ``events``
        self.copy_port = next((p for p, out in self.outputs.items() if out.role == Role.COPY), None)

    @classmethod
    def ports(cls, settings: BiologicalSettings):
        n = settings.size
        chosen = backend_class(settings.backend)
        outputs = {"events": OutPort(Kind.BIO, "typed events: 0 PSP, 1 stimulated AP, 2 spontaneous AP", n, (0.0, 2.0),
                                     role=Role.BIO_EVENTS), **chosen.outputs(settings)}
        # A rig's hard amplitude limit is the stim port's plausible range: the runtime refuses beyond it.
        limit = chosen.stim_limit(settings)
        stim = InPort(frozenset({Kind.STIMULUS}), "CME stimulus pulses (value in V)", n, (-limit, limit),
                      role=Role.STIMULI)
        return {"stim": stim}, outputs

    @classmethod
    def declared_ports(cls, settings: BiologicalSettings, key: str = ""):
        """As the base, but ``input_ranges.stim`` may narrow a hard amplitude limit (a rig's), never widen it."""
        inputs, outputs = super().declared_ports(settings, key)
        chosen = backend_class(settings.backend)
        if chosen.hard_limit:
            lo, hi = inputs["stim"].values
            limit = chosen.stim_limit(settings)
            if lo < -limit or hi > limit:
                where = f"{key}.input_ranges.stim" if key else "input_ranges.stim"
                raise SettingsError(where, f"[{lo!r}, {hi!r}] exceeds the {settings.backend}'s hard limit of "
                                    f"+-{limit!r} V ({settings.backend}.max_amplitude)")
        return inputs, outputs

    @property
    def tick_period(self) -> float:
        return self.settings.tick

    def warm_up(self) -> None:
        self.backend.warm_up()

    def wait_for_consumers(self, timeout: float) -> None:
        self.backend.wait_for_consumers(timeout)

    def probe_route(self, port: str) -> tuple[str, ...]:
        return ("events",)

    def on_events(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        if self.held:  # the safety interlock: stimulate nothing while the input is not trustworthy
            self.held_stimuli += len(events)
            return
        ok = events["id"] < self.settings.size
        if not ok.all():
            self.rejected["unknown_id"] = self.rejected.get("unknown_id", 0) + int((~ok).sum())
            events = events[ok]
        self.backend.stimulate(events, now)

    def tick(self, t_start: float, t_end: float) -> None:
        self.backend.tick(t_start, t_end, self._emit)

    def reserve_span(self, ticks: int) -> int:
        return self.backend.reserve_span(ticks)

    def fds(self) -> list[int]:
        return self.backend.fds()

    def on_readable(self, fd: int, now: float) -> None:
        self.backend.on_readable(fd, now, self._emit)

    def _emit(self, t: float, neuron: int, kind: BioEvent, due: float | None = None) -> None:
        self.counts[neuron, kind] += 1
        self.outbox.emit("events", t, neuron, float(kind), due)
        if self.copy_port is not None and kind != BioEvent.PSP:
            self.outbox.emit(self.copy_port, t, neuron, 1.0)

    def snapshot(self) -> object:
        return self.backend.snapshot(), self.counts.copy(), dict(self.rejected)

    def restore(self, state: object) -> None:
        backend_state, counts, rejected = state
        self.backend.restore(backend_state)
        self.counts[:] = counts
        self.rejected = dict(rejected)

    def figures(self, now: float, final: bool = False) -> Figures:
        c = self.counts
        pop = PopulationFigures.of(c[:, 1] + c[:, 2], {"psp": c[:, 0], "stimulated_ap": c[:, 1], "spontaneous_ap": c[:, 2]},
                                   self.backend.stimuli)
        f = Figures(elapsed=now - self.t0, populations={self.name: pop}, rejected=dict(self.rejected),
                    held={"stimuli": self.held_stimuli})
        self.backend.figures(f, final)
        return f

    def close(self) -> None:
        self.backend.close()
