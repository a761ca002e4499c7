"""ZeroMQ transport for spikewire links: one XPUB per output port, one SUB per input port.

Catches this module exists to handle:

* Messages published before a subscriber's join handshake completes (0.1-0.25 s on loopback) are lost.
  Output ports are XPUB sockets with ``XPUB_VERBOSE``, so a publisher *sees* each subscription arrive
  and the runtime reports ready only once every expected link has joined: no sleeps.
* The default high-water mark (1000) silently drops most of a burst. Marks here are explicit, and
  ``XPUB_NODROP`` makes a full queue raise ``zmq.Again`` at the sender, where it is counted as a drop.
* Sockets are ``linger=0`` so a stopping node never hangs on undelivered messages.
* Everything binds to 127.0.0.1 unless the network file names another address.
"""

from __future__ import annotations

import numpy as np
import zmq

from spikewire.streams.clock import local_clock
from spikewire.streams.wire import encode

DEFAULT_HWM = 100_000
LOOPBACK_ANY_PORT = "tcp://127.0.0.1:*"


class Publisher:
    """Sends one output port's packets; counts packets sent and dropped at a full queue."""

    def __init__(self, ctx: zmq.Context, kind: int, source: int, endpoint: str = LOOPBACK_ANY_PORT,
                 hwm: int = DEFAULT_HWM):
        self.kind = int(kind)
        self.source = int(source)
        self.sequence = 0
        self.sent = 0
        self.dropped = 0
        self.events_sent = 0
        self.subscriptions = 0
        self.on_sent = None  # optional callable(bytes): every packet sent (the session journal)
        self.socket = ctx.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        self.socket.bind(endpoint)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, events: np.ndarray, kind: int | None = None) -> bool:
        """Send ``events`` as one packet now (of the port's kind unless ``kind`` says otherwise, as for
        loop probes). False (and counted) if the send queue is full."""
        seq = self.sequence
        self.sequence = seq + 1  # a dropped packet still consumes its number: the receiver sees the gap
        data = encode(self.kind if kind is None else kind, self.source, seq, local_clock(), events)
        try:
            self.socket.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        if self.on_sent is not None:
            self.on_sent(data)
        self.sent += 1
        self.events_sent += len(events)
        return True

    def poll_subscriptions(self) -> int:
        """Read pending (un)subscription notices; returns the number of live subscriptions."""
        while True:
            try:
                msg = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.subscriptions
            if msg[:1] == b"\x01":
                self.subscriptions += 1
            elif msg[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

    def close(self) -> None:
        self.socket.close(linger=0)


class Subscriber:
    """Receives one input port's packets from every publisher it is connected to."""

    def __init__(self, ctx: zmq.Context, hwm: int = DEFAULT_HWM):
        self.socket = ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoints: list[str] = []

    def connect(self, endpoint: str) -> None:
        self.socket.connect(endpoint)
        self.endpoints.append(endpoint)

    @property
    def fd(self) -> int:
        """The socket's notification fd: readable when the socket *may* have input (edge-triggered);
        drain with ``recv_nowait`` until it returns None before waiting on it again."""
        return self.socket.getsockopt(zmq.FD)

    def recv_nowait(self) -> bytes | None:
        try:
            return self.socket.recv(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return None

    def close(self) -> None:
        self.socket.close(linger=0)
