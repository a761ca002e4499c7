"""The receive side's per-packet sequence policy (streams.link_rx: ``sequence_verdict`` on its own, then as
``LinkIn`` counts with it), on numbers alone: no sockets, no clock but the times passed in."""

from __future__ import annotations

from spikewire.streams.link_rx import (AHEAD, DUPLICATE, FIRST, LATE, LOSS_MIN_PACKETS, NEXT, REORDER_WINDOW, RESYNC,
                                       RESYNC_AFTER, LinkIn, SequenceState, sequence_verdict)
from spikewire.streams.wire import Kind


def verdicts(s: SequenceState, *seqs: int) -> list:
    return [sequence_verdict(s, n) for n in seqs]


def link() -> LinkIn:
    return LinkIn("a.out -> b.in", "in", frozenset({Kind.SPIKE}))


def deliver(ln: LinkIn, *seqs: int) -> list[bool]:
    return [ln.count(s, 1, 1e-4) for s in seqs]


# --- the function ----------------------------------------------------------------------------------
def test_the_first_number_sets_the_baseline_wherever_it_starts():
    s = SequenceState()
    assert verdicts(s, 7, 8, 9) == [FIRST, NEXT, NEXT]
    assert (s.first, s.last, s.gaps, s.out_of_order) == (7, 9, 0, 0)


def test_a_skip_counts_each_missing_number_once():
    s = SequenceState()
    assert verdicts(s, 0, 4, 5, 9) == [FIRST, AHEAD, NEXT, AHEAD]
    assert s.gaps == 6 and s.missing == {1, 2, 3, 6, 7, 8}


def test_late_numbers_fill_their_holes_and_then_are_repeats():
    s = SequenceState()
    verdicts(s, 0, 4)
    assert verdicts(s, 2, 1, 2, 3, 3) == [LATE, LATE, DUPLICATE, LATE, DUPLICATE]
    assert (s.gaps, s.out_of_order, s.last, s.missing) == (0, 3, 4, set())


def test_rewinds_within_the_window_are_repeats_and_nothing_is_counted():
    s = SequenceState()
    verdicts(s, *range(10))
    assert verdicts(s, 9, 5, 0) == [DUPLICATE] * 3
    assert (s.gaps, s.out_of_order, s.last, s.behind_streak) == (0, 0, 9, 0)


def test_numbers_below_an_overtaken_first_are_late_once_within_the_window():
    s = SequenceState()
    first = 10_000
    assert verdicts(s, first, first - 2, first - 1, first - 2, first + 1) == [FIRST, LATE, LATE, DUPLICATE, NEXT]
    assert (s.first, s.out_of_order, s.gaps) == (first, 2, 0)
    assert verdicts(s, first - REORDER_WINDOW - 1, first - REORDER_WINDOW) == [DUPLICATE, LATE]  # the window's edge
    assert s.out_of_order == 3


def test_a_hole_older_than_the_window_stays_lost():
    s = SequenceState()
    verdicts(s, 0, 2 * REORDER_WINDOW)
    assert s.gaps == 2 * REORDER_WINDOW - 1
    assert len(s.missing) == REORDER_WINDOW  # only the last REORDER_WINDOW numbers can still arrive late
    assert sequence_verdict(s, 5) == DUPLICATE and s.gaps == 2 * REORDER_WINDOW - 1
    assert sequence_verdict(s, REORDER_WINDOW) == LATE and s.gaps == 2 * REORDER_WINDOW - 2


def test_the_remembered_holes_stay_bounded():
    s = SequenceState()
    n = 0
    for _ in range(5 * REORDER_WINDOW):  # every other number lost
        sequence_verdict(s, n)
        n += 2
    assert s.gaps == 5 * REORDER_WINDOW - 1
    assert REORDER_WINDOW // 2 <= len(s.missing) <= 2 * REORDER_WINDOW
    assert s.last - 1 in s.missing


def test_a_corrupt_baseline_is_dropped_after_a_streak_far_behind():
    s = SequenceState()
    verdicts(s, 0, 1, 10 * REORDER_WINDOW)  # a corrupt number sets the baseline far ahead
    got = verdicts(s, *range(2, 2 + RESYNC_AFTER))
    assert got == [DUPLICATE] * (RESYNC_AFTER - 1) + [RESYNC]
    assert (s.resyncs, s.first, s.last) == (1, RESYNC_AFTER + 1, RESYNC_AFTER + 1)
    assert s.missing == set() and s.gaps == 10 * REORDER_WINDOW - 2  # what was counted lost stays counted
    assert sequence_verdict(s, RESYNC_AFTER + 2) == NEXT


def test_a_late_fill_breaks_the_streak():
    s = SequenceState()
    verdicts(s, 0, 2, 10 * REORDER_WINDOW)
    verdicts(s, *range(100, 100 + RESYNC_AFTER - 1))  # one short of a resync
    assert s.behind_streak == RESYNC_AFTER - 1
    assert sequence_verdict(s, 10 * REORDER_WINDOW - 1) == LATE  # a hole of ours: the baseline is right
    assert s.behind_streak == 0
    assert sequence_verdict(s, 200) == DUPLICATE and s.resyncs == 0


def test_a_restart_keeps_the_counts_and_takes_any_number_next():
    s = SequenceState()
    verdicts(s, 0, 3)
    s.hint = 9
    s.restart()
    assert (s.last, s.hint, s.missing, s.gaps) == (-1, 0, set(), 2)
    assert verdicts(s, 0, 1) == [FIRST, NEXT]


def test_trailing_is_what_the_heartbeat_says_was_sent_after_the_last_arrival():
    s = SequenceState()
    s.hint = 50
    assert s.trailing == 0  # nothing arrived yet: a late joiner is owed nothing
    verdicts(s, 10, 11)
    assert s.trailing == 38


# --- LinkIn's counts with it ---------------------------------------------------------------------------
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
    assert sequence_verdict(ln.seq, 2) == NEXT  # refused for its content (bad_time, wrong_kind), number accounted for
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


def test_loss_is_judged_over_its_window_only():
    ln = link()
    ln.loss_fraction(0.0, 1.0)
    deliver(ln, 0, *range(11, 41))  # 10 lost, 31 arrived
    assert ln.loss_fraction(0.5, 1.0) == 10 / 41
    deliver(ln, *range(41, 141))  # 100 more, none lost
    assert ln.loss_fraction(1.6, 2.0) == 10 / 141  # the loss is inside 2 s
    assert ln.loss_fraction(1.6, 1.0) == 0.0  # and outside 1 s, which saw 100 packets arrive


def test_too_few_packets_are_not_judged():
    ln = link()
    ln.loss_fraction(0.0, 1.0)
    deliver(ln, 0, LOSS_MIN_PACKETS - 2)  # 2 arrived, LOSS_MIN_PACKETS - 3 lost: one short
    assert ln.loss_fraction(0.1, 1.0) == 0.0
    deliver(ln, LOSS_MIN_PACKETS - 1)
    assert ln.loss_fraction(0.2, 1.0) == (LOSS_MIN_PACKETS - 3) / LOSS_MIN_PACKETS
