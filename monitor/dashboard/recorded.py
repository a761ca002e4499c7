"""A recorded session, served to the same page with a time slider: ``window(t)`` is what the page would
have shown at session time ``t``.

Everything comes from config/session.py's reader: the events every node sent (its journal), each device's
value over time and its pulses (the reader's one reconstruction), and each node's status lines (interlock,
loop counts, links) for the health panels. The catch: the health figures of a recorded session are the
status lines' (one a second), not /metrics'; there is no tick p99, CPU or probe histogram per moment.
"""

from __future__ import annotations

import bisect
import warnings
from pathlib import Path

import numpy as np

from spikewire.config.session import DamagedSessionWarning, read_session
from spikewire.monitor.dashboard.layout import layout, port_key, subscribed_ports
from spikewire.monitor.dashboard.live_source import events_json
from spikewire.nodes.figures import Spread

WINDOW_S = 10.0
MAX_EVENTS = 20_000
"""Events of one port sent for one window at most (the newest)."""


class RecordedSource:
    mode = "recorded"
    control = None
    """No controls: the run is over."""

    def __init__(self, folder: str | Path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DamagedSessionWarning)
            s = read_session(folder)
        self.damage = [str(w.message) for w in caught if issubclass(w.category, DamagedSessionWarning)]
        self.session = s
        self.network = s.network
        self.layout = layout(s.network)
        self.end = float(s.end_s)
        self.events: dict[str, np.ndarray] = {}
        drawn = subscribed_ports(s.network)
        for node in s.network.nodes:
            for port, (_, ev) in s.sent(node).items():
                key = port_key(node, port)
                if key in drawn:
                    ev = ev[np.argsort(ev["t"], kind="stable")]
                    self.events[key] = ev
        self.t0 = s.t0
        sets = {d["key"]: d["set"] for d in self.layout["devices"]}
        self.devices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.pulses: list[tuple[float, str, str]] = []
        by_set: dict[str, dict[str, list]] = {}
        for d in s.devices():
            key = f"{d.node}/{d.name}"
            if sets.get(key) is None:
                self.devices[key] = d.steps()
                self.pulses += [(p.t, key, p.direction) for p in d.pulses]
            else:
                by_set.setdefault(sets[key], {})[key] = d.samples
        self.sets: dict[str, list[list[float]]] = {}
        for key, members in by_set.items():
            times = sorted({t for samples in members.values() for t, _ in samples})
            rows = []
            for t in times:
                values = [r for samples in members.values() for ts, r in samples if ts == t]
                sp = Spread.of(values)
                rows.append([t, sp.mean, sp.min, sp.max])
            self.sets[key] = rows
        self.pulses.sort()
        self.status: dict[str, list[tuple[float, dict]]] = {}
        for node in s.network.nodes:
            lines = [(ln["t"] - s.t0, ln) for ln in s.status.of(node, "status") if isinstance(ln.get("t"), (int, float))]
            self.status[node] = sorted(lines, key=lambda p: p[0])
        self._pulse_t = [p[0] for p in self.pulses]
        self.controls = [[c.t, c.action, c.text, c.source] for c in s.controls()]

    def now(self) -> float:
        return self.end

    def window(self, t: float) -> dict:
        """The page at session time ``t`` (clamped to the session)."""
        t = min(max(float(t), 0.0), self.end)
        events, counts = {}, {}
        for key, ev in self.events.items():
            rel = ev["t"] - self.t0
            lo, hi = np.searchsorted(rel, t - WINDOW_S), np.searchsorted(rel, t, side="right")
            counts[key] = int(hi)
            events[key] = events_json(ev[max(lo, hi - MAX_EVENTS):hi], self.t0)
        devices, resistance = {}, {}
        for key, (times, values) in self.devices.items():
            n = int(np.searchsorted(times, t, side="right"))
            devices[key] = [[float(a), float(b)] for a, b in zip(times[:n], values[:n])]
            if n:
                resistance[key] = float(values[n - 1])
        sets = {key: [row for row in rows if row[0] <= t] for key, rows in self.sets.items()}
        pulses = [[pt, key, direction, 1] for pt, key, direction in self.pulses[:bisect.bisect_right(self._pulse_t, t)]]
        return {"mode": self.mode, "now": t, "end": self.end, "ended": True, "replace": True, "events": events,
                "devices": devices, "sets": sets, "pulses": pulses, "resistance": resistance,
                "controls": [c for c in self.controls if c[0] <= t], "counts": counts,
                "nodes": self._nodes(t), "links": self._links(t), "probe": None, "typed": {}, "malformed": {},
                "notes": self.damage}

    def _line(self, node: str, t: float) -> dict | None:
        lines = self.status.get(node) or []
        i = bisect.bisect_right([x[0] for x in lines], t)
        return lines[i - 1][1] if i else None

    def _nodes(self, t: float) -> dict:
        out = {}
        for node in self.network.nodes:
            ln = self._line(node, t)
            if ln is None:
                out[node] = {"up": False, "error": "not started yet"}
                continue
            loop = ln.get("loop") or {}
            lock = ln.get("interlock")
            model = ln.get("model") or {}
            out[node] = {"up": True, "ready": True, "ticks": loop.get("ticks"), "overruns": loop.get("overruns"),
                         "tick_p99": None, "cpu": None, "rss_mb": None, "elapsed": ln.get("elapsed"),
                         "interlock": None if not isinstance(lock, dict) else {
                             "held": bool(lock.get("holding")), "reason": lock.get("reason") or "",
                             "holds": lock.get("holds"), "held_events": lock.get("held_stimulus_events")},
                         "held": model.get("held", {}) if isinstance(model, dict) else {}}
        return out

    def _links(self, t: float) -> dict:
        out = {}
        for node in self.network.nodes:
            ln = self._line(node, t)
            for port in (ln or {}).get("inputs", {}).values():
                for link in (port.get("links") or {}).values() if isinstance(port, dict) else ():
                    if not isinstance(link, dict) or "label" not in link:
                        continue
                    lat = link.get("latency_s") or {}
                    up = (link.get("upstream") or {}).get("state")
                    out[link["label"]] = {"up": None if up is None else up == "up", "received": link.get("received"),
                                          "gaps": link.get("gaps"), "dropped": link.get("gaps"),
                                          "sent": (link.get("received") or 0) + (link.get("gaps") or 0),
                                          "malformed": sum((link.get("malformed") or {}).values()),
                                          "p50": lat.get("p50"), "p99": lat.get("p99"), "histogram": None,
                                          "inter_site": bool((link.get("upstream") or {}).get("inter_site"))}
        return out

    def state(self) -> dict:
        return {"mode": self.mode, "network": self.network.name, "end": self.end, "session": str(self.session.folder),
                "phases": [list(p) for p in self.network.phases], "notes": self.damage,
                "counts": {k: int(len(v)) for k, v in self.events.items()},
                "resistance": {k: float(v[1][-1]) for k, v in self.devices.items() if len(v[1])}}

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None
