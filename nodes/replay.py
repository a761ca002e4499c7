"""Replay: a recorded node's output, republished with its original timing.

`spikewire replay SESSION --nodes X` reruns the session's network with only X live; every other node's
process is a ReplayNode that reads that node's journal and publishes each recorded packet's events on the
same output port (same source id, so the live node cannot tell) when its original offset from the
session's start has elapsed again (divided by ``speed``). Event times are shifted by the same amount, so
they stay consistent with the new session's clock. Loop probes are not replayed (they measured the
original run).
"""

from __future__ import annotations

import json
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
                 speed: float = 1.0):
        super().__init__(name, settings, ports=({}, outputs))  # consumes nothing, publishes what was recorded
        self.speed = speed
        journal = read_journal(Path(session) / "journal" / f"{name}.swj")
        self.skipped_bytes = journal.skipped_bytes
        t0_orig = json.loads((Path(session) / "provenance.json").read_text()).get("t0_local_clock")
        if t0_orig is None:
            raise ValueError(f"{session}: provenance.json has no t0_local_clock (the session never started)")
        self.t0_orig = float(t0_orig)
        # (offset from the original t0, port, events with t made relative to the original t0)
        self.queue: list[tuple[float, str, np.ndarray]] = []
        for rec in journal.records:
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
