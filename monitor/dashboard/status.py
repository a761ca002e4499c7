"""A running session's status.jsonl, followed as it grows: device values, pulses and interlock reasons.

The supervisor writes one line per node per second (its figures, and a log of the plasticity pulses since
the previous line with their exact times and values) and each node's final report at the end, line-buffered
(config/session.py). Reading them here gives the page each pulse at its own time and, at the end, the very
values the run summary prints. The catch: the last line may be half-written when read; it is read again
once complete.
"""

from __future__ import annotations

import json
from pathlib import Path

from spikewire.monitor.dashboard.feed import Feed
from spikewire.nodes.figures import Figures, Spread


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class StatusTail:
    def __init__(self, layout: dict):
        self.sets = {d["key"]: d["set"] for d in layout["devices"]}
        self.updates = Feed(max_items=50_000)
        """Items: ("dev", key, t, r), ("set", key, t, mean, min, max), ("pulse", key, t, direction, n),
        ("control", action, t, text, source)."""
        self.resistance: dict[str, float] = {}
        self.interlock: dict[str, dict] = {}
        """node -> its status line's interlock (holding, reason, holds, held_stimulus_events)."""
        self.held: dict[str, dict] = {}
        """node -> its figures' held actions (stimuli, pulses)."""
        self.finals: set[str] = set()
        self.torn = 0
        self._offset = 0
        self._rest = b""
        self._set_pulses: dict[str, tuple[int, int]] = {}

    def poll(self, path: Path, t0: float | None) -> None:
        """Read what was appended to ``path`` since the last call."""
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for raw in lines:
            self.take(raw, t0)

    def take(self, raw: bytes, t0: float | None) -> None:
        try:
            line = json.loads(raw)
        except ValueError:
            self.torn += 1
            return
        if not isinstance(line, dict) or not _number(line.get("t")):
            self.torn += 1
            return
        if line.get("type") == "control":  # an operator's action the supervisor accepted (hold, release, mark)
            if t0 is not None:
                self.updates.append(("control", line.get("action"), line["t"] - t0, str(line.get("text") or ""),
                                     str(line.get("source") or "")))
            return
        if not isinstance(line.get("node"), str):
            self.torn += 1
            return
        node = line["node"]
        if t0 is None:
            if not _number(line.get("elapsed")):
                return
            t0 = line["t"] - line["elapsed"]
        t = line["t"] - t0
        if line.get("type") == "final":
            summary = line.get("summary") if isinstance(line.get("summary"), dict) else {}
            self._figures(node, t, summary.get("model"), final=True)
            if isinstance(summary.get("interlock"), dict):
                self.interlock[node] = summary["interlock"]
            self.finals.add(node)
            return
        if isinstance(line.get("interlock"), dict):
            self.interlock[node] = line["interlock"]
        self._pulses(node, line.get("log"), t0)
        self._figures(node, t, line.get("model"), final=False)

    def _pulses(self, node: str, log, t0: float) -> None:
        for ev in log if isinstance(log, list) else ():
            if not (isinstance(ev, dict) and ev.get("event") == "pulse" and _number(ev.get("t"))
                    and isinstance(ev.get("device"), str) and ev.get("direction") in ("ltp", "ltd")):
                continue
            key = f"{node}/{ev['device']}"
            agg = self.sets.get(key)
            t = ev["t"] - t0
            if agg is None:
                if _number(ev.get("r_after")):
                    self.updates.append(("dev", key, t, float(ev["r_after"])))
                self.updates.append(("pulse", key, t, ev["direction"], 1))

    def _figures(self, node: str, t: float, model, final: bool) -> None:
        if not isinstance(model, dict):
            return
        try:
            fig = Figures.from_dict(model)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.torn += 1
            return
        self.held[node] = dict(fig.held)
        by_set: dict[str, list[float]] = {}
        pulses: dict[str, list[int]] = {}
        for name, d in fig.devices.items():
            key = f"{node}/{name}"
            before = self.resistance.get(key)
            self.resistance[key] = d.r
            agg = self.sets.get(key)
            if agg is None:
                if before != d.r or final:
                    self.updates.append(("dev", key, t, d.r))
            else:
                by_set.setdefault(agg, []).append(d.r)
                pulses.setdefault(agg, [0, 0])
                pulses[agg][0] += d.ltp
                pulses[agg][1] += d.ltd
        for key, values in by_set.items():
            sp = Spread.of(values)
            self.updates.append(("set", key, t, sp.mean, sp.min, sp.max))
            ltp, ltd = pulses[key]
            last = self._set_pulses.get(key, (0, 0))
            for direction, now, was in (("ltp", ltp, last[0]), ("ltd", ltd, last[1])):
                if now > was:
                    self.updates.append(("pulse", key, t, direction, now - was))
            self._set_pulses[key] = (ltp, ltd)
