"""The jitter buffer (streams.link_rx.JitterBuffer) on its own: packets are plain objects and time is the
numbers passed in, so due times, ordering, capacity and the late policy are checked exactly."""

from __future__ import annotations

import pytest

from spikewire.streams.link_rx import JitterBuffer, LinkIn
from spikewire.streams.wire import Kind


def link(label: str = "a.out -> b.in", late: str = "drop", capacity: int = 100) -> LinkIn:
    return LinkIn(label, "in", frozenset({Kind.SPIKE}), delay=0.01, late_policy=late, capacity=capacity)


def test_nothing_leaves_before_it_is_due_and_each_leaves_at_its_own_time():
    jb, ln = JitterBuffer(), link()
    assert jb.push(ln, "p1", due=1.010, now=1.000) is False  # held, not delivered now
    assert jb.push(ln, "p2", due=1.012, now=1.001) is False
    assert (len(jb), ln.buffered, jb.queue[0][0]) == (2, 2, 1.010)
    assert list(jb.pop_due(1.009)) == []
    assert list(jb.pop_due(1.010)) == [(1.010, ln, "p1")]  # due exactly now: out
    assert (len(jb), ln.buffered) == (1, 1)
    assert list(jb.pop_due(1.1)) == [(1.012, ln, "p2")]  # a late wake still reports the packet's own due time
    assert (len(jb), ln.buffered, ln.late_dropped, ln.late_delivered) == (0, 0, 0, 0)


def test_packets_leave_in_due_order_across_links_and_in_arrival_order_on_ties():
    jb, a, b = JitterBuffer(), link("a.out -> n.in"), link("b.out -> n.in")
    jb.push(a, "a1", 2.0, 1.0)
    jb.push(b, "b1", 1.5, 1.0)
    jb.push(a, "a2", 1.5, 1.0)  # same due time as b1, arrived after it
    jb.push(b, "b2", 3.0, 1.0)
    assert [(due, p) for due, _, p in jb.pop_due(2.5)] == [(1.5, "b1"), (1.5, "a2"), (2.0, "a1")]
    assert (a.buffered, b.buffered, jb.queue[0][0]) == (0, 1, 3.0)


def test_a_full_link_drops_arrivals_and_counts_them_without_touching_other_links():
    jb, full, other = JitterBuffer(), link(capacity=2), link("c.out -> n.in", capacity=2)
    assert [jb.push(full, i, 5.0 + i, 1.0) for i in range(4)] == [False] * 4
    assert (full.buffered, full.buffer_overflow, len(jb)) == (2, 2, 2)
    assert jb.push(other, "x", 5.0, 1.0) is False and other.buffered == 1 and other.buffer_overflow == 0
    list(jb.pop_due(5.0))  # frees one place of ``full``
    assert full.buffered == 1
    jb.push(full, "again", 9.0, 5.0)
    assert (full.buffered, full.buffer_overflow) == (2, 2)


@pytest.mark.parametrize("policy, delivered", [("drop", False), ("deliver", True)])
def test_a_late_packet_is_dropped_or_delivered_at_once_as_its_link_says_and_counted(policy, delivered):
    jb, ln = JitterBuffer(), link(late=policy)
    assert jb.push(ln, "late", due=1.000, now=1.004) is delivered
    assert jb.push(ln, "on the dot", due=2.0, now=2.0) is delivered  # due now is not early: it is late by 0
    assert len(jb) == 0 and ln.buffered == 0
    assert (ln.late_dropped, ln.late_delivered) == ((2, 0) if policy == "drop" else (0, 2))
    assert ln.lateness.count == 2
    assert ln.lateness.max == pytest.approx(0.004) and ln.lateness.total == pytest.approx(0.004)


def test_a_late_packet_does_not_use_a_place_in_a_full_buffer():
    jb, ln = JitterBuffer(), link(late="deliver", capacity=1)
    jb.push(ln, "held", 5.0, 1.0)
    assert jb.push(ln, "late", 0.5, 1.0) is True
    assert (ln.buffered, ln.buffer_overflow, ln.late_delivered) == (1, 0, 1)


def test_late_drops_and_overflow_are_loss_to_the_interlock():
    jb, ln = JitterBuffer(), link(capacity=0)
    ln.loss_fraction(0.0, 2.0)
    for i in range(20):
        ln.count(i, 1, 0.001)
        jb.push(ln, i, due=0.5 if i % 2 else 0.05, now=0.1)  # odd: no room; even: late, dropped
    assert (ln.buffer_overflow, ln.late_dropped, ln.received) == (10, 10, 20)
    assert ln.loss_fraction(1.0, 2.0) == 1.0
