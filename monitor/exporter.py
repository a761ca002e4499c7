"""Prometheus exposition for one node, built so that a scrape never stalls the node's loop.

The catch: rendering the text format is ~0.5-1 ms of Python, and a scrape served by a thread of the node
process would render while holding the GIL just when a tick is due. So rendering happens *in the loop*,
at housekeeping time and only when the next deadline is far enough away (``refresh``). The HTTP thread
serves the last rendered bytes, which holds the GIL for microseconds. The figures are at most
``max_age`` old (1 s by default, the usual scrape interval), which is what a 1 Hz scrape sees anyway.

The text is rendered by prometheus-client (``generate_latest``) from a collector that reads the runtime's
plain counters (the hot path never touches prometheus-client), plus the library's process collector
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ...).

The other catch: whoever can reach the port can hold a connection open. Each connection is served by a
daemon thread of its own, so an idle client (or one that sends half a request line) never delays another
scrape or the node's stop. Every read or write waits at most ``idle_timeout``, and a whole request must
arrive and be answered within ``request_deadline``, or the connection is cut: a slowloris trickling one
byte a second is gone after the deadline. At most ``max_connections`` are served at once; beyond that a
connection is answered 503 and closed at once (no thread is started), logged (the first, then every
hundredth) and counted: ``refused``, exported as ``spikewire_connections_refused_total{reason="metrics_busy"}``,
so the usual refused-connections alert fires on a flood.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from spikewire.monitor import catalogue as C
from spikewire.core.histogram import LogHistogram
from spikewire.streams.wire import WireError

log = logging.getLogger("spikewire.metrics")

STALE_AFTER = 5
"""A rendered exposition older than this many render periods is not served (503)."""
MALFORMED_REASONS = tuple(sorted({cls.reason for cls in (WireError, *WireError.__subclasses__())}
                                 | {"unknown_source", "wrong_kind", "bad_sequence", "bad_time"}))
"""Every reason a packet can be counted as malformed for; each is exported from 0, so that increase()
sees the first one."""
IDLE_TIMEOUT = 2.0
"""Seconds a metrics connection may wait on one read or write (a scraper sends its request at once)."""
REQUEST_DEADLINE = 5.0
"""Seconds from accepting a metrics connection until it is cut, whatever it is doing (Prometheus' default
scrape timeout is 10 s, but a scrape is answered from cached bytes in well under a millisecond)."""
MAX_CONNECTIONS = 16
"""Metrics connections served at once; more are refused (503), so a flood cannot spawn threads."""
METRICS_BUSY = "metrics_busy"
"""The ``reason`` label under which refused metrics connections are exported (with the node's other refusals)."""
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _family(m: C.Metric):
    cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}[m.type]
    return cls(m.name, m.help, labels=list(m.labels))


def _hist(fam, labels: list[str], h: LogHistogram) -> None:
    fam.add_metric(labels, h.prom_buckets(), h.total)


