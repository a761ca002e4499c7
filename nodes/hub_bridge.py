"""A bridge to a partner who still runs the original 2017 hub software (8-byte UDP datagrams, ``streams.hub_udp``).

The node owns one UDP socket bound to ``bind``:``port`` and talks to one configured peer,
``peer_host``:``peer_port`` (the partner's hub). It is event-driven and never blocks: the socket is
non-blocking, the runtime waits on its fd (``fds``) and ``on_readable`` reads what is there.

From the hub (datagrams from the peer become events, by sender code)::

    'A' Zurich       -> zurich.spikes        SPIKE  id = neuron, value = 1.0
    'D' Padova       -> padova.events        BIO    id = neuron, value = the field (event type 0/1/2)
    'S' Southampton  -> southampton.weights  SPIKE  id = neuron, value = weight byte / 255
    'R' ready        -> no event; counted in ``ready_in``

An event's ``t`` is its arrival time at this bridge (local_clock). The datagram's own timestamp cannot
give a time on our clock: Zurich's are intervals since Zurich's previous event, Padova's are relative to
the last presynaptic spike. The raw ticks are only kept (the last ones per sender, in the summary) and
logged at debug level. The Southampton value is the hub's byte as it stands, normalised: 0 at the hub's
r_min (lowest resistance, strongest synapse) .. 1 at r_max; downstream nodes map it as they need.

To the hub (events on the input ports become datagrams sent to the peer)::

    to_hub.spikes   SPIKE             -> 'A'  neuron = id, field 0,
                                              ticks = interval since this bridge's previous spike
    to_hub.bio      BIO               -> 'D'  neuron = id, field = value (the type, 0/1/2),
                                              ticks = time since the last presynaptic spike, which for the
                                              bridge is the last 'A' or 'S' datagram it received from the hub
    to_hub.weights  SPIKE, STIMULUS   -> 'S'  neuron = id, field = round(clip(255 value, 0, 255)) (value in
                                              [0, 1], the inverse of the inbound mapping),
                                              ticks = interval since this bridge's previous weight datagram

The sender code is fixed per port because the code fixes what the field means. Intervals are between the
events' own times ``t`` (when they happened at their source), 50 us ticks, wrapping at 2**24 ticks; the first
of each is measured from the session start, and a negative one (events out of order) is sent as 0.

Nothing a partner sends can kill the node: malformed datagrams (by ``HubDatagramError.reason``) and datagrams
from any address but the peer (``unknown_peer``) are counted in ``rejected`` and dropped, the first of each
reason logged. Events that cannot become a datagram (an id over 24 bits, a bad event type) and sends the
kernel refuses are counted in ``unsent``. The catch of UDP: nothing is acknowledged, so a datagram lost on
the way is visible only to the side that counts what it received.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
from dataclasses import dataclass

import numpy as np

from spikewire.core.settings import SettingsError, in_range, setting
from spikewire.nodes.base import InPort, Node, NodeSettings, OutPort
from spikewire.nodes.element import Role, element
from spikewire.nodes.figures import Figures
from spikewire.streams import hub_udp
from spikewire.streams.hub_udp import HubDatagramError
from spikewire.streams.wire import Kind

log = logging.getLogger("spikewire.hub_bridge")

MAX_DATAGRAMS_PER_WAKE = 4096
"""Datagrams read per ``on_readable`` call. The fd is level-triggered, so whatever is left wakes the loop
again at once; the cap only keeps a flooding peer from starving the node's other inputs."""
RECV_BUFFER = 65536
"""Large enough for any UDP payload, so a wrong length is seen as it was sent, not truncated to fit."""

OUT_ZURICH = "zurich.spikes"
OUT_PADOVA = "padova.events"
OUT_SOUTHAMPTON = "southampton.weights"
IN_SPIKES = "to_hub.spikes"
IN_BIO = "to_hub.bio"
IN_WEIGHTS = "to_hub.weights"

_OUT_BY_SENDER = {hub_udp.SENDER_ZURICH: OUT_ZURICH, hub_udp.SENDER_PADOVA: OUT_PADOVA,
                  hub_udp.SENDER_SOUTHAMPTON: OUT_SOUTHAMPTON}
_SENDER_BY_IN = {IN_SPIKES: hub_udp.SENDER_ZURICH, IN_BIO: hub_udp.SENDER_PADOVA,
                 IN_WEIGHTS: hub_udp.SENDER_SOUTHAMPTON}


