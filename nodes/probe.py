"""Test and benchmark elements: a paced pulse source and a latency-recording sink.

``source`` emits one spike event per tick (``rate`` per second), stamped with local_clock() at emission,
so its output measures a link end to end. ``sink`` accepts any kind and records, for every event,
arrival time minus event time: with a ``source`` upstream that is the one-way hop latency including
encoding, transport, decoding and dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikewire.core.settings import non_negative, positive, setting
from spikewire.nodes.base import InPort, Node, NodeSettings, OutPort
from spikewire.nodes.element import Role, element
from spikewire.nodes.figures import Figures
from spikewire.streams.clock import local_clock
from spikewire.streams.wire import Kind


@dataclass(frozen=True)
class SourceSettings(NodeSettings):
    rate: float = setting(100.0, "Events per second.", check=positive, unit="1/s")
    count: int = setting(0, "Stop after this many events (0: never).", check=non_negative, unit="count")
    size: int = setting(1, "Ids cycle through 0..size-1.", check=positive, unit="count")
    burst: int = setting(1, "Events per tick (one packet), so rate x burst events per second.", check=positive, unit="count")


@element
class PulseSource(Node):
    kind = "source"
    Settings = SourceSettings

    def __init__(self, name: str, settings: SourceSettings):
        super().__init__(name, settings)
        self.emitted = 0

    @classmethod
    def ports(cls, settings: SourceSettings):
        return {}, {"out": OutPort(Kind.SPIKE, "paced spike events", settings.size, (1.0, 1.0), role=Role.SPIKES,
                                   group="out")}

    @property
    def tick_period(self) -> float:
        return 1.0 / self.settings.rate

    def tick(self, t_start: float, t_end: float) -> None:
        if self.settings.count and self.emitted >= self.settings.count:
            return
        now = local_clock()
        for _ in range(self.settings.burst):
            self.outbox.emit("out", now, self.emitted % self.settings.size, 1.0)
            self.emitted += 1

    def figures(self, now: float, final: bool = False) -> Figures:
        return Figures(elapsed=now - self.t0, info={"emitted": self.emitted})


@dataclass(frozen=True)
class SinkSettings(NodeSettings):
    capacity: int = setting(1_000_000, "Latency samples kept (later ones are counted, not kept).", check=positive, unit="count")
    report_samples: bool = setting(False, "Include every kept latency sample in the final summary.")
    cost: float = setting(0.0, "Busy time spent on each packet [s]: a deliberately slow receiver, for "
                          "back-pressure tests.", check=non_negative, unit="s")


@element
class LatencySink(Node):
    kind = "sink"
    Settings = SinkSettings

    def __init__(self, name: str, settings: SinkSettings):
        super().__init__(name, settings)
        self.latency = np.zeros(settings.capacity)
        self.n = 0
        self.by_kind: dict[str, int] = {}

    @classmethod
    def ports(cls, settings: SinkSettings):
        return {"in": InPort(frozenset(Kind), "any events")}, {}

    def on_events(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        if self.settings.cost:
            until = local_clock() + self.settings.cost
            while local_clock() < until:
                pass
        k = len(events)
        self.by_kind[kind.name] = self.by_kind.get(kind.name, 0) + k
        room = min(k, len(self.latency) - self.n)
        if room > 0:
            self.latency[self.n : self.n + room] = now - events["t"][:room]
        self.n += k

    def figures(self, now: float, final: bool = False) -> Figures:
        out = {"received": self.n}
        if not final:
            return Figures(elapsed=now - self.t0, info=out)
        kept = self.latency[: min(self.n, len(self.latency))]
        out["by_kind"] = dict(self.by_kind)
        if len(kept):
            p50, p99 = np.percentile(kept, [50, 99])
            out["latency_s"] = {"p50": float(p50), "p99": float(p99), "max": float(kept.max()), "count": len(kept)}
        if self.settings.report_samples:
            out["latency_samples"] = kept.tolist()
        return Figures(elapsed=now - self.t0, info=out)
