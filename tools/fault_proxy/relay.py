"""One relayed connection: the subscriber's TCP connection, the one made to the publisher for it, and the
two pipes between them that read ZMTP, apply the fault schedule and count.

A message counts as a spikewire packet if it is a single frame whose header ``streams/wire.py`` accepts
(``wire.read_header``: magic, version, a known kind, zero flags, a length that matches the event count, a
finite send time; the events are not read). Only data packets (``wire.DATA_KINDS``, the kinds that consume
a sequence number) are ever dropped or swapped; heartbeats and clock pings are control packets. Anything
else, a packet ``decode`` would refuse included, is forwarded untouched (never dropped), with delay and
jitter, and counted as ``other_messages``.

Catches: messages are buffered whole (each at most ``zmtp.MAX_MESSAGE`` bytes) before being scheduled.
At a cut, packets still scheduled are counted as ``discarded``; bytes already handed to the kernel may or
may not reach the subscriber. Faults are per direction of one TCP connection: the proxy cannot see what
the publisher's own queues drop.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

from spikewire.streams.wire import DATA_KINDS, Header, WireError, read_header

from .schedule import (ALONE, BYTES, COMMAND, CONTROL, DATA, DOWN, OTHER, SUBSCRIPTION, SWAPPED, UP, Item,
                       Schedule)
from .stats import DirectionStats, SourceStats, sources_dict
from .zmtp import ZmtpReader, is_subscription

if TYPE_CHECKING:
    from .proxy import FaultProxy

CLIENT = "client"
UPSTREAM = "upstream"


class Pipe:
    """One direction of one connection: reads what comes in, schedules it, writes it out when due."""

    def __init__(self, link: Link, direction: str):
        self.link = link
        self.proxy = link.proxy
        self.loop = link.loop
        self.direction = direction
        self.is_down = direction == DOWN
        self.stats = DirectionStats()
        self.reader = ZmtpReader(self)
        self.schedule = Schedule(f"{self.proxy.seed}/{link.id}/{direction}")
        self.timer: asyncio.TimerHandle | None = None
        self.out: asyncio.Transport | None = None
        self.input_done = False
        self.closed = False

    @property
    def mechanism(self) -> str | None:
        return self.reader.mechanism

    # ---- input -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        if self.closed:
            self.stats.discarded_bytes += len(data)
            return
        self.reader.feed(data, self.loop.time())
        self.pump()

    def stream_bytes(self, data: bytes, now: float) -> None:
        self.stats.raw_bytes += len(data)
        self._barrier(Item(bytes(data), now, BYTES))

    def fell_back(self) -> None:
        self.stats.raw_fallbacks += 1

    def command(self, frame: bytes, name: str, now: float) -> None:
        st = self.stats
        st.commands_in += 1
        st.commands_by_name[name] = st.commands_by_name.get(name, 0) + 1
        self._barrier(Item(frame, now, COMMAND))

    def message(self, data: bytes, head: int, single: bool, now: float) -> None:
        st = self.stats
        st.messages_in += 1
        what, source, seq = OTHER, None, None
        header = _packet_header(data, head) if single else None
        if header is not None:
            what = DATA if header.kind in DATA_KINDS else CONTROL
            source, seq = header.source, header.sequence
        if what == DATA:
            st.data_packets += 1
        elif what == CONTROL:
            st.control_packets += 1
        elif not self.is_down and is_subscription(data, head):
            st.subscription_messages += 1
            self._barrier(Item(data, now, SUBSCRIPTION))
            return
        else:
            st.other_messages += 1
        faults = self.proxy._faults[self.direction]
        if what == DATA and self.is_down:
            src = self.link.source(source)
            src.received += 1
            if self.schedule.lost(faults):
                src.dropped += 1
                st.dropped += 1
                return
        delay = self.schedule.add(Item(data, now, what, source, seq), faults)
        st.message_delay_s.add(delay)
        if what == DATA:
            st.delay_s.add(delay)

    def _barrier(self, item: Item) -> None:
        self.schedule.add_barrier(item, self.proxy._faults[self.direction].delay)

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

        def emit(item: Item, how: int) -> None:
            self._write(item, how, now, chunks)

        reorder = self.proxy._faults[DOWN].reorder if self.is_down else 0.0
        wake = self.schedule.release(now, reorder, self.input_done, emit)
        if chunks:
            out.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        if wake < math.inf:
            self.timer = self.loop.call_at(wake, self.pump)
        elif self.input_done and self.schedule.drained and self.schedule.held is None:
            out.close()  # the other side has gone and everything it sent has been delivered

    def _write(self, item: Item, how: int, now: float, chunks: list) -> None:
        st = self.stats
        chunks.append(item.data)
        st.bytes_out += len(item.data)
        what = item.what
        if what == COMMAND:
            st.commands_out += 1
            return
        if what == BYTES:
            return
        st.messages_out += 1
        if what != DATA:
            return
        if how == ALONE:
            st.swap_timeouts += 1
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
        if how == SWAPPED:
            src.reordered_by_swap += 1
            st.reordered_by_swap += 1

    def discard(self) -> None:
        """The connection is gone: count everything still queued as discarded, and stop."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        st = self.stats
        for item in self.schedule.pending():
            st.discarded_bytes += len(item.data)
            if item.what == COMMAND:
                st.discarded_commands += 1
            elif item.what in (DATA, CONTROL, OTHER, SUBSCRIPTION):
                st.discarded_messages += 1
                if item.what == DATA and self.is_down:
                    self.link.source(item.source).discarded += 1
        st.discarded_bytes += self.reader.buffered
        self.schedule.clear()
        self.reader.clear()


