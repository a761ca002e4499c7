"""The dashboard's ears: a thread subscribed to every drawn output port of a running network.

It is one more subscriber on each port (an XSUB announcing itself as ``dashboard``, which no node waits
for), reads with a 100 ms poll timeout and a per-socket budget, decodes with ``streams.wire`` and keeps
the data events (spikes, stimuli, typed biological events) in a ``Feed`` for the pages. A packet that
does not decode is counted by reason and dropped; loop probes, heartbeats and clock packets are skipped.

The catch: a port's publisher does not drop for a slow local subscriber (``XPUB_NODROP``): a full pipe
to us would fail its sends to everyone. So this thread only copies arrays and never blocks on the pages;
its queue (100,000 packets) is drained every poll.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import zmq

from spikewire.monitor.dashboard.feed import Feed
from spikewire.streams.wire import Kind, WireError, decode
from spikewire.streams.zmq_link import Subscriber

DRAWN_KINDS = frozenset((Kind.SPIKE, Kind.STIMULUS, Kind.BIO))
BUDGET = 512
"""Messages read from one socket per poll before the others get their turn."""
PAUSE = 0.02
"""Seconds between polls: packets wait in our queue and are read in batches (pages see 10 frames a second),
so a thousand packets a second cost a few dozen wakes, not a thousand."""
KEEP_S = 12.0
"""Seconds of events kept for pages (the raster shows 10)."""


class EventTap:
    def __init__(self, endpoints: dict[str, str], name: str = "dashboard"):
        """``endpoints``: port key -> ZeroMQ endpoint of that output port."""
        self.ctx = zmq.Context()
        self.events = Feed(max_items=200_000, max_age=KEEP_S)
        """Items: (port key, events array (t, id, value))."""
        self.counts: Counter[str] = Counter()
        """Data events received per port key."""
        self.typed: dict[str, Counter] = {}
        """Per port key of typed events: count per value (streams.wire.BioEvent)."""
        self.malformed: Counter[str] = Counter()
        self.packets = 0
        self._subs: dict[zmq.Socket, tuple[str, Subscriber]] = {}
        for key, endpoint in endpoints.items():
            sub = Subscriber(self.ctx, name=name)
            sub.connect(endpoint)
            self._subs[sub.socket] = (key, sub)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-tap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in self._subs:
            poller.register(sock, zmq.POLLIN)
        while not self._stop.wait(PAUSE):
            for sock, _ in poller.poll(100):
                key, sub = self._subs[sock]
                batch, bio = [], False
                for _ in range(BUDGET):
                    msg = sub.recv_nowait()
                    if msg is None:
                        break
                    events, kind = self._take(msg)
                    if events is not None:
                        batch.append(events)
                        bio = bio or kind == Kind.BIO
                if batch:  # one item per socket per poll: the pages' cost does not grow with packets
                    self._keep(key, np.concatenate(batch) if len(batch) > 1 else batch[0], bio)

    def _take(self, msg: bytes):
        """(data events, kind) of one message, or (None, None) for anything not drawn."""
        try:
            packet = decode(msg)
        except WireError as e:
            self.malformed[e.reason] += 1
            return None, None
        self.packets += 1
        if packet.kind not in DRAWN_KINDS or not len(packet.events):
            return None, None
        return packet.events, packet.kind

    def _keep(self, key: str, events: np.ndarray, bio: bool) -> None:
        self.counts[key] += len(events)
        if bio:
            typed = self.typed.setdefault(key, Counter())
            values, n = np.unique(events["value"].astype(np.int64), return_counts=True)
            for v, c in zip(values.tolist(), n.tolist()):
                typed[v] += c
        self.events.append((key, events))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        for _, sub in self._subs.values():
            sub.close()
        self.ctx.term()
