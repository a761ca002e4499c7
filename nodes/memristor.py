"""Memristor synapses: a crossbar of TiOx devices whose conductance scales what each spike delivers.

A synapse group ``<syn>`` has a connectivity table of rows ``(pre, post, wordline, bitline)`` as the
original Southampton hub had, and three ports: ``<syn>.pre`` (presynaptic spikes or typed biological
events), ``<syn>.post`` (postsynaptic ones, which trigger plasticity) and ``<syn>.out``. The node is
event-driven: every accepted presynaptic event is answered at once with one output event per table row,
``id = post`` and ``value = out_min + (out_max - out_min) * g``, where ``g`` in [0, 1] is the device's
conductance normalised over the device range. ``output = "stimulus"`` makes these CME stimulus
amplitudes [V] for a biological neuron; ``"synaptic"`` makes them synaptic current steps [A] for a
silicon neuron.

Plasticity is the hub's spike-rate-dependent rule (SRDP): presynaptic spikes never change a weight; on
each postsynaptic event count the presynaptic neuron's spikes in the preceding ``window`` (arrival times
on this node's clock): more than ``ltp_above`` gives one potentiating pulse, fewer than ``ltd_below`` one
depressing pulse, else nothing. Pulses go through the device model (``kernels.memristor``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from spikewire.launch.settings import Settings, SettingsError, non_empty, non_negative, positive, setting
from spikewire.nodes.base import InPort, Node, NodeSettings, OutPort
from spikewire.nodes.kernels import memristor as mk
from spikewire.streams.wire import Kind


@dataclass(frozen=True)
class DeviceParams(Settings):
    """TiOx compact-model fit (Messaris et al.); resistances in ohms."""

    a0: float = setting(17.16e3, "r_p(v) = a0 + a1 v: intercept [Ohm].")
    a1: float = setting(0.15e3, "r_p slope [Ohm/V].")
    b0: float = setting(24.81e3, "r_n(v) = b0 + b1 v: intercept [Ohm].")
    b1: float = setting(17.91e3, "r_n slope [Ohm/V].")
    a_p: float = setting(-4.86e-5, "A_p [1/(Ohm s)].")
    t_p: float = setting(0.12, "t_p [V].", check=positive)
    a_n: float = setting(1.09e-3, "A_n [1/(Ohm s)].")
    t_n: float = setting(0.18, "t_n [V].", check=positive)
    r_min: float = setting(10e3, "Lowest resistance the device reaches [Ohm].", check=positive)
    r_max: float = setting(17e3, "Highest resistance the device reaches [Ohm].", check=positive)

    def validate(self, key: str) -> None:
        if self.r_max <= self.r_min:
            raise SettingsError(f"{key}.r_max", f"must be above r_min ({self.r_min!r}), got {self.r_max!r}")

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in mk.PARAM_NAMES], dtype=np.float64)


@dataclass(frozen=True)
class SRDPSettings(Settings):
    """The 2017 hub's spike-rate-dependent plasticity."""

    enabled: bool = setting(True, "Apply plasticity at all.")
    window: float = setting(1.0, "Presynaptic counting window before a postsynaptic event [s].", check=positive)
    ltp_above: int = setting(20, "More presynaptic spikes than this in the window: one LTP pulse.", check=non_negative)
    ltd_below: int = setting(5, "Fewer presynaptic spikes than this in the window: one LTD pulse.", check=non_negative)
    ltp_voltage: float = setting(0.8, "LTP pulse amplitude [V] (positive lowers R).", check=positive)
    ltp_width: float = setting(100e-6, "LTP pulse width [s].", check=positive)
    ltd_voltage: float = setting(-0.75, "LTD pulse amplitude [V] (negative raises R).")
    ltd_width: float = setting(100e-6, "LTD pulse width [s].", check=positive)

    def validate(self, key: str) -> None:
        if self.ltd_voltage >= 0:
            raise SettingsError(f"{key}.ltd_voltage", f"must be < 0, got {self.ltd_voltage!r}")
        if self.ltd_below > self.ltp_above:
            raise SettingsError(f"{key}.ltd_below", f"must not exceed ltp_above ({self.ltp_above}), got {self.ltd_below}")


