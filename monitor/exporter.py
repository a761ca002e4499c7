"""Prometheus exposition for one node, built so that neither a scrape nor a render stalls the node's loop.

The catch: rendering the text format with prometheus-client is ~1-2 ms of Python, and a scrape served by a
thread of the node process would render while holding the GIL just when a tick is due. So rendering
happens *in the loop*, at housekeeping time and only when the next deadline is far enough away
(``refresh``). The HTTP thread serves the last rendered bytes, which holds the GIL for microseconds. The
figures are at most ``max_age`` old (1 s by default, the usual scrape interval), which is what a 1 Hz
scrape sees anyway.

What is exported is defined once, by ``NodeCollector`` (a prometheus-client collector over the runtime's
plain counters; the hot path never touches prometheus-client) and the library's ``ProcessCollector``.
Even in the loop's slack a millisecond render is a millisecond a packet may wait, so ``Exposition``
renders the same bytes for a fraction of that: the label sets are fixed once a node runs (its ports,
links, populations, devices, reasons), so the text is a template, cut from ``generate_latest``'s own
output, with a hole per sample value; a render only reads the numbers, in the same order, and fills the
holes. A cheap key of everything that can add or remove a series (a population's events, a link's clock
becoming synced, a first rejected reason, the scheduler appearing at start) says when to cut a new
template; each new template is checked against the numbers read beside it, and a mismatch (a bug: the
reading and the collector disagree) is logged and answered with prometheus-client's own render.
Measured on the paper loop's nodes: ~0.3-0.4 ms a render in a live node, whose caches are cold once a
second (prometheus-client: 1.3-2 ms), ~0.1 ms rendered back to back. For less at a time, ``refresh_step``
renders in slices of a few tens of microseconds, the node's own ``figures()`` being the largest.

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
import os
import resource
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Generator
from itertools import accumulate

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

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


def _session_elapsed(rt) -> float:
    """Seconds since the session's start on the node's clock (0 before it: ``started_at`` is 0 until then)."""
    return max(0.0, rt.clock() - rt.started_at) if rt.started_at else 0.0


def _hist(fam, labels: list[str], h: LogHistogram) -> None:
    fam.add_metric(labels, h.prom_buckets(), h.total)


class NodeCollector:
    """Reads a runtime's figures at render time and yields them as the catalogue's families.

    This is the definition of what a node exports; ``_SERIES`` below reads the same numbers in the same
    order for the fast render, so a series added here is added there too (a disagreement is logged and
    rendered the slow way, and tests/test_exposition_fast.py fails on it)."""

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
            fams[C.RIG_CALIBRATED.name].add_metric([name], 1 if rig.get("calibrated") else 0)
        for reason, n in figures.rejected.items():
            fams[C.REJECTED.name].add_metric([name, reason], n)
        fams[C.SESSION_ELAPSED.name].add_metric([name], _session_elapsed(rt))

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


# --- the fast render: NodeCollector's numbers without prometheus-client's per-sample work ------------

def _hist_values(h: LogHistogram) -> list:
    """A histogram's samples as ``_hist`` exports them: cumulative buckets, then _count (the +Inf bucket),
    then _sum."""
    out = list(accumulate(h.prom))
    out.append(out[-1])
    out.append(h.total)
    return out


class _Reading:
    """What one render reads from the runtime, once; each entry of ``_SERIES`` takes its values from here."""

    __slots__ = ("rt", "figures", "pops", "rates", "pubs", "links", "delayed", "t_now", "server", "sched", "probe")

    def __init__(self, rt, figures, rates: list):
        self.rt = rt
        self.figures = figures
        self.pops = list(figures.populations.values())
        self.rates = rates
        self.pubs = list(rt.publishers.values())
        self.links = [(up, link) for up in rt.upstreams for link in up.links]
        self.delayed = [link for _, link in self.links if link.delay or link.auto_delay]
        self.t_now = rt.clock()
        self.server = getattr(rt, "metrics", None)
        self.sched = rt.scheduler
        probe = rt.probe
        self.probe = probe if probe is not None and probe.origin else None


def _link_values(attr: str):
    return lambda r: [getattr(link, attr) for _, link in r.links]


def _rig(key: str, flag: bool = False):
    def values(r: _Reading) -> list:
        rig = r.figures.rig
        if rig is None:
            return []
        return [(1 if rig[key] else 0) if flag else rig[key]]
    return values


def _rig_reasons(key: str):
    return lambda r: [] if r.figures.rig is None else list(r.figures.rig[key].values())


def _held(r: _Reading) -> list:
    rt = r.rt
    if not rt.interlocked:
        return []
    return [rt.held_events + getattr(rt.node, "held_pulses", 0) + getattr(rt.node, "held_stimuli", 0)]


def _down_for(r: _Reading, up) -> float:
    return r.t_now - up.down_since if up.state == "down" else 0.0


_NO_MALFORMED = (0,) * len(MALFORMED_REASONS)

# Each catalogue series' values, in the order (and under the conditions) NodeCollector.collect adds them.
# Exposition walks CATALOGUE through this table, so the values come out in the exposition's order.
_SERIES = {
    C.NODE_UP.name: lambda r: [1],
    C.NODE_READY.name: lambda r: [1 if r.rt.ready else 0],
    C.SPIKES.name: lambda r: [p.spikes for p in r.pops],
    C.NEURON_SPIKES.name: lambda r: [n for p in r.pops for n in (p.neuron_spikes or ())],
    C.RATE.name: lambda r: r.rates,
    C.BIO_EVENTS.name: lambda r: [n for p in r.pops for n in p.events.values()],
    C.LATENCY.name: lambda r: [x for _, link in r.links for x in _hist_values(link.latency)],
    C.SENT.name: lambda r: [pub.sent for pub in r.pubs],
    C.SEND_DROPS.name: lambda r: [pub.dropped for pub in r.pubs],
    C.RECEIVED.name: _link_values("received"),
    C.EVENTS.name: _link_values("events"),
    C.GAPS.name: _link_values("gaps"),
    C.REORDERED.name: _link_values("out_of_order"),
    C.MALFORMED.name: lambda r: [n for _, link in r.links
                                 for n in (map(link.malformed.get, MALFORMED_REASONS, _NO_MALFORMED)
                                           if link.malformed else _NO_MALFORMED)],
    C.CLOCK_OFFSET.name: lambda r: [up.offset for up, _ in r.links],
    C.RTT.name: lambda r: [up.clock.rtt for up, _ in r.links if up.clock is not None and up.clock.synced],
    C.LINK_UP.name: lambda r: [1 if up.state == "up" else 0 for up, _ in r.links],
    C.OUTAGES.name: lambda r: [up.outages for up, _ in r.links],
    C.DOWNTIME.name: lambda r: [up.downtime + _down_for(r, up) for up, _ in r.links],
    C.RESTARTS.name: lambda r: [up.restarts for up, _ in r.links],
    C.LATE.name: lambda r: [n for link in r.delayed for n in (link.late_dropped, link.late_delivered)],
    C.BUFFERED.name: lambda r: [link.buffered for link in r.delayed],
    C.REFUSED.name: lambda r: [*r.rt.refusals.counts.values(), *([r.server.refused] if r.server is not None else ())],
    C.INTERLOCK.name: lambda r: [1 if r.rt.held_since is not None else 0] if r.rt.interlocked else [],
    C.HOLDS.name: lambda r: [r.rt.holds] if r.rt.interlocked else [],
    C.HELD_EVENTS.name: _held,
    C.TICK_COMPUTE.name: lambda r: _hist_values(r.sched.compute) if r.sched is not None else [],
    C.LAG.name: lambda r: _hist_values(r.sched.lag) if r.sched is not None else [],
    C.TICKS.name: lambda r: [r.sched.ticks] if r.sched is not None else [],
    C.OVERRUNS.name: lambda r: [r.sched.overruns] if r.sched is not None else [],
    C.ROLLBACKS.name: lambda r: [r.sched.rollbacks] if r.sched is not None else [],
    C.RESISTANCE.name: lambda r: [d.r for d in r.figures.devices.values()],
    C.PULSES.name: lambda r: [n for d in r.figures.devices.values() for n in (d.ltp, d.ltd)],
    C.PROBE_LATENCY.name: lambda r: _hist_values(r.probe.latency) if r.probe is not None else [],
    C.PROBES_LOST.name: lambda r: [r.probe.lost()] if r.probe is not None else [],
    C.REJECTED.name: lambda r: list(r.figures.rejected.values()),
    C.RIG_UP.name: _rig("rig_up", flag=True),
    C.RIG_DISCONNECTS.name: _rig("rig_disconnects"),
    C.RIG_SAMPLES.name: _rig("rig_samples"),
    C.STIM_SENT.name: _rig("stim_sent"),
    C.STIM_HELD.name: _rig("stim_held"),
    C.STIM_READY.name: _rig("stim_ready", flag=True),
    C.STIM_NO_CONSUMER.name: _rig("stim_held_no_consumer"),
    C.STIM_REFUSED.name: _rig_reasons("stim_refused"),
    C.RIG_UNUSABLE.name: _rig_reasons("rig_unusable"),
    C.OUT_OF_RANGE.name: _link_values("out_of_range"),
    C.DUPLICATES.name: _link_values("duplicates"),
    C.UNSYNCED.name: _link_values("unsynced"),
    C.JOINS_REFUSED.name: lambda r: [pub.joins_refused for pub in r.pubs],
    C.SESSION_ELAPSED.name: lambda r: [_session_elapsed(r.rt)],
    C.RIG_CALIBRATED.name: lambda r: [] if r.figures.rig is None else [1 if r.figures.rig.get("calibrated") else 0],
}
_STEPS = tuple(_SERIES[m.name] for m in C.CATALOGUE)  # a metric added to the catalogue but not here: KeyError at import


def _shape(r: _Reading) -> tuple:
    """Everything that adds or removes a series: equal shapes, equal label sets in the same order."""
    f, rt = r.figures, r.rt
    rig = f.rig
    return (tuple((pop, len(p.neuron_spikes or ()), tuple(p.events)) for pop, p in f.populations.items()),
            bool(r.rates), tuple(f.devices), tuple(f.rejected), tuple(rt.publishers),
            None if rig is None else (tuple(rig["stim_refused"]), tuple(rig["rig_unusable"])),
            tuple((link.label, up.clock is not None and up.clock.synced, bool(link.delay or link.auto_delay))
                  for up, link in r.links),
            tuple(rt.refusals.counts), r.server is not None, rt.interlocked, r.sched is not None, r.probe is not None)


class _ProcessFigures:
    """``ProcessCollector``'s six numbers, read the cheap way. It opens and reads three files and lists
    /proc/self/fd (~60 us, and every syscall costs ~15 us more once a second than in a tight loop): here
    one ``pread`` of /proc/self/stat (kept open) per render, and the two that move slowly, open fds (the
    size of /proc/self/fd from Linux 6.2 on, else its listing) and ``getrlimit``, every ``SLOW_EVERY``."""

    SLOW_EVERY = 10
    _stat = -1  # the open /proc/self/stat

    def __init__(self):
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._pagesize = resource.getpagesize()
        self._reads = 0
        self._fds = self._max_fds = 0.0
        try:
            self._stat = os.open("/proc/self/stat", os.O_RDONLY)  # not inherited: os.open's default
            with open("/proc/stat", "rb") as f:
                btime = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
        except (OSError, StopIteration):  # no /proc: ProcessCollector exports nothing either
            self.close()
            return
        self._start = float(self._fields()[19]) / self._ticks + btime

    def _fields(self) -> list[bytes]:
        return os.pread(self._stat, 4096, 0).split(b")")[-1].split()

    def values(self) -> list[float]:
        """In ProcessCollector's order: virtual memory, resident memory, start time, CPU seconds, open fds,
        max fds."""
        if self._stat < 0:
            return []
        if self._reads % self.SLOW_EVERY == 0:
            fds = os.stat("/proc/self/fd").st_size
            if fds:
                fds += 1  # ProcessCollector's count includes the fd of its own listing; keep the series continuous
            else:
                fds = len(os.listdir("/proc/self/fd"))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            self._fds, self._max_fds = float(fds), math.inf if soft == resource.RLIM_INFINITY else float(soft)
        self._reads += 1
        parts = self._fields()
        return [float(parts[20]), float(parts[21]) * self._pagesize, self._start,
                float(parts[11]) / self._ticks + float(parts[12]) / self._ticks, self._fds, self._max_fds]

    def close(self) -> None:
        if self._stat >= 0:
            os.close(self._stat)
            self._stat = -1


def _go_text(value) -> str:
    """``floatToGoString(value)``, the short way for the usual values (a count, a small float): under a
    million, Python's repr of a float is already Go's."""
    t = type(value)
    if t is int and -1_000_000 < value < 1_000_000:
        return f"{value}.0"
    if t is float and -1e6 < value < 1e6:
        return repr(value)
    return floatToGoString(value)


_MOVING = (C.RATE.name, C.DOWNTIME.name, C.SESSION_ELAPSED.name, "process_")
"""Series whose values differ between two reads a moment apart (a template is checked on the others)."""
_SLICE_STEPS = 12
"""Catalogue entries read per slice of a sliced render."""


class Exposition:
    """The node's exposition text, as ``generate_latest`` over ``NodeCollector`` and ``ProcessCollector``
    renders it, in a fraction of the time (see the module docstring). Not thread-safe: the loop renders.

    ``render`` does it at once; ``step`` does one slice of it (the node's figures, a dozen catalogue
    entries, the process figures, the text, the join: each some tens of microseconds) and returns the text
    from the slice that completes it, so that the loop can interleave a render with its packets. A slice
    that cuts a new template (the first render, and whenever series come or go) renders with
    prometheus-client: a millisecond or two, rarely."""

    def __init__(self, runtime):
        self.rt = runtime
        self.reference = NodeCollector(runtime)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self.reference)
        self._process_collector = ProcessCollector(registry=self._registry)
        self._process = _ProcessFigures()
        self._prev_spikes: tuple[float, dict] | None = None
        self._shape: tuple | None = None
        self._pieces: list[bytes] | None = None  # the template: the text between sample values
        self._strings: dict = {}  # value -> its text, as floatToGoString writes it (last render's values)
        self._pending: Generator[None, None, bytes] | None = None  # a sliced render under way
        self.templates = 0
        """Templates cut (each a render by prometheus-client)."""
        self.mismatches = 0
        """Templates refused because the numbers read disagreed with prometheus-client's render (a bug)."""

    def render(self) -> bytes:
        """A whole render (one under way in slices is dropped)."""
        self._pending = None
        slices = self._slices()
        while True:
            try:
                next(slices)
            except StopIteration as done:
                return done.value

    def step(self) -> bytes | None:
        """One slice of a render: the text when this slice completed it, else None."""
        if self._pending is None:
            self._pending = self._slices()
        try:
            next(self._pending)
        except StopIteration as done:
            self._pending = None
            return done.value
        return None

    def _slices(self) -> Generator[None, None, bytes]:
        prev = self._prev_spikes
        r = self._read(time.monotonic(), prev)
        yield
        values: list = []
        for i, step in enumerate(_STEPS, 1):
            values.extend(step(r))
            if i % _SLICE_STEPS == 0:
                yield
        values += self._process.values()
        yield
        pieces = self._pieces
        # Series that came or went (the shape, or a count that changed under the same shape: a bug in _shape,
        # which must never shift a series) since the last template, maybe between two slices: cut a new one.
        if _shape(r) != self._shape or (pieces is not None and len(values) != len(pieces) - 1):
            return self._cut(prev)
        if pieces is None:  # this shape's template was refused: prometheus-client renders
            self.reference._prev_spikes = prev
            return generate_latest(self._registry)
        yield
        text = self._text(values)
        yield
        parts = [b""] * (2 * len(pieces) - 1)
        parts[::2] = pieces
        parts[1::2] = text
        return b"".join(parts)

    def _read(self, now: float, prev) -> _Reading:
        rt = self.rt
        figures = rt.node.figures(rt.clock())
        pops = figures.populations
        rates = []
        if prev is not None and now > prev[0]:
            was, dt = prev[1], now - prev[0]
            rates = [(p.spikes - was.get(pop, p.spikes)) / dt / max(p.size, 1) for pop, p in pops.items()]
        self._prev_spikes = (now, {pop: p.spikes for pop, p in pops.items()})
        return _Reading(rt, figures, rates)

    def _text(self, values: list) -> list[bytes]:
        """Each value as prometheus-client writes it; most repeat from the last render, and their text too (kept
        for this render's values only: a small table stays in the CPU's caches between renders)."""
        out = list(map(self._strings.get, values))
        i = -1
        try:
            while True:
                i = out.index(None, i + 1)
                out[i] = _go_text(values[i]).encode()
        except ValueError:  # no value left without its text
            pass
        self._strings = dict(zip(values, out))
        return out

    def _cut(self, prev) -> bytes:
        """Render with prometheus-client and cut the text into a template for the series there are now, if the
        numbers read here a moment before match the text's samples. All in one slice, so the two agree."""
        self.templates += 1
        r = self._read(time.monotonic(), prev)
        values: list = []
        for step in _STEPS:
            values.extend(step(r))
        values += self._process.values()
        self._shape = _shape(r)
        self.reference._prev_spikes = prev
        body = generate_latest(self._registry)
        pieces, texts, literal = [], [], ""
        for line in body.decode().split("\n")[:-1]:
            if line.startswith("#"):
                literal += line + "\n"
                continue
            cut = line.rindex(" ") + 1  # a value never holds a space; a label value may
            pieces.append(literal + line[:cut])
            texts.append((line[:cut], line[cut:]))
            literal = "\n"
        pieces.append(literal)
        pieces = [piece.encode() for piece in pieces]
        problem = None
        if len(texts) != len(values):
            problem = f"{len(values)} values read for {len(texts)} samples"
        else:
            for (prefix, text), value in zip(texts, values):
                if not prefix.startswith(_MOVING) and METRICS_BUSY not in prefix and floatToGoString(value) != text:
                    problem = f"{prefix}read {floatToGoString(value)}, rendered {text}"
                    break
        if problem is None:
            self._pieces = pieces
        else:
            self.mismatches += 1
            self._pieces = None
            log.error("metrics: the fast exposition disagrees with prometheus-client's (%s); this node renders "
                      "the slow way until its series change", problem)
        return body

    def close(self) -> None:
        self._process.close()

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


