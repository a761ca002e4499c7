"""A numbered, bounded log of what the dashboard has seen, read by each page from its own cursor.

Every page (WebSocket) keeps the number of the last item it was sent and asks for what came after, so a
slow page costs nothing to a fast one and a page that reconnects gets what is still kept. The catch: an
item older than the log keeps (``max_age`` seconds, ``max_items``) is gone for a page that was away.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque


class Feed:
    def __init__(self, max_items: int, max_age: float | None = None):
        self._items: deque[tuple[int, float, object]] = deque(maxlen=max_items)
        self._max_age = max_age
        self._seq = 0
        self._lock = threading.Lock()

    def append(self, item: object) -> None:
        now = time.monotonic()
        with self._lock:
            self._seq += 1
            self._items.append((self._seq, now, item))
            if self._max_age is not None:
                while self._items and now - self._items[0][1] > self._max_age:
                    self._items.popleft()

    @property
    def seq(self) -> int:
        return self._seq

    def since(self, cursor: int) -> tuple[int, list]:
        """(newest number, the items numbered after ``cursor`` still kept)."""
        with self._lock:
            if not self._items or self._items[-1][0] <= cursor:
                return self._seq, []
            skip = max(0, cursor - self._items[0][0] + 1)  # numbers are consecutive: no scan of what was sent
            return self._seq, [item for _, _, item in itertools.islice(self._items, skip, None)]