@dataclass(frozen=True)
class SynapseSettings(Settings):
    table: tuple[tuple[int, int, int, int], ...] = setting(((0, 0, 0, 0),), "Rows (pre, post, wordline, bitline).",
                                                          check=non_empty)
    output: Literal["stimulus", "synaptic"] = setting("synaptic", "What out events are: CME stimuli [V] or synaptic steps [A].")
    out_min: float = setting(0.0, "Output value at the lowest conductance.")
    out_max: float = setting(1.0, "Output value at the highest conductance.")
    pre_types: tuple[int, ...] = setting((1, 2), "Biological event types that count as presynaptic spikes.")
    post_types: tuple[int, ...] = setting((0, 1, 2), "Biological event types that trigger plasticity.")
    plasticity: SRDPSettings = setting(doc="Plasticity rule.", factory=SRDPSettings)

    def validate(self, key: str) -> None:
        for i, row in enumerate(self.table):
            if min(row) < 0:
                raise SettingsError(f"{key}.table[{i}]", f"indices must be >= 0, got {list(row)}")


@dataclass(frozen=True)
class MemristorSettings(NodeSettings):
    rows: int = setting(1, "Crossbar wordlines.", check=positive)
    cols: int = setting(1, "Crossbar bitlines.", check=positive)
    r_init: float = setting(14e3, "Initial resistance of every device [Ohm].", check=positive)
    device: DeviceParams = setting(doc="Device model parameters.", factory=DeviceParams)
    synapses: dict[str, SynapseSettings] = setting(doc="Synapse groups by name.", factory=dict, check=non_empty)

    def validate(self, key: str) -> None:
        if not self.device.r_min <= self.r_init <= self.device.r_max:
            raise SettingsError(f"{key}.r_init", f"must lie in the device range [{self.device.r_min!r}, "
                                f"{self.device.r_max!r}], got {self.r_init!r}")
        used: dict[tuple[int, int], str] = {}
        for name, syn in self.synapses.items():
            for i, (_, _, wl, bl) in enumerate(syn.table):
                k = f"{key}.synapses.{name}.table[{i}]"
                if wl >= self.rows or bl >= self.cols:
                    raise SettingsError(k, f"device ({wl}, {bl}) is outside the {self.rows}x{self.cols} crossbar")
                if (wl, bl) in used:
                    raise SettingsError(k, f"device ({wl}, {bl}) is already used by synapse {used[(wl, bl)]!r}")
                used[(wl, bl)] = name


def _of_types(events: np.ndarray, types: frozenset[int]) -> np.ndarray:
    """Typed biological events whose type (``value``) is one of ``types``."""
    return events[np.isin(events["value"], list(types))]


class SynapseGroup:
    """One connectivity table over the shared crossbar, with its SRDP spike memory."""

    def __init__(self, name: str, cfg: SynapseSettings, r_min: float, r_max: float):
        self.name = name
        self.cfg = cfg
        table = np.array(cfg.table, dtype=np.int64)
        self.pre, self.post, self.wl, self.bl = table.T
        self.rows_by_pre = {int(p): np.flatnonzero(self.pre == p) for p in np.unique(self.pre)}
        self.rows_by_post = {int(p): np.flatnonzero(self.post == p) for p in np.unique(self.post)}
        rule = cfg.plasticity
        depth = max(rule.ltp_above, rule.ltd_below) + 1  # enough memory to decide either threshold exactly
        self.ring = np.full((int(self.pre.max()) + 1, depth), -np.inf)
        self.head = np.zeros(len(self.ring), np.int64)
        self.pre_types = frozenset(cfg.pre_types)
        self.post_types = frozenset(cfg.post_types)
        self.g_lo, self.g_hi = 1.0 / r_max, 1.0 / r_min
        self.ltp = 0
        self.ltd = 0
        self.port_out = f"{name}.out"

    def value(self, r: float) -> float:
        g = (1.0 / r - self.g_lo) / (self.g_hi - self.g_lo)
        return self.cfg.out_min + (self.cfg.out_max - self.cfg.out_min) * g


