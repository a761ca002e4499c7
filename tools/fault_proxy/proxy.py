"""A TCP proxy that puts internet faults between a ZeroMQ publisher and its subscribers, and counts them.

What it is for: testing that spikewire's receivers notice and count what a real wide-area link does to
packets. The proxy listens on a loopback port; each subscriber (SUB / XSUB) that connects to it gets its
own connection to the publisher (an XPUB that binds), and the proxy relays the ZMTP byte streams between
the two, injecting, per direction:

* ``delay``: a fixed delay for every message and command;
* ``jitter``: an extra ``uniform(0, jitter)`` delay drawn per message. Messages leave in order of their
  scheduled times, so jitter larger than their spacing reorders them the way a datagram network would;
* ``loss`` (down only): the probability that a spikewire *data* packet is dropped;
* ``reorder`` (down only): the probability that a data packet is held back and sent right after the
  next message (swapped with its successor).

"down" is publisher -> subscriber (from the target to the accepted client), "up" is subscriber ->
publisher (subscriptions, clock-sync pings). ``delay`` and ``jitter`` apply to both directions unless
``up_delay`` / ``up_jitter`` say otherwise. Every decision uses seeded ``random.Random`` generators (one
per connection, direction and purpose, so a given packet stream meets the same losses on every run), and
everything is counted (:meth:`FaultProxy.stats`) so that a test can compare a receiver's counters with
what was injected: for a link whose publisher dropped nothing, the sequence numbers a receiver never saw
are exactly the ``dropped`` (plus any ``discarded`` when a connection was cut) of their source, and its
out-of-order count (a packet whose sequence is not above the highest already received from that source,
as ``nodes/runtime.py`` counts it) equals ``out_of_order``.

ZMTP 3.x facts relied on (libzmq 4.3.5):

* Each side starts with a 64-byte greeting: signature ``0xFF``, 8 bytes, ``0x7F`` (the 8 bytes are not
  all zero: libzmq sends ``00..01``, a ZMTP 1.0 length), version major/minor, a 20-byte mechanism name,
  as-server, filler. libzmq sends it in parts (10 bytes, then the major version once it has seen the
  peer's signature, then the rest), so greeting bytes are relayed as they come: waiting for all 64
  would deadlock the two peers.
* Then frames: flags (bit0 MORE, bit1 LONG, bit2 COMMAND), a 1-byte or 8-byte big-endian size, the
  body. A message is frames up to one without MORE; commands (READY, SUBSCRIBE / CANCEL in ZMTP 3.1,
  PING / PONG, ERROR) are single frames between messages.
* Between two libzmq 4.3.5 peers (ZMTP 3.1) subscriptions travel up as SUBSCRIBE / CANCEL commands;
  with a ZMTP 3.0 peer they are messages starting with ``0x01`` / ``0x00``. Both are kept in order.

Ordering rules (what "scheduled time" means):

* Commands, greeting bytes and up-going ZMTP 3.0 subscription messages are *barriers*: they get the
  fixed delay without jitter, leave no earlier than everything received before them, and nothing
  received after them leaves before them. Commands therefore keep their order among themselves and
  relative to the messages around them (READY always precedes the first message, a CANCEL never
  overtakes its SUBSCRIBE). Messages between two barriers leave in order of scheduled time.
* A message's scheduled time is arrival + delay + jitter draw. With ``jitter == 0`` it is also clamped to
  no earlier than the latest time already scheduled, so a jitter-free link is FIFO, including right
  after :meth:`FaultProxy.set_faults` lowered the delay or switched the faults off: nothing sent after
  the switch overtakes what was sent before it.
* A swapped (held) packet leaves right after the next message. If no message comes within
  ``SWAP_HOLD_MAX`` seconds, or a barrier is due first, it leaves on its own (counted in
  ``swap_timeouts``, not as a swap).

Limits:

* Only a NULL-mechanism stream is parsed. For any other mechanism (PLAIN, CURVE, ...) the bytes after
  the greeting are relayed as an opaque stream with the fixed delay only: CURVE carries data as
  encrypted MESSAGE commands with strictly increasing nonces, so jitter, loss or reordering would break
  the decryption and kill the connection instead of simulating a network. The same fallback (and a
  ``raw_fallbacks`` count) applies to a pre-3.0 ZMTP greeting, malformed framing, or a message larger
  than ``MAX_MESSAGE`` bytes.
* ``out_of_order`` is tracked per connection: after a cut (:meth:`FaultProxy.drop_connections`) or a
  reconnect the proxy starts afresh, while a receiver's socket keeps its own highest sequence.
* At a cut, packets still scheduled in the proxy are counted as ``discarded``; bytes already handed to
  the kernel may or may not reach the subscriber. Faults are per direction of one TCP connection: the
  proxy cannot see what the publisher's own queues drop.
* Messages are buffered whole (each at most ``MAX_MESSAGE`` bytes) before being scheduled. A message
  counts as a spikewire packet if it is a single frame starting with ``MAGIC`` whose length matches the
  header's event count; anything else is forwarded untouched (never dropped), with delay and jitter.
* After a cut, libzmq re-sends a SUB's subscriptions over the new connection only once the owning
  thread touches the socket (poll / recv): the I/O thread's "hiccup" waits in the socket's mailbox, so
  an idle SUB gets nothing until it is polled. Real receivers poll constantly; tests must too.
* It runs an asyncio loop in one daemon thread: about 10^5 small messages/s clean, half that with
  jitter, loss and reordering on (2 vCPUs).

The CLI (``python -m spikewire.tools.fault_proxy --listen 127.0.0.1:0 --to 127.0.0.1:5555 --loss 0.1``)
prints where it listens on stderr and one JSON line of stats on stdout every ``--stats-every`` seconds
and on exit (SIGINT / SIGTERM). It only listens on loopback addresses unless given ``--allow-remote``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import heapq
import ipaddress
import itertools
import json
import math
import random
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from spikewire.core.argtypes import number
from spikewire.streams.wire import EVENT_SIZE, HEADER, MAGIC

if TYPE_CHECKING:
    from typing import Self

DATA_KINDS = frozenset({1, 2, 3, 4})
"""Packet kinds that consume a sequence number (SPIKE, STIMULUS, BIO, PROBE): the only ones ever dropped
or swapped. Other spikewire kinds (HEARTBEAT, CLOCK) are control packets."""

GREETING_SIZE = 64
FLAG_MORE = 0x01
FLAG_LONG = 0x02
FLAG_COMMAND = 0x04
MAX_MESSAGE = 64 << 20
"""Largest message (all frames, bytes) buffered for scheduling; a bigger one switches the stream to raw."""
SWAP_HOLD_MAX = 0.5
"""Seconds a packet held back for a swap waits for a successor before it leaves alone."""

DOWN = "down"
UP = "up"
_CLIENT = "client"
_UPSTREAM = "upstream"

# stream modes of a pipe
_GREETING = 0
_FRAMES = 1
_RAW = 2

# what a queued item is
_DATA = 0  # spikewire data packet (kind in DATA_KINDS)
_CONTROL = 1  # any other well-formed spikewire packet
_OTHER = 2  # any other message
_COMMAND = 3  # barrier: a ZMTP command frame
_BYTES = 4  # barrier: greeting or unparsed stream bytes
_SUBSCRIPTION = 5  # barrier: an up-going ZMTP 3.0 subscription message

_HISTORY = 32  # closed connections kept in stats()["links"]


@dataclass(frozen=True)
class Faults:
    """The faults of one direction. ``loss`` and ``reorder`` only ever act on down-going data packets."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    reorder: float = 0.0

    def __post_init__(self):
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        for name in ("loss", "reorder"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


class _Summary:
    """count / min / mean / max of a stream of values."""

    __slots__ = ("count", "high", "low", "total")

    def __init__(self):
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def merge(self, other: _Summary) -> None:
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def to_dict(self) -> dict:
        if not self.count:
            return {"count": 0, "min": None, "mean": None, "max": None}
        return {"count": self.count, "min": self.low, "mean": self.total / self.count, "max": self.high}


class _SourceStats:
    """Down-going data packets of one source id."""

    FIELDS = ("received", "forwarded", "dropped", "discarded", "out_of_order", "reordered_by_swap")
    __slots__ = FIELDS

    def __init__(self):
        for name in self.FIELDS:
            setattr(self, name, 0)

    def merge(self, other: _SourceStats) -> None:
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.FIELDS}
        out["pending"] = self.received - self.forwarded - self.dropped - self.discarded
        return out