class NodeCollector:
    """Reads a runtime's figures at render time and yields them as the catalogue's families."""

    def __init__(self, runtime):
        self.rt = runtime
        self._prev_spikes: tuple[float, dict] | None = None

    def collect(self):
        rt = self.rt
        node = rt.node
        name = node.name
        now = time.monotonic()
        fams = {m.name: _family(m) for m in C.CATALOGUE}
        fams[C.NODE_UP.name].add_metric([name, node.kind, node.settings.site], 1)
        fams[C.NODE_READY.name].add_metric([name, node.kind], 1 if rt.ready else 0)

        figures = node.figures(rt.clock())
        prev = self._prev_spikes
        for pop, p in figures.populations.items():
            fams[C.SPIKES.name].add_metric([name, pop], p.spikes)
            if prev is not None and now > prev[0]:
                was = prev[1].get(pop, p.spikes)
                fams[C.RATE.name].add_metric([name, pop], (p.spikes - was) / (now - prev[0]) / max(p.size, 1))
            for i, n in enumerate(p.neuron_spikes or ()):
                fams[C.NEURON_SPIKES.name].add_metric([name, pop, str(i)], n)
            for kind, n in p.events.items():
                fams[C.BIO_EVENTS.name].add_metric([name, kind], n)
        self._prev_spikes = (now, {pop: p.spikes for pop, p in figures.populations.items()})
        for dev, d in figures.devices.items():
            fams[C.RESISTANCE.name].add_metric([name, dev], d.r)
            fams[C.PULSES.name].add_metric([name, dev, "ltp"], d.ltp)
            fams[C.PULSES.name].add_metric([name, dev, "ltd"], d.ltd)
        rig = figures.rig
        if rig is not None:
            fams[C.RIG_UP.name].add_metric([name], 1 if rig["rig_up"] else 0)
            fams[C.RIG_DISCONNECTS.name].add_metric([name], rig["rig_disconnects"])
            fams[C.RIG_SAMPLES.name].add_metric([name], rig["rig_samples"])
            fams[C.STIM_READY.name].add_metric([name], 1 if rig["stim_ready"] else 0)
            fams[C.STIM_NO_CONSUMER.name].add_metric([name], rig["stim_held_no_consumer"])
            for reason, n in rig["stim_refused"].items():
                fams[C.STIM_REFUSED.name].add_metric([name, reason], n)
            for reason, n in rig["rig_unusable"].items():
                fams[C.RIG_UNUSABLE.name].add_metric([name, reason], n)
            fams[C.STIM_SENT.name].add_metric([name], rig["stim_sent"])
            fams[C.STIM_HELD.name].add_metric([name], rig["stim_held"])
        for reason, n in figures.rejected.items():
            fams[C.REJECTED.name].add_metric([name, reason], n)

        for port, pub in rt.publishers.items():
            fams[C.SENT.name].add_metric([name, port], pub.sent)
            fams[C.SEND_DROPS.name].add_metric([name, port], pub.dropped)
            fams[C.JOINS_REFUSED.name].add_metric([name, port], pub.joins_refused)
        t_now = rt.clock()
        for up in rt.upstreams:
            down_for = t_now - up.down_since if up.state == "down" else 0.0
            for link in up.links:
                lab = [name, link.label]
                fams[C.RECEIVED.name].add_metric(lab, link.received)
                fams[C.EVENTS.name].add_metric(lab, link.events)
                fams[C.GAPS.name].add_metric(lab, link.gaps)
                fams[C.REORDERED.name].add_metric(lab, link.out_of_order)
                fams[C.OUT_OF_RANGE.name].add_metric(lab, link.out_of_range)
                fams[C.DUPLICATES.name].add_metric(lab, link.duplicates)
                fams[C.UNSYNCED.name].add_metric(lab, link.unsynced)
                fams[C.CLOCK_OFFSET.name].add_metric(lab, up.offset)
                if up.clock is not None and up.clock.synced:
                    fams[C.RTT.name].add_metric(lab, up.clock.rtt)
                fams[C.LINK_UP.name].add_metric(lab, 1 if up.state == "up" else 0)
                fams[C.OUTAGES.name].add_metric(lab, up.outages)
                fams[C.DOWNTIME.name].add_metric(lab, up.downtime + down_for)
                fams[C.RESTARTS.name].add_metric(lab, up.restarts)
                if link.delay or link.auto_delay:
                    fams[C.LATE.name].add_metric([name, link.label, "dropped"], link.late_dropped)
                    fams[C.LATE.name].add_metric([name, link.label, "delivered"], link.late_delivered)
                    fams[C.BUFFERED.name].add_metric(lab, link.buffered)
                for reason in MALFORMED_REASONS:
                    fams[C.MALFORMED.name].add_metric([name, link.label, reason], link.malformed.get(reason, 0))
                _hist(fams[C.LATENCY.name], lab, link.latency)

        for reason, n in rt.refusals.counts.items():
            fams[C.REFUSED.name].add_metric([name, reason], n)
        server = getattr(rt, "metrics", None)
        if server is not None:  # connections to this very port turned away because too many were open
            fams[C.REFUSED.name].add_metric([name, METRICS_BUSY], server.refused)
        if rt.interlocked:
            fams[C.INTERLOCK.name].add_metric([name], 1 if rt.held_since is not None else 0)
            fams[C.HOLDS.name].add_metric([name], rt.holds)
            held = rt.held_events + getattr(node, "held_pulses", 0) + getattr(node, "held_stimuli", 0)
            fams[C.HELD_EVENTS.name].add_metric([name], held)
        sched = rt.scheduler
        if sched is not None:
            _hist(fams[C.TICK_COMPUTE.name], [name], sched.compute)
            _hist(fams[C.LAG.name], [name], sched.lag)
            fams[C.TICKS.name].add_metric([name], sched.ticks)
            fams[C.OVERRUNS.name].add_metric([name], sched.overruns)
            fams[C.ROLLBACKS.name].add_metric([name], sched.rollbacks)
        probe = rt.probe
        if probe is not None and probe.origin:
            _hist(fams[C.PROBE_LATENCY.name], [name], probe.latency)
            fams[C.PROBES_LOST.name].add_metric([name], probe.lost())
        return [f for f in fams.values() if f.samples]


