"""ZeroMQ transport for spikewire links: one XPUB per output port, one XSUB per upstream publisher.

Catches this module exists to handle:

* Messages published before a subscriber's join handshake completes (0.1-0.25 s on loopback) are lost.
  Output ports are XPUB sockets with ``XPUB_VERBOSE``, so a publisher *sees* each subscription arrive
  and the runtime reports ready only once every expected link has joined: no sleeps.
* The default high-water mark (1000) silently drops most of a burst. Marks here are explicit, and
  ``XPUB_NODROP`` makes a full queue raise ``zmq.Again`` at the sender, where it is counted as a drop.
* Behind the high-water marks sit the kernel's socket buffers, which Linux autotunes to several MB on
  loopback: under overload that is a hidden queue of seconds. A link's ``sockbuf`` caps them, so an
  overloaded link drops (counted) at the sender instead of delivering ever staler packets.
* Sockets are ``linger=0`` so a stopping node never hangs on undelivered messages.
* Everything binds to 127.0.0.1 unless the network file names another address.
* The receiving end is an XSUB, not a SUB, because it must talk back over the same (possibly encrypted)
  connection: clock-sync pings go upstream, the publisher answers on the link. XSUB re-sends its
  subscription on every reconnect, so a restarted publisher is rejoined without anyone's help.
* Every output port sends a heartbeat when idle (``Kind.HEARTBEAT``: its epoch and next sequence
  number), so a receiver tells "quiet" from "gone" within ``peer_timeout``.
"""

from __future__ import annotations

import numpy as np
import zmq

from spikewire.streams.clock import local_clock
from spikewire.streams.wire import EVENT_DTYPE, Kind, WireError, decode, encode, encode_events

DEFAULT_HWM = 100_000
LOOPBACK_ANY_PORT = "tcp://127.0.0.1:*"
JOIN = b"join:"
"""A subscriber also subscribes to the topic ``join:<node>``: no packet starts with it (they start with
SPKW), so nothing changes in what it receives, but the publisher, which sees every subscription
(XPUB_VERBOSE), learns *who* joined. Readiness waits for the expected nodes by name, so a subscriber
from another site can never stand in for a local one."""
POLL_BUDGET = 256
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)  # plain ints: the enum operators cost microseconds per packet
"""Messages a publisher reads from its subscribers per poll (a flood must not starve the node's loop)."""
MAX_PONGS_PER_SECOND = 50
PONGS_PER_SUBSCRIBER = 8
"""Clock-sync answers a publisher gives per second, all subscribers together: MAX_PONGS_PER_SECOND plus
PONGS_PER_SUBSCRIBER per *expected* subscriber that joined (honest ones ping 4 times a second). A name a
peer merely claims (a fake ``join:``) lifts nothing. (An XPUB cannot tell which connection a message came
from, so the limit is per port, not per connection.)"""
MAX_UPSTREAM_MESSAGE = 4096
"""Largest message a subscriber may send up a link (subscriptions, pings: ~50 bytes). Larger ones make
libzmq drop that connection before the message is buffered: a 32 MiB topic can no longer grow a node by
gigabytes and freeze its loop."""
MAX_JOINED = 256
"""Names a port remembers as joined; further join notices are refused and counted."""
JOIN_NAME_MAX = 64


