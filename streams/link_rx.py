"""The receive half of the link protocol (the send half is ``streams/zmq_link.py``): what a node makes of
the packets that arrive from each upstream output port, before any of them reaches its element.

* ``sequence_verdict``: the per-packet sequence policy on numbers alone (gaps, late packets filling them,
  duplicates and rewinds, a first packet overtaken, a corrupt baseline resynced), so that each (epoch,
  sequence) reaches the node once and every lost packet is counted once.
* ``LinkIn``: one link's figures (packets, events, gaps, duplicates, late, out of range, latency), its
  loss and late fractions over a window, and its ``delay = "auto"``.
* ``JitterBuffer``: the packets of a node's delayed links, each held until its send time (in our clock)
  plus its link's delay; one arriving after that is dropped or delivered at once, as its link says.
* ``Upstream``: one connection to an upstream port: liveness (up, down, restarted), its clock offset
  (NTP-style pings over the link), and ``receive``, the per-packet path from bytes to ``deliver``.

The catch: ``Upstream.receive`` runs once per packet in a real-time loop. It only bumps plain numbers on
objects built at setup; per packet it calls ``decode``, ``LinkIn.count`` (which calls ``sequence_verdict``)
and the caller's ``deliver``, and nothing else unless the packet is odd. Every number a peer sends is
untrusted (a sequence number, a send time, a heartbeat's hint): each is checked for plausibility, and a
bad one is counted and dropped, never allowed to wreck a link's figures or its jitter buffer.
"""

from __future__ import annotations

import heapq
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Iterator

import zmq

from spikewire.core.histogram import LogHistogram
from spikewire.streams.clock import local_clock
from spikewire.streams.clocksync import ClockEstimator
from spikewire.streams.journal import RECEIVED
from spikewire.streams.security import HandshakeWatch
from spikewire.streams.wire import Kind, WireError, decode
from spikewire.streams.zmq_link import DEFAULT_HWM, Subscriber

log = logging.getLogger("spikewire.link")

REORDER_WINDOW = 4096
"""Lost sequence numbers are remembered this far behind the newest, so a reordered packet arriving late
un-counts its loss; one later than that stays counted as lost, and is refused as a repeat (counted in
``duplicates``): past the window a late packet and a replayed one look the same."""
RESYNC_AFTER = 16
"""This many packets in a row that look wrong against a link's sequence (all far ahead, or all behind)
mean the baseline is what is wrong (a corrupt packet set it): the link starts its sequence over."""
MAX_SEQUENCE_JUMP = 1 << 20
"""A sequence number this far ahead of the last one, on a link that never went quiet, is not a loss
(a million packets gone while heartbeats kept arriving) but a corrupt or hostile packet: rejected as
``bad_sequence``. After an outage any jump is accepted and counted as lost."""
MAX_EARLY = 1.0
"""A packet whose send time (in our clock) is this far in the future is refused (``bad_time``) on every
link: it could only sit in a jitter buffer for ever, and its latency would be negative."""
MAX_AGE = 60.0
"""A packet sent longer ago than this (in our clock) is refused as ``bad_time`` too: no queue in front of a
link holds a minute of traffic, so such a timestamp is corrupt or hostile, and one would wreck the
link's latency figures."""
DRAIN_BUDGET = 256
"""Packets read from one upstream per loop iteration. A flooded input must not starve the rest of the
loop (ticks, heartbeats, control, metrics): what is left is read on the next iteration."""
RETRY_AFTER = 1.0
"""Seconds after a failed handshake before a link that is still down reconnects."""
PING_UNSYNCED_EVERY = 0.1
"""Until a link's first clock answer, it is pinged this often: its packets cannot be timed before it."""
AUTO_DELAY_WINDOW = 5.0
"""Seconds of a link's one-way latency measured before ``delay = "auto"`` fixes its delay (and at least
AUTO_DELAY_MIN_PACKETS packets). Meanwhile packets are delivered on arrival."""
AUTO_DELAY_MIN_PACKETS = 20
AUTO_DELAY_MARGIN = 1.25
"""``delay = "auto"`` is this many times the latency p99 measured over its window."""
LATE_WARN = 0.05
"""A jitter-buffered link with more than this fraction of its packets late over the interlock's window is
logged (once per episode) with the delay that would have covered its latency p99."""
LOSS_MIN_PACKETS = 20
"""A link's loss (or late) fraction is judged only over at least this many expected packets."""

