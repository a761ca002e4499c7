"""Wall-clock pacing of a clock-driven node, with optional compute-ahead.

Tick k covers session time [t0 + k T, t0 + (k+1) T) and its outputs are due at its end, the deadline
D(k). Input that arrives at wall time a belongs to the tick containing a and lands in the step matching a.

Paced (``lookahead_ticks <= 1``): tick k runs when the wall clock passes D(k) and publishes at once.
The process wakes every tick, and on a 2-vCPU VM a wake alone costs ~25-50 us of CPU, so two such nodes
at 1 ms ticks burn ~10 % of a core doing nothing.

Compute-ahead (``lookahead_ticks = H > 1``): while no input is pending the node computes the next H ticks
at once from a snapshot, keeps their outputs, and publishes each tick's output at its own deadline, so
nothing leaves early and timing is as paced. The process sleeps until the next output is due, the batch
ends, or input arrives. Input arriving inside the computed range belongs to some tick j of it: the model
is restored to the snapshot, ticks before j are recomputed with the inputs they had (their outputs,
already published, are identical), and tick j onwards is computed again with the new input. The result
is the same model trajectory as paced ticking, with far fewer wakes when traffic is sparse.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import numpy as np

from spikewire.core.histogram import LogHistogram
from spikewire.nodes.base import Node
from spikewire.streams.wire import Kind

MAX_CATCHUP_TICKS = 50
"""A node this many ticks behind jumps to the present (counting the skipped ticks) instead of racing."""

Publish = Callable[[str, np.ndarray], None]


class TickScheduler:
    def __init__(self, node: Node, t0: float, period: float, lookahead_ticks: int, publish: Publish):
        self.node = node
        self.t0 = t0
        self.period = period
        self.horizon = lookahead_ticks if lookahead_ticks > 1 else 0
        self.publish = publish
        self.committed = 0  # every tick before this one has run and published
        self.inbox: deque[tuple[float, str, Kind, np.ndarray]] = deque()
        self.batch: list[list[tuple[str, np.ndarray]]] | None = None
        self.batch_start = 0
        self.batch_inputs: list[tuple[int, tuple]] = []
        self.published = 0  # ticks of the batch already published
        self.snap = None
        self.rollback_to: tuple[int, float] | None = None  # (tick, arrival) of the earliest input inside the batch
        self.ticks = 0
        self.computed = 0
        self.rollbacks = 0
        self.overruns = 0
        self.skipped = 0
        self.compute = LogHistogram()
        self.lag = LogHistogram()

    def deadline(self, k: int) -> float:
        return self.t0 + (k + 1) * self.period

    # --- input -----------------------------------------------------------------------------------
    def on_input(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        """Queue input for the tick it belongs to. Input inside the computed batch marks a rollback that
        ``advance`` does: after the whole drain, so probes and other packets behind this one are not kept
        waiting by the recomputation, and several inputs in one drain cost one rollback."""
        self.inbox.append((now, port, kind, events))
        if self.batch is None:
            return
        j = max(self.batch_start, int((now - self.t0) / self.period))
        if j < self.batch_start + len(self.batch) and (self.rollback_to is None or j < self.rollback_to[0]):
            self.rollback_to = (j, now)

    def _rollback(self, j: int, now: float) -> None:
        self._publish_due(now)  # every tick before j is due by construction
        state, n_marks = self.snap
        self.node.restore(state)
        del self.node.phase_marks[n_marks:]
        self.rollbacks += 1
        replay = self.batch_inputs
        requeue = [item for k, item in replay if k >= j]
        for k in range(self.batch_start, j):
            for kk, item in replay:
                if kk == k:
                    self.node.on_events(item[1], item[2], item[3], item[0])
            self._compute(k)
            self.node.outbox.clear()  # identical to what was already published
        self.inbox.extendleft(reversed(requeue))
        self.ticks += j - self.batch_start
        self.committed = j
        self.batch = None
        self.batch_inputs = []
        self.rollback_to = None

    # --- ticking ---------------------------------------------------------------------------------
    def _deliver(self, k: int, record: bool) -> None:
        limit = self.deadline(k)
        inbox = self.inbox
        while inbox and inbox[0][0] < limit:
            item = inbox.popleft()
            self.node.on_events(item[1], item[2], item[3], item[0])
            if record:
                self.batch_inputs.append((k, item))

    def _compute(self, k: int) -> None:
        c0 = time.perf_counter()
        self.node.mark_phases(self.deadline(k) - self.period)
        self.node.tick(self.deadline(k) - self.period, self.deadline(k))
        self.compute.record(time.perf_counter() - c0)
        self.computed += 1

    def _late(self, k: int, now: float) -> None:
        late = now - self.deadline(k)
        self.lag.record(late)
        if late > self.period:
            self.overruns += 1

    def _publish_due(self, now: float) -> None:
        batch = self.batch
        while self.published < len(batch) and self.deadline(self.batch_start + self.published) <= now:
            outputs = batch[self.published]
            if outputs or self.published == len(batch) - 1:
                self._late(self.batch_start + self.published, now)
            for port, events in outputs:
                self.publish(port, events)
            self.published += 1
        if self.published == len(batch):
            self.ticks += len(batch)
            self.committed = self.batch_start + len(batch)
            self.batch = None
            self.batch_inputs = []

    def advance(self, now: float) -> float:
        """Run / publish whatever is due at ``now``; returns the wall time of the next wake."""
        if self.rollback_to is not None:
            self._rollback(self.rollback_to[0], now)
        if self.batch is not None:
            self._publish_due(now)
            if self.batch is not None:
                return self._next_wake()
        behind = int((now - self.deadline(self.committed)) / self.period)
        if behind > MAX_CATCHUP_TICKS:
            self.skipped += behind - MAX_CATCHUP_TICKS
            self.committed += behind - MAX_CATCHUP_TICKS
        outbox = self.node.outbox
        while self.deadline(self.committed) <= now:  # paced, or catching up
            k = self.committed
            self._deliver(k, record=False)
            self._compute(k)
            for port, events in outbox.pending():
                self.publish(port, events)
            outbox.clear()
            self._late(k, now)
            self.committed += 1
            self.ticks += 1
        if not self.horizon:
            return self.deadline(self.committed)
        self.snap = (self.node.snapshot(), len(self.node.phase_marks))
        self.batch_start = self.committed
        self.batch = []
        self.published = 0
        for i in range(self.horizon):
            k = self.batch_start + i
            self._deliver(k, record=True)
            self._compute(k)
            self.batch.append([(port, events.copy()) for port, events in outbox.pending()])
            outbox.clear()
        return self._next_wake()

    def settle(self, now: float) -> None:
        """Stop at what has been published: publish what is due, and undo ticks computed ahead but not yet
        due, so the model's counts are exactly what left the node (called when the session drains)."""
        if self.rollback_to is not None:
            self._rollback(self.rollback_to[0], now)
        if self.batch is None:
            return
        self._publish_due(now)
        if self.batch is not None:
            self._rollback(self.batch_start + self.published, now)

    def _next_wake(self) -> float:
        for i in range(self.published, len(self.batch)):
            if self.batch[i]:
                return self.deadline(self.batch_start + i)
        return self.deadline(self.batch_start + len(self.batch) - 1)

    def summary(self) -> dict:
        return {"ticks": self.ticks, "computed": self.computed, "rollbacks": self.rollbacks,
                "overruns": self.overruns, "skipped_ticks": self.skipped, "lookahead_ticks": self.horizon,
                "tick_compute_s": self.compute.summary(), "lag_s": self.lag.summary()}
