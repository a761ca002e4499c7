"""The blocking-SDK pattern (nodes/sdk_thread.py): a thread that wakes the loop through a file descriptor.

The loop here waits exactly as the runtime's does: ``select()`` on the node's ``fds()``, then
``on_readable``. A fake amplifier whose ``read_block`` blocks (as a vendor SDK's does) feeds a biological
node through a backend, and the tests show the loop wakes within a few milliseconds of each block, sleeps
(no CPU) while the SDK has nothing, stays budgeted under a flood, and hears an SDK that dies.
"""

from __future__ import annotations

import queue
import select
import statistics
import threading
import time

import numpy as np
import pytest

from spikewire.core.settings import parse
from spikewire.nodes import backends
from spikewire.nodes.backends import Backend
from spikewire.nodes.biological import BiologicalNode, BiologicalSettings
from spikewire.nodes.sdk_thread import SdkError, SdkThread
from spikewire.streams.wire import EVENT_DTYPE, BioEvent, Kind


class FakeAmplifier:
    """A vendor SDK: ``read_block`` blocks until a block is ready or its timeout passes (then None)."""

    def __init__(self):
        self.blocks: queue.Queue = queue.Queue()
        self.stimulated: list[tuple[int, float, int]] = []

    def read_block(self, timeout: float = 0.02):
        try:
            return self.blocks.get(timeout=timeout)
        except queue.Empty:
            return None

    def stimulate(self, channel: int, amplitude: float) -> None:
        self.stimulated.append((channel, amplitude, threading.get_ident()))


class AmplifierBackend(Backend):
    """A biological backend on a blocking SDK: the shape an Intan backend takes."""

    name = "fake-amplifier"
    board: FakeAmplifier

    @classmethod
    def stim_limit(cls, settings) -> float:
        return 1.0

    def warm_up(self) -> None:
        self.sdk = SdkThread("amplifier", read=self.board.read_block)
        self.sdk.start()

    def fds(self) -> list[int]:
        return [self.sdk.fd]

    def on_readable(self, fd: int, now: float, emit) -> None:
        for t, neuron in self.sdk.take():  # a block: here, one detected spike (its sample time, its neuron)
            emit(t, neuron, BioEvent.SPONTANEOUS_AP)

    def stimulate(self, events: np.ndarray, now: float) -> None:
        for ident, amp in zip(events["id"].tolist(), events["value"].tolist()):
            self.sdk.submit(self.board.stimulate, ident, amp)  # never blocks the loop
            self.stimuli[ident] += 1

    def tick(self, t_start: float, t_end: float, emit) -> None:
        pass  # everything arrives through the fd

    def close(self) -> None:
        self.sdk.close()


@pytest.fixture
def node(monkeypatch):
    monkeypatch.setitem(backends._BACKENDS, AmplifierBackend.name, AmplifierBackend)
    monkeypatch.setattr(AmplifierBackend, "board", FakeAmplifier(), raising=False)
    n = BiologicalNode("padova", parse(BiologicalSettings, {"kind": "biological", "backend": "fake-amplifier",
                                                            "size": 2}, "nodes.padova"))
    n.warm_up()
    yield n
    n.close()


def serve(node, until: float) -> tuple[int, list]:
    """The runtime's wait, for a node's own fds: select until ``until``; returns (wakes, events emitted)."""
    fds, wakes, out = node.fds(), 0, []
    while (left := until - time.perf_counter()) > 0:
        ready = select.select(fds, [], [], left)[0]
        for fd in ready:
            wakes += 1
            node.on_readable(fd, time.perf_counter())
            for _, events in node.outbox.pending():
                out += [(float(e["t"]), time.perf_counter()) for e in events]
            node.outbox.clear()
    return wakes, out


def test_the_loop_wakes_promptly_for_each_block(node):
    board = AmplifierBackend.board
    times = []

    def produce():
        for k in range(40):
            time.sleep(0.005)
            t = time.perf_counter()
            times.append(t)
            board.blocks.put((t, k % 2))

    threading.Thread(target=produce, daemon=True).start()
    wakes, out = serve(node, time.perf_counter() + 0.6)
    assert len(out) == 40 and wakes <= 40
    latency = [seen - t for t, seen in out]
    # ~0.3 ms on a 2-core VM (the fake SDK's own queue wake, then the eventfd's): wakes, not polls
    assert statistics.median(latency) < 0.005, sorted(latency)
    assert max(latency) < 0.05, sorted(latency)
    assert node.figures(1.0).populations["padova"].spikes == 40


def test_an_idle_sdk_costs_the_loop_nothing(node):
    """While the SDK has nothing, the loop sleeps in select: no wake, and (all threads together, the SDK's
    20 ms read timeouts included) well under 5 % of a core."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    wakes, out = serve(node, time.perf_counter() + 0.5)
    cpu = time.process_time() - cpu0
    assert wakes == 0 and out == []
    assert cpu < 0.05 * (time.perf_counter() - wall0), cpu


def test_stimuli_go_to_the_sdk_thread_without_blocking_the_loop(node):
    board = AmplifierBackend.board
    events = np.array([(0.0, 1, 0.5), (0.0, 0, 0.25)], EVENT_DTYPE)
    t0 = time.perf_counter()
    node.on_events("stim", Kind.STIMULUS, events, t0)
    assert time.perf_counter() - t0 < 0.005  # queued, not called: the SDK is inside read_block
    deadline = time.monotonic() + 2.0
    while len(board.stimulated) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [(c, a) for c, a, _ in board.stimulated] == [(1, 0.5), (0, 0.25)]
    assert {tid for _, _, tid in board.stimulated} == {node.backend.sdk._thread.ident} != {threading.get_ident()}


def test_a_flood_is_taken_within_the_budget_and_the_fd_stays_armed():
    items = queue.Queue()
    for k in range(1000):
        items.put(k)
    sdk = SdkThread("flood", read=lambda: items.get(timeout=0.02) if not items.empty() else time.sleep(0.01),
                    budget=100)
    sdk.start()
    try:
        got = []
        deadline = time.monotonic() + 5.0
        while len(got) < 1000 and time.monotonic() < deadline:
            if select.select([sdk.fd], [], [], 0.5)[0]:
                batch = sdk.take()
                assert len(batch) <= 100
                got += batch
        assert got == list(range(1000))
        assert select.select([sdk.fd], [], [], 0.05)[0] == []  # all taken: the fd is quiet again
    finally:
        assert sdk.close()


def test_an_sdk_that_dies_is_raised_in_the_loop():
    calls = []

    def read():
        calls.append(1)
        if len(calls) == 3:
            raise OSError("USB device disconnected")
        time.sleep(0.01)
        return None

    sdk = SdkThread("dying", read=read)
    sdk.start()
    assert select.select([sdk.fd], [], [], 2.0)[0] == [sdk.fd]
    with pytest.raises(SdkError, match="dying: the SDK thread stopped: OSError: USB device disconnected") as e:
        sdk.take()
    sdk._thread.join(1.0)  # it ends right after the wake
    assert isinstance(e.value.__cause__, OSError) and not sdk.alive
    assert sdk.take() == []  # raised once
    assert sdk.close()