_HEARTBEAT, _CLOCK, _PROBE = Kind.HEARTBEAT, Kind.CLOCK, Kind.PROBE  # module constants: read per packet
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)  # ints: pyzmq's enums cost per use


@dataclass(frozen=True)
class LinkOptions:
    """What the network file says about one link beyond its ends."""

    delay: float = 0.0  # jitter buffer D [s]; 0: none
    late: str = "drop"  # policy for packets arriving after send time + D
    inter_site: bool = False
    site: str = ""  # the upstream's site
    curve: bool = False  # connect as a CURVE client of ``site``
    auto_delay: bool = False  # delay = "auto": measure the link first, then fix ``delay``
    clock: str = "local"  # "local": the publisher shares our clock; "sync": estimate its offset by pinging;
    # "none": its clock is unrelated and cannot be estimated (no latency, no time checks, no jitter buffer)


@dataclass(frozen=True)
class InputPlan:
    """Where one input port gets its packets: the publisher endpoints and the source ids they stamp."""

    port: str
    sources: tuple[tuple[int, str, str], ...]  # (source id, endpoint, link label)
    hwm: int = DEFAULT_HWM
    options: dict[str, LinkOptions] = field(default_factory=dict)  # by link label
    sockbuf: int = 0  # kernel receive buffer [bytes]; 0: the OS default


class EventLog:
    """What a node's links, runtime and interlock say beyond their figures: events for the session record
    (outages, restarts, holds, a delay fixed), and warnings logged once per key, because a peer sending
    garbage a thousand times a second must not flood the log (the rest are only counted)."""

    def __init__(self, node: str):
        self.node = node
        self.records: list[dict] = []
        self._warned: set[str] = set()

    def record(self, event: str, t: float, **fields) -> None:
        self.records.append({"event": event, "t": t, "node": self.node, **fields})

    def warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s (further ones are only counted)", text)

    def take(self) -> list[dict]:
        """The events recorded since the last call."""
        out, self.records = self.records, []
        return out


# --- the sequence policy ---------------------------------------------------------------------------
class Verdict(IntEnum):
    """What ``sequence_verdict`` made of one number. Only DUPLICATE (0, falsy) is not delivered."""

    DUPLICATE = 0
    """Delivered before (a repeat, or a rewind not yet believed): counted, never delivered twice."""
    FIRST = 1
    """The link's first number (at start, or after the sender restarted): it sets the baseline."""
    NEXT = 2
    """One above the last: the common case."""
    AHEAD = 3
    """Numbers were skipped: each is counted lost until it arrives late."""
    LATE = 4
    """Below the last but never delivered: it fills a hole (un-counting its loss) or came before the
    first packet, which overtook it. Counted out of order."""
    RESYNC = 5
    """The last of RESYNC_AFTER numbers in a row far behind the baseline: the baseline was corrupt, and the
    link starts over from this one."""


DUPLICATE, FIRST, NEXT, AHEAD, LATE, RESYNC = tuple(Verdict)


@dataclass(slots=True)
class SequenceState:
    """Where one link's sequence stands: everything ``sequence_verdict`` reads and writes."""

    last: int = -1  # the highest number delivered; -1: none yet (the next one sets the baseline)
    first: int = 0  # the number the link started from (at start, after the sender restarted, after a resync)
    hint: int = 0  # from the latest heartbeat: the number the next data packet will carry
    missing: set[int] = field(default_factory=set)  # lost numbers within REORDER_WINDOW of the newest
    before_first: set[int] = field(default_factory=set)  # numbers below ``first`` that arrived late
    behind_streak: int = 0  # numbers in a row far behind ``last`` with no hole of ours to fill
    gaps: int = 0  # numbers skipped and not (yet) arrived late: packets lost
    out_of_order: int = 0
    resyncs: int = 0  # times a corrupt baseline was dropped (see RESYNC_AFTER)

    def restart(self) -> None:
        """The sender restarted: its sequence begins again (the counts stand)."""
        self.last = -1
        self.hint = 0
        self.missing.clear()

    @property
    def trailing(self) -> int:
        """Packets the sender's heartbeat says it sent after the last one that arrived (lost, or in flight);
        0 before anything arrived (a late joiner is not owed the sender's history)."""
        return max(0, self.hint - 1 - self.last) if self.last >= 0 else 0


