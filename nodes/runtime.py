"""The loop that drives one node: receive, dispatch, tick on the wall clock, publish, measure.

One iteration drains every input socket without blocking (decoding, validating and dispatching each
packet to the node at once, then publishing what the node emitted), runs any clock-driven ticks that are
due, and does housekeeping (control messages, status) every 50 ms. When nothing arrived it sleeps in
``select()`` on the sockets' notification fds until the next deadline: microsecond timeouts and no
busy-waiting (``zmq.poll`` only has millisecond resolution, which is a whole tick).

Measured here, per node: tick compute time, loop lag (how late each tick started), overruns (ticks that
finished after the next one was due), skipped ticks; per input link: packets, events, sequence gaps,
out-of-order packets, latency (receive time minus the packet's send time, one clock on one machine);
per input port: malformed packets by reason; per output port: packets sent and dropped at a full queue.

Links that must survive the internet (see docs/sites.md):

* Liveness: every output port sends heartbeats when idle; an upstream silent for ``peer_timeout`` is
  *down* (logged, counted as an outage, its downtime summed) and *up* again with its next packet. A new
  epoch in its heartbeats, or an old sequence number after an outage, means the peer restarted: the
  link's sequence accounting starts over and nobody else restarts.
* Clocks: an inter-site upstream is pinged every ``clock_sync_every``; its offset (``ClockEstimator``)
  corrects the link's latency and its jitter-buffer release times.
* Jitter buffer: a link with ``delay`` D delivers each packet at its send time (in our clock) + D; one
  that arrives later is dropped or delivered at once, as the link's ``late`` policy says, and counted.
* Safety interlock: a node that stimulates or programs devices is held (``Node.held``; its STIMULUS
  packets are not published) while any input link is stale or losing packets beyond ``[safety]``, and
  released once the input has been healthy for ``release_after``. Each hold is logged and counted.
* Refusals: connections refused by CURVE, mechanism mismatch or non-ZMTP bytes are counted by reason.
"""

from __future__ import annotations

import heapq
import logging
import random
import resource
import select
import time
from collections import deque
from dataclasses import dataclass, field

import zmq

from spikewire.core.histogram import LogHistogram
from spikewire.nodes.base import Node
from spikewire.nodes.clocked import TickScheduler
from spikewire.streams.clock import local_clock
from spikewire.nodes.probes import ProbeState
from spikewire.streams.clocksync import ClockEstimator
from spikewire.streams.journal import RECEIVED
from spikewire.streams.security import HandshakeWatch, Refusals, ZapHandler
from spikewire.streams.wire import Kind, WireError, decode
from spikewire.nodes.interlock import SafetySettings
from spikewire.streams.transport import TransportSettings
from spikewire.streams.zmq_link import DEFAULT_HWM, Publisher, Subscriber

log = logging.getLogger("spikewire.runtime")

HOUSEKEEPING_PERIOD = 0.05
METRICS_SLACK = 0.002
"""Render the metrics exposition only when the next deadline is at least this far away."""
REORDER_WINDOW = 4096
"""Lost sequence numbers are remembered this far behind the newest, so a reordered packet arriving late
un-counts its loss; one later than that stays counted as lost (and as out of order)."""
MAX_EARLY = 1.0
"""A packet whose send time (in our clock) is this far in the future is refused (``bad_time``) on every
link: it could only sit in a jitter buffer for ever, and its latency would be negative."""
MAX_AGE = 60.0
"""A packet sent longer ago than this (in our clock) is refused as ``bad_time`` too: no queue in front of a
link holds a minute of traffic, so such a timestamp is corrupt or hostile, and one would wreck the
link's latency figures."""
MAX_SEQUENCE_JUMP = 1 << 20
"""A sequence number this far ahead of the last one, on a link that never went quiet, is not a loss
(a million packets gone while heartbeats kept arriving) but a corrupt or hostile packet: rejected as
``bad_sequence``. After an outage any jump is accepted and counted as lost."""
DRAIN_BUDGET = 256
"""Packets read from one upstream per loop iteration. A flooded input must not starve the rest of the
loop (ticks, heartbeats, control, metrics): what is left is read on the next iteration."""
RESYNC_AFTER = 16
"""This many packets in a row that look wrong against a link's sequence (all far ahead, or all behind)
mean the baseline is what is wrong (a corrupt packet set it): the link starts its sequence over."""
RETRY_AFTER = 1.0
"""Seconds after a failed handshake before a link that is still down reconnects."""
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
"""The interlock judges a link's loss fraction only over at least this many expected packets."""


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


def _windowed(marks: deque, now: float, window: float, good: int, bad: int) -> float:
    """bad / (good + bad) counted over the last ``window`` s, from running totals; ``marks`` keeps the
    totals seen at each call. 0 with fewer than LOSS_MIN_PACKETS packets to judge."""
    marks.append((now, good, bad))
    while len(marks) > 2 and marks[1][0] <= now - window:
        marks.popleft()
    _, g0, b0 = marks[0]
    lost, got = bad - b0, good - g0
    return lost / (lost + got) if lost + got >= LOSS_MIN_PACKETS else 0.0


