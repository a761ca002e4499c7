"""The loop that drives one node: receive, dispatch, tick on the wall clock, publish, measure.

One iteration drains every input socket without blocking (decoding, validating and dispatching each
packet to the node at once, then publishing what the node emitted), runs any clock-driven ticks that are
due, and does housekeeping (control messages, status) every 0.1 s. When nothing arrived it sleeps in
``select()`` on the sockets' notification fds until the next deadline: microsecond timeouts and no
busy-waiting (``zmq.poll`` only has millisecond resolution, which is a whole tick).

This module is the wiring and the loop. What happens to a packet between the socket and the node (the
sequence policy, per-link figures, liveness, clock sync, the jitter buffer) is the receive half of the link
protocol, in ``streams/link_rx.py`` beside its send half; the safety interlock is ``nodes/interlock.py``.

Measured here, per node: tick compute time, loop lag (how late each tick started), overruns (ticks that
finished after the next one was due), skipped ticks; per output port: packets sent and dropped at a full
queue; connections refused by CURVE, mechanism mismatch or non-ZMTP bytes, by reason.
"""

from __future__ import annotations

import gc
import resource
import select
import time

import zmq

from spikewire.core.histogram import LogHistogram
from spikewire.nodes.base import Node
from spikewire.nodes.clocked import TickScheduler
from spikewire.nodes.interlock import Interlock, SafetySettings
from spikewire.nodes.probes import ProbeState
from spikewire.streams.clock import local_clock
from spikewire.streams.clocksync import ClockEstimator
from spikewire.streams.link_rx import (AUTO_DELAY_MARGIN, AUTO_DELAY_MIN_PACKETS, AUTO_DELAY_WINDOW, DRAIN_BUDGET,
                                       LATE_WARN, LOSS_MIN_PACKETS, MAX_AGE, MAX_EARLY, MAX_SEQUENCE_JUMP,
                                       REORDER_WINDOW, RESYNC_AFTER, RETRY_AFTER, EventLog, InputPlan, JitterBuffer,
                                       LinkIn, LinkOptions, Upstream)
from spikewire.streams.security import HandshakeWatch, Refusals, ZapHandler
from spikewire.streams.transport import TransportSettings
from spikewire.streams.wire import Kind
from spikewire.streams.zmq_link import DEFAULT_HWM, Publisher, Subscriber

# Names that moved to streams/link_rx.py and are still imported from here (config, monitor, tests).
__all__ = ["AUTO_DELAY_MARGIN", "AUTO_DELAY_MIN_PACKETS", "AUTO_DELAY_WINDOW", "DRAIN_BUDGET", "LATE_WARN",
           "LOSS_MIN_PACKETS", "MAX_AGE", "MAX_EARLY", "MAX_SEQUENCE_JUMP", "REORDER_WINDOW", "RESYNC_AFTER",
           "RETRY_AFTER", "InputPlan", "LinkIn", "LinkOptions", "Upstream", "Runtime", "HOUSEKEEPING_PERIOD",
           "HOUSEKEEPING_SLOP"]

_PROBE = Kind.PROBE
HOUSEKEEPING_PERIOD = 0.1
HOUSEKEEPING_SLOP = 0.05
"""Housekeeping is due every HOUSEKEEPING_PERIOD and done on the first wake after that; the loop wakes for it
alone only HOUSEKEEPING_SLOP later. A node woken by packets, ticks or probes (tens of times a second) then
almost never wakes just to look around: each wake costs ~50 us of CPU on its own (the measured idle cost)."""
SLACK = 0.002
"""Slow chores (metrics exposition, status, journal write, garbage collection) run only when the next
deadline is at least this far away and no input is waiting (or when overdue by a period)."""
METRICS_SLICES = 16
"""Most slices of a metrics render per housekeeping period (a render has ~9; see monitor/exporter.py)."""
GC_PERIOD = 1.0
"""Seconds between the loop's own garbage collections (automatic collection is off while it runs)."""