def sequence_verdict(s: SequenceState, seq: int) -> Verdict:
    """The sequence policy: account for ``seq`` in ``s`` (gaps, late packets filling them, out of order)
    and say whether it is new. Refused packets (malformed in content, but with a plausible number) pass
    here too, so that what a receiver refuses is never also counted as lost.

    No clock, no I/O, nothing but ``s`` and ``seq``; ``s`` is updated in place rather than returned anew,
    because this runs for every packet and must not allocate."""
    last = s.last
    if seq == last + 1 and last >= 0:  # the common case; a number above ``last`` is never in ``missing``
        s.behind_streak = 0
        s.last = seq
        return NEXT
    missing = s.missing
    if seq in missing:
        s.behind_streak = 0  # a late packet filling a known hole confirms the baseline
    elif seq < last - REORDER_WINDOW:  # far behind, and no hole of ours: is the baseline itself corrupt?
        s.behind_streak += 1
        if s.behind_streak >= RESYNC_AFTER:  # yes: a corrupt packet set it far ahead
            s.restart()
            s.resyncs += 1
            s.first = s.last = seq
            s.before_first.clear()
            return RESYNC
    elif seq > last:
        s.behind_streak = 0
    if last < 0:
        s.first = s.last = seq
        s.before_first.clear()
        return FIRST
    if seq > last:
        s.gaps += seq - last - 1
        missing.update(range(max(last + 1, seq - REORDER_WINDOW), seq))
        if len(missing) > 2 * REORDER_WINDOW:  # amortised: forget what can no longer arrive late
            s.missing = {n for n in missing if n >= seq - REORDER_WINDOW}
        s.last = seq
        return AHEAD
    if seq in missing:  # it was counted lost; it was only late
        missing.discard(seq)
        s.gaps -= 1
        s.out_of_order += 1
        return LATE
    if s.first - REORDER_WINDOW <= seq < s.first and seq not in s.before_first:
        # Below where this link started (its first packet was overtaken by a later one): late, not a repeat.
        s.before_first.add(seq)
        s.out_of_order += 1
        return LATE
    return DUPLICATE


# --- one link's figures ----------------------------------------------------------------------------
def _windowed(marks: deque, now: float, window: float, good: int, bad: int) -> float:
    """bad / (good + bad) counted over the last ``window`` s, from running totals; ``marks`` keeps the
    totals seen at each call. 0 with fewer than LOSS_MIN_PACKETS packets to judge."""
    marks.append((now, good, bad))
    while len(marks) > 2 and marks[1][0] <= now - window:
        marks.popleft()
    _, g0, b0 = marks[0]
    lost, got = bad - b0, good - g0
    return lost / (lost + got) if lost + got >= LOSS_MIN_PACKETS else 0.0