class _Handler(BaseHTTPRequestHandler):
    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # type: ignore[attr-defined]  # each read and write
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "metrics are at /metrics")
            return
        owner = self.server.owner  # type: ignore[attr-defined]
        if owner.render_on_scrape:
            body = generate_latest(owner.registry)
        elif time.monotonic() - owner.rendered_at > STALE_AFTER * owner.max_age:
            # The loop has not rendered for a while: it is hung or starved. Say so, so that Prometheus
            # marks the target down instead of scraping old figures as if all were well.
            self.send_error(503, "the node's loop has not refreshed its metrics")
            return
        else:
            body = owner.body
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s %s", self.address_string(), format % args)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once, each cut at its deadline.

    The deadlines are enforced from the accepting thread (``service_actions`` runs after every accept and
    at least every poll interval): a late connection is shut down, which wakes its thread's blocked read
    with end-of-file. Shutting down and closing happen under one lock, so a socket is never shut down
    after its thread has closed it (its fd may already belong to someone else).
    """

    daemon_threads = True
    block_on_close = False  # server_close() never waits for a client

    def __init__(self, address, handler, max_connections: int, idle_timeout: float, request_deadline: float):
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.request_deadline = request_deadline
        self.refused = 0
        self.timed_out = 0
        self._lock = threading.Lock()
        self._open: dict[socket.socket, float] = {}  # connection -> when it is cut (monotonic)
        super().__init__(address, handler)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def process_request(self, request, client_address) -> None:
        with self._lock:
            busy = len(self._open) >= self.max_connections
            if not busy:
                self._open[request] = time.monotonic() + self.request_deadline
        if busy:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("metrics port %d: %d connections open, refused one from %s [%d refused so far]",
                            self.server_address[1], self.max_connections, client_address[0], self.refused)
            try:
                request.setblocking(False)  # a fresh socket's send buffer is empty: this never waits anyway
                request.send(_BUSY)
            except OSError as e:  # the client is already gone
                log.debug("metrics: 503 to %s not sent: %s", client_address[0], e)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._lock:
            self._open.pop(request, None)
            super().shutdown_request(request)

    def service_actions(self) -> None:
        self.cut(time.monotonic())

    def cut(self, now: float) -> None:
        """Shut down every connection past its deadline (all of them with ``now=inf``)."""
        with self._lock:
            for sock, deadline in self._open.items():
                if now >= deadline:
                    if now != math.inf:
                        self.timed_out += 1
                        log.debug("metrics: cut a connection open for more than %g s", self.request_deadline)
                    self._open[sock] = math.inf  # counted once
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError as e:  # the peer already went
                        log.debug("metrics: shutdown of a late connection: %s", e)

    def handle_error(self, request, client_address) -> None:
        # A client that vanishes mid-answer (or a connection we cut) is routine; anything else is a bug.
        log.debug("metrics: connection from %s ended with an error", client_address[0], exc_info=True)


class MetricsServer:
    """Serves the node's last rendered exposition at http://host:port/metrics, a daemon thread per
    connection (see the module docstring for the limits that keep idle clients harmless)."""

    def __init__(self, runtime, host: str, port: int, max_age: float = 1.0, render_on_scrape: bool = False,
                 max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT,
                 request_deadline: float = REQUEST_DEADLINE):
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if not (idle_timeout > 0 and request_deadline > 0):
            raise ValueError(f"idle_timeout and request_deadline must be > 0, got {idle_timeout}, {request_deadline}")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(runtime))
        ProcessCollector(registry=self.registry)
        self.max_age = max_age
        self.rendered_at = -1e9
        self.render_time = LogHistogram()
        self.render_on_scrape = render_on_scrape
        self.body = b""
        try:
            self.server = _BoundedServer((host, port), _Handler, max_connections, idle_timeout, request_deadline)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}; choose another "
                          f"[monitor] base_port, or this node's metrics_port") from None
        self.server.owner = self
        self._closed = False
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.5},
                                       name="metrics-http", daemon=True)
        self.thread.start()

    def due(self, now: float) -> bool:
        return not self.render_on_scrape and now - self.rendered_at >= self.max_age

    def refresh(self, now: float) -> None:
        c0 = time.perf_counter()
        self.body = generate_latest(self.registry)
        self.render_time.record(time.perf_counter() - c0)
        self.rendered_at = now

    @property
    def refused(self) -> int:
        """Connections refused because ``max_connections`` were open."""
        return self.server.refused

    @property
    def timed_out(self) -> int:
        """Connections cut at their ``request_deadline``."""
        return self.server.timed_out

    @property
    def open_connections(self) -> int:
        return self.server.open_connections

    def close(self) -> None:
        """Stop serving: returns within the poll interval (0.5 s), whatever clients are connected."""
        if self._closed:
            return
        self._closed = True
        self.server.shutdown()
        self.server.cut(math.inf)  # wake every connection's thread; they exit on their own
        self.server.server_close()
