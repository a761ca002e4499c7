"""Plasticity rules: which pulse a synapse's device gets, decided from spike times, apart from the device.

A rule remembers the spikes it needs and, per connectivity-table row, answers with a ``Pulse`` (LTP or
LTD, with its voltage and width) or None; the memristor node applies the pulse through its crossbar
(nodes/crossbar.py), unless the safety interlock holds it, and counts it. So a rule never knows the
device model, and a device model never knows the rule. Times are arrival times on the node's clock.

* ``srdp``, the 2017 hub's spike-rate-dependent rule: presynaptic spikes never change a weight; on each
  postsynaptic event count the presynaptic neuron's spikes in the preceding ``window``: more than
  ``ltp_above`` gives one potentiating pulse, fewer than ``ltd_below`` one depressing pulse, else nothing.
  Unlike the hub, no decision is taken in the session's first ``window``, when the count cannot be full.
* ``stdp``, pair-based with nearest neighbours (the hub's commented-out variant): a postsynaptic event
  within ``ltp_window`` after the last presynaptic spike gives one LTP pulse; a presynaptic spike within
  ``ltd_window`` after the last postsynaptic event gives one LTD pulse.
* ``none``.

The catch: ``pre`` runs for every presynaptic event, before the node answers it, so it only records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import numpy as np

from spikewire.core.settings import Settings, SettingsError, in_range, positive, setting
from spikewire.nodes.kernels import lazy

mk = lazy("memristor")


@dataclass(frozen=True)
class PlasticitySettings(Settings):
    """Which rule changes the weights, and the pulses it applies."""

    rule: Literal["srdp", "stdp", "none"] = setting("srdp", "srdp (the 2017 hub's rule), stdp or none.")
    window: float = setting(1.0, "SRDP: presynaptic counting window before a postsynaptic event [s].", check=positive, unit="s")
    ltp_above: int = setting(20, "SRDP: more presynaptic spikes than this in the window: one LTP pulse.",
                             check=in_range(0, 1000), unit="count")
    ltd_below: int = setting(5, "SRDP: fewer presynaptic spikes than this in the window: one LTD pulse.",
                             check=in_range(0, 1000), unit="count")
    ltp_window: float = setting(0.1, "STDP: post this soon after pre potentiates [s].", check=positive, unit="s")
    ltd_window: float = setting(0.0375, "STDP: pre this soon after post depresses [s].", check=positive, unit="s")
    ltp_voltage: float = setting(0.8, "LTP pulse amplitude [V] (positive lowers R).", check=positive, unit="V")
    ltp_width: float = setting(100e-6, "LTP pulse width [s].", check=positive, unit="s")
    ltd_voltage: float = setting(-0.9, "LTD pulse amplitude [V] (negative raises R; below about -0.9 V the "
                                 "TiOx model cannot depress a device that sits near r_min).", unit="V")
    ltd_width: float = setting(100e-6, "LTD pulse width [s].", check=positive, unit="s")

    def validate(self, key: str) -> None:
        if self.ltd_voltage >= 0:
            raise SettingsError(f"{key}.ltd_voltage", f"must be < 0, got {self.ltd_voltage!r}")
        if self.ltd_below > self.ltp_above:
            raise SettingsError(f"{key}.ltd_below", f"must not exceed ltp_above ({self.ltp_above}), got {self.ltd_below}")


class Pulse(NamedTuple):
    """One programming pulse a rule asks for."""

    direction: Literal["ltp", "ltd"]
    voltage: float
    """[V]"""
    width: float
    """[s]"""


class Rule:
    """A plasticity rule over one synapse group: ``n_pre`` presynaptic and ``n_post`` postsynaptic ids."""

    name: ClassVar[str]
    learns: ClassVar[bool] = True
    """False: ``on_post`` never pulses (the node skips asking)."""
    acts_on_pre: ClassVar[bool] = False
    """True: a presynaptic event may pulse too (``on_pre`` is asked per row, before the output is read)."""

    def __init__(self, cfg: PlasticitySettings, n_pre: int, n_post: int):
        self.cfg = cfg
        self.ltp = Pulse("ltp", cfg.ltp_voltage, cfg.ltp_width)
        self.ltd = Pulse("ltd", cfg.ltd_voltage, cfg.ltd_width)
        self.t0 = 0.0

    def start(self, t0: float) -> None:
        """The session starts at ``t0``."""
        self.t0 = t0

    def warm_up(self) -> None:
        """Compile what the rule runs (in the node process, before it reports ready). Default: nothing."""

    def pre(self, pre: int, now: float) -> None:
        """Remember presynaptic neuron ``pre``'s spike at ``now`` (every accepted one, before ``on_pre``)."""

    def post(self, post: int, now: float) -> None:
        """Remember postsynaptic neuron ``post``'s event at ``now`` (every accepted one, before ``on_post``)."""

    def on_pre(self, pre: int, post: int, now: float) -> Pulse | None:
        """The pulse a presynaptic spike gives the row (pre, post), if any (asked only if ``acts_on_pre``)."""
        return None

    def on_post(self, pre: int, post: int, now: float) -> Pulse | None:
        """The pulse a postsynaptic event gives the row (pre, post), if any."""
        return None

    # The batched forms the node uses for a packet's events and the rows they touch (a 100 x 10 crossbar: a
    # postsynaptic spike decides 100 rows at once). Each defaults to the per-row hooks above, so a rule that
    # implements only those works unchanged; a rule overrides them to decide in numpy or numba. A decision
    # array holds +1 (LTP), -1 (LTD) or 0 per row, in the rows' order.
    def pre_many(self, pres: np.ndarray, now: float) -> None:
        """``pre`` for each id of ``pres`` (distinct ids), in order."""
        for pre in pres.tolist():
            self.pre(pre, now)

    def decide_pre(self, pres: np.ndarray, posts: np.ndarray, now: float) -> np.ndarray:
        """``on_pre`` for the rows (pres[i], posts[i]); asked only if ``acts_on_pre``."""
        return self._decisions([self.on_pre(a, b, now) for a, b in zip(pres.tolist(), posts.tolist())])

    def decide_post(self, pres: np.ndarray, post: int, now: float) -> np.ndarray:
        """``on_post`` for the rows (pres[i], post) of one postsynaptic event (``post`` already recorded)."""
        return self._decisions([self.on_post(a, post, now) for a in pres.tolist()])

    @staticmethod
    def _decisions(pulses: list) -> np.ndarray:
        return np.array([0 if p is None else 1 if p.direction == "ltp" else -1 for p in pulses], np.int8)