@dataclass(slots=True)
class LinkIn:
    """Receive-side figures of one link (one upstream output port into one input port)."""

    label: str
    port: str
    accepts: frozenset
    delay: float = 0.0
    late_policy: str = "drop"
    auto_delay: bool = False  # delay = "auto": ``delay`` stays 0 until AUTO_DELAY_WINDOW of latency is measured
    auto_samples: list = field(default_factory=list)
    auto_from: float = 0.0
    late_warned: bool = False
    capacity: int = DEFAULT_HWM  # packets the jitter buffer may hold; beyond, arrivals are dropped (counted)
    values: tuple[float, float] | None = None  # the input port's plausible event values
    seq: SequenceState = field(default_factory=SequenceState)
    received: int = 0
    events: int = 0
    duplicates: int = 0  # packets whose sequence number was already delivered
    late_dropped: int = 0
    late_delivered: int = 0
    buffered: int = 0  # packets waiting in the jitter buffer
    buffer_overflow: int = 0
    unsynced: int = 0  # packets that arrived while the link's clock was not synchronised (delivered at once, untimed)
    out_of_range: int = 0  # events refused for an implausible value (the rest of their packet is delivered)
    malformed: dict[str, int] = field(default_factory=dict)
    latency: LogHistogram = field(default_factory=LogHistogram)
    probe_latency: LogHistogram = field(default_factory=LogHistogram)  # loop probes only: the loop's transits
    lateness: LogHistogram = field(default_factory=LogHistogram)
    loss_marks: deque = field(default_factory=deque)  # (t, received, lost) for the interlock's window
    late_marks: deque = field(default_factory=deque)  # (t, received, late) for the late fraction's window

    # The sequence's counts, read where they always were (reports, metrics, tests).
    gaps = property(lambda self: self.seq.gaps, doc="Packets lost: numbers skipped and not (yet) arrived late.")
    out_of_order = property(lambda self: self.seq.out_of_order)
    resyncs = property(lambda self: self.seq.resyncs)
    last_seq = property(lambda self: self.seq.last)
    trailing = property(lambda self: self.seq.trailing)

    def reject(self, reason: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1

    def count(self, seq: int, n_events: int, latency: float | None = None) -> bool:
        """Account for one data packet to be delivered; False (counted as a duplicate) if its sequence
        number was delivered before. (The receive path records its latency itself, after delivery.)"""
        if not sequence_verdict(self.seq, seq):
            self.duplicates += 1
            return False
        self.received += 1
        self.events += n_events
        if latency is not None:
            self.latency.record(latency)
        return True

    def restart(self) -> None:
        """The sender restarted: its sequence begins again."""
        self.seq.restart()

    def plausible(self, events, log_to: EventLog):
        """``events`` without those whose value lies outside the port's plausible range (counted, and the
        first one logged): one absurd amplitude or weight must never reach a model or a stimulator."""
        lo, hi = self.values
        v = events["value"]
        if lo <= v.min() and v.max() <= hi:  # the hot path: two reductions, no masks
            return events
        bad = (v < lo) | (v > hi)
        n = int(bad.sum())
        self.out_of_range += n
        log_to.warn_once(f"{self.label}:range", f"{log_to.node}: refused {n} event(s) on {self.label} with values "
                         f"outside [{lo:g}, {hi:g}] (first: {float(v[bad][0]):g})")
        return events[~bad]

    def loss_fraction(self, now: float, window: float) -> float:
        """Packets lost / expected over the last ``window`` s (0 with too few packets to judge). Corrupt
        packets are lost packets too, and so are those a jitter buffer dropped as late or for want of room:
        to the model, late is lost."""
        unusable = self.late_dropped + self.buffer_overflow  # arrived (counted received), never delivered
        bad = self.seq.gaps + sum(self.malformed.values()) + unusable
        return _windowed(self.loss_marks, now, window, self.received - unusable, bad)

    def late_fraction(self, now: float, window: float) -> float:
        """Packets that arrived after their jitter-buffer release time / packets received, over ``window`` s."""
        late = self.late_dropped + self.late_delivered
        return _windowed(self.late_marks, now, window, self.received - late, late)

    def learn_delay(self, latency: float, now: float, events: EventLog) -> None:
        """``delay = "auto"``: gather the link's one-way latency; once AUTO_DELAY_WINDOW s and
        AUTO_DELAY_MIN_PACKETS packets are in, fix its delay at AUTO_DELAY_MARGIN x their p99."""
        samples = self.auto_samples
        if not samples:
            self.auto_from = now
        samples.append(latency)
        if now - self.auto_from < AUTO_DELAY_WINDOW or len(samples) < AUTO_DELAY_MIN_PACKETS:
            return
        p99 = sorted(samples)[min(len(samples) - 1, int(0.99 * len(samples)))]
        self.delay = max(1e-4, min(10.0, AUTO_DELAY_MARGIN * p99))
        log.warning("%s: %s: delay = \"auto\" fixed at %.1f ms (%g x the one-way latency p99 of %.1f ms over %d "
                    "packets in %.1f s)", events.node, self.label, 1e3 * self.delay, AUTO_DELAY_MARGIN, 1e3 * p99,
                    len(samples), now - self.auto_from)
        events.record("auto_delay", now, link=self.label, delay_s=self.delay, p99_s=p99, packets=len(samples))
        self.auto_samples = []

    def watch_late(self, now: float, window: float, events: EventLog) -> None:
        """Log a jitter-buffered link whose packets arrive late (once per episode): late is lost to the model."""
        late = self.late_fraction(now, window)
        if late > LATE_WARN and not self.late_warned:
            self.late_warned = True
            p99 = self.latency.quantile(0.99)
            log.warning("%s: %s: %.0f %% of packets late over %g s (delay %.1f ms; latency p99 %.1f ms would need "
                        "delay >= %.1f ms)", events.node, self.label, 100 * late, window, 1e3 * self.delay,
                        1e3 * p99, 1e3 * p99)
            events.record("link_late", now, link=self.label, late_fraction=late, delay_s=self.delay,
                          latency_p99_s=p99)
        elif late < LATE_WARN / 2 and self.late_warned:
            self.late_warned = False
            log.warning("%s: %s: packets on time again (%.1f %% late)", events.node, self.label, 100 * late)

    def summary(self) -> dict:
        out = {"label": self.label, "received": self.received, "events": self.events, "gaps": self.seq.gaps,
               "out_of_order": self.seq.out_of_order, "trailing": self.seq.trailing, "malformed": dict(self.malformed),
               "latency_s": self.latency.summary()}
        if self.probe_latency.count:
            out["probe_latency_s"] = self.probe_latency.summary()
        if self.latency.count:  # what a jitter buffer needs to deliver 99 % of this link's packets in time
            out["delay_for_p99_s"] = out["latency_s"]["p99"]
        if self.out_of_range:
            out["out_of_range"] = self.out_of_range
        if self.duplicates:
            out["duplicates"] = self.duplicates
        if self.unsynced:
            out["unsynced"] = self.unsynced
        if self.delay or self.auto_delay:
            out["jitter_buffer"] = {"delay_s": self.delay, "auto": self.auto_delay, "policy": self.late_policy,
                                    "late_dropped": self.late_dropped, "late_delivered": self.late_delivered,
                                    "overflow": self.buffer_overflow, "unsynced": self.unsynced,
                                    "buffered": self.buffered, "lateness_s": self.lateness.summary()}
        if self.seq.resyncs:
            out["resyncs"] = self.seq.resyncs
        return out


# --- the jitter buffer -----------------------------------------------------------------------------
class JitterBuffer:
    """The packets of a node's delayed links, each held until it is due (its send time in our clock plus
    its link's delay), so that network jitter becomes a constant synaptic delay.

    One buffer serves every link of a node, so packets leave in due order across links (ties in arrival
    order); each link keeps its own policy and figures (``capacity``, ``late_policy``, ``buffered``,
    ``buffer_overflow``, ``late_dropped``, ``late_delivered``, ``lateness``). ``queue`` is a heap of
    (due, arrival number, link, packet): ``queue[0][0]`` is the next due time, which the loop reads to
    know how long it may sleep."""

    __slots__ = ("queue", "_arrivals")

    def __init__(self) -> None:
        self.queue: list = []
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self.queue)

    def push(self, link: LinkIn, packet, due: float, now: float) -> bool:
        """True if ``packet`` is to be delivered now: it is late (after ``due``) and its link delivers late
        packets. Otherwise it is held until ``due``, or dropped (counted) as late or beyond the link's
        capacity."""
        if due > now:
            if link.buffered >= link.capacity:
                link.buffer_overflow += 1
                return False
            link.buffered += 1
            self._arrivals += 1
            heapq.heappush(self.queue, (due, self._arrivals, link, packet))
            return False
        link.lateness.record(now - due)
        if link.late_policy == "drop":
            link.late_dropped += 1
            return False
        link.late_delivered += 1
        return True

    def pop_due(self, now: float) -> Iterator[tuple[float, LinkIn, object]]:
        """(due, link, packet) of every held packet due by ``now``, in due order; each to be delivered as
        if it arrived at its due time."""
        queue = self.queue
        while queue and queue[0][0] <= now:
            due, _, link, packet = heapq.heappop(queue)
            link.buffered -= 1
            yield due, link, packet


