"""Loop probes: the software path's true end-to-end latency, measured during a live session.

The origin node stamps a PROBE packet on one of its output ports every ``every`` seconds. Every node
forwards probes from an input port to the output ports its ``probe_route`` names, at once and without
touching the model, so a probe follows the same sockets, queues and loops as the session's spikes. When
a probe arrives back at its origin node its round trip is recorded. A probe event is (t = origin send
time, id = probe number, value = origin node index * 256 + hops); one that has made ``MAX_HOPS`` hops
is dropped, so a cycle that never returns to the origin cannot circulate for ever.
"""

from __future__ import annotations

import numpy as np

from spikewire.core.histogram import LogHistogram
from spikewire.streams.wire import EVENT

MAX_HOPS = 64
LOST_AFTER = 1.0  # s: a probe not back by then counts as lost


class ProbeState:
    def __init__(self, node_index: int, origin_port: str | None, every: float):
        self.node_index = node_index
        self.origin = origin_port
        self.every = every
        self.next_at = float("inf")
        self.sent = 0
        self.returned = 0
        self.dropped_hops = 0
        self.outstanding: dict[int, float] = {}
        self.expired = 0
        self.latency = LogHistogram()
        self.forward: dict[str, LogHistogram] = {}  # per input port: each forwarded probe's arrival to its send

    def start(self, t0: float) -> None:
        if self.origin:
            self.next_at = t0 + self.every

    def due(self, now: float) -> tuple[bytes, int] | None:
        """The probe to send now, if one is due, packed (``Publisher.publish_packed``). Call it right before
        sending, with the current time: the round trip is measured from this stamp."""
        if now < self.next_at:
            return None
        self.next_at = max(self.next_at + self.every, now)
        pid = self.sent
        self.outstanding[pid] = now
        self.sent += 1
        return EVENT.pack(now, pid, self.node_index * 256), 1

    def expire(self, now: float) -> None:
        """Count probes out longer than LOST_AFTER as lost (after the send: it is no part of the probe's path)."""
        for pid, t in list(self.outstanding.items()):
            if now - t > LOST_AFTER:
                del self.outstanding[pid]
                self.expired += 1

    def arrived(self, events: np.ndarray, now: float) -> tuple[bytes, int] | None:
        """Handle probes that arrived; returns the ones to forward (hop count incremented) as packed events
        and their count, or None. Plain Python on purpose: a probe is one event, and numpy's per-call cost
        would be most of a forward."""
        forward = []
        pack = EVENT.pack
        for t, pid, value in events.tolist():
            origin, hops = divmod(int(value), 256)
            if origin == self.node_index and self.origin:
                if self.outstanding.pop(pid, None) is not None:
                    self.returned += 1
                    self.latency.record(now - t)
                continue
            if hops + 1 >= MAX_HOPS:
                self.dropped_hops += 1
                continue
            forward.append(pack(t, pid, value + 1))
        if not forward:
            return None
        return b"".join(forward), len(forward)

    def lost(self) -> int:
        return self.expired

    def summary(self) -> dict:
        out = {"origin": self.origin, "sent": self.sent, "returned": self.returned, "lost": self.expired,
               "in_flight": len(self.outstanding), "latency_s": self.latency.summary()}
        return out