class NoPlasticity(Rule):
    name = "none"
    learns = False


class Srdp(Rule):
    """The 2017 hub's spike-rate-dependent rule (module docstring)."""

    name = "srdp"

    def __init__(self, cfg: PlasticitySettings, n_pre: int, n_post: int):
        super().__init__(cfg, n_pre, n_post)
        depth = max(cfg.ltp_above, cfg.ltd_below, 1) + 1  # enough memory to decide either threshold exactly
        self.ring = np.full((n_pre, depth), -np.inf)
        self.head = np.zeros(n_pre, np.int64)
        self.warming = 0  # decisions skipped before a full window of history existed
        self.window, self.ltp_above, self.ltd_below = cfg.window, cfg.ltp_above, cfg.ltd_below

    def warm_up(self) -> None:
        mk.warm_up()

    def pre(self, pre: int, now: float) -> None:
        mk.record_spike(self.ring, self.head, pre, now)

    def on_post(self, pre: int, post: int, now: float) -> Pulse | None:
        if now - self.t0 < self.window:
            # Less than one window of history: every count would read low and depress.
            # (The 2017 hub did exactly that in its first second; we wait for a full window.)
            self.warming += 1
            return None
        decision = mk.srdp_decision(mk.count_recent(self.ring, pre, now, self.window), self.ltp_above,
                                    self.ltd_below)
        return self.ltp if decision > 0 else self.ltd if decision < 0 else None

    def pre_many(self, pres: np.ndarray, now: float) -> None:
        mk.record_spikes(self.ring, self.head, pres.astype(np.int64), now)

    def decide_post(self, pres: np.ndarray, post: int, now: float) -> np.ndarray:
        if now - self.t0 < self.window:
            self.warming += len(pres)
            return np.zeros(len(pres), np.int8)
        return mk.srdp_decisions(self.ring, pres.astype(np.int64), now, self.window, self.ltp_above, self.ltd_below)


class Stdp(Rule):
    """Pair-based STDP with nearest neighbours (module docstring)."""

    name = "stdp"
    acts_on_pre = True

    def __init__(self, cfg: PlasticitySettings, n_pre: int, n_post: int):
        super().__init__(cfg, n_pre, n_post)
        self.last_pre = np.full(n_pre, -np.inf)
        self.last_post = np.full(n_post, -np.inf)

    def pre(self, pre: int, now: float) -> None:
        self.last_pre[pre] = now

    def post(self, post: int, now: float) -> None:
        self.last_post[post] = now

    def on_pre(self, pre: int, post: int, now: float) -> Pulse | None:
        return self.ltd if 0.0 <= now - self.last_post[post] <= self.cfg.ltd_window else None

    def on_post(self, pre: int, post: int, now: float) -> Pulse | None:
        return self.ltp if 0.0 <= now - self.last_pre[pre] <= self.cfg.ltp_window else None

    def pre_many(self, pres: np.ndarray, now: float) -> None:
        self.last_pre[pres] = now

    def decide_pre(self, pres: np.ndarray, posts: np.ndarray, now: float) -> np.ndarray:
        since = now - self.last_post[posts]
        return -((since >= 0.0) & (since <= self.cfg.ltd_window)).astype(np.int8)

    def decide_post(self, pres: np.ndarray, post: int, now: float) -> np.ndarray:
        since = now - self.last_pre[pres]
        return ((since >= 0.0) & (since <= self.cfg.ltp_window)).astype(np.int8)


RULES: dict[str, type[Rule]] = {r.name: r for r in (Srdp, Stdp, NoPlasticity)}
"""The rules by the name ``plasticity.rule`` gives."""


def rule_for(cfg: PlasticitySettings, n_pre: int, n_post: int) -> Rule:
    """The rule ``cfg`` names, sized for a group of ``n_pre`` presynaptic and ``n_post`` postsynaptic ids."""
    return RULES[cfg.rule](cfg, n_pre, n_post)


def warm_up() -> None:
    """Compile the rules' kernels (``python -m spikewire.nodes.kernels`` caches them at install)."""
    mk.warm_up()
