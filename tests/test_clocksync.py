"""The NTP-style clock estimator and the ZAP allow-list, on their own (the live versions are in
test_sites.py and test_security.py)."""

from __future__ import annotations

import random

import pytest
import zmq
from zmq.utils.z85 import decode as z85_decode

from spikewire.streams.clocksync import ClockEstimator
from spikewire.streams.security import Refusals, ZapHandler


def _exchange(theta: float, up: float, down: float, hold: float, t1: float) -> tuple[float, float, float, float]:
    """One ping/pong: our clock t1, theirs = ours + theta; ``up``/``down`` one-way delays, ``hold`` their
    time between receiving the ping and answering."""
    t2 = t1 + up + theta
    t3 = t2 + hold
    t4 = t3 - theta + down
    return t1, t2, t3, t4


def test_symmetric_paths_give_the_exact_offset_and_round_trip():
    c = ClockEstimator(window=4)
    assert not c.synced and c.offset == 0.0
    assert c.add(*_exchange(theta=0.25, up=0.01, down=0.01, hold=0.003, t1=100.0))
    assert c.offset == pytest.approx(0.25, abs=1e-12) and c.rtt == pytest.approx(0.02, abs=1e-12)


def test_queueing_is_filtered_by_the_lowest_delay_exchange():
    rng = random.Random(1)
    c = ClockEstimator(window=16)
    for i in range(16):
        # 5 ms each way plus random queueing of up to 30 ms on either side: each exchange alone is off by
        # up to 15 ms; the least-queued one is nearly exact.
        c.add(*_exchange(theta=-1.5, up=0.005 + rng.uniform(0, 0.03) * (i != 7), down=0.005
                         + rng.uniform(0, 0.03) * (i != 7), hold=0.001, t1=10.0 + i))
    assert c.offset == pytest.approx(-1.5, abs=1e-9) and c.rtt == pytest.approx(0.01, abs=1e-9)


def test_an_asymmetric_path_shifts_the_offset_by_half_the_difference():
    c = ClockEstimator()
    c.add(*_exchange(theta=0.0, up=0.030, down=0.010, hold=0.0, t1=5.0))
    assert c.offset == pytest.approx(0.010, abs=1e-12)  # (30 - 10) / 2: no two-way method can see this


def test_inconsistent_times_are_counted_not_used_and_reset_forgets():
    c = ClockEstimator()
    assert not c.add(1.0, 5.0, 4.0, 2.0)  # answered before it was received
    assert not c.add(2.0, 5.0, 5.0, 1.0)  # came back before it left
    assert c.rejected == 2 and not c.synced
    c.add(*_exchange(0.1, 0.001, 0.001, 0.0, 3.0))
    c.reset()
    assert not c.synced and c.offset == 0.0 and c.exchanges == 1
    with pytest.raises(ValueError):
        ClockEstimator(window=0)


def test_zap_admits_listed_keys_and_counts_every_refusal():
    ctx = zmq.Context()
    try:
        good_pub, _ = zmq.curve_keypair()
        bad_pub, _ = zmq.curve_keypair()
        refusals = Refusals("test")
        zap = ZapHandler(ctx, {good_pub: "padova"}, refusals)

        def request(mechanism: bytes, *creds: bytes) -> list[bytes]:
            return [b"1.0", b"7", b"spikewire", b"10.0.0.9", b"", mechanism, *creds]

        assert zap.answer(request(b"CURVE", z85_decode(good_pub)))[2] == b"200"
        assert zap.answer(request(b"CURVE", z85_decode(good_pub)))[4] == b"padova"
        assert zap.answer(request(b"CURVE", z85_decode(bad_pub)))[2] == b"400"
        assert zap.answer(request(b"NULL"))[2] == b"400"
        assert zap.answer([b"0.9", b"x"])[2] == b"500"
        assert zap.admitted == {"padova": 2}
        assert refusals.counts["key_not_allowed"] == 1 and refusals.counts["mechanism_mismatch"] == 1
        assert refusals.counts["protocol_error"] == 1 and refusals.total == 3
        zap.close()
    finally:
        ctx.destroy(linger=0)


