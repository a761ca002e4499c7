"""The safety interlock (nodes.interlock.Interlock) on a fake clock: upstreams without sockets, whose
silence and losses are set by hand, so every hold and release happens at an exact time. No sleeps."""

from __future__ import annotations

import pytest

from spikewire.nodes.interlock import Interlock, SafetySettings
from spikewire.streams.link_rx import LOSS_MIN_PACKETS, EventLog, LinkIn, Upstream
from spikewire.streams.wire import Kind


class FakeClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


SAFETY = SafetySettings(stale_after=0.5, max_loss=0.05, loss_window=2.0, release_after=0.5)


def upstream(src: str = "a.out", dst: str = "b.in") -> Upstream:
    return Upstream(1, "tcp://127.0.0.1:1", None, [LinkIn(f"{src} -> {dst}", "in", frozenset({Kind.SPIKE}))])


def setup(*ups: Upstream, safety: SafetySettings = SAFETY):
    clock, events = FakeClock(), EventLog("b")
    il = Interlock(safety, list(ups), events, clock)
    il.start()
    return il, clock, events


def heard(clock: FakeClock, *ups: Upstream) -> None:
    for up in ups:
        up.last_heard = clock.t


def test_a_silent_upstream_holds_once_it_has_been_silent_for_stale_after():
    up = upstream()
    il, clock, events = setup(up)
    clock.t = 0.5
    assert il.check() is False and not il.holding  # silent for exactly stale_after: not yet
    clock.t = 0.625
    assert il.check() is True
    assert (il.holding, il.held_since, il.holds, il.reason) == (True, 0.625, 1, "a.out silent for 0.62 s")
    assert events.take() == [{"event": "interlock_hold", "t": 0.625, "node": "b", "reason": "a.out silent for 0.62 s",
                              "hold": 1}]
    clock.t = 0.75
    assert il.check() is False and il.holds == 1  # still bad: the same hold, not a new one
    assert events.take() == []


def test_a_lossy_link_holds_and_late_drops_count_as_loss():
    up = upstream()
    link = up.links[0]
    il, clock, events = setup(up)
    il.check(0.0)  # the loss window starts here
    for seq in range(LOSS_MIN_PACKETS * 2):
        link.count(seq, 1, 0.001)
    link.late_dropped += 2  # arrived after their due time and dropped by the jitter buffer: 2 of 40 lost, 5 %
    clock.t = 0.1
    heard(clock, up)
    assert il.check() is False  # 5 % is not beyond max_loss
    link.late_dropped += 1
    clock.t = 0.2
    heard(clock, up)
    assert il.check() is True
    assert il.reason == "a.out -> b.in lost 7.5 % of packets (late ones included) over 2 s"


def test_release_comes_release_after_the_last_bad_check_and_sums_the_time_held():
    up = upstream()
    il, clock, events = setup(up)
    clock.t = 1.0
    assert il.check() is True  # silent since 0
    clock.t = 1.25
    heard(clock, up)
    assert il.check() is False and il.holding  # healthy for 0.25 s since the last bad check
    clock.t = 1.499
    heard(clock, up)
    assert il.check() is False and il.holding
    clock.t = 1.5
    heard(clock, up)
    assert il.check() is True and not il.holding
    assert (il.holds, il.held_total, il.held_s(3.0)) == (1, 0.5, 0.5)
    assert events.take()[-1] == {"event": "interlock_release", "t": 1.5, "node": "b", "held_s": 0.5, "hold": 1}


def test_a_relapse_while_waiting_restarts_the_wait():
    up = upstream()
    il, clock, _ = setup(up)
    il.check(1.0)
    heard(clock, up)  # heard at 0: still silent at 1.25
    clock.t = 1.25
    assert il.check() is False
    clock.t = 1.5
    heard(clock, up)
    assert il.check() is False and il.holding  # healthy now, but bad at 1.25: 0.25 s is not enough
    clock.t = 1.75
    heard(clock, up)
    assert il.check() is True and not il.holding


def test_holds_are_counted_and_the_summary_says_so():
    up = upstream()
    il, clock, events = setup(up)
    for start in (1.0, 3.0):
        clock.t = start
        il.check()
        clock.t = start + 0.5
        heard(clock, up)
        il.check()
    clock.t = 5.0
    il.check()  # silent again since 3.5: a third hold
    il.held_events += 7
    assert il.summary(5.25) == {"holds": 3, "holding": True, "held_s": 1.25, "held_stimulus_events": 7,
                                "reason": "a.out silent for 1.50 s"}
    assert [e["event"] for e in events.take()] == ["interlock_hold", "interlock_release"] * 2 + ["interlock_hold"]


def test_every_link_is_judged_at_every_check_and_the_first_fault_is_the_reason():
    quiet, lossy = upstream("q.out"), upstream("l.out")
    il, clock, _ = setup(quiet, lossy)
    il.check(0.0)
    lossy.links[0].count(0, 1, 0.001)
    lossy.links[0].count(LOSS_MIN_PACKETS * 2, 1, 0.001)  # 39 lost of 41
    clock.t = 0.75
    heard(clock, lossy)
    assert il.check() is True
    assert il.reason == "q.out silent for 0.75 s"  # the first fault found names the hold
    assert il.fault(0.8) == "q.out silent for 0.80 s"
    assert len(lossy.links[0].loss_marks) == 3  # its loss window advanced at every check all the same


@pytest.mark.parametrize("release_after", [0.0, 0.2])
def test_release_after_zero_releases_at_the_first_healthy_check(release_after):
    up = upstream()
    il, clock, _ = setup(up, safety=SafetySettings(stale_after=0.5, release_after=release_after))
    clock.t = 1.0
    il.check()
    clock.t = 1.1
    heard(clock, up)
    assert il.check() is (release_after == 0.0)