class Runtime:
    """One node's process around its element: output ports, upstream connections, the loop, the interlock,
    and the figures the supervisor and the metrics exporter read."""

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
        self.events = EventLog(node.name)  # runtime events (outages, restarts, holds) for the session record
        self.jitter = JitterBuffer()  # every delayed link's packets, until they are due
        self.interlock = Interlock(self.safety, self.upstreams, self.events)
        self.interlocked = bool(node.interlocked and self.safety.interlock and node.inputs)
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
        self._backlog: list[Upstream] = []  # upstreams with input left after a budgeted drain
        self._pub_backlog: list[Publisher] = []  # publishers with subscriber messages left after a budgeted poll
        self._deliver_to_node = self._deliver  # bound once: handed to every drain
        self._probe_routes: dict[str, tuple[Publisher, ...]] = {}  # input port -> where its probes go on
        self.gc_time = LogHistogram()  # the loop's own garbage collections, each in slack
        self.wakes = 0  # loop iterations (each a return from select: the idle cost is mostly these)
        self.woken_by_input = 0  # ... of which some fd was ready

    # The interlock's figures, where the metrics exporter reads them.
    held_since = property(lambda self: self.interlock.held_since)
    holds = property(lambda self: self.interlock.holds)
    held_events = property(lambda self: self.interlock.held_events)

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
                    clock = ClockEstimator(self.transport.clock_window) if opts.clock == "sync" else None
                    up = by_source[(source_id, endpoint)] = Upstream(source_id, endpoint, sub, [], opts, clock, watch,
                                                                     self.events)
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
        probe_at = self.probe.next_at if self.probe is not None else float("inf")
        for up in self.upstreams:
            up.last_heard = t0  # silence is judged from the start of the session
        self.interlock.start(t0)
        stop_at = t0 + duration if duration else float("inf")
        next_house = local_clock()
        self._next_status = t0 + self.status_period
        self._next_gc = t0 + GC_PERIOD
        # Everything built so far (modules, compiled kernels, the network) lives as long as the process: out
        # of the collector's sight, a full collection takes microseconds, not the ~60 ms it takes with
        # numba loaded. Collection is then ours to schedule: in slack (see _slack_work). The full
        # collection before the freeze is the caller's, before it reports ready (``collect_before_start``):
        # here, at the start, it would hold the first packets for those 60 ms.
        gc.freeze()
        gc.disable()
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
        in_fds = list(by_fd)  # input waiting here means no slack for slow work
        spin = node.settings.spin  # poll, never sleep: on a core of its own (NodeSettings.validate)
        ready: list[int] = fds
        held = self.jitter.queue  # (due, n, link, packet) heap: held[0][0] is the next release
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
            if probe_at <= now:
                probe_at = self._send_probe()
            if held and held[0][0] <= now:
                self._release(now)
            if self.draining:  # the settled tick's last outputs, as they fall due (TickScheduler.finish)
                wake_at = sched.finish(now) if sched is not None else float("inf")
            elif sched is not None and (sched.batch is None or now >= wake_at or sched.rollback_to is not None):
                wake_at = sched.advance(now)
            if now >= next_house:
                next_house = now + HOUSEKEEPING_PERIOD
                self._housekeeping(now)
                if self.control is not None:
                    self._drain([None])
                if now >= stop_at:
                    break
                # Work that takes more than a few tens of microseconds (the metrics exposition, the status
                # message, the journal's write, a garbage collection) runs only in slack: no deadline
                # within SLACK and no input waiting; or when it is overdue, whatever the load.
                due = min(wake_at, probe_at, held[0][0] if held else wake_at)
                self._slack_work(now, due, in_fds)
            wait = min(wake_at, next_house + HOUSEKEEPING_SLOP, probe_at, held[0][0] if held else wake_at) - local_clock()
            ready = select.select(fds, [], [], wait if wait > 0 and not (backlog or self._pub_backlog or spin) else 0)[0]
            self.wakes += 1
            if ready:
                self.woken_by_input += 1
        gc.enable()

    @staticmethod
    def collect_before_start() -> None:
        """A full garbage collection, once the node is built and warm and before it reports ready."""
        gc.collect()

    def _slack_work(self, now: float, due: float, in_fds: list[int]) -> None:
        """The loop's slow chores, each when it is due and there is slack (no deadline within SLACK, no input
        waiting), or when overdue by a period. The metrics exposition is rendered in slices of tens of
        microseconds with a look at the inputs between them, so a packet waits for one slice at most."""
        def slack() -> bool:
            return due - local_clock() > SLACK and not select.select(in_fds, [], [], 0)[0]

        has_slack = slack()
        metrics = self.metrics
        if metrics is not None and metrics.due(now):
            if now - metrics.rendered_at > 2 * metrics.max_age:
                metrics.refresh(now)  # overdue: all at once, whatever the load
            else:
                spent = 0
                while has_slack and spent < METRICS_SLICES and metrics.refresh_step(now):
                    spent += 1
                    has_slack = slack()
        if self.control is not None and now >= self._next_status and (has_slack or now >= self._next_status + self.status_period):
            self._next_status = now + self.status_period
            self.control.send({"type": "status", **self.status(now), "log": self.take_log()})
            self._drain([None])
            has_slack = slack()
        if self.journal is not None and (has_slack or now - self.journal.flushed_at > 2 * HOUSEKEEPING_PERIOD):
            self.journal.flush(now)  # a crash loses at most this window
        if now >= self._next_gc and (has_slack or now >= self._next_gc + GC_PERIOD):
            self._next_gc = now + GC_PERIOD
            c0 = time.perf_counter()
            gc.collect()
            self.gc_time.record(time.perf_counter() - c0)

    def _drain(self, upstreams: list[Upstream | None]) -> None:
        """Receive everything waiting on ``upstreams`` (None stands for the control socket), up to each
        one's budget; one left with input is read first on the next iteration."""
        for up in upstreams:
            if up is None:
                for msg in self.control.poll():
                    self._on_control(msg)
            elif up.receive(self._deliver_to_node, self.jitter, self.journal) and up not in self._backlog:
                self._backlog.append(up)

    def _deliver(self, link: LinkIn, packet, now: float) -> None:
        """Hand one packet's events to the node (or forward a probe), as if it arrived at ``now``."""
        if packet.kind == _PROBE:
            self._on_probe(link.port, packet.events, now)
            return
        events = packet.events
        if link.values is not None and len(events):
            events = link.plausible(events, self.events)
        if not len(events):
            return
        if self.scheduler is not None:
            self.scheduler.on_input(link.port, packet.kind, events, now)
        else:
            self.node.mark_phases(now)
            self.node.on_events(link.port, packet.kind, events, now)
            self._flush()

    def _release(self, now: float) -> None:
        """Deliver every jitter-buffered packet whose time has come, at its own release time."""
        for due, link, packet in self.jitter.pop_due(now):
            self._deliver(link, packet, due)

    def _send_probe(self) -> float:
        """Send the loop probe that is due, stamped just before it leaves; returns when the next is due."""
        probe = self.probe
        if self.draining:
            return float("inf")
        now = local_clock()
        packed = probe.due(now)
        if packed is not None:
            self.publishers[probe.origin].publish_packed(*packed, Kind.PROBE)
            probe.expire(now)
        return probe.next_at

    def _on_probe(self, port: str, events, now: float) -> None:
        probe = self.probe
        if probe is None:
            return
        forward = probe.arrived(events, now)
        if forward is None or self.draining:
            return
        route = self._probe_routes.get(port)
        if route is None:
            route = self._probe_routes[port] = tuple(self.publishers[out] for out in self.node.probe_route(port))
        if route:
            for pub in route:
                pub.publish_packed(*forward, Kind.PROBE)
            # The in-node time: arrival off the socket to the send stamp (the packet's header time; the
            # send itself, ~50 us of handing it to ZeroMQ's I/O thread, is the next hop's transit).
            if route[0].last_send >= now:  # not dropped at a full queue
                hist = probe.forward.get(port)
                if hist is None:
                    hist = probe.forward[port] = LogHistogram()
                hist.record(route[0].last_send - now)

    def record_to(self, path, max_bytes: int | None = None) -> None:
        """Journal every packet sent on each output port and received from each upstream to ``path``
        (up to ``max_bytes``; past it, records are counted as dropped)."""
        from spikewire.streams.journal import DEFAULT_MAX_BYTES, SENT, JournalWriter

        names = list(self.publishers) + [up.source_name for up in self.upstreams]
        self.journal = journal = JournalWriter(path, self.node.name, names,
                                               DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        note = journal.note
        for port, pub in self.publishers.items():
            pub.on_sent = lambda data, now, port=port: note((SENT, port, now, data))

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
        pub = self.publishers[port]
        if pub.kind == Kind.STIMULUS and self.interlock.held_since is not None:
            self.interlock.held_events += len(events)  # the interlock: no stimulation on untrustworthy input
            return
        pub.publish(events)
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
        for up in self.upstreams:
            up.housekeeping(now, self.transport, self._drain)
        window = self.safety.loss_window
        for up in self.upstreams:
            for link in up.links:
                if link.delay:
                    link.watch_late(now, window, self.events)
        if self.interlocked and self.interlock.check(now):
            self.node.held = self.interlock.holding
        self.node.housekeeping(now)

    def take_log(self) -> list[dict]:
        """The node's model log and the runtime's own events since the last call."""
        return self.events.take() + self.node.take_log()

    def _on_control(self, msg: dict) -> None:
        if msg.get("type") == "stop":
            self.stop_requested = True
        elif msg.get("type") == "drain" and not self.draining:
            self.draining = True
            self.drained_at = local_clock()
            if self.scheduler is not None:
                self.scheduler.settle(self.drained_at)
        elif msg.get("type") == "operator_hold":
            self._operator_hold(bool(msg.get("on")), str(msg.get("source") or "operator"))
        elif self.on_message is not None:
            self.on_message(msg)

    def _operator_hold(self, on: bool, source: str) -> None:
        """The operator holds (or releases) stimulation and programming by hand, as a fault would: on every
        node whose kind stimulates or programs (``Node.interlocked``), even one whose network turned the
        automatic interlock off. Acknowledged either way, so the supervisor knows every node heard it."""
        node, il, now = self.node, self.interlock, local_clock()
        holdable = node.interlocked
        if holdable:
            changed = il.operator_hold(source, now) if on else il.operator_release(source, now, judge=self.interlocked)
            if changed:
                node.held = il.holding
        self.control.send({"type": "operator_hold_ack", "on": on, "source": source, "interlocked": holdable,
                           "holding": il.holding, "reason": il.reason if il.holding else ""})

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
        if self.interlocked or self.interlock.operator_holds:
            out["interlock"] = self.interlock.summary(now)
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
               "process": {"cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024,
                           "gc_s": self.gc_time.summary(), "wakes": self.wakes, "woken_by_input": self.woken_by_input}}
        if self.probe is not None and self.probe.origin:
            out["probes"] = self.probe.summary()
        if self.probe is not None and self.probe.forward:  # per input port: the loop's in-node times
            out["probe_forward_s"] = {port: h.summary() for port, h in self.probe.forward.items()}
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