class _DirStats:
    """Everything one direction of one connection (or a sum of them) did."""

    COUNTS = ("bytes_in", "bytes_out", "raw_bytes", "messages_in", "messages_out", "commands_in", "commands_out",
              "data_packets", "control_packets", "other_messages", "subscription_messages", "dropped",
              "out_of_order", "reordered_by_swap", "swap_timeouts", "discarded_messages", "discarded_commands",
              "discarded_bytes", "raw_fallbacks")
    SUMMARIES = ("delay_s", "message_delay_s", "emit_delay_s")

    def __init__(self):
        for name in self.COUNTS:
            setattr(self, name, 0)
        self.commands_by_name: dict[str, int] = {}
        self.delay_s = _Summary()  # scheduled delay of data packets
        self.message_delay_s = _Summary()  # scheduled delay of every message
        self.emit_delay_s = _Summary()  # arrival to emission of data packets, as it happened

    def merge(self, other: _DirStats) -> None:
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, n in other.commands_by_name.items():
            self.commands_by_name[name] = self.commands_by_name.get(name, 0) + n
        for name in self.SUMMARIES:
            getattr(self, name).merge(getattr(other, name))

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.COUNTS}
        out["pending_messages"] = self.messages_in - self.dropped - self.messages_out - self.discarded_messages
        out["commands_by_name"] = dict(self.commands_by_name)
        for name in self.SUMMARIES:
            out[name] = getattr(self, name).to_dict()
        return out


