"""A blocking vendor SDK in a thread of its own, waking the node's loop through a file descriptor.

The runtime's loop waits in ``select()`` on sockets and on the fds a node lists in ``Node.fds()``; it must
never block on anything else. A vendor SDK (an amplifier's ``read_block()``, an instrument's ``pulse()``)
usually blocks, and is often safe to call from one thread only. So every call to it happens on one
``SdkThread``:

    loop thread                                  SDK thread
    -----------                                  ----------
    Node.fds() -> [sdk.fd]                       repeat: run the calls ``submit`` queued, then
    select() wakes on sdk.fd  <--- eventfd ---       item = read()   (blocks in the SDK, bounded by
    Node.on_readable(fd): sdk.take() -> items        its own timeout); if item is not None: queue it
                                                     and write the eventfd
    sdk.submit(fn, *args)  ---- queue ---->      (calls run between reads, in submission order)

Nothing spins: the loop sleeps in select until the thread writes the eventfd (a Linux ``eventfd``; a pipe
elsewhere), and the thread sleeps in the SDK. ``take`` clears the fd before it drains the queue, so an
item queued meanwhile re-arms it and is never stranded; it takes at most ``budget`` items per wake and
re-arms the fd when more are left, so a flood cannot starve the loop's sockets (the runtime treats a
node's fds as level-triggered). An exception in the SDK thread ends the thread and is raised, once, by the
next ``take`` in the loop: a dead SDK is loud, never silent.

The catch: a queued call waits for the read in progress to return, so ``read`` should return within a
few milliseconds (most SDKs take a timeout; return None when it expires). Usage (docs/elements.md)::

    self.sdk = SdkThread("intan", read=board.read_block)      # warm_up: open the board, then
    self.sdk.start()
    def fds(self): return [self.sdk.fd]
    def on_readable(self, fd, now):
        for block in self.sdk.take(): ...                      # detect, emit
    self.sdk.submit(board.stimulate, channel, amplitude)       # from on_events: never blocks
    self.sdk.close()                                           # close
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Any, Callable

log = logging.getLogger("spikewire.sdk_thread")

BUDGET = 256
"""Items ``take`` returns per wake at most (the rest re-arm the fd)."""


class SdkError(RuntimeError):
    """The SDK thread stopped on an exception (its ``__cause__``)."""


class SdkThread:
    """Runs ``read`` (and ``submit``-ted calls) on one daemon thread; ``fd`` is readable while items wait."""

    def __init__(self, name: str, read: Callable[[], Any], budget: int = BUDGET, max_items: int = 100_000):
        if budget < 1 or max_items < 1:
            raise ValueError(f"budget and max_items must be >= 1, got {budget} and {max_items}")
        self.name = name
        self._read = read
        self.budget = budget
        self.max_items = max_items
        self._items: deque = deque()
        self._calls: deque[tuple[Callable, tuple]] = deque()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.dropped = 0
        """Items the thread produced while ``max_items`` waited untaken (the loop far behind): dropped, counted."""
        if hasattr(os, "eventfd"):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._wfd = self.fd
        else:  # not Linux: a pipe does the same, one byte per wake
            self.fd, self._wfd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._wfd, False)
        self._thread = threading.Thread(target=self._run, name=f"sdk-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- the SDK thread ----------------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            if self._wfd == self.fd:
                os.eventfd_write(self.fd, 1)
            else:
                os.write(self._wfd, b"\0")
        except BlockingIOError:
            pass  # the fd is readable already (pipe full / counter saturated): the loop will wake

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                while self._calls:
                    fn, args = self._calls.popleft()
                    fn(*args)
                item = self._read()
                if item is None:
                    continue
                if len(self._items) >= self.max_items:
                    self.dropped += 1
                    continue
                self._items.append(item)
                self._wake()
        except Exception as e:  # handed to the loop thread, raised there by take
            self._error = e
            self._wake()

    # --- the loop thread ---------------------------------------------------------------------------
    def submit(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the SDK thread, after the read in progress; returns at once."""
        self._calls.append((fn, args))

    def take(self) -> list:
        """The items waiting, oldest first, at most ``budget`` (call from ``on_readable``; never blocks).
        Raises SdkError if the thread died."""
        try:
            if self._wfd == self.fd:
                os.eventfd_read(self.fd)
            else:
                os.read(self.fd, 65536)
        except BlockingIOError:
            pass  # nothing signalled (a call without a wake): the queue may still hold items
        items = self._items
        out = [items.popleft() for _ in range(min(len(items), self.budget))]
        if items:
            self._wake()  # more than the budget: the loop comes back after serving its sockets
        if self._error is not None:
            error, self._error = self._error, None
            raise SdkError(f"{self.name}: the SDK thread stopped: {type(error).__name__}: {error}") from error
        return out

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the thread (after the read in progress returns) and close the fd; True if it ended within
        ``timeout`` (a daemon thread stuck in the SDK cannot keep the process alive)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        ended = not self._thread.is_alive()
        if not ended:
            log.warning("%s: the SDK thread did not return within %g s; leaving it (daemon)", self.name, timeout)
        else:
            os.close(self.fd)
            if self._wfd != self.fd:
                os.close(self._wfd)
        return ended