def _packet_header(data: bytes, head: int) -> Header | None:
    """The header of the spikewire packet that fills a frame after its ``head`` bytes, or None."""
    try:
        return read_header(data, head)
    except WireError:
        return None  # not a packet a receiver would count: relayed as any other message


class Side(asyncio.Protocol):
    """The asyncio protocol of one of a link's two TCP connections."""

    def __init__(self, proxy: FaultProxy, role: str, link: Link | None = None):
        self.proxy = proxy
        self.role = role
        self.link = link

    def connection_made(self, transport) -> None:
        if self.role == CLIENT:
            self.link = self.proxy._accepted(transport)

    def data_received(self, data: bytes) -> None:
        link = self.link
        (link.up if self.role == CLIENT else link.down).feed(data)

    def eof_received(self):
        return False  # close; connection_lost follows

    def connection_lost(self, exc) -> None:
        if self.link is not None:
            self.link.side_lost(self.role)

    def pause_writing(self) -> None:
        self.link.set_reading(UPSTREAM if self.role == CLIENT else CLIENT, False)

    def resume_writing(self) -> None:
        self.link.set_reading(UPSTREAM if self.role == CLIENT else CLIENT, True)


class Link:
    """One accepted subscriber connection and the publisher connection made for it."""

    def __init__(self, proxy: FaultProxy, link_id: int, client):
        self.proxy = proxy
        self.loop = proxy._loop
        self.id = link_id
        self.client = client
        self.upstream = None
        peer = client.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.sources: dict[int, SourceStats] = {}
        self.highest: dict[int, int] = {}
        self.down = Pipe(self, DOWN)
        self.up = Pipe(self, UP)
        self.down.out = client
        self.client_gone = False
        self.upstream_gone = False
        self.cut = False
        self.open = True
        self.connect_task: asyncio.Task | None = None

    def source(self, source_id: int) -> SourceStats:
        st = self.sources.get(source_id)
        if st is None:
            st = self.sources[source_id] = SourceStats()
        return st

    async def connect(self) -> None:
        host, port = self.proxy.target
        try:
            transport, _ = await self.loop.create_connection(lambda: Side(self.proxy, UPSTREAM, self), host, port)
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
        transport = self.client if role == CLIENT else self.upstream
        if transport is None or transport.is_closing():
            return
        if on:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def side_lost(self, role: str) -> None:
        if role == CLIENT:
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
                "sources": sources_dict(self.sources)}