def test_a_ping_flood_is_read_in_budgets_and_answered_at_a_bounded_rate():
    """A subscriber pinging thousands of times gets at most MAX_PONGS_PER_SECOND answers, and the publisher
    reads its subscribers at most POLL_BUDGET messages at a time (saying when it left some)."""
    import time

    import numpy as np

    from spikewire.streams.wire import EVENT_DTYPE, Kind, decode, encode
    from spikewire.streams.zmq_link import MAX_PONGS_PER_SECOND, POLL_BUDGET, Publisher

    ctx = zmq.Context()
    try:
        pub = Publisher(ctx, Kind.SPIKE, 9, "tcp://127.0.0.1:*", remote=True)
        sub = ctx.socket(zmq.XSUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.send(b"\x01")
        sub.connect(pub.endpoint)
        deadline = time.monotonic() + 10
        while pub.poll_subscriptions() < 1:
            assert time.monotonic() < deadline, "no subscription"
            pub.socket.poll(5)
        ping = np.zeros(1, EVENT_DTYPE)
        for i in range(900):  # within the pipe's default high-water mark (1000)
            ping[0] = (1.0, i, 0.0)
            sub.send(encode(Kind.CLOCK, 0, 0, 1.0, ping))
        reads = 0
        while time.monotonic() < deadline and pub.pongs + pub.pings_ignored < 900:
            pub.poll_subscriptions()
            reads += 1
            if pub.more:
                assert pub.pongs + pub.pings_ignored <= reads * POLL_BUDGET
            else:
                pub.socket.poll(5)  # the rest of the flood still on its way
        assert pub.pongs + pub.pings_ignored == 900
        assert pub.pongs <= 2 * MAX_PONGS_PER_SECOND  # the flood may straddle one second boundary
        got = []
        while sub.poll(200):
            got.append(decode(sub.recv()))
        assert len([p for p in got if p.kind == Kind.CLOCK]) == pub.pongs
        sub.close()
        pub.close()
    finally:
        ctx.destroy(linger=0)


def test_readiness_waits_for_the_expected_nodes_by_name():
    """A subscriber from elsewhere (another site, a tap) cannot stand in for a node the port must feed."""
    from spikewire.nodes.probe import PulseSource, SourceSettings
    from spikewire.nodes.runtime import Runtime
    from spikewire.streams.zmq_link import Subscriber

    ctx = zmq.Context()
    try:
        rt = Runtime(PulseSource("src", SourceSettings()), ctx, {"out": 1}, {"out": {"loc"}})
        other = Subscriber(ctx, name="rem")
        other.connect(rt.endpoints["out"])
        with pytest.raises(TimeoutError, match="out: loc"):
            rt.wait_for_subscribers(0.5)
        assert rt.publishers["out"].joined == {"rem"}
        mine = Subscriber(ctx, name="loc")
        mine.connect(rt.endpoints["out"])
        rt.wait_for_subscribers(10.0)
        assert rt.publishers["out"].joined == {"rem", "loc"}
        other.close()
        mine.close()
        rt.close()
    finally:
        ctx.destroy(linger=0)


def test_reordering_fills_holes_and_only_a_corrupt_baseline_resyncs():
    from spikewire.nodes.runtime import RESYNC_AFTER, LinkIn

    link = LinkIn("a -> b", "in", frozenset())
    order = [*range(0, 84), 100, *range(84, 100), *range(101, 200)]  # one packet 16 places early
    for seq in order:
        link.count(seq, 1, 0.001)
    assert (link.gaps, link.out_of_order, link.resyncs, link.received) == (0, 16, 0, 200)

    link = LinkIn("a -> b", "in", frozenset())
    link.count(1 << 40, 1, 0.001)  # a corrupt first packet sets the baseline
    for seq in range(RESYNC_AFTER + 10):
        link.count(seq, 1, 0.001)
    assert link.resyncs == 1 and link.last_seq == RESYNC_AFTER + 9 and link.gaps == 0
