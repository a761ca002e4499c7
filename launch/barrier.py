"""The start barrier of a multi-site run: the sites' supervisors agree one start, one length, one session.

Each site run on its own (``spikewire run NETWORK --site NAME``) opens a session channel: an XPUB on its
site's port after its inter-site data ports (``Network.session_endpoint``), and an XSUB to every other
site's, all CURVE-protected when the network requires it, like the data links. Over it each supervisor

* estimates every other site's clock offset, NTP-style, with the same pings and pongs as a data link;
* once its own nodes are ready, announces a *proposal*: a start time on its own clock (now + margin) and
  the run's length; it repeats it every ANNOUNCE_EVERY s, so a site that comes later still hears it.

When a site holds every other site's proposal and knows their clock offsets, it decides, and so does every
other site from the same proposals: the start is the latest proposal (put on its own clock), the length
the shortest, and the session id a hash of all proposals exactly as sent, so the same everywhere. The
protocol's phase windows are then the same wall-clock windows at every site (within the clock estimate's
error, ~0.1 ms on one machine), and every site stops at the same moment.

Its catches: a proposal must reach every site before the start it proposes, so the margin covers the
slowest path (START_MARGIN_SITES). A site that hears another one has already *started* (it was restarted,
or came late) does not wait: it joins that session at once and says so. A site that hears nothing from a
missing site within ``start_wait`` starts alone, loudly, with a session of its own.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field

import numpy as np
import zmq

from spikewire.streams.clock import local_clock
from spikewire.streams.clocksync import ClockEstimator
from spikewire.streams.security import Refusals, ZapHandler
from spikewire.streams.wire import EVENT_DTYPE, Kind, WireError, decode
from spikewire.streams.zmq_link import Publisher, Subscriber

log = logging.getLogger("spikewire.barrier")

SESSION_SOURCE = 0xFFFF0000
"""Source id of site i's session channel: SESSION_SOURCE + i (i: its place among Network.start_sites)."""
START_MARGIN_SITES = 1.0
"""A site proposes to start this long after it is ready: the proposal must reach every other site first."""
MIN_SAMPLES = 5
"""Clock exchanges with a site before its proposal is put on our clock (the lowest-delay one counts)."""
ANNOUNCE_EVERY = 0.1
PING_EVERY = 0.1
STARTED = 1


@dataclass
class Peer:
    site: str
    sub: Subscriber
    clock: ClockEstimator = field(default_factory=ClockEstimator)
    pings: dict[int, float] = field(default_factory=dict)
    proposal: tuple[float, float] | None = None  # (start on its clock, duration or -1)
    started: tuple[float, float, int, int] | None = None  # (its start on its clock, duration, session id, sites)
    heard: bool = False


@dataclass(frozen=True)
class Decision:
    """What this site starts with. ``mode``: 'agreed' (every site), 'joined' (the others had already
    started: this site joins late), or 'alone' (some site never answered)."""

    t0: float  # on this site's clock
    duration: float | None
    session_id: str
    mode: str
    offsets: dict[str, float]  # other site -> its clock minus ours
    missing: tuple[str, ...] = ()  # sites not in this session
    sites: int = 0  # bit i: site i (of Network.start_sites) is in this session