class MetricsPortError(OSError):
    """The metrics port cannot be bound (in use, or not this machine's): one line that says what to change."""


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
        """Loop time per render (a sliced render: its slices' sum)."""
        self.slice_time = LogHistogram()
        """Loop time per slice of a sliced render (``refresh_step``)."""
        self._sliced = 0.0  # loop time of the sliced render under way
        self.render_on_scrape = render_on_scrape
        self.body = b""
        try:
            self.server = _BoundedServer((host, port), _Handler, max_connections, idle_timeout, request_deadline)
        except OSError as e:
            raise MetricsPortError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}; choose another base "
                                   "port (spikewire run --base-port N, or [monitor] base_port), or this node's "
                                   "metrics_port") from None
        self.server.owner = self
        self.exposition = Exposition(runtime)
        self._closed = False
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.5},
                                       name="metrics-http", daemon=True)
        self.thread.start()

    def due(self, now: float) -> bool:
        return not self.render_on_scrape and now - self.rendered_at >= self.max_age

    def refresh(self, now: float) -> None:
        """Render the exposition at once (a sliced render under way is dropped)."""
        c0 = time.perf_counter()
        self.body = self.exposition.render()
        self.render_time.record(time.perf_counter() - c0)
        self._sliced = 0.0
        self.rendered_at = now

    def refresh_step(self, now: float) -> bool:
        """One slice of a render (tens of microseconds; see ``Exposition``): True while more is left. The new
        text is served from the slice that completes it, and ``due`` stays true until then."""
        c0 = time.perf_counter()
        body = self.exposition.step()
        took = time.perf_counter() - c0
        self.slice_time.record(took)
        self._sliced += took
        if body is None:
            return True
        self.body = body
        self.render_time.record(self._sliced)
        self._sliced = 0.0
        self.rendered_at = now
        return False

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
        self.exposition.close()
