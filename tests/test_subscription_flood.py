"""One subscriber must not be able to freeze or bloat a publisher (issue 11.12): real XPUB/XSUB sockets
on 127.0.0.1, the same Publisher class every output port uses."""

from __future__ import annotations

import errno
import socket
import struct
import time

import numpy as np
import psutil
import zmq

from spikewire.streams.clock import local_clock
from spikewire.streams.wire import EVENT_DTYPE, Kind, decode, encode
from spikewire.streams.zmq_link import JOIN, MAX_JOINED, MAX_PONGS_PER_SECOND, PONGS_PER_SUBSCRIBER, Publisher


def _poll_until(pub: Publisher, done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        pub.poll_subscriptions()
        time.sleep(0.001)


def _raw_xsub(endpoint: str) -> socket.socket:
    """A hand-made ZMTP 3.0 XSUB peer (NULL mechanism). A libzmq XSUB cannot send a 32 MiB topic: its own
    subscription trie recurses per byte and overflows the stack, so the attacker speaks the wire itself."""
    host, port = endpoint.rsplit("/", 1)[1].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31)
    ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 4) + b"XSUB"
    s.sendall(b"\x04" + bytes([len(ready)]) + ready)
    return s


def test_a_huge_topic_is_refused_before_it_is_buffered():
    ctx = zmq.Context()
    pub = Publisher(ctx, Kind.SPIKE, 1, "tcp://127.0.0.1:*")
    good = ctx.socket(zmq.XSUB)
    good.setsockopt(zmq.LINGER, 0)
    bad = None
    try:
        rss0 = psutil.Process().memory_info().rss
        bad = _raw_xsub(pub.endpoint)
        topic = b"\x01" + b"x" * (32 << 20)  # one 32 MiB subscription
        try:
            bad.sendall(b"\x02" + struct.pack(">Q", len(topic)) + topic)
        except OSError as e:  # refused mid-message: the connection was dropped, as it should be
            assert e.errno in (errno.ECONNRESET, errno.EPIPE), e
        good.connect(pub.endpoint)
        good.send(b"\x01")
        good.send(b"\x01" + JOIN + b"honest")
        _poll_until(pub, lambda: "honest" in pub.joined)
        assert "honest" in pub.joined
        pub.poll_subscriptions()
        assert psutil.Process().memory_info().rss - rss0 < 200 << 20  # the 32 MiB sent, never buffered twice
        pub.publish(np.zeros(1, dtype=EVENT_DTYPE))
        assert good.poll(5000), "the honest subscriber gets nothing"
        assert decode(good.recv()).kind == Kind.SPIKE
    finally:
        if bad is not None:
            bad.close()
        good.close()
        pub.close()
        ctx.term()


def test_fake_join_names_neither_pile_up_nor_lift_the_pong_budget():
    ctx = zmq.Context()
    pub = Publisher(ctx, Kind.SPIKE, 1, "tcp://127.0.0.1:*")
    pub.expected = frozenset({"honest"})
    sub = ctx.socket(zmq.XSUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SNDHWM, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    try:
        sub.connect(pub.endpoint)
        sub.send(b"\x01")
        for i in range(2000):
            sub.send(b"\x01" + JOIN + f"fake{i}".encode())
        sub.send(b"\x01" + JOIN + b"x" * 1000)
        _poll_until(pub, lambda: len(pub.joined) + pub.joins_refused >= 2001)
        assert len(pub.joined) <= MAX_JOINED and pub.joins_refused >= 2001 - MAX_JOINED
        ping = np.zeros(1, dtype=EVENT_DTYPE)
        t_start = local_clock()
        for nonce in range(5000):
            ping[0] = (local_clock(), nonce, 0.0)
            sub.send(encode(Kind.CLOCK, 0, 0, local_clock(), ping))
        _poll_until(pub, lambda: pub.pongs + pub.pings_ignored >= 5000)
        seconds = int(local_clock()) - int(t_start) + 1
        assert pub.pongs + pub.pings_ignored == 5000
        assert pub.pongs <= seconds * MAX_PONGS_PER_SECOND, (pub.pongs, seconds)  # no fake name counted
    finally:
        sub.close()
        pub.close()
        ctx.term()
    assert PONGS_PER_SUBSCRIBER > 0