# --- one upstream connection -----------------------------------------------------------------------
Deliver = Callable[[LinkIn, object, float], None]
"""``deliver(link, packet, now)``: hand one packet's events to the node, as if it arrived at ``now``."""


@dataclass(slots=True)
class Upstream:
    """One upstream output port this node listens to: one SUB connection, feeding one or more input
    ports. A packet is received once and dispatched to each; anything wrong with it is counted on
    every link it came in on, even garbage that names no valid source (the connection says where).

    Liveness: an upstream silent for ``peer_timeout`` is *down* (logged, counted as an outage, its
    downtime summed) and *up* again with its next packet. A new epoch in its heartbeats, or an old
    sequence number after an outage, means the peer restarted: its links' sequences start over.
    Clock: a ``sync`` upstream is pinged every ``clock_sync_every``; its offset corrects the link's
    latency and its jitter-buffer due times. Until it is known, packets are delivered untimed."""

    source_id: int
    endpoint: str
    subscriber: Subscriber | None
    links: list[LinkIn]
    options: LinkOptions = LinkOptions()
    clock: ClockEstimator | None = None  # inter-site links only
    watch: HandshakeWatch | None = None
    events: EventLog = field(default_factory=lambda: EventLog(""))
    state: str = "waiting"  # waiting (never heard), up, down
    last_heard: float = 0.0
    down_since: float = 0.0
    outages: int = 0
    downtime: float = 0.0
    restarts: int = 0
    heartbeats: int = 0
    epoch: float | None = None
    pings: dict[int, float] = field(default_factory=dict)  # nonce -> t1 of pings not yet answered
    nonce: int = field(default_factory=lambda: random.getrandbits(32))  # subscribers of one port must not collide
    next_ping: float = 0.0
    pings_lost: int = 0
    reconnects: int = 0  # after failed handshakes
    resync: bool = True  # the next data packet sets the sequence baseline (at start, after an outage)
    bad_streak: int = 0  # consecutive bad_sequence rejections

    @property
    def source_name(self) -> str:
        """The upstream output port ('node.port', or the external endpoint)."""
        return self.links[0].label.split(" -> ")[0]

    @property
    def offset(self) -> float:
        """The sender's clock minus ours (0 until measured, and on one machine)."""
        return self.clock.offset if self.clock is not None else 0.0

    def reject(self, reason: str) -> None:
        for link in self.links:
            link.reject(reason)

    def restart(self) -> None:
        self.restarts += 1
        self.epoch = None  # the new sender's epoch is learnt from its next heartbeat, not a second restart
        for link in self.links:
            link.restart()
        if self.clock is not None:
            self.clock.reset()
        self.pings.clear()

    def receive(self, deliver: Deliver, jitter: JitterBuffer, journal=None, budget: int = DRAIN_BUDGET) -> bool:
        """Read up to ``budget`` packets waiting on the connection: decode and check each, account for it on
        every link, and ``deliver`` it (now, or through ``jitter``). True if the budget ran out with input
        left: the socket's fd will not fire again for it, so the caller reads again soon."""
        # Written for the cold path a packet takes after a wake: locals, no helper calls where a line does.
        sock = self.subscriber.socket
        links = self.links
        events = self.events
        local_time = self.options.clock == "local"
        for i in range(budget):
            # The first receive is tried at once: the fd fired, and a packet waiting is the case that
            # matters. After it, ZMQ_EVENTS says whether more is queued, which costs less than a receive
            # that fails (zmq.Again raises: ~15 us cold) and re-arms the edge-triggered fd just the same.
            if i and not sock.get(_EVENTS) & _POLLIN:
                return False
            try:
                buf = sock.recv(_NOBLOCK, copy=True)
            except zmq.Again:
                return False
            now = local_clock()
            if journal is not None:  # everything that arrived, garbage included (encoded after the answer)
                journal.note((RECEIVED, self.source_name, now, buf))
            try:
                packet = decode(buf)
            except WireError as e:
                self.reject(e.reason)
                events.warn_once(f"{self.endpoint}:{e.reason}", f"{events.node}: dropped a malformed packet from "
                                 f"{self.source_name} ({e})")
                continue
            if packet.source != self.source_id:
                self.reject("unknown_source")
                events.warn_once(f"{self.endpoint}:src", f"{events.node}: dropped a packet stamped with source "
                                 f"{packet.source} on the connection of source {self.source_id}")
                continue
            kind = packet.kind
            if self.state != "up":
                self.came_up(now)
            self.last_heard = now
            if kind == _HEARTBEAT:
                self.on_heartbeat(packet)
                continue
            if kind == _CLOCK:
                self.on_pong(packet, now)
                continue
            seq = packet.sequence
            last = links[0].seq.last
            if self.resync:  # the first data packet since the start or an outage: any number is plausible
                self.resync = False
                if last >= 0 and seq <= last:
                    self.peer_restarted("its sequence started again after an outage")
            elif last >= 0 and seq > last + MAX_SEQUENCE_JUMP:
                self.bad_streak += 1
                if self.bad_streak < RESYNC_AFTER:
                    self.reject("bad_sequence")
                    events.warn_once(f"{self.endpoint}:seq", f"{events.node}: dropped a packet from "
                                     f"{self.source_name} whose sequence number jumps from {last} to {seq}")
                    continue
                self.peer_restarted(f"{RESYNC_AFTER} packets in a row far ahead of its sequence")
            self.bad_streak = 0
            # The send time on our clock; untimed while the sender's offset is unknown (no latency, no
            # time check, no jitter buffer: delivered at once and counted as unsynced).
            clock = self.clock
            if clock is not None:
                timed = clock.synced
                sent_at = packet.send_time - clock.offset
            else:
                timed = local_time
                sent_at = packet.send_time
            if timed and not now - MAX_AGE <= sent_at <= now + MAX_EARLY:
                for link in links:  # refused, not lost: its number is accounted for
                    sequence_verdict(link.seq, seq)
                self.reject("bad_time")  # corrupt or hostile: it would wreck latency figures or jam a buffer
                when = f"{now - sent_at:.3g} s ago" if sent_at < now else f"{sent_at - now:.3g} s in the future"
                events.warn_once(f"{self.endpoint}:time", f"{events.node}: dropped a packet from "
                                 f"{self.source_name} dated {when} by our clock")
                continue
            latency = now - sent_at if timed else None
            for link in links:
                if kind != _PROBE and kind not in link.accepts:
                    sequence_verdict(link.seq, seq)  # refused, not lost
                    link.reject("wrong_kind")
                    events.warn_once(f"{link.label}:kind", f"{link.label}: dropped a {kind.name} packet; "
                                     f"{link.port} accepts {', '.join(k.name for k in link.accepts)}")
                    continue
                state = link.seq
                if seq == state.last + 1 and state.last >= 0:  # sequence_verdict's common case, inline
                    state.behind_streak = 0
                    state.last = seq
                    link.received += 1
                    link.events += 0 if kind == _PROBE else len(packet.events)
                elif not link.count(seq, 0 if kind == _PROBE else len(packet.events)):
                    continue  # already delivered once
                if not timed:
                    link.unsynced += 1
                    deliver(link, packet, now)
                    continue
                if link.auto_delay and not link.delay:
                    link.learn_delay(latency, now, events)
                if not link.delay or jitter.push(link, packet, sent_at + link.delay, now):
                    deliver(link, packet, now)
                # Figures after delivery: the packet's answer does not wait for its bookkeeping.
                link.latency.record(latency)
                if kind == _PROBE:
                    link.probe_latency.record(latency)
        return True

    # --- liveness and clock --------------------------------------------------------------------
    def came_up(self, now: float) -> None:
        if self.state == "down":
            self.resync = True
            gap = now - self.down_since
            self.downtime += gap
            log.warning("%s: %s is back after %.2f s", self.events.node, self.source_name, gap)
            self.events.record("link_up", now, source=self.source_name, after_s=gap)
        self.state = "up"

    def on_heartbeat(self, packet) -> None:
        self.heartbeats += 1
        if len(packet.events) == 1:
            epoch = float(packet.events[0]["t"])
            if self.epoch is not None and epoch != self.epoch:
                self.peer_restarted("a new epoch in its heartbeat")
            self.epoch = epoch
        hint = packet.sequence
        for link in self.links:
            if hint <= link.seq.last + MAX_SEQUENCE_JUMP:  # a corrupt hint is no evidence of loss
                link.seq.hint = hint

    def peer_restarted(self, why: str) -> None:
        self.restart()
        log.warning("%s: %s restarted (%s); its link starts over", self.events.node, self.source_name, why)
        self.events.record("peer_restarted", local_clock(), source=self.source_name, why=why)

    def on_pong(self, packet, t4: float) -> None:
        ev = packet.events
        if self.clock is None or len(ev) != 2:
            return
        nonce = int(ev[0]["id"])
        t1 = self.pings.get(nonce)
        if t1 is None or t1 != float(ev[0]["t"]):
            return  # the answer to another subscriber's ping (pongs go to every subscriber of the port)
        del self.pings[nonce]
        self.clock.add(t1, float(ev[1]["t"]), packet.send_time, t4)

    def ping(self, now: float, every: float) -> None:
        """Send a clock ping up the link (the next one ``every`` s on, or sooner until the clock is known).
        A send can consume the socket fd's edge: the caller reads the connection right after."""
        self.next_ping = now + (every if self.clock.synced else PING_UNSYNCED_EVERY)
        if len(self.pings) > 8:  # unanswered for a while: count them lost, keep the map small
            self.pings_lost += len(self.pings)
            self.pings.clear()
            if not self.clock.synced and self.state == "up":
                self.events.warn_once(
                    f"{self.endpoint}:nosync", f"{self.events.node}: {self.source_name} answers no clock pings: its "
                    "packets are delivered untimed (no latency, no time checks, no jitter buffer) and counted as "
                    "unsynced. If it cannot answer, say clock = \"local\" (it runs on this machine's clock) or "
                    "\"none\" on its link")
        self.nonce = (self.nonce + 1) & 0xFFFFFFFF
        self.pings[self.nonce] = self.subscriber.ping(self.nonce)

    def housekeeping(self, now: float, transport, drain: Callable[[list[Upstream]], None]) -> None:
        """Judge silence, ping, and reconnect after a failed handshake. ``drain([self])`` reads the
        connection after anything that sent on it (the fd's edge may be gone)."""
        if self.state == "up" and now - self.last_heard > transport.peer_timeout:
            self.state = "down"
            self.down_since = self.last_heard
            self.outages += 1
            log.warning("%s: %s silent for %.2f s: link down (outage %d)", self.events.node, self.source_name,
                        now - self.last_heard, self.outages)
            self.events.record("link_down", now, source=self.source_name, outage=self.outages)
        if self.clock is not None and now >= self.next_ping:
            self.ping(now, transport.clock_sync_every)
            drain([self])
        if self.watch is not None and self.state != "up" and self.watch.retry_due(time.monotonic(), RETRY_AFTER):
            # libzmq gives up on a peer after a failed handshake; the peer may have been fixed since.
            sock = self.subscriber.socket
            sock.disconnect(self.endpoint)
            sock.connect(self.endpoint)
            self.reconnects += 1
            drain([self])  # libzmq processed commands in there: the fd's edge may be gone

    def summary(self, now: float) -> dict:
        out = {"state": self.state, "outages": self.outages, "restarts": self.restarts, "heartbeats": self.heartbeats,
               "downtime_s": self.downtime + (now - self.down_since if self.state == "down" else 0.0),
               "inter_site": self.options.inter_site, "curve": self.options.curve, "reconnects": self.reconnects}
        if self.clock is not None:
            out["clock"] = {**self.clock.summary(), "pings": self.subscriber.pings, "pings_lost": self.pings_lost}
        if self.watch is not None:
            out["handshakes"] = self.watch.handshakes
        return out
