"""Replay: a recorded node's output, republished with its original timing.

`spikewire replay SESSION --nodes X` reruns the session's network with only X live; every other node's
process is a ReplayNode that reads that node's journal and publishes each recorded packet's events on the
same output port (same source id, so the live node cannot tell) when its original offset from the
session's start has elapsed again (divided by ``speed``). Event times are shifted by the same amount, so
they stay consistent with the new session's clock. Loop probes are not replayed (they measured the
original run).

What to replay comes from the session reader (config/session.py, a layer above): the node's journal and
the original run's t0, handed in as ``journal`` and ``t0``. Without them (an older caller) the node finds
its journal in the session folder and takes t0 from provenance.json, which must then record it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from spikewire.nodes.base import Node, NodeSettings, OutPort
from spikewire.nodes.figures import Figures
from spikewire.streams.journal import SENT, read_journal
from spikewire.streams.wire import Kind


class ReplayNode(Node):
    kind = "replay"
    Settings = NodeSettings

    def __init__(self, name: str, settings: NodeSettings, outputs: dict[str, OutPort], session: Path,
                 speed: float = 1.0, *, journal: Path | None = None, t0: float | None = None):
        super().__init__(name, settings, ports=({}, outputs))  # consumes nothing, publishes what was recorded
        if not (isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0):
            raise ValueError(f"replay speed must be a finite number > 0, got {speed!r}")
        self.speed = speed
        recording = read_journal(Path(journal) if journal is not None else Path(session) / "journal" / f"{name}.swj")
        self.skipped_bytes = recording.skipped_bytes
        self.t0_orig = float(t0) if t0 is not None else _recorded_t0(Path(session))
        # (offset from the original t0, port, events with t made relative to the original t0)
        self.queue: list[tuple[float, str, np.ndarray]] = []
        for rec in recording.records:
            if rec.direction != SENT or rec.packet is None or rec.packet.kind == Kind.PROBE:
                continue
            if rec.port not in outputs or not len(rec.packet.events):
                continue
            events = rec.packet.events.copy()
            events["t"] -= self.t0_orig
            self.queue.append((rec.logged - self.t0_orig, rec.port, events))
        self.queue.sort(key=lambda q: q[0])
        self.next = 0
        self.replayed_packets = 0
        self.replayed_events = 0

    @classmethod
    def ports(cls, settings):
        raise TypeError("a ReplayNode takes the replayed node's ports from the network, not from settings")

    @property
    def tick_period(self) -> float:
        return 1e-3

    def tick(self, t_start: float, t_end: float) -> None:
        elapsed = (t_end - self.t0) * self.speed
        while self.next < len(self.queue) and self.queue[self.next][0] <= elapsed:
            _, port, events = self.queue[self.next]
            shifted = events["t"] / self.speed + self.t0
            self.outbox.emit_many(port, shifted, events["id"], events["value"])
            self.next += 1
            self.replayed_packets += 1
            self.replayed_events += len(events)

    def figures(self, now: float, final: bool = False) -> Figures:
        info = {"replayed_packets": self.replayed_packets, "remaining": len(self.queue) - self.next}
        if final:
            info.update(replayed_events=self.replayed_events, recorded_packets=len(self.queue),
                        journal_skipped_bytes=self.skipped_bytes)
        return Figures(elapsed=now - self.t0, info=info)


def _recorded_t0(session: Path) -> float:
    """The original run's t0 as its provenance.json records it (what a caller without the reader's gets)."""
    try:
        t0 = json.loads((session / "provenance.json").read_text()).get("t0_local_clock")
    except (OSError, ValueError) as e:
        raise ValueError(f"{session}: provenance.json unreadable ({e})") from None
    if not isinstance(t0, (int, float)) or isinstance(t0, bool) or not math.isfinite(t0):
        raise ValueError(f"{session}: provenance.json records no t0_local_clock (the run did not finish), and no "
                         "t0 was handed in")
    return float(t0)
