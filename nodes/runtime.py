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
"""

from __future__ import annotations

import logging
import resource
import select
from dataclasses import dataclass, field

import zmq

from spikewire.monitor.histogram import LogHistogram
from spikewire.nodes.base import Node
from spikewire.nodes.clocked import TickScheduler
from spikewire.streams.clock import local_clock
from spikewire.nodes.probes import ProbeState
from spikewire.streams.journal import RECEIVED
from spikewire.streams.wire import Kind, WireError, decode
from spikewire.streams.zmq_link import DEFAULT_HWM, Publisher, Subscriber

log = logging.getLogger("spikewire.runtime")

HOUSEKEEPING_PERIOD = 0.05
METRICS_SLACK = 0.002
"""Render the metrics exposition only when the next deadline is at least this far away."""


@dataclass
class LinkIn:
    """Receive-side figures of one link (one upstream output port into one input port)."""

    label: str
    port: str
    accepts: frozenset
    received: int = 0
    events: int = 0
    gaps: int = 0
    out_of_order: int = 0
    last_seq: int = -1
    malformed: dict[str, int] = field(default_factory=dict)
    latency: LogHistogram = field(default_factory=LogHistogram)

    def reject(self, reason: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1

    def summary(self) -> dict:
        return {"label": self.label, "received": self.received, "events": self.events, "gaps": self.gaps,
                "out_of_order": self.out_of_order, "malformed": dict(self.malformed),
                "latency_s": self.latency.summary()}


@dataclass
class Upstream:
    """One upstream output port this node listens to: one SUB connection, feeding one or more input
    ports. A packet is received once and dispatched to each; anything wrong with it is counted on
    every link it came in on, even garbage that names no valid source (the connection says where)."""

    source_id: int
    endpoint: str
    subscriber: Subscriber
    links: list[LinkIn]

    @property
    def source_name(self) -> str:
        """The upstream output port ('node.port', or the external endpoint)."""
        return self.links[0].label.split(" -> ")[0]

    def reject(self, reason: str) -> None:
        for link in self.links:
            link.reject(reason)


@dataclass(frozen=True)
class InputPlan:
    """Where one input port gets its packets: the publisher endpoints and the source ids they stamp."""

    port: str
    sources: tuple[tuple[int, str, str], ...]  # (source id, endpoint, link label)
    hwm: int = DEFAULT_HWM


class Runtime:
    def __init__(self, node: Node, ctx: zmq.Context, source_ids: dict[str, int], expected_subscribers: dict[str, int],
                 bind_host: str = "127.0.0.1", endpoints: dict[str, str] | None = None, hwm: int = DEFAULT_HWM):
        self.node = node
        self.ctx = ctx
        self.expected_subscribers = expected_subscribers
        self.publishers: dict[str, Publisher] = {}
        for port, spec in node.outputs.items():
            endpoint = (endpoints or {}).get(port, f"tcp://{bind_host}:*")
            self.publishers[port] = Publisher(ctx, spec.kind, source_ids[port], endpoint, hwm)
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

    # --- setup ---------------------------------------------------------------------------------
    @property
    def endpoints(self) -> dict[str, str]:
        return {port: pub.endpoint for port, pub in self.publishers.items()}

    def connect(self, plans: list[InputPlan]) -> None:
        """One SUB per distinct upstream (source id, endpoint), shared by every input port it feeds."""
        by_source: dict[tuple[int, str], Upstream] = {}
        for plan in plans:
            spec = self.node.inputs[plan.port]
            for source_id, endpoint, label in plan.sources:
                up = by_source.get((source_id, endpoint))
                if up is None:
                    sub = Subscriber(self.ctx, plan.hwm)
                    sub.connect(endpoint)
                    up = by_source[(source_id, endpoint)] = Upstream(source_id, endpoint, sub, [])
                    self.upstreams.append(up)
                up.links.append(LinkIn(label, plan.port, spec.accepts))

    def wait_for_subscribers(self, timeout: float) -> None:
        """Block until every output port has as many subscriptions as links leave it (the readiness
        handshake that replaces sleeping around ZeroMQ's slow joiner). Raises TimeoutError naming the
        ports still waiting."""
        deadline = local_clock() + timeout
        while True:
            waiting = [p for p, pub in self.publishers.items()
                       if pub.poll_subscriptions() < self.expected_subscribers.get(p, 0)]
            if not waiting:
                return
            remaining = deadline - local_clock()
            if remaining <= 0:
                raise TimeoutError(f"no subscriber joined output port(s) {', '.join(waiting)} within {timeout} s")
            select.select([self.publishers[p].socket.getsockopt(zmq.FD) for p in waiting], [], [], min(remaining, 0.05))

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
        stop_at = t0 + duration if duration else float("inf")
        next_house = local_clock()
        next_status = t0 + self.status_period
        # Only sockets whose notification fd select() reports readable can have new input, so idle
        # ticks touch no socket at all. The fds are edge-triggered: a reported socket is always drained
        # to EAGAIN, and SUB sockets are never written to (a send could swallow the edge). The control
        # socket does send, so it is also drained every housekeeping period.
        by_fd: dict[int, Upstream | None] = {u.subscriber.fd: u for u in self.upstreams}
        if self.control is not None:
            by_fd[self.control.fd] = None
        own_fds = set(node.fds())  # the node's own I/O (level-triggered OS sockets)
        fds = list(by_fd) + list(own_fds)
        ready: list[int] = fds
        while not self.stop_requested:
            if ready:
                self._drain([by_fd[fd] for fd in ready if fd in by_fd])
                for fd in ready:
                    if fd in own_fds:
                        node.on_readable(fd, local_clock())
                        self._flush()
            now = local_clock()
            if self.draining:
                wake_at = float("inf")
            elif sched is not None and (sched.batch is None or now >= wake_at):
                wake_at = sched.advance(now)
            if now >= next_house:
                next_house = now + HOUSEKEEPING_PERIOD
                self._housekeeping()
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
                        self.control.send({"type": "status", **self.status(now), "log": self.node.take_log()})
                    self._drain([None])
                if now >= stop_at:
                    break
            wait = min(wake_at, next_house) - local_clock()
            ready = select.select(fds, [], [], wait if wait > 0 else 0)[0]

    def _drain(self, upstreams: list[Upstream | None]) -> None:
        """Receive everything waiting on ``upstreams`` (None stands for the control socket)."""
        node = self.node
        for up in upstreams:
            if up is None:
                for msg in self.control.poll():
                    self._on_control(msg)
                continue
            sub = up.subscriber
            while True:
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
                                    f"{up.links[0].label.split(' -> ')[0]} ({e})")
                    continue
                if packet.source != up.source_id:
                    up.reject("unknown_source")
                    self._warn_once(f"{up.endpoint}:src", f"{node.name}: dropped a packet stamped with source "
                                    f"{packet.source} on the connection of source {up.source_id}")
                    continue
                n_events = len(packet.events)
                latency = now - packet.send_time
                for link in up.links:
                    if packet.kind == Kind.PROBE:  # a packet on the link, but no data events
                        self._count(link, packet, latency, 0)
                        self._on_probe(link.port, packet.events, now)
                        continue
                    if packet.kind not in link.accepts:
                        link.reject("wrong_kind")
                        self._warn_once(f"{link.label}:kind", f"{link.label}: dropped a {packet.kind.name} packet; "
                                        f"{link.port} accepts {', '.join(k.name for k in link.accepts)}")
                        continue
                    self._count(link, packet, latency, n_events)
                    if not n_events:
                        continue
                    if self.scheduler is not None:
                        self.scheduler.on_input(link.port, packet.kind, packet.events, now)
                    else:
                        node.mark_phases(now)
                        node.on_events(link.port, packet.kind, packet.events, now)
                        self._flush()

    @staticmethod
    def _count(link: LinkIn, packet, latency: float, n_events: int) -> None:
        seq = packet.sequence
        if seq > link.last_seq:
            if link.last_seq >= 0 and seq > link.last_seq + 1:
                link.gaps += seq - link.last_seq - 1
            link.last_seq = seq
        else:
            link.out_of_order += 1
        link.received += 1
        link.events += n_events
        link.latency.record(latency)

    def _on_probe(self, port: str, events, now: float) -> None:
        if self.probe is None:
            return
        forward = self.probe.arrived(events, now)
        if forward is not None and not self.draining:
            for out in self.node.probe_route(port):
                self.publishers[out].publish(forward, Kind.PROBE)

    def record_to(self, path) -> None:
        """Journal every packet sent on each output port and received from each upstream to ``path``."""
        from spikewire.streams.journal import SENT, JournalWriter

        names = list(self.publishers) + [up.source_name for up in self.upstreams]
        self.journal = journal = JournalWriter(path, self.node.name, names)
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
        self.publishers[port].publish(events)
        export = self.lsl_exports.get(port)
        if export is not None:
            export.push(events)

    def _flush(self) -> None:
        outbox = self.node.outbox
        for port, events in outbox.pending():
            self._publish(port, events)
        outbox.clear()

    def _housekeeping(self) -> None:
        for pub in self.publishers.values():
            pub.poll_subscriptions()
        if self.journal is not None:
            self.journal.flush()  # every 50 ms: a crash loses at most this window

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

    def io_summary(self) -> dict:
        outputs = {p: {"sent": pub.sent, "dropped": pub.dropped, "events": pub.events_sent,
                       "subscribers": pub.subscriptions} for p, pub in self.publishers.items()}
        inputs: dict[str, dict] = {}
        for up in self.upstreams:
            for link in up.links:
                inputs.setdefault(link.port, {"links": {}})["links"][str(up.source_id)] = link.summary()
        return {"outputs": outputs, "inputs": inputs}

    def status(self, now: float) -> dict:
        return {"node": self.node.name, "t": now, "elapsed": now - self.started_at,
                "model": self.node.status(now), "loop": {k: v for k, v in self.loop_summary().items() if not k.endswith("_s")},
                **self.io_summary()}

    def summary(self, now: float) -> dict:
        """Final figures; rates are over the producing time (start to drain)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        end = self.drained_at if self.drained_at is not None else now
        self.node.mark_phases(end)
        out = {"node": self.node.name, "kind": self.node.kind, "elapsed": end - self.started_at,
               "model": self.node.summary(end), "phases": list(self.node.phase_marks),
               "loop": self.loop_summary(), **self.io_summary(),
               "process": {"cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024}}
        if self.probe is not None and self.probe.origin:
            out["probes"] = self.probe.summary()
        if self.metrics is not None:
            out["metrics"] = {"port": self.metrics.port, "render_s": self.metrics.render_time.summary()}
        if self.journal is not None:
            self.journal.flush()
            out["journal"] = self.journal.summary()
        return out

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self.metrics is not None:
            self.metrics.close()
        for pub in self.publishers.values():
            pub.close()
        for up in self.upstreams:
            up.subscriber.close()
        self.node.close()