class _Item:
    __slots__ = ("arrived", "data", "due", "seq", "source", "what")

    def __init__(self, due, data, arrived, what, source=None, seq=None):
        self.due = due
        self.data = data
        self.arrived = arrived
        self.what = what
        self.source = source
        self.seq = seq


class _Pipe:
    """One direction of one connection: parses what comes in, schedules it, writes it out when due."""

    def __init__(self, link: _Link, direction: str):
        self.link = link
        self.proxy = link.proxy
        self.loop = link.loop
        self.direction = direction
        self.is_down = direction == DOWN
        self.stats = _DirStats()
        base = f"{self.proxy.seed}/{link.id}/{direction}"
        self.rng_loss = random.Random(base + "/loss")
        self.rng_jitter = random.Random(base + "/jitter")
        self.rng_reorder = random.Random(base + "/reorder")
        self.mode = _GREETING
        self.greeting = bytearray()
        self.mechanism: str | None = None
        self.buf = bytearray()
        self.frames: list[bytes] = []
        self.frames_size = 0
        self.first_header = 0
        self.epochs: deque = deque()  # [heap of (due, order, item), barrier item or None]
        self.order = itertools.count()
        self.last_due = -math.inf
        self.held: _Item | None = None
        self.held_deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.out: asyncio.Transport | None = None
        self.input_done = False
        self.closed = False

    # ---- input -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        if self.closed:
            self.stats.discarded_bytes += len(data)
            return
        now = self.loop.time()
        if self.mode == _GREETING:
            data = self._greet(data, now)
        if data:
            if self.mode == _FRAMES:
                self._parse(data, now)
            else:
                self._raw(data, now)
        self.pump()

    def _greet(self, data: bytes, now: float) -> bytes:
        take = GREETING_SIZE - len(self.greeting)
        part, rest = data[:take], data[take:]
        self.greeting += part
        self._raw(part, now)
        g = self.greeting
        if g[0] != 0xFF or (len(g) >= 10 and not g[9] & 0x01) or (len(g) >= 11 and g[10] < 3):
            self.mechanism = "pre-ZMTP3"
            self.mode = _RAW
            self.stats.raw_fallbacks += 1
        elif len(g) == GREETING_SIZE:
            self.mechanism = bytes(g[12:32]).rstrip(b"\0").decode("ascii", "replace")
            self.mode = _FRAMES if self.mechanism == "NULL" else _RAW
        return rest

    def _raw(self, data: bytes, now: float) -> None:
        self.stats.raw_bytes += len(data)
        self._barrier(bytes(data), now, _BYTES)

    def _parse(self, data: bytes, now: float) -> None:
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        fallback = False
        with memoryview(buf) as view:
            while n - pos >= 2:
                flags = buf[pos]
                if flags & 0xF8 or (flags & FLAG_COMMAND and (flags & FLAG_MORE or self.frames)):
                    fallback = True
                    break
                if flags & FLAG_LONG:
                    if n - pos < 9:
                        break
                    size = int.from_bytes(view[pos + 1:pos + 9], "big")
                    head = 9
                else:
                    size = buf[pos + 1]
                    head = 2
                if self.frames_size + head + size > MAX_MESSAGE:
                    fallback = True
                    break
                end = pos + head + size
                if end > n:
                    break
                frame = bytes(view[pos:end])
                pos = end
                if flags & FLAG_COMMAND:
                    self._command(frame, head, now)
                    continue
                if not self.frames:
                    self.first_header = head
                self.frames.append(frame)
                self.frames_size += len(frame)
                if not flags & FLAG_MORE:
                    self._message(now)
            if fallback:
                rest = bytes(view[pos:])
        if fallback:
            partial = b"".join(self.frames) + rest
            self.frames.clear()
            self.frames_size = 0
            buf.clear()
            self.mode = _RAW
            self.stats.raw_fallbacks += 1
            self._raw(partial, now)
        else:
            del buf[:pos]

    def _command(self, frame: bytes, head: int, now: float) -> None:
        body = frame[head:]
        name = body[1:1 + body[0]].decode("ascii", "replace") if body else ""
        st = self.stats
        st.commands_in += 1
        st.commands_by_name[name] = st.commands_by_name.get(name, 0) + 1
        self._barrier(frame, now, _COMMAND)

    def _message(self, now: float) -> None:
        frames = self.frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        single = len(frames) == 1
        head = self.first_header
        frames.clear()
        self.frames_size = 0
        st = self.stats
        st.messages_in += 1
        what, source, seq = _OTHER, None, None
        if single and len(data) - head >= HEADER.size and data[head:head + 4] == MAGIC:
            _, _, kind, _, source, count, seq, _ = HEADER.unpack_from(data, head)
            if len(data) - head == HEADER.size + count * EVENT_SIZE:
                what = _DATA if kind in DATA_KINDS else _CONTROL
        if what == _DATA:
            st.data_packets += 1
        elif what == _CONTROL:
            st.control_packets += 1
        elif not self.is_down and data[head:head + 1] in (b"\x00", b"\x01"):
            st.subscription_messages += 1
            self._barrier(data, now, _SUBSCRIPTION)
            return
        else:
            st.other_messages += 1
        faults = self.proxy._faults[self.direction]
        if what == _DATA and self.is_down:
            src = self.link.source(source)
            src.received += 1
            if faults.loss > 0 and self.rng_loss.random() < faults.loss:
                src.dropped += 1
                st.dropped += 1
                return
        due = now + faults.delay
        if faults.jitter > 0:
            due += self.rng_jitter.uniform(0.0, faults.jitter)
        elif due < self.last_due:
            due = self.last_due
        self.last_due = max(self.last_due, due)
        st.message_delay_s.add(due - now)
        if what == _DATA:
            st.delay_s.add(due - now)
        item = _Item(due, data, now, what, source, seq)
        epochs = self.epochs
        if not epochs or epochs[-1][1] is not None:
            epochs.append([[], None])
        heapq.heappush(epochs[-1][0], (due, next(self.order), item))

    def _barrier(self, data: bytes, now: float, what: int) -> None:
        due = max(now + self.proxy._faults[self.direction].delay, self.last_due)
        self.last_due = due
        item = _Item(due, data, now, what)
        epochs = self.epochs
        if epochs and epochs[-1][1] is None:
            epochs[-1][1] = item
        else:
            epochs.append([[], item])

    # ---- output ----------------------------------------------------------------------------------

    def pump(self) -> None:
        """Write everything that is due, then set the timer for what is next."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        out = self.out
        if self.closed or out is None:
            return
        if out.is_closing():
            return
        now = self.loop.time()
        chunks: list[bytes] = []
        wake = math.inf
        epochs = self.epochs
        while epochs:
            heap, barrier = epochs[0]
            if heap:
                if heap[0][0] > now:
                    wake = heap[0][0]
                    break
                self._emit_message(heapq.heappop(heap)[2], now, chunks)
                continue
            if barrier is None:
                break  # the open epoch, empty
            if barrier.due > now:
                wake = barrier.due
                break
            if self.held is not None:
                self._release_held(now, chunks, swapped=False)
            epochs.popleft()
            chunks.append(barrier.data)
            self.stats.bytes_out += len(barrier.data)
            if barrier.what == _COMMAND:
                self.stats.commands_out += 1
            elif barrier.what == _SUBSCRIPTION:
                self.stats.messages_out += 1
        drained = not epochs or (len(epochs) == 1 and not epochs[0][0] and epochs[0][1] is None)
        if self.held is not None:
            if now >= self.held_deadline or (self.input_done and drained):
                self._release_held(now, chunks, swapped=False)
            else:
                wake = min(wake, self.held_deadline)
        if chunks:
            out.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        if wake < math.inf:
            self.timer = self.loop.call_at(wake, self.pump)
        elif self.input_done and drained and self.held is None:
            out.close()  # the other side has gone and everything it sent has been delivered

    def _emit_message(self, item: _Item, now: float, chunks: list) -> None:
        if self.held is not None:
            self._write(item, now, chunks, swapped=False)
            self._release_held(now, chunks, swapped=True)
            return
        if item.what == _DATA and self.is_down:
            reorder = self.proxy._faults[DOWN].reorder
            if reorder > 0 and self.rng_reorder.random() < reorder:
                self.held = item
                self.held_deadline = now + SWAP_HOLD_MAX
                return
        self._write(item, now, chunks, swapped=False)

    def _release_held(self, now: float, chunks: list, swapped: bool) -> None:
        item, self.held = self.held, None
        if not swapped:
            self.stats.swap_timeouts += 1
        self._write(item, now, chunks, swapped)

    def _write(self, item: _Item, now: float, chunks: list, swapped: bool) -> None:
        st = self.stats
        chunks.append(item.data)
        st.messages_out += 1
        st.bytes_out += len(item.data)
        if item.what != _DATA:
            return
        st.emit_delay_s.add(now - item.arrived)
        if not self.is_down:
            return
        src = self.link.source(item.source)
        src.forwarded += 1
        highest = self.link.highest
        if item.seq > highest.get(item.source, -1):
            highest[item.source] = item.seq
        else:
            src.out_of_order += 1
            st.out_of_order += 1
        if swapped:
            src.reordered_by_swap += 1
            st.reordered_by_swap += 1

    def pending_items(self):
        for heap, barrier in self.epochs:
            for _, _, item in heap:
                yield item
            if barrier is not None:
                yield barrier
        if self.held is not None:
            yield self.held

    def discard(self) -> None:
        """The connection is gone: count everything still queued as discarded, and stop."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        st = self.stats
        for item in self.pending_items():
            st.discarded_bytes += len(item.data)
            if item.what == _COMMAND:
                st.discarded_commands += 1
            elif item.what in (_DATA, _CONTROL, _OTHER, _SUBSCRIPTION):
                st.discarded_messages += 1
                if item.what == _DATA and self.is_down:
                    self.link.source(item.source).discarded += 1
        st.discarded_bytes += len(self.buf) + self.frames_size
        self.epochs.clear()
        self.held = None
        self.buf.clear()
        self.frames.clear()
        self.frames_size = 0