@dataclass
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
    received: int = 0
    events: int = 0
    gaps: int = 0  # packets lost: sequence numbers skipped and not (yet) arrived late
    out_of_order: int = 0
    last_seq: int = -1
    next_seq_hint: int = 0  # from the latest heartbeat: the number the next data packet will carry
    missing: set[int] = field(default_factory=set)  # lost sequence numbers within REORDER_WINDOW of the newest
    late_dropped: int = 0
    late_delivered: int = 0
    buffered: int = 0  # packets waiting in the jitter buffer
    buffer_overflow: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    values: tuple[float, float] | None = None  # the input port's plausible event values
    out_of_range: int = 0  # events refused for an implausible value (the rest of their packet is delivered)
    latency: LogHistogram = field(default_factory=LogHistogram)
    lateness: LogHistogram = field(default_factory=LogHistogram)
    loss_marks: deque = field(default_factory=deque)  # (t, received, lost) for the interlock's window
    late_marks: deque = field(default_factory=deque)  # (t, received, late) for the late fraction's window
    behind_streak: int = 0  # consecutive packets not ahead of last_seq
    resyncs: int = 0  # times the sequence baseline was reset (see RESYNC_AFTER)
    duplicates: int = 0  # packets whose sequence number was already delivered
    first_seq: int = 0  # the sequence number this link started from (at start, or after the sender restarted)
    before_first: set[int] = field(default_factory=set)  # numbers below first_seq that arrived late, delivered
    unsynced: int = 0  # packets that arrived while the link's clock was not synchronised (delivered at once, untimed)

    def reject(self, reason: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1

    def sequence(self, seq: int) -> bool:
        """The sequence policy: account for ``seq`` (gaps, late packets filling them, out of order); False if
        it was delivered before (a duplicate, or a rewind), so each (epoch, sequence) reaches the node once.
        Refused packets (malformed in content, but with a plausible number) pass here too, so that what a
        receiver refuses is never also counted as lost."""
        last = self.last_seq
        if seq in self.missing:
            self.behind_streak = 0  # a late packet filling a known hole confirms the baseline
        elif seq < last - REORDER_WINDOW:  # far behind, and no hole of ours: is the baseline itself corrupt?
            self.behind_streak += 1
            if self.behind_streak >= RESYNC_AFTER:  # yes: a corrupt packet set it far ahead
                self.restart()
                self.resyncs += 1
                last = -1
        elif seq > last:
            self.behind_streak = 0
        if last < 0:
            self.first_seq = seq
            self.before_first.clear()
        elif seq > last:
            if seq > last + 1:
                self.gaps += seq - last - 1
                missing = self.missing
                missing.update(range(max(last + 1, seq - REORDER_WINDOW), seq))
                if len(missing) > 2 * REORDER_WINDOW:  # amortised: forget what can no longer arrive late
                    self.missing = {s for s in missing if s >= seq - REORDER_WINDOW}
        elif seq in self.missing:  # it was counted lost; it was only late
            self.missing.discard(seq)
            self.gaps -= 1
            self.out_of_order += 1
            return True
        elif self.first_seq - REORDER_WINDOW <= seq < self.first_seq and seq not in self.before_first:
            # Below where this link started (its first packet was overtaken by a later one): late, not a repeat.
            self.before_first.add(seq)
            self.out_of_order += 1
            return True
        else:
            return False
        self.last_seq = seq
        return True

    def count(self, seq: int, n_events: int, latency: float | None) -> bool:
        """Account for one data packet to be delivered; False (counted as a duplicate) if its sequence
        number was delivered before."""
        if not self.sequence(seq):
            self.duplicates += 1
            return False
        self.received += 1
        self.events += n_events
        if latency is not None:
            self.latency.record(latency)
        return True

    def restart(self) -> None:
        """The sender restarted: its sequence begins again."""
        self.last_seq = -1
        self.next_seq_hint = 0
        self.missing.clear()

    @property
    def trailing(self) -> int:
        """Packets the sender's heartbeat says it sent after the last one that arrived (lost, or in flight);
        0 before anything arrived (a late joiner is not owed the sender's history)."""
        return max(0, self.next_seq_hint - 1 - self.last_seq) if self.last_seq >= 0 else 0

    def loss_fraction(self, now: float, window: float) -> float:
        """Packets lost / expected over the last ``window`` s (0 with too few packets to judge). Corrupt
        packets are lost packets too, and so are those a jitter buffer dropped as late or for want of room:
        to the model, late is lost."""
        unusable = self.late_dropped + self.buffer_overflow  # arrived (counted received), never delivered
        bad = self.gaps + sum(self.malformed.values()) + unusable
        return _windowed(self.loss_marks, now, window, self.received - unusable, bad)

    def late_fraction(self, now: float, window: float) -> float:
        """Packets that arrived after their jitter-buffer release time / packets received, over ``window`` s."""
        late = self.late_dropped + self.late_delivered
        return _windowed(self.late_marks, now, window, self.received - late, late)

    def summary(self) -> dict:
        out = {"label": self.label, "received": self.received, "events": self.events, "gaps": self.gaps,
               "out_of_order": self.out_of_order, "trailing": self.trailing, "malformed": dict(self.malformed),
               "latency_s": self.latency.summary()}
        if self.latency.count:  # what a jitter buffer needs to deliver 99 % of this link's packets in time
            out["delay_for_p99_s"] = out["latency_s"]["p99"]
        if self.out_of_range:
            out["out_of_range"] = self.out_of_range
        if self.duplicates:
            out["duplicates"] = self.duplicates
        if self.unsynced:
            out["unsynced"] = self.unsynced
        if self.delay or self.auto_delay:
            out["jitter_buffer"] = {"delay_s": self.delay, "auto": self.auto_delay, "policy": self.late_policy, "late_dropped": self.late_dropped,
                                    "late_delivered": self.late_delivered, "overflow": self.buffer_overflow,
                                    "unsynced": self.unsynced, "buffered": self.buffered,
                                    "lateness_s": self.lateness.summary()}
        if self.resyncs:
            out["resyncs"] = self.resyncs
        return out


@dataclass
class Upstream:
    """One upstream output port this node listens to: one SUB connection, feeding one or more input
    ports. A packet is received once and dispatched to each; anything wrong with it is counted on
    every link it came in on, even garbage that names no valid source (the connection says where)."""

    source_id: int
    endpoint: str
    subscriber: Subscriber
    links: list[LinkIn]
    options: LinkOptions = LinkOptions()
    clock: ClockEstimator | None = None  # inter-site links only
    watch: HandshakeWatch | None = None
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

    def summary(self, now: float) -> dict:
        out = {"state": self.state, "outages": self.outages, "restarts": self.restarts, "heartbeats": self.heartbeats,
               "downtime_s": self.downtime + (now - self.down_since if self.state == "down" else 0.0),
               "inter_site": self.options.inter_site, "curve": self.options.curve, "reconnects": self.reconnects}
        if self.clock is not None:
            out["clock"] = {**self.clock.summary(), "pings": self.subscriber.pings, "pings_lost": self.pings_lost}
        if self.watch is not None:
            out["handshakes"] = self.watch.handshakes
        return out


@dataclass(frozen=True)
class InputPlan:
    """Where one input port gets its packets: the publisher endpoints and the source ids they stamp."""

    port: str
    sources: tuple[tuple[int, str, str], ...]  # (source id, endpoint, link label)
    hwm: int = DEFAULT_HWM
    options: dict[str, LinkOptions] = field(default_factory=dict)  # by link label
    sockbuf: int = 0  # kernel receive buffer [bytes]; 0: the OS default


class Runtime:
    def __init__(self, node: Node, ctx: zmq.Context, source_ids: dict[str, int], expected_subscribers: dict[str, set[str]],
                 bind_host: str = "127.0.0.1", endpoints: dict[str, str] | None = None, hwm: int = DEFAULT_HWM,
                 curve=None, curve_ports: frozenset[str] = frozenset(), transport=None, safety=None,
                 port_queues: dict[str, tuple[int, int]] | None = None, remote_ports: frozenset[str] = frozenset()):
        self.node = node
        self.ctx = ctx
        self.expected_subscribers = expected_subscribers
        self.transport = transport or TransportSettings()
        self.safety = safety or SafetySettings()
        self.curve = curve  # streams.security.CurveConfig, when inter-site links use CURVE
        self.refusals = Refusals(node.name)
        # The ZAP handler must exist before any CURVE server socket binds.
        self.zap = ZapHandler(ctx, curve.allowed, self.refusals) if curve is not None and curve_ports else None
        self.publishers: dict[str, Publisher] = {}
        self.watches: list[HandshakeWatch] = []
        for port, spec in node.outputs.items():
            endpoint = (endpoints or {}).get(port, f"tcp://{bind_host}:*")
            port_hwm, sockbuf = (port_queues or {}).get(port, (hwm, 0))  # the port's links' hwm, sockbuf
            pub = Publisher(ctx, spec.kind, source_ids[port], endpoint, port_hwm,
                            curve if port in curve_ports else None, sockbuf, remote=port in remote_ports)
            self.publishers[port] = pub
            self.watches.append(HandshakeWatch(pub.socket, self.refusals, server=True))
        self.upstreams: list[Upstream] = []
        self.stop_requested = False
        self.draining = False  # stop producing (no more ticks) but keep receiving and answering
        self.drained_at: float | None = None
        self.scheduler: TickScheduler | None = None
        self.ready = False
        self.clock = local_clock
        self.metrics = None  # MetricsServer, when the network exports metrics
        self.probe: ProbeState | None = None
        self.lsl_exports: dict = {}  # output port -> streams.lsl_link.EventOutlet
        self.journal = None  # streams.journal.JournalWriter, when the session is recorded
        self.started_at = 0.0
        self.control = None  # optional: object with .fd, .poll() -> list[dict], .send(dict)
        self.on_message = None  # optional: callable(dict) for control messages
        self.status_period = 1.0
        self._warned: set[str] = set()
        self.delayed: list = []  # the jitter buffers: heap of (release time, n, link, packet)
        self._backlog: list[Upstream] = []  # upstreams with input left after a budgeted drain
        self._pub_backlog: list[Publisher] = []  # publishers with subscriber messages left after a budgeted poll
        self._delayed_n = 0
        self.interlocked = bool(node.interlocked and self.safety.interlock and node.inputs)
        self.holds = 0
        self.held_since: float | None = None
        self.held_total = 0.0
        self.held_events = 0  # STIMULUS events not published while held
        self.hold_reason = ""
        self._healthy_since = 0.0
        self.log: list[dict] = []  # runtime events (outages, restarts, holds) for the session record

    # --- setup ---------------------------------------------------------------------------------
    @property
    def endpoints(self) -> dict[str, str]:
        return {port: pub.endpoint for port, pub in self.publishers.items()}

    def connect(self, plans: list[InputPlan]) -> None:
        """One XSUB per distinct upstream (source id, endpoint), shared by every input port it feeds."""
        by_source: dict[tuple[int, str], Upstream] = {}
        for plan in plans:
            spec = self.node.inputs[plan.port]
            for source_id, endpoint, label in plan.sources:
                opts = plan.options.get(label, LinkOptions())
                up = by_source.get((source_id, endpoint))
                if up is None:
                    if opts.curve and self.curve is None:
                        raise ValueError(f"{label}: the link needs CURVE but this node has no keys")
                    sub = Subscriber(self.ctx, plan.hwm, self.curve if opts.curve else None, opts.site, plan.sockbuf,
                                     remote=opts.inter_site, name=self.node.name)
                    watch = HandshakeWatch(sub.socket, self.refusals, server=False) if opts.inter_site else None
                    sub.connect(endpoint)
                    up = by_source[(source_id, endpoint)] = Upstream(
                        source_id, endpoint, sub, [], opts, ClockEstimator(self.transport.clock_window)
                        if opts.clock == "sync" else None, watch)
                    self.upstreams.append(up)
                    if watch is not None:
                        self.watches.append(watch)
                up.links.append(LinkIn(label, plan.port, spec.accepts, delay=opts.delay, late_policy=opts.late,
                                       auto_delay=opts.auto_delay, capacity=plan.hwm, values=spec.values))

    def wait_for_subscribers(self, timeout: float) -> None:
        """Block until every node expected on each output port has subscribed, known by name (the
        readiness handshake that replaces sleeping around ZeroMQ's slow joiner). Raises TimeoutError
        naming the ports and nodes still missing."""
        deadline = local_clock() + timeout
        while True:
            if self.zap is not None:  # local subscribers of a CURVE port are authenticated too
                self.zap.poll()
            for w in self.watches:
                w.poll()
            for pub in self.publishers.values():
                pub.poll_subscriptions()
            waiting = {p: sorted(self.expected_subscribers.get(p, set()) - pub.joined)
                       for p, pub in self.publishers.items()}
            waiting = {p: names for p, names in waiting.items() if names}
            if not waiting:
                return
            remaining = deadline - local_clock()
            if remaining <= 0:
                missing = "; ".join(f"{p}: {', '.join(names)}" for p, names in waiting.items())
                raise TimeoutError(f"not subscribed within {timeout} s ({missing})")
            fds = [self.publishers[p].fd for p in waiting] + ([self.zap.fd] if self.zap is not None else [])
            select.select(fds, [], [], min(remaining, 0.01 if self.zap is not None else 0.05))

    # --- the loop ------------------------------------------------------------------------------
    def run(self, t0: float, duration: float | None = None) -> None:
        node = self.node
        node.start(t0)
        self.started_at = t0
        period = node.tick_period
        if period:
            horizon = int(round(node.settings.lookahead / period)) if node.supports_lookahead else 0
            self.scheduler = TickScheduler(node, t0, period, horizon, self._publish)
        sched = self.scheduler
        wake_at = float("inf")
        if self.probe is not None:
            self.probe.start(t0)
        for up in self.upstreams:
            up.last_heard = t0  # silence is judged from the start of the session
        self._healthy_since = t0
        stop_at = t0 + duration if duration else float("inf")
        next_house = local_clock()
        next_status = t0 + self.status_period
        # Only sockets whose notification fd select() reports readable can have new input, so idle
        # ticks touch no socket at all. The fds are edge-triggered: a reported socket is always drained
        # to EAGAIN, and a socket that sends (control, XSUB pings) is drained right after. Publishers
        # send data, which can swallow the edge of a ping that arrived meanwhile: they are also read
        # every housekeeping period.
        by_fd: dict[int, Upstream | None] = {u.subscriber.fd: u for u in self.upstreams}
        if self.control is not None:
            by_fd[self.control.fd] = None
        pub_fds = {pub.fd: pub for pub in self.publishers.values()}
        side_fds = {w.fd: w for w in self.watches}
        if self.zap is not None:
            side_fds[self.zap.fd] = self.zap
        own_fds = set(node.fds())  # the node's own I/O (level-triggered OS sockets)
        fds = list(by_fd) + list(pub_fds) + list(side_fds) + list(own_fds)
        ready: list[int] = fds
        delayed = self.delayed
        backlog = self._backlog
        while not self.stop_requested:
            if ready or backlog or self._pub_backlog:
                # Upstreams left with input by the last budgeted drain come first (their fd will not
                # fire again: the edge was consumed).
                todo = backlog[:] + [by_fd[fd] for fd in ready if fd in by_fd and by_fd[fd] not in backlog]
                backlog.clear()
                self._drain(todo)
                for pub in self._pub_backlog:
                    pub.poll_subscriptions()
                self._pub_backlog = [pub for pub in self._pub_backlog if pub.more]
                for fd in ready:
                    if fd in pub_fds:
                        pub = pub_fds[fd]
                        pub.poll_subscriptions()
                        if pub.more and pub not in self._pub_backlog:
                            self._pub_backlog.append(pub)
                    elif fd in side_fds:
                        side_fds[fd].poll()
                    elif fd in own_fds:
                        node.on_readable(fd, local_clock())
                        self._flush()
            now = local_clock()
            if delayed and delayed[0][0] <= now:
                self._release(now)
            if self.draining:
                wake_at = float("inf")
            elif sched is not None and (sched.batch is None or now >= wake_at):
                wake_at = sched.advance(now)
            if now >= next_house:
                next_house = now + HOUSEKEEPING_PERIOD
                self._housekeeping(now)
                if self.probe is not None and not self.draining:
                    probe = self.probe.due(now)
                    if probe is not None:
                        self.publishers[self.probe.origin].publish(probe, Kind.PROBE)
                # Render metrics only with room before the next deadline: a scrape then costs the loop
                # nothing (the HTTP thread serves these bytes).
                if self.metrics is not None and self.metrics.due(now) and (
                        wake_at - now > METRICS_SLACK or now - self.metrics.rendered_at > 2 * self.metrics.max_age):
                    self.metrics.refresh(now)
                if self.control is not None:
                    if now >= next_status:
                        next_status = now + self.status_period
                        self.control.send({"type": "status", **self.status(now), "log": self.take_log()})
                    self._drain([None])
                if now >= stop_at:
                    break
            wait = min(wake_at, next_house, delayed[0][0] if delayed else wake_at) - local_clock()
            ready = select.select(fds, [], [], wait if wait > 0 and not backlog and not self._pub_backlog else 0)[0]

    def _drain(self, upstreams: list[Upstream | None]) -> None:
        """Receive everything waiting on ``upstreams`` (None stands for the control socket)."""
        node = self.node
        for up in upstreams:
            if up is None:
                for msg in self.control.poll():
                    self._on_control(msg)
                continue
            sub = up.subscriber
            for _ in range(DRAIN_BUDGET):
                buf = sub.recv_nowait()
                if buf is None:
                    break
                now = local_clock()
                if self.journal is not None:  # everything that arrived, garbage included
                    self.journal.log(RECEIVED, up.source_name, now, buf)
                try:
                    packet = decode(buf)
                except WireError as e:
                    up.reject(e.reason)
                    self._warn_once(f"{up.endpoint}:{e.reason}", f"{node.name}: dropped a malformed packet from "
                                    f"{up.source_name} ({e})")
                    continue
                if packet.source != up.source_id:
                    up.reject("unknown_source")
                    self._warn_once(f"{up.endpoint}:src", f"{node.name}: dropped a packet stamped with source "
                                    f"{packet.source} on the connection of source {up.source_id}")
                    continue
                kind = packet.kind
                if up.state != "up":
                    self._link_up(up, now)
                up.last_heard = now
                if kind == Kind.HEARTBEAT:
                    self._on_heartbeat(up, packet)
                    continue
                if kind == Kind.CLOCK:
                    self._on_pong(up, packet, now)
                    continue
                last = up.links[0].last_seq
                if up.resync:  # the first data packet since the start or an outage: any number is plausible
                    up.resync = False
                    if last >= 0 and packet.sequence <= last:
                        self._peer_restarted(up, "its sequence started again after an outage")
                elif last >= 0 and packet.sequence > last + MAX_SEQUENCE_JUMP:
                    up.bad_streak += 1
                    if up.bad_streak < RESYNC_AFTER:
                        up.reject("bad_sequence")
                        self._warn_once(f"{up.endpoint}:seq", f"{node.name}: dropped a packet from {up.source_name} "
                                        f"whose sequence number jumps from {last} to {packet.sequence}")
                        continue
                    self._peer_restarted(up, f"{RESYNC_AFTER} packets in a row far ahead of its sequence")
                up.bad_streak = 0
                # The send time on our clock; untimed while the sender's offset is unknown (no latency, no
                # time check, no jitter buffer: delivered at once and counted as unsynced).
                timed = up.clock.synced if up.clock is not None else up.options.clock == "local"
                sent_at = packet.send_time - up.offset
                if timed and not now - MAX_AGE <= sent_at <= now + MAX_EARLY:
                    for link in up.links:  # refused, not lost: its number is accounted for
                        link.sequence(packet.sequence)
                    up.reject("bad_time")  # corrupt or hostile: it would wreck latency figures or jam a buffer
                    when = f"{now - sent_at:.3g} s ago" if sent_at < now else f"{sent_at - now:.3g} s in the future"
                    self._warn_once(f"{up.endpoint}:time", f"{node.name}: dropped a packet from {up.source_name} "
                                    f"dated {when} by our clock")
                    continue
                latency = now - sent_at if timed else None
                for link in up.links:
                    if kind != Kind.PROBE and kind not in link.accepts:
                        link.sequence(packet.sequence)  # refused, not lost
                        link.reject("wrong_kind")
                        self._warn_once(f"{link.label}:kind", f"{link.label}: dropped a {kind.name} packet; "
                                        f"{link.port} accepts {', '.join(k.name for k in link.accepts)}")
                        continue
                    if not link.count(packet.sequence, 0 if kind == Kind.PROBE else len(packet.events), latency):
                        continue  # already delivered once
                    if not timed:
                        link.unsynced += 1
                        self._deliver(link, packet, now)
                        continue
                    if link.auto_delay and not link.delay:
                        self._learn_delay(link, latency, now)
                    if not link.delay or self._due_now(link, packet, now, sent_at + link.delay):
                        self._deliver(link, packet, now)
            else:  # the budget ran out with input left
                if up not in self._backlog:
                    self._backlog.append(up)

    def _learn_delay(self, link: LinkIn, latency: float, now: float) -> None:
        """``delay = "auto"``: gather the link's one-way latency; once AUTO_DELAY_WINDOW s and
        AUTO_DELAY_MIN_PACKETS packets are in, fix its delay at AUTO_DELAY_MARGIN x their p99."""
        samples = link.auto_samples
        if not samples:
            link.auto_from = now
        samples.append(latency)
        if now - link.auto_from < AUTO_DELAY_WINDOW or len(samples) < AUTO_DELAY_MIN_PACKETS:
            return
        p99 = sorted(samples)[min(len(samples) - 1, int(0.99 * len(samples)))]
        link.delay = max(1e-4, min(10.0, AUTO_DELAY_MARGIN * p99))
        log.warning("%s: %s: delay = \"auto\" fixed at %.1f ms (%g x the one-way latency p99 of %.1f ms over %d "
                    "packets in %.1f s)", self.node.name, link.label, 1e3 * link.delay, AUTO_DELAY_MARGIN, 1e3 * p99,
                    len(samples), now - link.auto_from)
        self._record("auto_delay", now, link=link.label, delay_s=link.delay, p99_s=p99, packets=len(samples))
        link.auto_samples = []

    def _due_now(self, link: LinkIn, packet, now: float, release: float) -> bool:
        """The jitter buffer of ``link``: True if the packet is to be delivered now; else it was queued for
        its ``release`` time, or dropped (counted) as late or beyond the buffer's capacity."""
        if release > now:
            if link.buffered >= link.capacity:
                link.buffer_overflow += 1
                return False
            link.buffered += 1
            self._delayed_n += 1
            heapq.heappush(self.delayed, (release, self._delayed_n, link, packet))
            return False
        link.lateness.record(now - release)
        if link.late_policy == "drop":
            link.late_dropped += 1
            return False
        link.late_delivered += 1
        return True

    def _deliver(self, link: LinkIn, packet, now: float) -> None:
        """Hand one packet's events to the node (or forward a probe), as if it arrived at ``now``."""
        if packet.kind == Kind.PROBE:
            self._on_probe(link.port, packet.events, now)
            return
        events = packet.events
        if link.values is not None and len(events):
            events = self._plausible(link, events)
        if not len(events):
            return
        if self.scheduler is not None:
            self.scheduler.on_input(link.port, packet.kind, events, now)
        else:
            self.node.mark_phases(now)
            self.node.on_events(link.port, packet.kind, events, now)
            self._flush()

    def _plausible(self, link: LinkIn, events):
        """``events`` without those whose value lies outside the port's plausible range (counted, and the
        first one logged): one absurd amplitude or weight must never reach a model or a stimulator."""
        lo, hi = link.values
        v = events["value"]
        if lo <= v.min() and v.max() <= hi:  # the hot path: two reductions, no masks
            return events
        bad = (v < lo) | (v > hi)
        n = int(bad.sum())
        link.out_of_range += n
        self._warn_once(f"{link.label}:range", f"{self.node.name}: refused {n} event(s) on {link.label} with values "
                        f"outside [{lo:g}, {hi:g}] (first: {float(v[bad][0]):g})")
        return events[~bad]

    def _release(self, now: float) -> None:
        """Deliver every jitter-buffered packet whose time has come, at its own release time."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            release, _, link, packet = heapq.heappop(delayed)
            link.buffered -= 1
            self._deliver(link, packet, release)

    # --- liveness and clocks -------------------------------------------------------------------
    def _link_up(self, up: Upstream, now: float) -> None:
        if up.state == "down":
            up.resync = True
            gap = now - up.down_since
            up.downtime += gap
            log.warning("%s: %s is back after %.2f s", self.node.name, up.source_name, gap)
            self._record("link_up", now, source=up.source_name, after_s=gap)
        up.state = "up"

    def _on_heartbeat(self, up: Upstream, packet) -> None:
        up.heartbeats += 1
        if len(packet.events) == 1:
            epoch = float(packet.events[0]["t"])
            if up.epoch is not None and epoch != up.epoch:
                self._peer_restarted(up, "a new epoch in its heartbeat")
            up.epoch = epoch
        for link in up.links:
            if packet.sequence <= link.last_seq + MAX_SEQUENCE_JUMP:  # a corrupt hint is no evidence of loss
                link.next_seq_hint = packet.sequence

    def _peer_restarted(self, up: Upstream, why: str) -> None:
        up.restart()
        log.warning("%s: %s restarted (%s); its link starts over", self.node.name, up.source_name, why)
        self._record("peer_restarted", local_clock(), source=up.source_name, why=why)

    def _on_pong(self, up: Upstream, packet, t4: float) -> None:
        ev = packet.events
        if up.clock is None or len(ev) != 2:
            return
        nonce = int(ev[0]["id"])
        t1 = up.pings.get(nonce)
        if t1 is None or t1 != float(ev[0]["t"]):
            return  # the answer to another subscriber's ping (pongs go to every subscriber of the port)
        del up.pings[nonce]
        up.clock.add(t1, float(ev[1]["t"]), packet.send_time, t4)

    def _ping(self, up: Upstream, now: float) -> None:
        # Until the first answer, ping every 0.1 s: the link's packets cannot be timed before it.
        up.next_ping = now + (self.transport.clock_sync_every if up.clock.synced else 2 * HOUSEKEEPING_PERIOD)
        if len(up.pings) > 8:  # unanswered for a while: count them lost, keep the map small
            up.pings_lost += len(up.pings)
            up.pings.clear()
            if not up.clock.synced and up.state == "up":
                self._warn_once(f"{up.endpoint}:nosync", f"{self.node.name}: {up.source_name} answers no clock "
                                "pings: its packets are delivered untimed (no latency, no time checks, no jitter "
                                "buffer) and counted as unsynced. If it cannot answer, say clock = \"local\" (it "
                                "runs on this machine's clock) or \"none\" on its link")
        up.nonce = (up.nonce + 1) & 0xFFFFFFFF
        up.pings[up.nonce] = up.subscriber.ping(up.nonce)
        self._drain([up])  # the send may have consumed the fd's edge

    def _on_probe(self, port: str, events, now: float) -> None:
        if self.probe is None:
            return
        forward = self.probe.arrived(events, now)
        if forward is not None and not self.draining:
            for out in self.node.probe_route(port):
                self.publishers[out].publish(forward, Kind.PROBE)

    def record_to(self, path, max_bytes: int | None = None) -> None:
        """Journal every packet sent on each output port and received from each upstream to ``path``
        (up to ``max_bytes``; past it, records are counted as dropped)."""
        from spikewire.streams.journal import DEFAULT_MAX_BYTES, SENT, JournalWriter

        names = list(self.publishers) + [up.source_name for up in self.upstreams]
        self.journal = journal = JournalWriter(path, self.node.name, names,
                                               DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        for port, pub in self.publishers.items():
            pub.on_sent = lambda data, port=port: journal.log(SENT, port, local_clock(), data)

    def export_lsl(self, network_name: str) -> None:
        """Mirror the node's ``lsl_export`` output ports as LSL streams."""
        from spikewire.streams.lsl_link import EventOutlet

        units = {Kind.SPIKE: ("Spikes", "A"), Kind.STIMULUS: ("Stimuli", "V"), Kind.BIO: ("Events", "type")}
        node = self.node
        for port in node.settings.lsl_export:
            stream_type, unit = units.get(node.outputs[port].kind, ("Events", "a.u."))
            name = f"{network_name}.{node.name}.{port}"
            self.lsl_exports[port] = EventOutlet(name, stream_type, f"spikewire.{name}", node.name, node.settings.site,
                                                 port, unit)

    def _publish(self, port: str, events) -> None:
        if self.held_since is not None and self.publishers[port].kind == Kind.STIMULUS:
            self.held_events += len(events)  # the interlock: no stimulation on untrustworthy input
            return
        self.publishers[port].publish(events)
        export = self.lsl_exports.get(port)
        if export is not None:
            export.push(events)

    def _flush(self) -> None:
        outbox = self.node.outbox
        for port, events in outbox.pending():
            self._publish(port, events)
        outbox.clear()

    def _housekeeping(self, now: float) -> None:
        every = self.transport.heartbeat_every
        for pub in self.publishers.values():
            pub.poll_subscriptions()
            if pub.more and pub not in self._pub_backlog:
                self._pub_backlog.append(pub)
            pub.heartbeat(now, every)
        for w in self.watches:
            w.poll()
        if self.zap is not None:
            self.zap.poll()
        timeout = self.transport.peer_timeout
        for up in self.upstreams:
            if up.state == "up" and now - up.last_heard > timeout:
                up.state = "down"
                up.down_since = up.last_heard
                up.outages += 1
                log.warning("%s: %s silent for %.2f s: link down (outage %d)", self.node.name, up.source_name,
                            now - up.last_heard, up.outages)
                self._record("link_down", now, source=up.source_name, outage=up.outages)
            if up.clock is not None and now >= up.next_ping:
                self._ping(up, now)
            if up.watch is not None and up.state != "up" and up.watch.retry_due(time.monotonic(), RETRY_AFTER):
                # libzmq gives up on a peer after a failed handshake; the peer may have been fixed since.
                sub = up.subscriber.socket
                sub.disconnect(up.endpoint)
                sub.connect(up.endpoint)
                up.reconnects += 1
                self._drain([up])  # libzmq processed commands in there: the fd's edge may be gone
        for up in self.upstreams:
            for link in up.links:
                if link.delay:
                    self._watch_late(link, now)
        if self.interlocked:
            self._interlock(now)
        self.node.housekeeping(now)
        if self.journal is not None:
            self.journal.flush()  # every 50 ms: a crash loses at most this window

    def _watch_late(self, link: LinkIn, now: float) -> None:
        """Log a jitter-buffered link whose packets arrive late (once per episode): late is lost to the model."""
        late = link.late_fraction(now, self.safety.loss_window)
        if late > LATE_WARN and not link.late_warned:
            link.late_warned = True
            log.warning("%s: %s: %.0f %% of packets late over %g s (delay %.1f ms; latency p99 %.1f ms would need "
                        "delay >= %.1f ms)", self.node.name, link.label, 100 * late, self.safety.loss_window,
                        1e3 * link.delay, 1e3 * link.latency.quantile(0.99), 1e3 * link.latency.quantile(0.99))
            self._record("link_late", now, link=link.label, late_fraction=late, delay_s=link.delay,
                         latency_p99_s=link.latency.quantile(0.99))
        elif late < LATE_WARN / 2 and link.late_warned:
            link.late_warned = False
            log.warning("%s: %s: packets on time again (%.1f %% late)", self.node.name, link.label, 100 * late)

    def _interlock(self, now: float) -> None:
        """Hold the node while any input link is stale or lossy; release after ``release_after`` healthy."""
        safety = self.safety
        bad = ""
        for up in self.upstreams:
            if now - up.last_heard > safety.stale_after:
                bad = bad or f"{up.source_name} silent for {now - up.last_heard:.2f} s"
            for link in up.links:
                loss = link.loss_fraction(now, safety.loss_window)
                if loss > safety.max_loss:
                    bad = bad or (f"{link.label} lost {100 * loss:.1f} % of packets (late ones included) over "
                                  f"{safety.loss_window:g} s")
        if bad:
            self._healthy_since = now
            if self.held_since is None:
                self.held_since = now
                self.holds += 1
                self.hold_reason = bad
                self.node.held = True
                log.warning("%s: interlock HOLD %d (stimulation and programming held): %s", self.node.name,
                            self.holds, bad)
                self._record("interlock_hold", now, reason=bad, hold=self.holds)
        elif self.held_since is not None and now - self._healthy_since >= safety.release_after:
            held = now - self.held_since
            self.held_total += held
            self.held_since = None
            self.node.held = False
            log.warning("%s: interlock released after %.2f s (input healthy for %g s)", self.node.name, held,
                        safety.release_after)
            self._record("interlock_release", now, held_s=held, hold=self.holds)

    def _record(self, event: str, t: float, **fields) -> None:
        self.log.append({"event": event, "t": t, "node": self.node.name, **fields})

    def take_log(self) -> list[dict]:
        """The node's model log and the runtime's own events since the last call."""
        out, self.log = self.log, []
        return out + self.node.take_log()

    def _on_control(self, msg: dict) -> None:
        if msg.get("type") == "stop":
            self.stop_requested = True
        elif msg.get("type") == "drain" and not self.draining:
            self.draining = True
            self.drained_at = local_clock()
            if self.scheduler is not None:
                self.scheduler.settle(self.drained_at)
        elif self.on_message is not None:
            self.on_message(msg)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s (further ones are only counted)", text)

    # --- reports -------------------------------------------------------------------------------
    def loop_summary(self) -> dict:
        if self.scheduler is None:
            return {"ticks": 0, "overruns": 0, "skipped_ticks": 0, "tick_compute_s": {"count": 0}, "lag_s": {"count": 0}}
        return self.scheduler.summary()

    def io_summary(self, now: float | None = None) -> dict:
        now = local_clock() if now is None else now
        outputs = {p: {"sent": pub.sent, "dropped": pub.dropped, "events": pub.events_sent,
                       "subscribers": sorted(pub.joined), "heartbeats": pub.heartbeats, "pongs": pub.pongs,
                       "pings_ignored": pub.pings_ignored,
                       "upstream_malformed": pub.upstream_malformed, "curve": pub.curve}
                   for p, pub in self.publishers.items()}
        inputs: dict[str, dict] = {}
        for up in self.upstreams:
            for link in up.links:
                inputs.setdefault(link.port, {"links": {}})["links"][str(up.source_id)] = {
                    **link.summary(), "upstream": up.summary(now)}
        out = {"outputs": outputs, "inputs": inputs,
               "refused": {k: v for k, v in self.refusals.counts.items() if v}}
        if self.zap is not None:
            out["admitted"] = dict(self.zap.admitted)
        if self.interlocked:
            out["interlock"] = {"holds": self.holds, "holding": self.held_since is not None,
                                "held_s": self.held_total + (now - self.held_since if self.held_since is not None else 0),
                                "held_stimulus_events": self.held_events, "reason": self.hold_reason}
        return out

    def status(self, now: float) -> dict:
        return {"node": self.node.name, "t": now, "elapsed": now - self.started_at,
                "model": self.node.status(now), "loop": {k: v for k, v in self.loop_summary().items() if not k.endswith("_s")},
                **self.io_summary(now)}

    def summary(self, now: float) -> dict:
        """Final figures; rates are over the producing time (start to drain)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        end = self.drained_at if self.drained_at is not None else now
        self.node.mark_phases(end)
        out = {"node": self.node.name, "kind": self.node.kind, "elapsed": end - self.started_at,
               "model": self.node.summary(end), "phases": list(self.node.phase_marks),
               "loop": self.loop_summary(), **self.io_summary(now),
               "process": {"cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024}}
        if self.probe is not None and self.probe.origin:
            out["probes"] = self.probe.summary()
        if self.metrics is not None:
            out["metrics"] = {"port": self.metrics.port, "render_s": self.metrics.render_time.summary(),
                              "refused": self.metrics.refused, "timed_out": self.metrics.timed_out}
        if self.journal is not None:
            self.journal.flush()
            out["journal"] = self.journal.summary()
        return out

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self.metrics is not None:
            self.metrics.close()
        for w in self.watches:
            w.close()
        for pub in self.publishers.values():
            pub.close()
        for up in self.upstreams:
            up.subscriber.close()
        if self.zap is not None:
            self.zap.close()
        self.node.close()