@dataclass(frozen=True)
class HubBridgeSettings(NodeSettings):
    """The bridge's socket (bound on ``bind``, from NodeSettings) and its peer."""

    port: int = setting(0, "UDP port the bridge binds on `bind` (0: an ephemeral port, logged at start).",
                        check=in_range(0, 65535), unit="id")
    peer_host: str = setting("127.0.0.1", "Host of the partner's hub: every datagram goes there, and only "
                             "datagrams from peer_host:peer_port are accepted.")
    peer_port: int = setting(0, "UDP port of the partner's hub (required).", check=in_range(0, 65535), unit="id")

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.peer_port == 0:
            raise SettingsError(f"{key}.peer_port", "required: the UDP port of the partner's hub (1-65535)")
        if not self.peer_host:
            raise SettingsError(f"{key}.peer_host", "must not be empty")


def _weight_field(value: float) -> int:
    """A weight in [0, 1] as the hub's byte (clipped; ties round up, as ``hub_udp.weight_byte``)."""
    return math.floor(min(max(value, 0.0), 1.0) * 255.0 + 0.5)


@element
class HubBridgeNode(Node):
    kind = "hub_bridge"
    Settings = HubBridgeSettings

    def __init__(self, name: str, settings: HubBridgeSettings):
        super().__init__(name, settings)
        self.sock: socket.socket | None = None
        self.peer: tuple[str, int] | None = None
        """The peer's (ip, port) as ``recvfrom`` reports it; resolved when the socket opens (or first needed)."""
        self._buf = bytearray(RECV_BUFFER)
        self.rejected: dict[str, int] = {}
        self.unsent: dict[str, int] = {}
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.ready_in = 0
        self.in_by_sender: dict[str, int] = {}
        self.last_ticks_in: dict[str, int] = {}
        self.last_sent: dict[int, float] = {}
        """Per sender code we send: the event time of the previous datagram (the interval's start)."""
        self.last_presynaptic = 0.0
        """Arrival time of the last 'A' or 'S' datagram: what Padova's timestamps are relative to."""

    @classmethod
    def ports(cls, settings: HubBridgeSettings):
        outputs = {
            OUT_ZURICH: OutPort(Kind.SPIKE, "Zurich spikes from the hub ('A'); t = arrival", role=Role.SPIKES,
                                group=OUT_ZURICH),
            OUT_PADOVA: OutPort(Kind.BIO, "Padova events from the hub ('D'); value = event type; t = arrival",
                                role=Role.BIO_EVENTS, group=OUT_PADOVA),
            OUT_SOUTHAMPTON: OutPort(Kind.SPIKE, "Southampton weighted events from the hub ('S'); "
                                     "value = weight byte / 255; t = arrival", role=Role.SYNAPTIC),
        }
        inputs = {
            IN_SPIKES: InPort(frozenset({Kind.SPIKE}), "spikes sent to the hub as 'A' "
                              "(ticks: interval since the previous)"),
            IN_BIO: InPort(frozenset({Kind.BIO}), "typed biological events sent to the hub as 'D' "
                           "(ticks: since the last presynaptic spike from the hub)"),
            IN_WEIGHTS: InPort(frozenset({Kind.SPIKE, Kind.STIMULUS}), "weights in [0, 1] sent to the hub as 'S'",
                               values=(0.0, 1.0)),
        }
        return inputs, outputs

    # --- the socket ----------------------------------------------------------------------------
    def open(self) -> socket.socket:
        """Bind the socket (once). Failures name the setting, and happen before the node reports ready."""
        if self.sock is not None:
            return self.sock
        s = self.settings
        self.resolve_peer()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((s.bind, s.port))
        except OSError as e:
            sock.close()
            raise SettingsError(f"nodes.{self.name}.port",
                                f"cannot bind UDP {s.bind}:{s.port}: {e.strerror or e}") from None
        self.sock = sock
        host, port = sock.getsockname()[:2]
        log.info("%s: hub bridge on udp %s:%d, peer %s:%d", self.name, host, port, *self.peer)
        return sock

    def resolve_peer(self) -> tuple[str, int]:
        """The peer's (ip, port), as ``recvfrom`` will report it (IPv4, like the original hub)."""
        s = self.settings
        try:
            info = socket.getaddrinfo(s.peer_host, s.peer_port, socket.AF_INET, socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise SettingsError(f"nodes.{self.name}.peer_host",
                                f"cannot resolve {s.peer_host!r}: {e.strerror}") from None
        self.peer = info[0][4][:2]
        return self.peer

    @property
    def address(self) -> tuple[str, int] | None:
        return self.sock.getsockname()[:2] if self.sock is not None else None

    def warm_up(self) -> None:
        self.open()

    def start(self, t0: float) -> None:
        super().start(t0)
        self.last_sent.clear()
        self.last_presynaptic = t0

    def fds(self) -> list[int]:
        return [self.open().fileno()]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # --- from the hub --------------------------------------------------------------------------
    def on_readable(self, fd: int, now: float) -> None:
        sock, buf = self.sock, self._buf
        if sock is None:
            return
        for _ in range(MAX_DATAGRAMS_PER_WAKE):
            try:
                n, addr = sock.recvfrom_into(buf)
            except BlockingIOError:
                return
            except OSError as e:  # an ICMP error queued on the socket, say: counted, and the rest read later
                self._reject(f"recv_{errno.errorcode.get(e.errno, 'error')}", str(e))
                return
            self.datagram_in(memoryview(buf)[:n], addr, now)

    def datagram_in(self, data: bytes | memoryview, addr: tuple, now: float) -> None:
        """One datagram from ``addr`` arrived at ``now``: emit its event, or count why not."""
        peer = self.peer or self.resolve_peer()
        if tuple(addr[:2]) != peer:
            self._reject("unknown_peer", f"a datagram from {addr[0]}:{addr[1]}, not the peer {peer[0]}:{peer[1]}")
            return
        try:
            sender, neuron, field, ticks = hub_udp.decode(data)
        except HubDatagramError as e:
            self._reject(e.reason, str(e))
            return
        self.datagrams_in += 1
        code = chr(sender)
        self.in_by_sender[code] = self.in_by_sender.get(code, 0) + 1
        self.last_ticks_in[code] = ticks
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: from hub %s id %d field %d ticks %d", self.name, code, neuron, field, ticks)
        if sender == hub_udp.SENDER_READY:
            self.ready_in += 1
            return
        if sender == hub_udp.SENDER_PADOVA:
            value = float(field)
        elif sender == hub_udp.SENDER_SOUTHAMPTON:
            value = field / 255.0
            self.last_presynaptic = now
        else:
            value = 1.0
            self.last_presynaptic = now
        self.outbox.emit(_OUT_BY_SENDER[sender], now, neuron, value)

    def _reject(self, reason: str, detail: str) -> None:
        count = self.rejected.get(reason, 0)
        if count:
            self.rejected[reason] = count + 1
            return
        log.warning("%s: dropped a datagram: %s (further ones are only counted, as rejected.%s)",
                    self.name, detail, reason)
        # A new key replaces the dict: the metrics thread may be iterating over the old one.
        self.rejected = {**self.rejected, reason: 1}

    # --- to the hub ----------------------------------------------------------------------------
    def on_events(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        for datagram in self.encode_events(port, events):
            self._send(datagram)

    def encode_events(self, port: str, events: np.ndarray) -> list[bytes]:
        """The datagrams ``events`` on input ``port`` become, in order; advances the interval starts."""
        sender = _SENDER_BY_IN[port]
        out = []
        for t, ident, value in zip(events["t"].tolist(), events["id"].tolist(), events["value"].tolist()):
            if sender == hub_udp.SENDER_PADOVA:
                if value not in hub_udp.PADOVA_EVENT_TYPES:
                    self._unsent("bad_event_type", f"biological event type {value!r}; expected 0, 1 or 2")
                    continue
                since, field = self.last_presynaptic, int(value)
            elif sender == hub_udp.SENDER_SOUTHAMPTON:
                since, field = self.last_sent.get(sender, self.t0), _weight_field(value)
            else:
                since, field = self.last_sent.get(sender, self.t0), 0
            try:
                datagram = hub_udp.encode(sender, ident, field, hub_udp.to_ticks(max(t - since, 0.0)))
            except HubDatagramError as e:
                self._unsent(e.reason, str(e))
                continue
            if sender != hub_udp.SENDER_PADOVA:
                self.last_sent[sender] = t
            out.append(datagram)
        return out

    def _send(self, datagram: bytes) -> None:
        try:
            self.open().sendto(datagram, self.peer)
        except BlockingIOError:
            self._unsent("send_would_block", "the socket's send buffer is full")
            return
        except OSError as e:
            self._unsent(f"send_{errno.errorcode.get(e.errno, 'error')}", str(e))
            return
        self.datagrams_out += 1

    def _unsent(self, reason: str, detail: str) -> None:
        count = self.unsent.get(reason, 0)
        if count:
            self.unsent[reason] = count + 1
            return
        log.warning("%s: an event not sent to the hub: %s (further ones are only counted, as unsent.%s)",
                    self.name, detail, reason)
        self.unsent = {**self.unsent, reason: 1}

    # --- reports -------------------------------------------------------------------------------
    def figures(self, now: float, final: bool = False) -> Figures:
        info = {"datagrams_in": self.datagrams_in, "datagrams_out": self.datagrams_out}
        if final:
            addr = self.address
            info.update(unsent=dict(self.unsent), ready_in=self.ready_in, in_by_sender=dict(self.in_by_sender),
                        last_ticks_in=dict(self.last_ticks_in), address=f"{addr[0]}:{addr[1]}" if addr else None)
        return Figures(elapsed=now - self.t0, rejected=dict(self.rejected), info=info)