class _Side(asyncio.Protocol):
    """The asyncio protocol of one of a link's two TCP connections."""

    def __init__(self, proxy: FaultProxy, role: str, link: _Link | None = None):
        self.proxy = proxy
        self.role = role
        self.link = link

    def connection_made(self, transport) -> None:
        if self.role == _CLIENT:
            self.link = self.proxy._accepted(transport)

    def data_received(self, data: bytes) -> None:
        link = self.link
        (link.up if self.role == _CLIENT else link.down).feed(data)

    def eof_received(self):
        return False  # close; connection_lost follows

    def connection_lost(self, exc) -> None:
        if self.link is not None:
            self.link.side_lost(self.role)

    def pause_writing(self) -> None:
        self.link.set_reading(_UPSTREAM if self.role == _CLIENT else _CLIENT, False)

    def resume_writing(self) -> None:
        self.link.set_reading(_UPSTREAM if self.role == _CLIENT else _CLIENT, True)


class _Link:
    """One accepted subscriber connection and the publisher connection made for it."""

    def __init__(self, proxy: FaultProxy, link_id: int, client):
        self.proxy = proxy
        self.loop = proxy._loop
        self.id = link_id
        self.client = client
        self.upstream = None
        peer = client.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.sources: dict[int, _SourceStats] = {}
        self.highest: dict[int, int] = {}
        self.down = _Pipe(self, DOWN)
        self.up = _Pipe(self, UP)
        self.down.out = client
        self.client_gone = False
        self.upstream_gone = False
        self.cut = False
        self.open = True
        self.connect_task: asyncio.Task | None = None

    def source(self, source_id: int) -> _SourceStats:
        st = self.sources.get(source_id)
        if st is None:
            st = self.sources[source_id] = _SourceStats()
        return st

    async def connect(self) -> None:
        host, port = self.proxy.target
        try:
            transport, _ = await self.loop.create_connection(lambda: _Side(self.proxy, _UPSTREAM, self), host, port)
        except OSError:
            self.proxy._upstream_failures += 1
            self.upstream_gone = True
            self.client.abort()
            self._maybe_closed()
            return
        if not self.open or self.client_gone or self.cut:
            transport.abort()
            return
        self.upstream = transport
        self.up.out = transport
        self.up.pump()

    def set_reading(self, role: str, on: bool) -> None:
        transport = self.client if role == _CLIENT else self.upstream
        if transport is None or transport.is_closing():
            return
        if on:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def side_lost(self, role: str) -> None:
        if role == _CLIENT:
            self.client_gone = True
            self.down.discard()
            self.up.input_done = True
            if self.upstream is None:
                if self.connect_task is not None:
                    self.connect_task.cancel()
                self.upstream_gone = True
            else:
                self.up.pump()
        else:
            self.upstream_gone = True
            self.up.discard()
            self.down.input_done = True
            self.down.pump()
        self._maybe_closed()

    def _maybe_closed(self) -> None:
        if self.open and self.client_gone and self.upstream_gone:
            self.open = False
            self.down.discard()
            self.up.discard()
            self.proxy._closed(self)

    def cut_now(self, counted: bool = True) -> None:
        """Simulate a network cut: everything queued is lost, both connections reset. ``counted``: a cut
        (drop_connections) rather than the proxy stopping."""
        self.cut = self.cut or counted
        self.down.discard()
        self.up.discard()
        if self.connect_task is not None and self.upstream is None:
            self.connect_task.cancel()
            self.upstream_gone = True
        self.client.abort()
        if self.upstream is not None:
            self.upstream.abort()

    def to_dict(self) -> dict:
        return {"id": self.id, "client": self.peer, "open": self.open, "cut": self.cut,
                "upstream_connected": self.upstream is not None,
                "mechanism": {DOWN: self.down.mechanism, UP: self.up.mechanism},
                DOWN: self.down.stats.to_dict(), UP: self.up.stats.to_dict(),
                "sources": {str(k): v.to_dict() for k, v in sorted(self.sources.items())}}


