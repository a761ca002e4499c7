"""The receive side's per-packet sequence policy (nodes.runtime.LinkIn), on numbers alone: no sockets,
no clock but the times passed in."""

from __future__ import annotations

from spikewire.nodes.runtime import LOSS_MIN_PACKETS, REORDER_WINDOW, RESYNC_AFTER, LinkIn
from spikewire.streams.wire import Kind


def link() -> LinkIn:
    return LinkIn("a.out -> b.in", "in", frozenset({Kind.SPIKE}))


def deliver(ln: LinkIn, *seqs: int) -> list[bool]:
    return [ln.count(s, 1, 1e-4) for s in seqs]


def test_in_order_packets_are_all_delivered():
    ln = link()
    assert deliver(ln, 0, 1, 2, 3) == [True] * 4
    assert (ln.received, ln.gaps, ln.out_of_order, ln.duplicates) == (4, 0, 0, 0)


def test_a_late_packet_fills_its_gap_once():
    ln = link()
    assert deliver(ln, 0, 1, 3, 4) == [True] * 4
    assert ln.gaps == 1
    assert deliver(ln, 2) == [True]  # late, not lost
    assert (ln.gaps, ln.out_of_order) == (0, 1)
    assert deliver(ln, 2) == [False]  # now a repeat
    assert (ln.received, ln.duplicates) == (5, 1)


def test_duplicates_and_rewinds_are_counted_not_delivered():
    ln = link()
    deliver(ln, *range(10))
    assert deliver(ln, 9, 5, 0) == [False] * 3
    assert (ln.received, ln.duplicates, ln.gaps) == (10, 3, 0)


def test_a_first_packet_overtaken_by_the_second_is_late_not_a_repeat():
    ln = link()
    assert deliver(ln, 5, 4, 6) == [True] * 3
    assert deliver(ln, 4) == [False]
    assert (ln.received, ln.out_of_order, ln.duplicates, ln.gaps) == (3, 1, 1, 0)


def test_numbers_far_behind_resync_after_a_streak():
    """A corrupt packet that set the baseline far ahead: RESYNC_AFTER packets in a row far behind it make
    the link start its sequence over (until then they are refused as repeats)."""
    ln = link()
    deliver(ln, 10 * REORDER_WINDOW)
    got = deliver(ln, *range(RESYNC_AFTER))
    assert got[:-1] == [False] * (RESYNC_AFTER - 1) and got[-1] is True
    assert ln.resyncs == 1 and ln.last_seq == RESYNC_AFTER - 1
    assert deliver(ln, RESYNC_AFTER) == [True]


def test_a_refused_packet_is_not_also_counted_lost():
    ln = link()
    deliver(ln, 0, 1)
    assert ln.sequence(2)  # refused for its content (bad_time, wrong_kind), number accounted for
    ln.reject("bad_time")
    deliver(ln, 3)
    assert (ln.received, ln.gaps, ln.malformed) == (3, 0, {"bad_time": 1})


def test_late_drops_count_as_loss_for_the_interlock():
    ln = link()
    ln.delay = 0.02
    t = 0.0
    assert ln.loss_fraction(t, 2.0) == 0.0 and ln.late_fraction(t, 2.0) == 0.0  # windows start here
    for _ in range(LOSS_MIN_PACKETS * 2):
        ln.count(ln.last_seq + 1, 1, 0.05)
        ln.late_dropped += 1  # what the jitter buffer does with a packet past its release time
        t += 0.01
    assert ln.loss_fraction(t, 2.0) == 1.0
    assert ln.late_fraction(t, 2.0) == 1.0