def session_id(proposals: dict[str, tuple[float, float]]) -> int:
    """A 32-bit id from every site's proposal exactly as sent: equal at every site that holds them all."""
    text = "|".join(f"{site}:{t!r}:{d!r}" for site, (t, d) in sorted(proposals.items()))
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class SiteBarrier:
    def __init__(self, ctx: zmq.Context, network, site: str, curve=None):
        sites = network.start_sites
        self.site = site
        self.sites = sites
        self.index = sites.index(site)
        self.everyone = (1 << len(sites)) - 1
        self.refusals = Refusals(f"{site} session channel")
        self.zap = ZapHandler(ctx, curve.allowed, self.refusals) if curve is not None else None
        try:
            self.pub = Publisher(ctx, Kind.SESSION, SESSION_SOURCE + self.index,
                                 network.session_endpoint(site, bind=True), 1000, curve, remote=True)
        except OSError as e:
            if self.zap is not None:
                self.zap.close()
            raise OSError(f"site {site}'s session channel: {e} (another program, or this site run twice?)") from None
        self.peers: dict[int, Peer] = {}
        for i, other in enumerate(sites):
            if other == site:
                continue
            sub = Subscriber(ctx, 1000, curve, other, remote=True, name=f"{site}:supervisor")
            sub.connect(network.session_endpoint(other, bind=False))
            self.peers[SESSION_SOURCE + i] = Peer(other, sub)
        self.proposal: tuple[float, float] | None = None
        self.started: tuple[float, float, int, int] | None = None
        self._next_announce = 0.0
        self._next_ping = 0.0
        self._nonce = random.getrandbits(32)
        self._ev = np.zeros(2, dtype=EVENT_DTYPE)

    # --- the channel ---------------------------------------------------------------------------
    def step(self, now: float) -> None:
        """Serve the channel once: admit peers, answer and send pings, read announcements, announce."""
        if self.zap is not None:
            self.zap.poll()
        self.pub.poll_subscriptions()
        for source, peer in self.peers.items():
            self._read(source, peer)
        if now >= self._next_ping:
            self._next_ping = now + PING_EVERY
            for peer in self.peers.values():
                if len(peer.pings) > 8:
                    peer.pings.clear()
                self._nonce = (self._nonce + 1) & 0xFFFFFFFF
                peer.pings[self._nonce] = peer.sub.ping(self._nonce)
        if now >= self._next_announce and (self.started or self.proposal):
            self._next_announce = now + ANNOUNCE_EVERY
            ev = self._ev
            if self.started is not None:
                t, d, sid, mask = self.started
                ev[0] = (t, STARTED, d)
                ev[1] = (0.0, sid, float(mask))  # which sites are in the session (exact in f4 up to 24 sites)
            else:
                ev[0] = (self.proposal[0], 0, self.proposal[1])
                ev[1] = (0.0, 0, 0.0)
            self.pub.publish(ev)

    def _read(self, source: int, peer: Peer) -> None:
        sub = peer.sub
        for _ in range(256):
            buf = sub.recv_nowait()
            if buf is None:
                return
            t4 = local_clock()
            try:
                packet = decode(buf)
            except WireError as e:
                log.warning("%s: dropped a malformed packet from %s's session channel (%s)", self.site, peer.site, e)
                continue
            if packet.source != source:
                continue
            ev = packet.events
            if packet.kind == Kind.CLOCK and len(ev) == 2:
                t1 = peer.pings.pop(int(ev[0]["id"]), None)
                if t1 is not None and t1 == float(ev[0]["t"]):
                    peer.clock.add(t1, float(ev[1]["t"]), packet.send_time, t4)
            elif packet.kind == Kind.SESSION and len(ev) == 2:
                peer.heard = True
                t, flags, d = float(ev[0]["t"]), int(ev[0]["id"]), float(ev[0]["value"])
                if flags & STARTED:
                    peer.started = (t, d, int(ev[1]["id"]), int(ev[1]["value"]))
                else:
                    peer.proposal = (t, d)

    # --- deciding ------------------------------------------------------------------------------
    def propose(self, now: float, duration: float | None) -> None:
        d = float(np.float32(-1.0 if duration is None else duration))  # exactly what the wire carries
        self.proposal = (now + START_MARGIN_SITES, d)
        self._next_announce = 0.0

    def decide(self, now: float) -> Decision | None:
        """The start, once every site's proposal and clock are known (or another site already started)."""
        offsets = {p.site: p.clock.offset for p in self.peers.values() if p.clock.synced}
        me = 1 << self.index
        for p in self.peers.values():
            if p.started is not None and p.clock.synced:
                t, d, sid, mask = p.started
                t0 = t - p.clock.offset
                mask |= me
                missing = self._missing(mask)
                if t0 > now + 0.05:
                    # Another site decided first: from everyone's proposals (the same start, agreed), or after
                    # giving up on some (this site starts with it, but the session lacks those: joined).
                    return Decision(t0, None if d < 0 else d, f"{sid:08x}", "agreed" if not missing else "joined",
                                    offsets, missing, mask)
                # A session already under way (this site was restarted, or came late): join it now.
                own = self.proposal[1] if self.proposal is not None else -1.0
                return Decision(now + 0.2, None if own < 0 else own, f"{sid:08x}", "joined", offsets, missing, mask)
        if self.proposal is None or any(p.proposal is None or len(p.clock.samples) < MIN_SAMPLES
                                        for p in self.peers.values()):
            return None
        proposals = {self.site: self.proposal, **{p.site: p.proposal for p in self.peers.values()}}
        t0 = max([self.proposal[0]] + [p.proposal[0] - p.clock.offset for p in self.peers.values()])
        durations = [d for _, d in proposals.values() if d >= 0]
        return Decision(t0, min(durations) if durations else None, f"{session_id(proposals):08x}", "agreed", offsets,
                        (), self.everyone)

    def alone(self, now: float) -> Decision:
        missing = tuple(p.site for p in self.peers.values() if p.proposal is None or not p.clock.synced)
        props = {self.site: self.proposal or (now, -1.0)}
        offsets = {p.site: p.clock.offset for p in self.peers.values() if p.clock.synced}
        d = (self.proposal or (0.0, -1.0))[1]
        return Decision(now + 0.2, None if d < 0 else d, f"{session_id(props):08x}", "alone", offsets, missing,
                        1 << self.index)

    def _missing(self, mask: int) -> tuple[str, ...]:
        return tuple(s for i, s in enumerate(self.sites) if not mask >> i & 1)

    def mark_started(self, decision: Decision) -> None:
        """Announce from now on that this site runs session ``decision`` (a later site joins it)."""
        self.started = (decision.t0, -1.0 if decision.duration is None else decision.duration,
                        int(decision.session_id, 16), decision.sites)
        self._next_announce = 0.0

    def offsets(self) -> dict[str, float]:
        return {p.site: p.clock.offset for p in self.peers.values() if p.clock.synced}

    def sockets(self) -> list[zmq.Socket]:
        """The channel's sockets, for the caller's poller: a ping must be answered the moment it arrives, or
        the wait is taken for path delay in one direction and skews the peer's clock estimate."""
        return [p.sub.socket for p in self.peers.values()] + [self.pub.socket] + (
            [self.zap.socket] if self.zap is not None else [])

    def close(self) -> None:
        for p in self.peers.values():
            p.sub.close()
        self.pub.close()
        if self.zap is not None:
            self.zap.close()