def _zmq_heartbeats(sock: zmq.Socket) -> None:
    """ZMTP heartbeats on a publisher's connections that leave the site: a subscriber silent for 3 s is
    disconnected, so its pipe (and what is queued in it) is released; it reconnects by itself."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3000)


class Publisher:
    """Sends one output port's packets; counts packets sent and dropped at a full queue."""

    def __init__(self, ctx: zmq.Context, kind: int, source: int, endpoint: str = LOOPBACK_ANY_PORT,
                 hwm: int = DEFAULT_HWM, curve=None, sockbuf: int = 0, remote: bool = False):
        self.kind = int(kind)
        self.source = int(source)
        self.sequence = 0
        self.sent = 0
        self.dropped = 0
        self.events_sent = 0
        self.subscriptions = 0
        self.joined: set[str] = set()  # nodes whose subscribers announced themselves (see JOIN)
        self.heartbeats = 0
        self.pongs = 0
        self.upstream_malformed = 0  # messages from subscribers that were neither subscriptions nor pings
        self.pings_ignored = 0  # pings over MAX_PONGS_PER_SECOND
        self._pong_second, self._pongs_this_second = -1, 0
        self.more = False  # poll_subscriptions stopped at its budget with input left
        self.epoch = local_clock()  # when this publisher started: a receiver seeing it change knows we restarted
        self.last_send = float("-inf")
        self.last_heartbeat = float("-inf")
        self.curve = curve is not None
        self.on_sent = None  # optional callable(bytes, send time): every packet sent (the session journal)
        self.socket = ctx.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        if sockbuf:
            self.socket.setsockopt(zmq.SNDBUF, sockbuf)
        self.socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_UPSTREAM_MESSAGE)
        self.expected: frozenset[str] = frozenset()  # subscriber names the network file lists for this port
        self.joins_refused = 0  # join notices with bad names or beyond MAX_JOINED
        if remote:
            # Subscribers at other sites: one stalled or cut-off peer must not block everyone (with NODROP a
            # single full pipe fails every send). Each subscriber's losses show as its own sequence gaps.
            # ZeroMQ heartbeats close a dead peer's pipe instead of waiting for TCP to give up.
            _zmq_heartbeats(self.socket)
        else:
            self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        self.remote = remote
        if curve is not None:
            curve.make_server(self.socket)
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as e:
            self.socket.close(linger=0)
            raise OSError(f"cannot listen on {endpoint}: {e}") from None
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._hb = np.zeros(1, dtype=EVENT_DTYPE)
        self._hb["t"] = self.epoch

    def publish(self, events: np.ndarray, kind: int | None = None) -> bool:
        """Send ``events`` as one packet now (of the port's kind unless ``kind`` says otherwise, as for
        loop probes). False (and counted) if the send queue is full."""
        # A packet dropped here does not consume a sequence number: a receiver's gaps are exactly what
        # was lost between the two ends, and this end counts its own drops, so the two never overlap.
        now = local_clock()
        return self._send(encode(self.kind if kind is None else kind, self.source, self.sequence, now, events),
                          len(events), now)

    def publish_packed(self, payload: bytes, count: int, kind: int | None = None) -> bool:
        """``publish`` for ``count`` events already packed (``wire.EVENT``): no array on the way."""
        now = local_clock()
        return self._send(encode_events(self.kind if kind is None else kind, self.source, self.sequence, now,
                                        payload, count), count, now)

    def _send(self, data: bytes, count: int, now: float) -> bool:
        try:
            self.socket.send(data, _NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sequence += 1
        if self.on_sent is not None:
            self.on_sent(data, now)
        self.sent += 1
        self.events_sent += count
        self.last_send = now
        return True

    def heartbeat(self, now: float, every: float) -> None:
        """Send a heartbeat if nothing left this port for ``every`` s (data counts as one), and at least
        once a second (the receiver learns our epoch and next sequence number from it)."""
        if now - self.last_send < every and now - self.last_heartbeat < 1.0:
            return
        self.last_heartbeat = now
        try:
            self.socket.send(encode(Kind.HEARTBEAT, self.source, self.sequence, now, self._hb), zmq.NOBLOCK)
        except zmq.Again:
            return  # a full queue: the data behind it says more than a heartbeat would
        self.last_send = now
        self.heartbeats += 1

    def poll_subscriptions(self, budget: int = POLL_BUDGET) -> int:
        """Read what subscribers sent: (un)subscription notices, and clock-sync pings, which are answered
        at once. Returns the number of live subscriptions. Reads at most ``budget`` messages; ``more``
        says whether it stopped with input left (the caller polls again soon: the fd will not fire)."""
        self.more = True
        sock = self.socket
        for _ in range(budget):
            # ZMQ_EVENTS first: most polls find nothing, and a receive that fails raises (~15 us cold)
            if not sock.get(_EVENTS) & _POLLIN:
                self.more = False
                return self.subscriptions
            try:
                msg = sock.recv(_NOBLOCK)
            except zmq.Again:
                self.more = False
                return self.subscriptions
            first = msg[:1]
            if first == b"\x01" and len(msg) == 1:
                self.subscriptions += 1
            elif first == b"\x00" and len(msg) == 1:
                self.subscriptions = max(0, self.subscriptions - 1)
            elif msg[1:1 + len(JOIN)] == JOIN and first in (b"\x01", b"\x00"):
                name = msg[1 + len(JOIN):].decode(errors="replace")
                if first == b"\x00":
                    self.joined.discard(name)
                elif len(name) > JOIN_NAME_MAX or not name.isprintable() or len(self.joined) >= MAX_JOINED:
                    self.joins_refused += 1
                else:
                    self.joined.add(name)
            else:
                self._on_ping(msg, local_clock())
        return self.subscriptions

    def _on_ping(self, msg: bytes, t2: float) -> None:
        try:
            ping = decode(msg)
        except WireError:
            self.upstream_malformed += 1
            return
        if ping.kind != Kind.CLOCK or len(ping.events) != 1:
            self.upstream_malformed += 1
            return
        # Every pong goes to every subscriber of the port: a peer pinging too fast gets no answer (honest
        # peers ping a few times a second) rather than flooding the others' queues.
        second = int(t2)
        if second != self._pong_second:
            self._pong_second, self._pongs_this_second = second, 0
        if self._pongs_this_second >= MAX_PONGS_PER_SECOND + PONGS_PER_SUBSCRIBER * len(self.joined & self.expected):
            self.pings_ignored += 1
            return
        self._pongs_this_second += 1
        pong = np.zeros(2, dtype=EVENT_DTYPE)
        pong[0] = ping.events[0]
        pong[1] = (t2, ping.events[0]["id"], 0.0)
        try:
            self.socket.send(encode(Kind.CLOCK, self.source, self.sequence, local_clock(), pong), zmq.NOBLOCK)
        except zmq.Again:
            return
        self.pongs += 1

    @property
    def fd(self) -> int:
        return self.socket.getsockopt(zmq.FD)

    def close(self) -> None:
        self.socket.close(linger=0)


class Subscriber:
    """Receives one upstream publisher's packets; sends its clock-sync pings back up the link.

    ``curve``/``server_site``: connect as a CURVE client of that site's publisher."""

    def __init__(self, ctx: zmq.Context, hwm: int = DEFAULT_HWM, curve=None, server_site: str = "",
                 sockbuf: int = 0, remote: bool = False, name: str = ""):
        self.socket = ctx.socket(zmq.XSUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        if sockbuf:
            self.socket.setsockopt(zmq.RCVBUF, sockbuf)
        self.socket.setsockopt(zmq.SNDHWM, 16)  # pings only; a dead peer must not make them pile up
        if curve is not None:
            curve.make_client(self.socket, server_site)
        # No ZMTP heartbeats on this side: libzmq 4.3.5 aborts the process (stream_engine_base.cpp:396,
        # libzmq #3937/#4767) when a heartbeat times out on a connection whose reading is throttled by a
        # full receive queue, which is exactly a node compiling its kernels while a remote site streams.
        # The publisher's heartbeats and our own peer_timeout cover a dead peer.
        self.curve = curve is not None
        self.socket.send(b"\x01")  # subscribe to everything; XSUB repeats it on every (re)connect
        if name:
            self.socket.send(b"\x01" + JOIN + name.encode())  # say who we are (see JOIN)
        self.endpoints: list[str] = []
        self.pings = 0
        self._ping = np.zeros(1, dtype=EVENT_DTYPE)

    def connect(self, endpoint: str) -> None:
        self.socket.connect(endpoint)
        self.endpoints.append(endpoint)

    @property
    def fd(self) -> int:
        """The socket's notification fd: readable when the socket *may* have input (edge-triggered). Drain the
        socket before waiting on it again: receive until ZMQ_EVENTS says no message is queued, which also
        re-arms the fd (``link_rx.Upstream.receive``), or with ``recv_nowait`` until it returns None."""
        return self.socket.getsockopt(zmq.FD)

    def recv_nowait(self) -> bytes | None:
        try:
            return self.socket.recv(_NOBLOCK, copy=True)
        except zmq.Again:
            return None

    def ping(self, nonce: int) -> float:
        """Send a clock-sync ping; returns its send time t1. (A send can consume the fd's edge: the
        caller drains the socket right after.)"""
        t1 = local_clock()
        self._ping[0] = (t1, nonce, 0.0)
        try:
            self.socket.send(encode(Kind.CLOCK, 0, 0, t1, self._ping), zmq.NOBLOCK)
        except zmq.Again:
            return t1
        self.pings += 1
        return t1

    def close(self) -> None:
        self.socket.close(linger=0)