class MemristorNode(Node):
    kind = "memristor"
    Settings = MemristorSettings

    def __init__(self, name: str, settings: MemristorSettings):
        super().__init__(name, settings)
        self.params = settings.device.as_array()
        self.r = np.full((settings.rows, settings.cols), settings.r_init)
        self.r_start = self.r.copy()
        self.groups = {s: SynapseGroup(s, cfg, settings.device.r_min, settings.device.r_max)
                       for s, cfg in settings.synapses.items()}
        self.rejected: dict[str, int] = {}

    @classmethod
    def ports(cls, settings: MemristorSettings):
        inputs, outputs = {}, {}
        either = frozenset({Kind.SPIKE, Kind.BIO})
        for s, cfg in settings.synapses.items():
            inputs[f"{s}.pre"] = InPort(either, f"presynaptic events of {s}")
            inputs[f"{s}.post"] = InPort(either, f"postsynaptic events of {s} (trigger plasticity)")
            kind = Kind.STIMULUS if cfg.output == "stimulus" else Kind.SPIKE
            outputs[f"{s}.out"] = OutPort(kind, f"weighted output of {s}")
        return inputs, outputs

    def warm_up(self) -> None:
        mk.warm_up()

    def _reject(self, reason: str, n: int) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + n

    def on_events(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        syn, _, role = port.rpartition(".")
        group = self.groups[syn]
        if role == "pre":
            if kind == Kind.BIO:
                events = _of_types(events, group.pre_types)
            self._on_pre(group, events, now)
        else:
            if kind == Kind.BIO:
                events = _of_types(events, group.post_types)
            self._on_post(group, events, now)

    def _on_pre(self, group: SynapseGroup, events: np.ndarray, now: float) -> None:
        for ident in events["id"]:
            rows = group.rows_by_pre.get(int(ident))
            if rows is None:
                self._reject("unknown_id", 1)
                continue
            mk.record_spike(group.ring, group.head, int(ident), now)
            for row in rows:
                r = self.r[group.wl[row], group.bl[row]]
                self.outbox.emit(group.port_out, now, int(group.post[row]), group.value(r))

    def _on_post(self, group: SynapseGroup, events: np.ndarray, now: float) -> None:
        rule = group.cfg.plasticity
        for ident in events["id"]:
            rows = group.rows_by_post.get(int(ident))
            if rows is None:
                self._reject("unknown_id", 1)
                continue
            if not rule.enabled:
                continue
            for row in rows:
                pre = int(group.pre[row])
                n = mk.count_recent(group.ring, pre, now, rule.window)
                decision = mk.srdp_decision(n, rule.ltp_above, rule.ltd_below)
                if decision == 0:
                    continue
                wl, bl = group.wl[row], group.bl[row]
                if decision > 0:
                    self.r[wl, bl] = mk.apply_pulse(self.r[wl, bl], rule.ltp_voltage, rule.ltp_width, self.params)
                    group.ltp += 1
                else:
                    self.r[wl, bl] = mk.apply_pulse(self.r[wl, bl], rule.ltd_voltage, rule.ltd_width, self.params)
                    group.ltd += 1

    def devices(self):
        for name, g in self.groups.items():
            single = len(g.pre) == 1
            for row in range(len(g.pre)):
                label = name if single else f"{name}[{g.pre[row]}->{g.post[row]}]"
                yield label, g, int(g.wl[row]), int(g.bl[row])

    def status(self, now: float) -> dict:
        return {"resistance": {label: float(self.r[wl, bl]) for label, _, wl, bl in self.devices()}}

    def summary(self, now: float) -> dict:
        mems = [{"name": label, "wordline": wl, "bitline": bl, "r_start": float(self.r_start[wl, bl]),
                 "r_end": float(self.r[wl, bl]), "ltp_pulses": g.ltp, "ltd_pulses": g.ltd}
                for label, g, wl, bl in self.devices()]
        return {"memristors": mems, "rejected": dict(self.rejected)}
