"""A running network, observed from outside: its live file, output ports, /metrics and status.jsonl.

``LiveSource`` owns the three watchers (tap.py, scrape.py, status.py) and turns what they have into
frames for the page (``frame``) and the state endpoint (``state``). It reads the live file again every
half second: t0 and the session appear once the run starts, and a file that is gone or whose supervisor
died means the run ended (the status log is then read to its end: the final values).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from spikewire.config.network import NetworkError, load_network
from spikewire.monitor.dashboard.layout import layout, subscribed_ports
from spikewire.monitor.dashboard.live import LiveFileError, LiveRun, read_live_file
from spikewire.monitor.dashboard.scrape import MetricsWatch
from spikewire.monitor.dashboard.status import StatusTail
from spikewire.monitor.dashboard.tap import EventTap
from spikewire.streams.clock import local_clock


MARKS_PER_FRAME = 200
"""Events of one stimuli or synaptic port sent per frame at most (evenly thinned): a 100 x 10 crossbar's
10,000 synaptic events a second would cost the page and this process more than a lane of marks shows;
counts stay exact. Population rasters are never thinned."""
RESISTANCE_EVERY = 1.0
"""Seconds between a page's copies of every device's value (1,000 of them past a crossbar of that size)."""


class LiveSourceError(ValueError):
    """A live run that cannot be watched; one line."""


def events_json(events: np.ndarray, base: float) -> list:
    t = np.round(events["t"] - base, 5).tolist()
    return [list(x) for x in zip(t, events["id"].tolist(), np.round(events["value"], 6).tolist())]


class LiveSource:
    mode = "live"

    def __init__(self, live_path: Path):
        self.path = Path(live_path)
        self.run: LiveRun = read_live_file(self.path)
        try:
            self.network = load_network(self.run.network_file, check_keys=False)
        except NetworkError as e:
            raise LiveSourceError(f"{self.run.network_file}: {e}") from None
        nodes = list(self.run.nodes)
        self.layout = layout(self.network, [n for n in self.network.nodes if n in nodes])
        self.started = local_clock()
        self.ended = False
        self.ended_why = ""
        self.notes: list[str] = []
        endpoints = {}
        for key, (node, port) in subscribed_ports(self.network, nodes).items():
            endpoint = self.run.nodes[node].outputs.get(port)
            if endpoint is None:
                self.notes.append(f"{key}: the live file gives no endpoint")
            elif self.network.curve_port(node, port):
                self.notes.append(f"{key}: CURVE-authenticated; not tapped")
            else:
                endpoints[key] = endpoint
        self.tap = EventTap(endpoints)
        self._thinned = {m["key"] for m in self.layout["marks"]}
        self.metrics = MetricsWatch(self.network, {n: self.run.nodes[n].metrics for n in nodes})
        self.status = StatusTail(self.layout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="dashboard-live-file", daemon=True)

    def start(self) -> None:
        self.tap.start()
        self.metrics.start()
        self._thread.start()

    @property
    def t0(self) -> float | None:
        return self.run.t0

    @property
    def base(self) -> float:
        """Session time 0 on the local_clock (the dashboard's own start until t0 is known)."""
        return self.run.t0 if self.run.t0 is not None else self.started

    def _follow(self) -> None:
        drained = 0
        while not self._stop.wait(0.5):
            if not self.ended:
                try:
                    self.run = read_live_file(self.path)
                except LiveFileError as e:
                    self.ended, self.ended_why = True, str(e)
            if self.run.session is not None:
                self.status.poll(self.run.session / "status.jsonl", self.run.t0)
            if self.ended:
                # The supervisor writes the finals and then summary.json: read on until both are in.
                done = self.run.session is None or (self.run.session / "summary.json").exists()
                drained = drained + 1 if done else 0
                if drained >= 2 or (self.run.session is not None and not self.run.session.exists()):
                    return

    def now(self) -> float | None:
        if self.run.t0 is None:
            return None
        return local_clock() - self.run.t0

    # --- what the page gets -------------------------------------------------------------------------
    def frame(self, cursor: dict) -> dict:
        """What came since ``cursor`` (updated in place: {"events": n, "updates": n})."""
        seq, chunks = self.tap.events.since(cursor.get("events", 0))
        cursor["events"] = seq
        events: dict[str, list] = {}
        base = self.base
        for key, ev in chunks:
            events.setdefault(key, []).extend(events_json(ev, base))
        for key in self._thinned.intersection(events):
            if len(events[key]) > MARKS_PER_FRAME:
                step = len(events[key]) / MARKS_PER_FRAME
                events[key] = [events[key][int(i * step)] for i in range(MARKS_PER_FRAME)]
        useq, updates = self.status.updates.since(cursor.get("updates", 0))
        cursor["updates"] = useq
        devices: dict[str, list] = {}
        sets: dict[str, list] = {}
        pulses, controls = [], []
        for item in updates:
            if item[0] == "control":
                controls.append([item[2], item[1], item[3], item[4]])
            elif item[0] == "dev":
                devices.setdefault(item[1], []).append([item[2], item[3]])
            elif item[0] == "set":
                sets.setdefault(item[1], []).append(list(item[2:]))
            else:
                pulses.append([item[2], item[1], item[3], item[4]])
        health = self.health(resistance=False)
        now = local_clock()
        if self.ended or now - cursor.get("resistance_at", float("-inf")) >= RESISTANCE_EVERY:
            cursor["resistance_at"] = now
            health["resistance"] = self.resistance()
        return {"mode": self.mode, "now": self.now(), "end": self.run.duration, "ended": self.ended,
                "replace": False, "events": events, "devices": devices, "sets": sets, "pulses": pulses,
                "controls": controls, **health}

    def resistance(self) -> dict[str, float]:
        """Each device's value now: the status log's (the final report's once it is in), else /metrics'."""
        out = {}
        for node, st in self.metrics.snapshot()["nodes"].items():
            for dev, r in (st.get("devices") or {}).items():
                out[f"{node}/{dev}"] = r
        out.update(self.status.resistance)
        return out

    def health(self, resistance: bool = True) -> dict:
        m = self.metrics.snapshot()
        nodes = {}
        for name, st in m["nodes"].items():
            st = {k: v for k, v in st.items() if k != "devices"}
            lock = dict(st.get("interlock") or {})
            logged = self.status.interlock.get(name)
            if logged is not None:
                lock.setdefault("held", bool(logged.get("holding")))
                lock["reason"] = logged.get("reason") or ""
                lock.setdefault("held_events", logged.get("held_stimulus_events"))
            if self.ended and name in self.status.finals and logged is not None:
                lock["held"] = bool(logged.get("holding"))
            st["interlock"] = lock or None
            st["held"] = self.status.held.get(name, {})
            if self.ended:
                st["up"] = False
                st.setdefault("error", "the run ended")
            nodes[name] = st
        out = {"resistance": self.resistance()} if resistance else {}
        return {**out, "nodes": nodes, "links": m["links"], "probe": m["probe"],
                "counts": dict(self.tap.counts), "typed": {k: {str(t): n for t, n in c.items()}
                                                           for k, c in self.tap.typed.items()},
                "malformed": dict(self.tap.malformed), "finals": sorted(self.status.finals),
                "session": str(self.run.session) if self.run.session else None, "notes": self.notes,
                "ended_why": self.ended_why}

    def state(self) -> dict:
        return {"mode": self.mode, "network": self.network.name, "now": self.now(), "ended": self.ended,
                "phases": [list(p) for p in (self.run.phases or self.network.phases)], "scrapes": self.metrics.scrapes,
                "packets": self.tap.packets, **self.health()}

    @property
    def control(self) -> tuple[str, str] | None:
        if self.ended or not self.run.control_endpoint or not self.run.control_secret:
            return None
        return self.run.control_endpoint, self.run.control_secret

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.metrics.close()
        self.tap.close()

