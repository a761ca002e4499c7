"""Biological neurons, simulated: Izhikevich regular-spiking cells driven by CME stimulus pulses.

Stands in for Padova's cultured hippocampal neuron until a rig is attached. Input port ``stim`` takes
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
from typing import Literal

import numpy as np

from spikewire.core.settings import Settings, SettingsError, in_range, non_negative, positive, setting
from spikewire.nodes.base import ClockedSettings, InPort, Node, OutPort, step_of
from spikewire.nodes.element import Role, element
from spikewire.nodes.figures import Figures, PopulationFigures
from spikewire.nodes.kernels import izhikevich
from spikewire.nodes.rig import RigBackend, RigSettings
from spikewire.streams.clock import local_clock
from spikewire.streams.wire import BioEvent, Kind


MAX_STIM_AMPLITUDE = 10.0
"""Default plausible CME stimulus amplitude [V], either sign: no lab applies more, and the 2020 loop used
0-1 V. A stimulus beyond it is refused before the node sees it (``input_ranges`` overrides it)."""


@dataclass(frozen=True)
class IzhikevichParams(Settings):
    """Izhikevich (2003) parameters; defaults are regular spiking (pyramidal cell)."""

    a: float = setting(0.02, "Recovery time scale [1/ms].")
    b: float = setting(0.2, "Recovery sensitivity.")
    c: float = setting(-65.0, "Reset potential [mV].")
    d: float = setting(8.0, "Recovery increment after a spike.")
    v_init: float = setting(-65.0, "Initial membrane potential [mV].")
    i_bias: float = setting(0.0, "Constant input current (model units).")


@dataclass(frozen=True)
class BiologicalSettings(ClockedSettings):
    backend: Literal["model", "rig"] = setting("model", "model: the simulated neuron below; rig: a recording rig "
                                               "over LSL (see [rig]).")
    rig: RigSettings = setting(doc="The rig, when backend = 'rig'.", factory=RigSettings)
    size: int = setting(1, "Number of neurons.", check=positive.within_memory(256, "neurons"))
    neuron: IzhikevichParams = setting(doc="Neuron parameters.", factory=IzhikevichParams)
    stim_gain: float = setting(20.0, "Stimulus current step per volt of CME amplitude (model units / V), 0 to "
                               "1000: at 1000, 1 V is ~100 times what fires the default cell.",
                               check=in_range(0.0, 1000.0))
    stim_tau: float = setting(3e-3, "Decay time constant of the stimulus current [s].", check=positive)
    stim_window: float = setting(20e-3, "An AP this soon after a stimulus counts as stimulated [s].",
                                 check=positive)
    noise_sigma: float = setting(10.0, "Std of the white input current noise drawn each step (model units; its effect depends on dt).",
                                 check=non_negative)
    seed: int = setting(0, "Seed of the noise.", check=non_negative)

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.backend == "rig" and not self.rig.stream:
            raise SettingsError(f"{key}.rig.stream", "required for backend = 'rig' (e.g. 'name=spikewire-rig-sim')")
        for i, neuron in enumerate(self.rig.channel_map if self.backend == "rig" else ()):
            if not -1 <= neuron < self.size:
                raise SettingsError(f"{key}.rig.channel_map[{i}]", f"names neuron {neuron} but the node has "
                                    f"{self.size} (ids 0-{self.size - 1}; -1 leaves the channel unused)")
        if self.backend == "rig" and len(self.rig.stim_channels) not in (0, self.size):
            raise SettingsError(f"{key}.rig.stim_channels", f"has {len(self.rig.stim_channels)} entries for "
                                f"{self.size} neurons: name the rig channel of every neuron, or of none")


@element
class BiologicalNode(Node):
    kind = "biological"
    interlocked = True  # stimulates (a rig's tissue, or the model cell)
    Settings = BiologicalSettings
    supports_lookahead = True

    def __init__(self, name: str, settings: BiologicalSettings):
        super().__init__(name, settings)
        s = settings
        self.rig = (RigBackend(name, s.site, s.rig, s.stim_window, s.size) if s.backend == "rig" else None)
        if self.rig is not None:
            self.supports_lookahead = False  # the rig is the model: nothing to compute ahead
        n = s.size
        self.n_steps = s.steps_per_tick
        p = s.neuron
        self.v = np.full(n, p.v_init)
        self.u = p.b * self.v
        self.i_stim = np.zeros(n)
        self.abcd = tuple(np.full(n, x) for x in (p.a, p.b, p.c, p.d))
        self.i_bias = np.full(n, p.i_bias)
        self.stim_decay = np.full(n, math.exp(-s.dt / s.stim_tau))
        self.stim_in = np.zeros((self.n_steps, n))
        self.noise = np.zeros((self.n_steps, n))
        self.rng = np.random.default_rng(s.seed)
        self.spike_step = np.zeros(max(16, self.n_steps * n), np.int64)
        self.spike_id = np.zeros_like(self.spike_step)
        self.pending: list[tuple[float, np.ndarray]] = []
        # [time, neuron, answered]: stimuli whose window is still open; unanswered ones become PSPs
        self.open_stimuli: deque[list] = deque()
        self.counts = np.zeros((n, 3), np.int64)  # per neuron: PSP, stimulated AP, spontaneous AP
        self.stimuli = np.zeros(n, np.int64)
        self.rejected: dict[str, int] = {}
        self.held_stimuli = 0  # stimulus events the safety interlock held back

    @classmethod
    def ports(cls, settings: BiologicalSettings):
        n = settings.size
        outputs = {"events": OutPort(Kind.BIO, "typed events: 0 PSP, 1 stimulated AP, 2 spontaneous AP", n, (0.0, 2.0),
                                     role=Role.BIO_EVENTS)}
        if settings.backend == "rig":  # the typed events are the record; these repeat their APs as plain spikes
            outputs["spikes"] = OutPort(Kind.SPIKE, "spikes detected on the rig's channels", n, (1.0, 1.0),
                                        role=Role.COPY)
        # A rig's hard amplitude limit is the stim port's plausible range: the runtime refuses beyond it.
        limit = settings.rig.max_amplitude if settings.backend == "rig" else MAX_STIM_AMPLITUDE
        stim = InPort(frozenset({Kind.STIMULUS}), "CME stimulus pulses (value in V)", n, (-limit, limit),
                      role=Role.STIMULI)
        return {"stim": stim}, outputs

    @classmethod
    def declared_ports(cls, settings: BiologicalSettings, key: str = ""):
        """As the base, but ``input_ranges.stim`` may narrow a rig's amplitude limit, never widen it."""
        inputs, outputs = super().declared_ports(settings, key)
        if settings.backend == "rig":
            lo, hi = inputs["stim"].values
            limit = settings.rig.max_amplitude
            if lo < -limit or hi > limit:
                where = f"{key}.input_ranges.stim" if key else "input_ranges.stim"
                raise SettingsError(where, f"[{lo!r}, {hi!r}] exceeds the rig's hard limit of +-{limit!r} V "
                                    "(rig.max_amplitude)")
        return inputs, outputs

    @property
    def tick_period(self) -> float:
        return self.settings.tick

    def warm_up(self) -> None:
        izhikevich.warm_up()
        if self.rig is not None:
            self.rig.warm_up()
            self.rig.open()

    def wait_for_consumers(self, timeout: float) -> None:
        if self.rig is not None:  # the rig's stimulation inlet: until it subscribes, stimuli are held
            self.rig.wait_for_stim_consumer(min(timeout, self.settings.rig.stim_wait))

    def probe_route(self, port: str) -> tuple[str, ...]:
        return ("events",)

    def on_events(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        if self.held:  # the safety interlock: stimulate nothing while the input is not trustworthy
            self.held_stimuli += len(events)
            return
        ok = events["id"] < self.settings.size
        if self.rig is not None:
            if not ok.all():
                self.rejected["unknown_id"] = self.rejected.get("unknown_id", 0) + int((~ok).sum())
            self.rig.stimulate(events[ok], now)
            return
        if not ok.all():
            self.rejected["unknown_id"] = self.rejected.get("unknown_id", 0) + int((~ok).sum())
            events = events[ok]
        if len(events):
            self.pending.append((now, events.copy()))

    def _apply_stimuli(self, t_start: float, t_end: float) -> None:
        keep = []
        dt = self.settings.dt
        for arrival, events in self.pending:
            if arrival >= t_end:
                keep.append((arrival, events))
                continue
            step = step_of(arrival, t_start, dt, self.n_steps - 1)
            ids = events["id"].astype(np.intp)
            np.add.at(self.stim_in[step], ids, events["value"] * self.settings.stim_gain)
            np.add.at(self.stimuli, ids, 1)
            t_stim = t_start + step * dt
            self.open_stimuli.extend([t_stim, int(i), False] for i in ids)
        self.pending = keep

    def tick(self, t_start: float, t_end: float) -> None:
        if self.rig is not None:
            self.rig.tick(local_clock(), self._emit_rig)
            return
        s = self.settings
        self._apply_stimuli(t_start, t_end)
        self.rng.standard_normal(out=self.noise)
        self.noise *= s.noise_sigma
        n = izhikevich.izhikevich_run(self.v, self.u, self.i_stim, *self.abcd, self.i_bias, self.stim_decay,
                                      self.stim_in, self.noise, s.dt * 1e3, self.spike_step, self.spike_id)
        self.stim_in.fill(0.0)
        for j in range(min(n, len(self.spike_step))):
            t_spike = t_start + (self.spike_step[j] + 1) * s.dt
            neuron = int(self.spike_id[j])
            kind = BioEvent.SPONTANEOUS_AP
            for stim in self.open_stimuli:
                if stim[1] == neuron and stim[0] <= t_spike <= stim[0] + s.stim_window:
                    stim[2] = True
                    kind = BioEvent.STIMULATED_AP
            self._emit(t_spike, neuron, kind)
        while self.open_stimuli and self.open_stimuli[0][0] + s.stim_window < t_end:
            t_stim, neuron, answered = self.open_stimuli.popleft()
            if not answered:
                self._emit(t_stim, neuron, BioEvent.PSP)

    def _emit_rig(self, t: float, neuron: int, kind: BioEvent) -> None:
        self.counts[neuron, kind] += 1
        self.outbox.emit("events", t, neuron, float(kind))
        self.outbox.emit("spikes", t, neuron, 1.0)

    def _emit(self, t: float, neuron: int, kind: BioEvent) -> None:
        self.counts[neuron, kind] += 1
        self.outbox.emit("events", t, neuron, float(kind))

    def snapshot(self) -> object:
        return (self.v.copy(), self.u.copy(), self.i_stim.copy(), self.counts.copy(), self.stimuli.copy(),
                [list(st) for st in self.open_stimuli], self.rng.bit_generator.state, dict(self.rejected))

    def restore(self, state: object) -> None:
        v, u, i_stim, counts, stimuli, open_stimuli, rng_state, rejected = state
        self.v[:], self.u[:], self.i_stim[:], self.counts[:], self.stimuli[:] = v, u, i_stim, counts, stimuli
        self.open_stimuli = deque(list(st) for st in open_stimuli)
        self.rng.bit_generator.state = rng_state
        self.rejected = dict(rejected)
        self.pending = []

    def figures(self, now: float, final: bool = False) -> Figures:
        c = self.counts
        stimuli = self.rig.stimuli if self.rig is not None else self.stimuli
        pop = PopulationFigures.of(c[:, 1] + c[:, 2], {"psp": c[:, 0], "stimulated_ap": c[:, 1], "spontaneous_ap": c[:, 2]},
                                   stimuli)
        f = Figures(elapsed=now - self.t0, populations={self.name: pop}, rejected=dict(self.rejected),
                    held={"stimuli": self.held_stimuli})
        if self.rig is not None:
            f.rig = self.rig.summary() if final else self.rig.status()
            if final and f.rig["stim_held_no_consumer"]:
                f.warnings.append(f"{f.rig['stim_held_no_consumer']} stimuli held, never sent: nothing subscribed to "
                                  "the rig's stimulation stream when they came")
            if final and f.rig["unmapped_spikes"]:
                f.warnings.append(f"{f.rig['unmapped_spikes']} detected spikes dropped: their channel maps to no "
                                  "neuron of this node")
        return f

    def close(self) -> None:
        if self.rig is not None:
            self.rig.close()
