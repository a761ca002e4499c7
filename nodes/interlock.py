"""The safety interlock: stimulation and device programming are held while a node's input is stale or lossy,
or while an operator holds them (the dashboard's hold button, through the supervisor's control endpoint)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from spikewire.core.settings import Settings, in_range, non_negative, positive, setting
from spikewire.streams.clock import local_clock
from spikewire.streams.link_rx import EventLog

log = logging.getLogger("spikewire.interlock")


@dataclass(frozen=True)
class SafetySettings(Settings):
    """The interlock: stimulation and memristor programming are held while a node's input is stale or
    lossy, and released automatically once it has been healthy for ``release_after``."""

    interlock: bool = setting(True, "Hold stimulation and device programming on bad input.")
    stale_after: float = setting(0.5, "An input link silent this long (no data, no heartbeat) holds [s].",
                                 check=positive, unit="s")
    max_loss: float = setting(0.05, "An input link losing more than this fraction of packets over "
                              "loss_window holds.", check=in_range(0.0, 1.0), unit="1")
    loss_window: float = setting(2.0, "Window of the loss fraction [s].", check=positive, unit="s")
    release_after: float = setting(0.5, "Input must be healthy this long before a hold is released [s].",
                                   check=non_negative, unit="s")


class Interlock:
    """Holds a node while any of its inputs is stale (an upstream silent for ``stale_after``) or lossy (a
    link losing more than ``max_loss`` of its packets over ``loss_window``, late ones included: to the
    model, late is lost), and releases it once every input has been healthy for ``release_after``.

    While held, the runtime publishes no STIMULUS packet (counted in ``held_events``) and the node refuses
    to program devices (``Node.held``). ``upstreams`` is the runtime's list of
    ``streams.link_rx.Upstream`` (anything with ``source_name``, ``last_heard`` and ``links`` whose items
    have ``label`` and ``loss_fraction(now, window)``); ``clock`` tells the time when ``check`` is not told
    it, so tests drive the interlock with a fake clock and no sleeps.

    An operator hold (``operator_hold``) holds exactly as a fault does (the same counts, the same
    ``Node.held``) and is never released by the inputs' health: only ``operator_release`` lifts it, after
    which the usual rule applies (healthy for ``release_after``: at once if they were healthy all along)."""

    def __init__(self, settings: SafetySettings, upstreams: list, events: EventLog | None = None,
                 clock: Callable[[], float] = local_clock):
        self.settings = settings
        self.upstreams = upstreams
        self.events = events if events is not None else EventLog("")
        self.clock = clock
        self.holds = 0  # times it engaged
        self.held_since: float | None = None
        self.held_total = 0.0  # seconds held in finished holds
        self.held_events = 0  # STIMULUS events not published while held (counted by the runtime)
        self.reason = ""  # why the latest hold engaged
        self.operator: str | None = None  # who holds it by hand (operator_hold), None if nobody
        self.operator_holds = 0  # operator holds asked for (each counted once, held already or not)
        self._healthy_since = 0.0

    @property
    def holding(self) -> bool:
        return self.held_since is not None

    def start(self, t0: float | None = None) -> None:
        """Inputs are judged from ``t0`` (the session's start): a hold needs ``release_after`` from there."""
        self._healthy_since = self.clock() if t0 is None else t0

    def fault(self, now: float) -> str:
        """The first reason to hold at ``now``, or "". Every link's loss window advances, faulty or not."""
        s = self.settings
        bad = ""
        for up in self.upstreams:
            if now - up.last_heard > s.stale_after:
                bad = bad or f"{up.source_name} silent for {now - up.last_heard:.2f} s"
            for link in up.links:
                loss = link.loss_fraction(now, s.loss_window)
                if loss > s.max_loss:
                    bad = bad or (f"{link.label} lost {100 * loss:.1f} % of packets (late ones included) over "
                                  f"{s.loss_window:g} s")
        return bad

    def check(self, now: float | None = None) -> bool:
        """Hold or release as the inputs are at ``now`` (the clock's time if not given). True if the hold
        state changed (the caller tells the node: ``Node.held``)."""
        now = self.clock() if now is None else now
        bad = self.fault(now)
        events = self.events
        if bad:
            self._healthy_since = now
            if self.held_since is not None:
                return False
            self.held_since = now
            self.holds += 1
            self.reason = bad
            log.warning("%s: interlock HOLD %d (stimulation and programming held): %s", events.node, self.holds, bad)
            events.record("interlock_hold", now, reason=bad, hold=self.holds)
            return True
        if self.held_since is None or self.operator is not None \
                or now - self._healthy_since < self.settings.release_after:
            return False
        return self._release(now, f"input healthy for {self.settings.release_after:g} s")

    def operator_hold(self, source: str, now: float | None = None) -> bool:
        """Hold by hand (``source``: who asked); True if the hold state changed. Already held for a fault,
        the hold goes on and now also needs the operator's release."""
        now = self.clock() if now is None else now
        self.operator_holds += 1
        already, self.operator = self.operator, source
        reason = f"operator hold ({source})"
        events = self.events
        if self.held_since is not None:
            if already is None:
                self.reason = f"{reason}; held before for: {self.reason}"
            log.warning("%s: interlock held by the operator (%s) during hold %d", events.node, source, self.holds)
            events.record("interlock_operator_hold", now, source=source, hold=self.holds)
            return False
        self.held_since = now
        self.holds += 1
        self.reason = reason
        log.warning("%s: interlock HOLD %d (stimulation and programming held): %s", events.node, self.holds, reason)
        events.record("interlock_hold", now, reason=reason, hold=self.holds, operator=source)
        return True

    def operator_release(self, source: str, now: float | None = None, judge: bool = True) -> bool:
        """Lift the operator's hold; the hold then ends as the inputs allow (``judge``; without it, at
        once: a node the interlock does not otherwise watch). True if the hold state changed."""
        now = self.clock() if now is None else now
        if self.operator is None:
            return False
        self.operator = None
        log.warning("%s: operator hold lifted (%s)", self.events.node, source)
        self.events.record("interlock_operator_release", now, source=source, hold=self.holds)
        if judge:
            return self.check(now)
        return self.held_since is not None and self._release(now, f"operator release ({source})")

    def _release(self, now: float, why: str) -> bool:
        held = now - self.held_since
        self.held_total += held
        self.held_since = None
        log.warning("%s: interlock released after %.2f s (%s)", self.events.node, held, why)
        self.events.record("interlock_release", now, held_s=held, hold=self.holds)
        return True

    def held_s(self, now: float) -> float:
        """Seconds held so far, the current hold included."""
        return self.held_total + (now - self.held_since if self.held_since is not None else 0.0)

    def summary(self, now: float) -> dict:
        out = {"holds": self.holds, "holding": self.held_since is not None, "held_s": self.held_s(now),
               "held_stimulus_events": self.held_events, "reason": self.reason}
        if self.operator_holds:  # who holds by hand now (None: nobody), and how many times it was asked
            out.update(operator_holds=self.operator_holds, operator=self.operator)
        return out
