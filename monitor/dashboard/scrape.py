"""The dashboard's eyes on health: each node's /metrics read a few times a second, as ``top`` reads them.

Rates, CPU and quantiles come from the difference between a node's last two distinct expositions
(monitor/top.py says why); a link's figures all come from its receiver. An exposition identical to the
last one is not parsed again (nodes render at most once a second), which keeps a 1,000-device node's
scrape cheap.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from spikewire.config.network import Network
from spikewire.monitor import catalogue as C
from spikewire.monitor.top import (IN_SEQUENCE, Exposition, NodeState, histogram_quantile, node_elapsed,
                                   parse_exposition, recent_buckets)

INTERVAL = 0.4
"""Seconds between scrapes (2.5 Hz)."""


def _q(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) or math.isnan(x) else x


def _delta(name: str, st: NodeState, **labels: str) -> float | None:
    if st.prev is None or st.last is None:
        return None
    a, b = st.last.total(name, **labels), st.prev.total(name, **labels)
    return a - b if a is not None and b is not None and a >= b else None


def _histogram(buckets: list[tuple[float, float]]) -> list[list[float]]:
    """Cumulative buckets as [upper bound, count in the bucket] (the +Inf bucket's bound as null)."""
    out, below = [], 0.0
    for le, n in buckets:
        out.append([None if math.isinf(le) else le, max(0.0, n - below)])
        below = n
    return out


class MetricsWatch:
    def __init__(self, network: Network, urls: dict[str, str | None], interval: float = INTERVAL):
        self.network = network
        self.urls = {n: u for n, u in urls.items() if u}
        self.states = {n: NodeState() for n in urls}
        self._text: dict[str, str] = {}
        self.interval = interval
        self.scrapes = 0
        self.summary: dict = {"nodes": {}, "links": {}, "probe": None}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(self.urls))), thread_name_prefix="dash-scrape")
        self._thread = threading.Thread(target=self._run, name="dashboard-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _fetch(self, node: str) -> Exposition | str | None:
        """A new exposition, None if unchanged, or why there is none."""
        try:
            with urllib.request.urlopen(self.urls[node], timeout=1.0) as resp:
                text = resp.read().decode("utf-8")
        except urllib.error.URLError as e:
            return str(getattr(e.reason, "strerror", None) or e.reason)
        except (OSError, ValueError) as e:  # refused, reset, timed out; a bad status line
            return getattr(e, "strerror", None) or str(e) or type(e).__name__
        if self._text.get(node) == text and self.states[node].up:
            return None
        self._text[node] = text
        try:
            return parse_exposition(text, time.monotonic(), time.time())
        except ValueError as e:
            return f"not a Prometheus exposition ({e})"

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            names = list(self.urls)
            for name, got in zip(names, self._pool.map(self._fetch, names)):
                if got is not None:
                    self.states[name].update(got)
            summary = self.summarise()
            with self._lock:
                self.summary = summary
                self.scrapes += 1
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def snapshot(self) -> dict:
        with self._lock:
            return self.summary

    # --- figures -------------------------------------------------------------------------------------
    def summarise(self) -> dict:
        nodes = {name: self._node(name) for name in self.states if name in self.network.nodes}
        links = {ln.label: self._link(ln) for ln in self.network.links if ln.dst_node in self.states}
        return {"nodes": nodes, "links": links, "probe": self._probe()}

    def _node(self, name: str) -> dict:
        st = self.states[name]
        if not st.up:
            return {"up": False, "error": st.error or "no answer yet"}
        spec = self.network.nodes[name]
        last = st.last
        dt = node_elapsed(spec, st)
        cpu_d = _delta("process_cpu_seconds_total", st)
        cpu = 100 * cpu_d / dt if cpu_d is not None and dt else None
        rss = last.value("process_resident_memory_bytes")
        rates = {}
        sizes = {p.name: p.size for p in spec.declaration.populations}
        for pop in last.label_values(C.SPIKES.name, "population"):
            n = _delta(C.SPIKES.name, st, population=pop)
            rates[pop] = n / dt / sizes.get(pop, 1) if n is not None and dt else last.value(C.RATE.name, population=pop)
        devices = {have["device"]: v for have, v in last.samples.get(C.RESISTANCE.name, ()) if "device" in have}
        tick = recent_buckets(last, st.prev, C.TICK_COMPUTE.name)
        held = last.value(C.INTERLOCK.name)
        return {"up": True, "ready": last.value(C.NODE_READY.name) != 0,
                "tick_p99": _q(histogram_quantile(0.99, tick)) if tick else None,
                "ticks": last.value(C.TICKS.name), "overruns": last.value(C.OVERRUNS.name),
                "cpu": cpu, "rss_mb": rss / 2**20 if rss is not None else None,
                "interlock": None if held is None else {"held": held == 1, "holds": last.value(C.HOLDS.name),
                                                        "held_events": last.value(C.HELD_EVENTS.name)},
                "elapsed": last.value(C.SESSION_ELAPSED.name), "rates": rates, "devices": devices,
                "spikes": {pop: last.total(C.SPIKES.name, population=pop)
                           for pop in last.label_values(C.SPIKES.name, "population")},
                "rig": None if last.value(C.RIG_UP.name) is None else {
                    "up": last.value(C.RIG_UP.name) == 1, "calibrated": last.value(C.RIG_CALIBRATED.name),
                    "stim_sent": last.value(C.STIM_SENT.name), "stim_held": last.value(C.STIM_HELD.name)}}

    def _link(self, link) -> dict:
        dst = self.states.get(link.dst_node)
        src = self.states.get(link.src_node) if link.src_node else None
        out: dict = {"up": None, "inter_site": link.inter_site}
        if src is not None and src.up:
            out["send_drops"] = src.last.total(C.SEND_DROPS.name, port=link.src_port) or 0.0
        if dst is None or not dst.up:
            return out
        e, lab = dst.last, {"link": link.label}
        received = e.total(C.RECEIVED.name, **lab)
        gaps = e.total(C.GAPS.name, **lab) or 0.0
        refused = sum(e.total(C.MALFORMED.name, reason=r, **lab) or 0.0 for r in IN_SEQUENCE)
        recent = recent_buckets(e, dst.prev, C.LATENCY.name, **lab)
        up = e.value(C.LINK_UP.name, **lab)
        out.update({"up": None if up is None else up == 1, "received": received,
                    "sent": None if received is None else received + gaps + refused, "gaps": gaps,
                    "dropped": gaps + out.get("send_drops", 0.0), "malformed": e.total(C.MALFORMED.name, **lab) or 0.0,
                    "p50": _q(histogram_quantile(0.5, recent)), "p99": _q(histogram_quantile(0.99, recent)),
                    "histogram": _histogram(recent), "offset": e.value(C.CLOCK_OFFSET.name, **lab),
                    "rtt": e.value(C.RTT.name, **lab), "outages": e.total(C.OUTAGES.name, **lab)})
        return out

    def _probe(self) -> dict | None:
        origin = self.network.monitor.probe_from.partition(".")[0]
        st = self.states.get(origin)
        if not origin or st is None or not st.up:
            return None
        recent = recent_buckets(st.last, st.prev, C.PROBE_LATENCY.name)
        return {"p50": _q(histogram_quantile(0.5, recent)), "p99": _q(histogram_quantile(0.99, recent)),
                "count": int(recent[-1][1]) if recent else 0, "lost": st.last.value(C.PROBES_LOST.name)}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3.0)
        self._pool.shutdown(wait=False, cancel_futures=True)
