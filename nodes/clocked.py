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

Two refinements for kinds that declare them (``Node.timed_outputs``, ``Node.span_ticks``):

- **Outputs leave when final, not at the deadline.** An output computed ahead is final once the model step
  its time falls in has passed (or at its ``due``, for one decided later, like a PSP), because input that
  arrives after that lands in a later step. It is published then: at most one model step (0.1 ms) after it
  happened instead of up to a tick (1 ms) after. Never before: a rollback keeps what already left, and an
  input is never placed before what has left (``on_input``).
- **A batch is one call.** The H ticks of a batch are computed by one ``tick(t_start, t_end)`` over the whole
  span (split at protocol phase ends), and each output is given to the tick its time falls in. The per-tick
  Python (a few microseconds warm, tens cold) is paid once per batch: most of a quiet node's CPU.

When the session drains mid-batch (``settle``), the tick under way is finished on time and the ticks after
it are undone, so the model's counts are exactly what left the node.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable

import numpy as np

from spikewire.core.histogram import LogHistogram
from spikewire.nodes.base import Node
from spikewire.streams.wire import Kind

RELEASE_GAP = 0.25
"""Outputs of one tick that are final within this fraction of a tick of each other leave together."""
MIN_REACH = 2
"""The shortest batch a node computes ahead while input keeps arriving (see ``TickScheduler.reach``)."""
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
        self.timed = bool(node.timed_outputs and self.horizon)
        self.step = node.output_step if self.timed else 0.0
        self.span = node.reserve_span(self.horizon) if node.span_ticks and self.timed else 1
        self.committed = 0  # every tick before this one has run and published
        self.inbox: deque[tuple[float, str, Kind, np.ndarray]] = deque()
        self.batch: list[tuple[float, int, str, np.ndarray]] | None = None  # (release, tick, port, events) by release
        self.next_item = 0  # items of the batch before this one are published
        self.batch_start = 0
        self.batch_end = 0  # the first tick after the batch
        # Batches adapt to the input: a rollback halves the next one, a batch that runs out doubles it (up
        # to ``horizon``), so frequent input does not make the node recompute long batches over and over.
        self.reach = self.horizon
        self.batch_inputs: list[tuple[int, tuple]] = []
        self.snap = None
        self.rollback_to: tuple[int, float] | None = None  # (tick, arrival) of the earliest input inside the batch
        self.published_until = -math.inf  # every output released by this time has been published
        self.suppress_until = -math.inf  # after a rollback: recomputed outputs released by this time already left
        self.settled = False  # draining: only the finished tick's outputs are left to publish
        self.ticks = 0
        self.computed = 0
        self.rollbacks = 0
        self.overruns = 0
        self.skipped = 0
        self.compute = LogHistogram()
        self.batch_compute = LogHistogram()  # one whole batch (the loop is busy this long, however it is cut)
        self.lag = LogHistogram()

    def deadline(self, k: int) -> float:
        return self.t0 + (k + 1) * self.period

    # --- input -----------------------------------------------------------------------------------
    def on_input(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        """Queue input for the tick it belongs to. Input inside the computed batch marks a rollback that
        ``advance`` does: after the whole drain, so probes and other packets behind this one are not kept
        waiting by the recomputation, and several inputs in one drain cost one rollback. An input is never
        placed before what has already been published (it could have changed it)."""
        if now < self.published_until:
            now = self.published_until
        self.inbox.append((now, port, kind, events))
        if self.batch is None or self.settled:
            return
        j = max(self.batch_start, int((now - self.t0) / self.period))
        if j < self.batch_end and (self.rollback_to is None or j < self.rollback_to[0]):
            self.rollback_to = (j, now)

    def _rollback(self, j: int, arrival: float, keep_through: int | None = None) -> None:
        """Restore the batch's snapshot and recompute up to tick ``j`` (through ``keep_through``, keeping
        those ticks' unpublished outputs: ``settle``); outputs released by ``arrival`` are published first,
        and are final."""
        self._publish_due(arrival)
        # An output of a coalesced group is final at its own release, not the group's (_coalesce): publish the
        # ones final by ``arrival`` now. Recomputed, they are suppressed as published (suppress_until), and
        # without this a group that had not left yet lost them.
        rest = self.batch[self.next_item:]
        if any(it[4] <= arrival for it in rest):
            for it in rest:
                if it[4] <= arrival:
                    self._late(it[4], arrival)
                    self.publish(it[2], it[3])
            self.batch[self.next_item:] = [it for it in rest if it[4] > arrival]
        end = j if keep_through is None else keep_through + 1
        keep = [it for it in self.batch[self.next_item:] if it[1] < end] if keep_through is not None else []
        state, n_marks = self.snap
        self.node.restore(state)
        del self.node.phase_marks[n_marks:]
        self.rollbacks += 1
        self.reach = max(MIN_REACH, self.reach // 2)
        replay = self.batch_inputs
        requeue = [item for k, item in replay if k >= end]
        if self.span > 1 and end > self.batch_start:
            for kk, item in replay:  # a span batch records input at its first tick only
                if kk < end:
                    self.node.on_events(item[1], item[2], item[3], item[0])
            self._compute_span(self.batch_start, end)
        else:
            for k in range(self.batch_start, end):
                for kk, item in replay:
                    if kk == k:
                        self.node.on_events(item[1], item[2], item[3], item[0])
                self._compute(k)
        self.node.outbox.clear()  # identical to what was computed before: published, or kept
        self.inbox.extendleft(reversed(requeue))
        self.ticks += end - self.batch_start
        self.committed = end
        self.suppress_until = self.published_until
        self.batch_inputs = []
        self.rollback_to = None
        if keep_through is None:
            self.batch = None
        else:
            self.batch, self.next_item, self.batch_start, self.batch_end = keep, 0, end, end

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

    def _compute_span(self, a: int, z: int) -> None:
        """Ticks a..z-1 in as few ``tick`` calls as the node's span and the protocol's phase ends allow."""
        node = self.node
        k = a
        while k < z:
            start = self.deadline(k) - self.period
            node.mark_phases(start)
            nxt = min(z, k + self.span)
            if len(node.phase_marks) < len(node.phase_ends):  # stop where the next phase mark is taken
                mark_at = node.t0 + node.phase_ends[len(node.phase_marks)]
                kp = math.ceil((mark_at - self.t0) / self.period - 1e-9)
                if k < kp < nxt:
                    nxt = kp
            c0 = time.perf_counter()
            node.tick(start, self.deadline(nxt - 1))
            self.compute.record((time.perf_counter() - c0) / (nxt - k))  # per tick, once per call
            self.computed += nxt - k
            k = nxt

    def _items(self, first: int, end: int) -> list[tuple[float, int, str, np.ndarray]]:
        """The outbox's events, computed for ticks first..end-1, as (release, tick, port, events); emptied.
        Outputs already published before a rollback are left out."""
        outbox = self.node.outbox
        items = []
        for port, events, dues in outbox.pending_dues():
            if not self.timed:
                items.append((self.deadline(first), first, port, events.copy(), self.deadline(first)))
                continue
            t = events["t"].astype(np.float64)
            final = t + self.step
            if dues:
                idx = np.fromiter(dues, np.int64, len(dues))
                t[idx] = final[idx] = np.fromiter(dues.values(), np.float64, len(dues))
            # The tick whose span [start, deadline) holds the time, and its deadline. A time on a boundary belongs
            # to the later tick: a spike stamped at a step's start (Brian2's convention) was computed in that
            # step, and the earlier tick's deadline would release it before its step ended (it was, and a
            # rollback then recomputed and sent it again); stamped at a step's end (NEST's), it only waits
            # one step longer.
            tick = np.clip(np.floor((t - self.t0) / self.period + 1e-6).astype(np.int64), first, end - 1)
            release = np.minimum(final, self.t0 + (tick + 1) * self.period)
            keep = release > self.suppress_until
            if len(events) == 1:
                if keep[0]:
                    items.append((float(release[0]), int(tick[0]), port, events.copy(), float(release[0])))
                continue
            for r in np.unique(release[keep]):
                sel = keep & (release == r)
                items.append((float(r), int(tick[sel][0]), port, events[sel].copy(), float(r)))
        outbox.clear()
        return items

    def _late(self, release: float, now: float) -> None:
        late = now - release
        self.lag.record(late)
        if late > self.period:
            self.overruns += 1

    def _publish_due(self, now: float) -> None:
        batch = self.batch
        i = self.next_item
        while i < len(batch) and batch[i][0] <= now:
            release, _, port, events, _ = batch[i]
            self._late(release, now)
            self.publish(port, events)
            i += 1
        self.next_item = i
        if now > self.published_until:
            self.published_until = now
        if self.settled:
            return
        if now >= self.deadline(self.batch_end - 1):
            if not batch:
                self._late(self.deadline(self.batch_end - 1), now)
            self.reach = min(self.horizon, self.reach * 2)
            self.ticks += self.batch_end - self.batch_start
            self.committed = self.batch_end
            self.batch = None
            self.batch_inputs = []

    def advance(self, now: float) -> float:
        """Run / publish whatever is due at ``now``; returns the wall time of the next wake."""
        if self.rollback_to is not None:
            self._rollback(self.rollback_to[0], self.rollback_to[1])
        if self.settled:
            return self.finish(now)
        if self.batch is not None:
            self._publish_due(now)
            if self.batch is not None:
                return self._next_wake()
        behind = int((now - self.deadline(self.committed)) / self.period)
        if behind > MAX_CATCHUP_TICKS:
            self.skipped += behind - MAX_CATCHUP_TICKS
            self.committed += behind - MAX_CATCHUP_TICKS
        while self.deadline(self.committed) <= now:  # paced, or catching up
            k = self.committed
            self._deliver(k, record=False)
            self._compute(k)
            for _, _, port, events, _ in self._items(k, k + 1):
                self.publish(port, events)
            self._late(self.deadline(k), now)
            self.committed += 1
            self.ticks += 1
        if self.published_until < now:
            self.published_until = now
        if not self.horizon:
            return self.deadline(self.committed)
        self.snap = (self.node.snapshot(), len(self.node.phase_marks))
        b = self.batch_start = self.committed
        self.batch_end = b + self.reach
        c0 = time.perf_counter()
        if self.span > 1:
            self._deliver(b, record=True)  # what has arrived belongs to the first tick
            self._compute_span(b, self.batch_end)
            items = self._items(b, self.batch_end)
        else:
            items = []
            for k in range(b, self.batch_end):
                self._deliver(k, record=True)
                self._compute(k)
                items += self._items(k, k + 1)
        self.batch_compute.record(time.perf_counter() - c0)
        items.sort(key=lambda it: it[0])
        self.batch = self._coalesce(items) if self.timed else items
        self.next_item = 0
        return self._next_wake()

    def _coalesce(self, items: list) -> list:
        """Outputs of one tick that fall final within RELEASE_GAP of each other leave together, at the latest
        one's release: a population spiking in every model step wakes its node a few times a tick, not once
        a step. Sparse outputs (the usual case) are untouched."""
        gap = self.period * RELEASE_GAP
        out: list = []
        group_first = -math.inf
        group_tick = None
        start = 0
        for it in items:
            if it[1] != group_tick or it[0] - group_first >= gap:
                self._release_together(out, start)
                start, group_first, group_tick = len(out), it[0], it[1]
            out.append(it)
        self._release_together(out, start)
        return out

    @staticmethod
    def _release_together(out: list, start: int) -> None:
        if len(out) - start > 1:
            last = out[-1][0]
            out[start:] = [(last, *it[1:]) for it in out[start:]]

    def settle(self, now: float) -> None:
        """Stop producing: the tick under way is finished on time (``finish`` publishes its outputs as
        they are due), and ticks computed ahead beyond it are undone, so the model's counts are exactly
        what leaves the node (called when the session drains)."""
        if self.rollback_to is not None:
            self._rollback(self.rollback_to[0], self.rollback_to[1])
        if self.batch is not None:
            self._publish_due(now)
        if self.batch is not None:
            current = max(self.batch_start, int((now - self.t0) / self.period))
            self._rollback(current + 1, now, keep_through=current)
        self.settled = True

    def finish(self, now: float) -> float:
        """After ``settle``: publish what is due of the finished tick; the next wake (inf: nothing left)."""
        if self.batch is None:
            return math.inf
        self._publish_due(now)
        if self.next_item >= len(self.batch):
            self.batch = None
            return math.inf
        return self.batch[self.next_item][0]

    def _next_wake(self) -> float:
        if self.next_item < len(self.batch):
            return min(self.batch[self.next_item][0], self.deadline(self.batch_end - 1))
        return self.deadline(self.batch_end - 1)

    def summary(self) -> dict:
        return {"ticks": self.ticks, "computed": self.computed, "rollbacks": self.rollbacks,
                "overruns": self.overruns, "skipped_ticks": self.skipped, "lookahead_ticks": self.horizon, "reach": self.reach,
                "span_ticks": self.span, "timed_outputs": self.timed,
                "tick_compute_s": self.compute.summary(), "batch_compute_s": self.batch_compute.summary(),
                "lag_s": self.lag.summary()}