def is_loopback(host: str) -> bool:
    """True if ``host`` (an address or a name) only ever means this machine."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        address = None  # a name: resolve it
    if address is not None:
        return address.is_loopback
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%", 1)[0]).is_loopback for info in infos)


class FaultProxy:
    """Relay ZeroMQ TCP connections from ``listen`` to ``target``, injecting delay, jitter, loss and reordering.

    ``delay`` and ``jitter`` (seconds) apply to both directions unless ``up_delay`` / ``up_jitter`` are
    given; ``loss`` and ``reorder`` (probabilities) act on down-going spikewire data packets only. See
    the module docstring for the ordering rules and limits. Runs in a daemon thread between
    :meth:`start` and :meth:`stop` (or as a context manager); every public method is thread-safe.
    """

    def __init__(self, listen: tuple[str, int] = ("127.0.0.1", 0), target: tuple[str, int] | None = None,
                 delay: float = 0.0, jitter: float = 0.0, loss: float = 0.0, reorder: float = 0.0, seed: int = 0,
                 *, up_delay: float | None = None, up_jitter: float | None = None, allow_remote: bool = False):
        if target is None:
            raise ValueError("target=(host, port) of the publisher is required")
        self.listen = _address(listen, "listen", allow_zero=True)
        self.target = _address(target, "target", allow_zero=False)
        if not allow_remote and not is_loopback(self.listen[0]):
            raise ValueError(f"refusing to listen on {self.listen[0]!r}: not a loopback address (allow_remote=True "
                             "to override)")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        self._faults = self._make_faults({DOWN: Faults(), UP: Faults()}, delay, jitter, loss, reorder,
                                         up_delay, up_jitter)
        self.port: int | None = None
        """The bound listen port, once started."""
        self.bound_host: str | None = None
        """The address actually listened on, once started."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._ids = itertools.count()
        self._links: dict[int, _Link] = {}
        self._history: deque = deque(maxlen=_HISTORY)
        self._closed_totals = {DOWN: _DirStats(), UP: _DirStats()}
        self._closed_sources: dict[int, _SourceStats] = {}
        self._accepted_count = 0
        self._closed_count = 0
        self._cut_count = 0
        self._upstream_failures = 0
        self._started_at: float | None = None

    # ---- configuration ---------------------------------------------------------------------------

    @staticmethod
    def _make_faults(current: dict, delay, jitter, loss, reorder, up_delay, up_jitter) -> dict:
        down, up = current[DOWN], current[UP]
        new_down = Faults(delay=down.delay if delay is None else delay,
                          jitter=down.jitter if jitter is None else jitter,
                          loss=down.loss if loss is None else loss,
                          reorder=down.reorder if reorder is None else reorder)
        if up_delay is None:
            up_delay = up.delay if delay is None else delay
        if up_jitter is None:
            up_jitter = up.jitter if jitter is None else jitter
        return {DOWN: new_down, UP: Faults(delay=up_delay, jitter=up_jitter)}

    def set_faults(self, delay: float | None = None, jitter: float | None = None, loss: float | None = None,
                   reorder: float | None = None, *, up_delay: float | None = None,
                   up_jitter: float | None = None) -> dict:
        """Change the faults for everything the proxy reads from now on (None keeps a value). ``delay`` and
        ``jitter`` set both directions, then ``up_delay`` / ``up_jitter`` override the up direction.
        Already scheduled messages keep their times. Returns the new faults as a dict."""
        self._faults = self._make_faults(self._faults, delay, jitter, loss, reorder, up_delay, up_jitter)
        return self.faults()

    def faults(self) -> dict:
        faults = self._faults
        up = asdict(faults[UP])
        del up["loss"], up["reorder"]
        return {DOWN: asdict(faults[DOWN]), UP: up}

    # ---- running ---------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The ZeroMQ endpoint subscribers connect to (after :meth:`start`)."""
        if self.port is None:
            raise RuntimeError("the proxy is not started")
        host = self.bound_host
        return f"tcp://[{host}]:{self.port}" if ":" in host else f"tcp://{host}:{self.port}"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("a FaultProxy can only be started once")
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy->{self.target[1]}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("the fault proxy did not start within 10 s")
        if self._start_error is not None:
            self._thread.join(2.0)
            raise self._start_error
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener and every connection (queued data is counted as discarded), join the thread."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        try:
            self._loop.call_soon_threadsafe(self._shutdown)
        except RuntimeError:  # the loop already closed: the thread is finishing on its own
            self._loop = None
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"the fault proxy thread did not stop within {timeout} s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                host, port = self.listen
                # one listening socket: a name binds its first address only
                address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: _Side(self, _CLIENT), address, port))
            except OSError as exc:  # socket.gaierror included
                self._start_error = exc
                self._ready.set()
                return
            self.bound_host, self.port = self._server.sockets[0].getsockname()[:2]
            self._started_at = time.monotonic()
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._settle())
        finally:
            loop.close()

    def _shutdown(self) -> None:
        self._server.close()
        for link in list(self._links.values()):
            link.cut_now(counted=False)
        self._loop.stop()

    async def _settle(self) -> None:
        tasks = [link.connect_task for link in self._links.values() if link.connect_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(3):  # let aborted transports deliver connection_lost
            await asyncio.sleep(0)

    def _accepted(self, transport) -> _Link:
        link = _Link(self, next(self._ids), transport)
        self._links[link.id] = link
        self._accepted_count += 1
        link.connect_task = self._loop.create_task(link.connect())
        return link

    def _closed(self, link: _Link) -> None:
        self._links.pop(link.id, None)
        self._closed_count += 1
        if link.cut:
            self._cut_count += 1
        self._closed_totals[DOWN].merge(link.down.stats)
        self._closed_totals[UP].merge(link.up.stats)
        for source_id, st in link.sources.items():
            self._closed_sources.setdefault(source_id, _SourceStats()).merge(st)
        self._history.append(link.to_dict())

    def _call(self, fn, timeout: float = 5.0):
        """Run ``fn`` in the proxy's thread (or here, if that thread is not running) and return its result."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return fn()

        async def run():
            return fn()

        coro = run()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop has closed meanwhile
            coro.close()
            thread.join(timeout)
            return fn()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return future.result(0.05)
            except concurrent.futures.TimeoutError:
                if not thread.is_alive():
                    return fn()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the fault proxy thread did not answer within {timeout} s") from None

    def drop_connections(self) -> int:
        """Cut every current connection (client and upstream, both reset; queued data discarded), as a
        network outage would. ZeroMQ peers reconnect by themselves. Returns how many were cut."""
        def cut():
            links = [link for link in self._links.values() if not link.cut]
            for link in links:
                link.cut_now()
            return len(links)

        return self._call(cut)

    def stats(self) -> dict:
        """A JSON-serialisable snapshot of everything done so far, summed over all connections:

        * ``listen``, ``target``, ``seed``, ``uptime_s``, ``faults`` ({"down": {delay, jitter, loss,
          reorder}, "up": {delay, jitter}}), ``connections`` (accepted, open, closed, cut,
          upstream_failures);
        * ``down`` and ``up``: bytes_in/out, raw_bytes (greeting and unparsed stream), messages_in/out,
          commands_in/out, commands_by_name, data_packets, control_packets, other_messages,
          subscription_messages (ZMTP 3.0, up), dropped, out_of_order, reordered_by_swap, swap_timeouts,
          discarded_messages/commands/bytes (queued when a connection went), raw_fallbacks,
          pending_messages, and {count, min, mean, max} summaries: ``delay_s`` (scheduled delay of data
          packets), ``message_delay_s`` (scheduled, every message), ``emit_delay_s`` (arrival to emission of
          data packets, as it happened);
        * ``sources``: per source id (a string) of down-going data packets: received, forwarded, dropped,
          discarded, out_of_order, reordered_by_swap, pending (= received - forwarded - dropped - discarded);
        * ``links``: the same per connection (open ones and the last few closed), with ``mechanism``.
        """
        return self._call(self._stats)

    def _stats(self) -> dict:
        totals = {DOWN: _DirStats(), UP: _DirStats()}
        sources: dict[int, _SourceStats] = {}
        for direction in (DOWN, UP):
            totals[direction].merge(self._closed_totals[direction])
        for source_id, st in self._closed_sources.items():
            sources.setdefault(source_id, _SourceStats()).merge(st)
        links = list(self._history)
        for link in list(self._links.values()):
            totals[DOWN].merge(link.down.stats)
            totals[UP].merge(link.up.stats)
            for source_id, st in link.sources.items():
                sources.setdefault(source_id, _SourceStats()).merge(st)
            links.append(link.to_dict())
        return {
            "listen": f"{self.bound_host or self.listen[0]}:{self.port if self.port is not None else self.listen[1]}",
            "target": f"{self.target[0]}:{self.target[1]}",
            "seed": self.seed,
            "uptime_s": None if self._started_at is None else time.monotonic() - self._started_at,
            "faults": self.faults(),
            "connections": {"accepted": self._accepted_count, "open": len(self._links), "closed": self._closed_count,
                            "cut": self._cut_count, "upstream_failures": self._upstream_failures},
            DOWN: totals[DOWN].to_dict(),
            UP: totals[UP].to_dict(),
            "sources": {str(k): v.to_dict() for k, v in sorted(sources.items())},
            "links": links,
        }


def _address(value, what: str, allow_zero: bool) -> tuple[str, int]:
    try:
        host, port = value
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a (host, port) pair, got {value!r}") from None
    if not isinstance(host, str) or not host:
        raise ValueError(f"{what} host must be a non-empty string, got {host!r}")
    if not isinstance(port, int) or not (0 if allow_zero else 1) <= port <= 65535:
        raise ValueError(f"{what} port must be an int in {0 if allow_zero else 1}..65535, got {port!r}")
    return host, port


# ---- command line --------------------------------------------------------------------------------


_seconds = number(at_least=0, name="a number of seconds")
_probability = number(at_least=0, at_most=1, name="a probability")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be in 0..65535")
    return host, number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spikewire.tools.fault_proxy",
        description="Relay ZeroMQ subscribers to a publisher through injected delay, jitter, loss and reordering. "
                    "Prints where it listens on stderr and one JSON line of stats on stdout every --stats-every "
                    "seconds and on exit (SIGINT / SIGTERM).")
    parser.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT",
                        help="address subscribers connect to (port 0: any free port)")
    parser.add_argument("--to", type=_host_port, required=True, metavar="HOST:PORT",
                        help="the publisher's (XPUB's) bound address")
    parser.add_argument("--delay", type=_seconds, default=0.0, metavar="S", help="fixed delay, both directions")
    parser.add_argument("--jitter", type=_seconds, default=0.0, metavar="S",
                        help="extra uniform(0, S) delay per message, both directions")
    parser.add_argument("--up-delay", type=_seconds, default=None, metavar="S",
                        help="fixed delay subscriber -> publisher (default: --delay)")
    parser.add_argument("--up-jitter", type=_seconds, default=None, metavar="S",
                        help="jitter subscriber -> publisher (default: --jitter)")
    parser.add_argument("--loss", type=_probability, default=0.0, metavar="P",
                        help="probability that a down-going data packet is dropped")
    parser.add_argument("--reorder", type=_probability, default=0.0, metavar="P",
                        help="probability that a down-going data packet is swapped with the next message")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--stats-every", type=_seconds, default=10.0, metavar="S",
                        help="print stats every S seconds (0: only on exit; default 10)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow listening on a non-loopback address")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.to[1] == 0:
        parser.error("--to: the publisher's port cannot be 0")
    if not args.allow_remote and not is_loopback(args.listen[0]):
        parser.error(f"--listen: refusing to listen on {args.listen[0]!r}, not a loopback address "
                     "(pass --allow-remote to override)")
    proxy = FaultProxy(listen=args.listen, target=args.to, delay=args.delay, jitter=args.jitter, loss=args.loss,
                       reorder=args.reorder, seed=args.seed, up_delay=args.up_delay, up_jitter=args.up_jitter,
                       allow_remote=args.allow_remote)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        try:
            proxy.start()
        except OSError as exc:
            print(f"fault_proxy: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}", file=sys.stderr)
            return 1
        print(f"fault_proxy: listening on {proxy.bound_host}:{proxy.port}, forwarding to "
              f"{proxy.target[0]}:{proxy.target[1]}; faults {json.dumps(proxy.faults())}", file=sys.stderr, flush=True)
        every = args.stats_every
        next_print = time.monotonic() + every
        while not stop.wait(0.1 if every <= 0 else max(0.0, min(0.1, next_print - time.monotonic()))):
            if every > 0 and time.monotonic() >= next_print:
                print(json.dumps(proxy.stats()), flush=True)
                next_print += every
    finally:
        proxy.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(proxy.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
