"""The fault schedule: the faults of each direction, and when each message of one direction leaves.

"down" is publisher -> subscriber, "up" is subscriber -> publisher (subscriptions, clock-sync pings).
Every decision uses seeded ``random.Random`` generators (one per connection, direction and purpose), so a
given packet stream meets the same losses on every run.

Ordering rules (what "scheduled time" means):

* Commands, greeting bytes and up-going ZMTP 3.0 subscription messages are *barriers*: they get the
  fixed delay without jitter, leave no earlier than everything received before them, and nothing
  received after them leaves before them. Commands therefore keep their order among themselves and
  relative to the messages around them (READY always precedes the first message, a CANCEL never
  overtakes its SUBSCRIBE). Messages between two barriers leave in order of scheduled time.
* A message's scheduled time is arrival + delay + jitter draw. With ``jitter == 0`` it is also clamped to
  no earlier than the latest time already scheduled, so a jitter-free link is FIFO, including right
  after the faults were lowered or switched off: nothing sent after the switch overtakes what was sent
  before it.
* A swapped (held) packet leaves right after the next message. If no message comes within
  ``SWAP_HOLD_MAX`` seconds, or a barrier is due first, it leaves on its own (``ALONE``, not a swap).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

DOWN = "down"
UP = "up"

SWAP_HOLD_MAX = 0.5
"""Seconds a packet held back for a swap waits for a successor before it leaves alone."""

# what a queued item is
DATA = 0  # spikewire data packet (a kind that consumes a sequence number)
CONTROL = 1  # any other well-formed spikewire packet
OTHER = 2  # any other message
COMMAND = 3  # barrier: a ZMTP command frame
BYTES = 4  # barrier: greeting or unparsed stream bytes
SUBSCRIPTION = 5  # barrier: an up-going ZMTP 3.0 subscription message

# how an item left (the second argument of ``emit``)
IN_ORDER = 0
SWAPPED = 1  # held back, then sent right after its successor
ALONE = 2  # held back for a swap that never came


@dataclass(frozen=True)
class Faults:
    """The faults of one direction. ``loss`` and ``reorder`` only ever act on down-going data packets."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    reorder: float = 0.0

    def __post_init__(self):
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        for name in ("loss", "reorder"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def updated_faults(current: dict[str, Faults], delay: float | None, jitter: float | None, loss: float | None,
                   reorder: float | None, up_delay: float | None, up_jitter: float | None) -> dict[str, Faults]:
    """``current`` with the values given (None keeps one): ``delay`` and ``jitter`` set both directions,
    then ``up_delay`` / ``up_jitter`` override the up direction, which never loses or reorders."""
    down, up = current[DOWN], current[UP]
    new_down = Faults(delay=down.delay if delay is None else delay,
                      jitter=down.jitter if jitter is None else jitter,
                      loss=down.loss if loss is None else loss,
                      reorder=down.reorder if reorder is None else reorder)
    if up_delay is None:
        up_delay = up.delay if delay is None else delay
    if up_jitter is None:
        up_jitter = up.jitter if jitter is None else jitter
    return {DOWN: new_down, UP: Faults(delay=up_delay, jitter=up_jitter)}


def faults_dict(faults: dict[str, Faults]) -> dict:
    """{"down": {delay, jitter, loss, reorder}, "up": {delay, jitter}}."""
    up = asdict(faults[UP])
    del up["loss"], up["reorder"]
    return {DOWN: asdict(faults[DOWN]), UP: up}


class Item:
    """A message, command or run of bytes waiting to leave."""

    __slots__ = ("arrived", "data", "due", "seq", "source", "what")

    def __init__(self, data: bytes, arrived: float, what: int, source: int | None = None, seq: int | None = None):
        self.due = arrived
        self.data = data
        self.arrived = arrived
        self.what = what
        self.source = source
        self.seq = seq


class Schedule:
    """The queue of one direction of one connection, and its random draws (seeded from ``seed``).

    Items live in epochs: a heap of messages ordered by due time, closed by a barrier. Only the first
    epoch releases anything, so nothing crosses a barrier."""

    def __init__(self, seed: str):
        self.rng_loss = random.Random(seed + "/loss")
        self.rng_jitter = random.Random(seed + "/jitter")
        self.rng_reorder = random.Random(seed + "/reorder")
        self.epochs: deque = deque()  # [heap of (due, order, item), barrier item or None]
        self.order = itertools.count()
        self.last_due = -math.inf
        self.held: Item | None = None
        self.held_deadline = 0.0

    def lost(self, faults: Faults) -> bool:
        """Whether the data packet at hand is dropped (one draw when ``loss`` is on)."""
        return faults.loss > 0 and self.rng_loss.random() < faults.loss

    def add(self, item: Item, faults: Faults) -> float:
        """Queue a message at arrival + delay + jitter (FIFO when jitter is off); return that delay."""
        now = item.arrived
        due = now + faults.delay
        if faults.jitter > 0:
            due += self.rng_jitter.uniform(0.0, faults.jitter)
        elif due < self.last_due:
            due = self.last_due
        self.last_due = max(self.last_due, due)
        item.due = due
        epochs = self.epochs
        if not epochs or epochs[-1][1] is not None:
            epochs.append([[], None])
        heapq.heappush(epochs[-1][0], (due, next(self.order), item))
        return due - now

    def add_barrier(self, item: Item, delay: float) -> None:
        """Queue a barrier at arrival + delay, and no earlier than anything queued before it."""
        due = max(item.arrived + delay, self.last_due)
        self.last_due = due
        item.due = due
        epochs = self.epochs
        if epochs and epochs[-1][1] is None:
            epochs[-1][1] = item
        else:
            epochs.append([[], item])

    def release(self, now: float, reorder: float, input_done: bool, emit: Callable[[Item, int], None]) -> float:
        """Hand everything due at ``now`` to ``emit(item, how)`` in leaving order, holding a data packet back
        for a swap with probability ``reorder``. ``input_done``: nothing more will be added, so a held
        packet leaves once the rest has. Returns when the next item is due (inf: nothing waits)."""
        wake = math.inf
        epochs = self.epochs
        while epochs:
            heap, barrier = epochs[0]
            if heap:
                if heap[0][0] > now:
                    wake = heap[0][0]
                    break
                self._leave(heapq.heappop(heap)[2], now, reorder, emit)
                continue
            if barrier is None:
                break  # the open epoch, empty
            if barrier.due > now:
                wake = barrier.due
                break
            if self.held is not None:
                self._release_held(ALONE, emit)
            epochs.popleft()
            emit(barrier, IN_ORDER)
        if self.held is not None:
            if now >= self.held_deadline or (input_done and self.drained):
                self._release_held(ALONE, emit)
            else:
                wake = min(wake, self.held_deadline)
        return wake

    @property
    def drained(self) -> bool:
        """Nothing is queued (a held packet aside)."""
        epochs = self.epochs
        return not epochs or (len(epochs) == 1 and not epochs[0][0] and epochs[0][1] is None)

    def _leave(self, item: Item, now: float, reorder: float, emit) -> None:
        if self.held is not None:
            emit(item, IN_ORDER)
            self._release_held(SWAPPED, emit)
            return
        if item.what == DATA and reorder > 0 and self.rng_reorder.random() < reorder:
            self.held = item
            self.held_deadline = now + SWAP_HOLD_MAX
            return
        emit(item, IN_ORDER)

    def _release_held(self, how: int, emit) -> None:
        item, self.held = self.held, None
        emit(item, how)

    def pending(self) -> Iterator[Item]:
        """Everything still queued or held."""
        for heap, barrier in self.epochs:
            for _, _, item in heap:
                yield item
            if barrier is not None:
                yield barrier
        if self.held is not None:
            yield self.held

    def clear(self) -> None:
        self.epochs.clear()
        self.held = None
