"""CURVE security for links that leave a site: keys, who may connect, and counting every refusal.

ZeroMQ's CURVE (CurveZMQ: Curve25519 key exchange, then every message encrypted and authenticated)
protects a link when the publisher is a CURVE server holding its site's secret key and each subscriber
is a CURVE client that knows the server's public key and holds its own key pair. The server side
authenticates clients through ZAP (ZeroMQ's authentication protocol, RFC 27): libzmq asks a handler
bound at ``inproc://zeromq.zap.01`` in the same context whether each client key may connect.

This module provides:

* ``keygen``: a key pair as two files, the ZeroMQ certificate format (``<name>.key`` public,
  ``<name>.key_secret`` secret, mode 0600), readable by ``zmq.auth.load_certificate`` and czmq tools.
* ``load_public`` / ``load_secret``: keys from those files, with errors that name the file.
* ``ZapHandler``: the site's allow-list. It answers libzmq's requests in the node's own loop (its fd is
  in the loop's ``select``), admits only the public keys the network file lists, and counts and logs
  every refusal.
* ``HandshakeWatch``: a socket monitor that counts the refusals ZAP never sees: a plaintext peer on a
  CURVE link (mechanism mismatch), a CURVE peer on a plaintext one, a protocol error, or a connection
  that was not ZeroMQ at all (``not_zmtp``: dropped before any handshake outcome, as a port scanner's).

What a refused peer gets: nothing. A subscriber whose key is not allowed never completes the handshake,
so no data reaches it and nothing it sends (subscriptions, clock pings) reaches the publisher.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils.monitor import parse_monitor_message
from zmq.utils.z85 import encode as z85_encode

log = logging.getLogger("spikewire.security")
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: pyzmq's enum operators cost per use

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"spikewire"

REFUSAL_REASONS = ("key_not_allowed", "mechanism_mismatch", "server_refused", "protocol_error", "not_zmtp")
"""Why a connection was refused: a CURVE key not on the list (we refused it, or ``server_refused``: a
peer refused ours), plaintext against CURVE or the reverse, a broken handshake, or bytes that were not
ZeroMQ at all."""


class KeyError_(ValueError):
    """A key file that cannot be used; the message names the file."""


def keygen(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write a new CURVE key pair: ``<directory>/<name>.key`` (public: give it to the other sites) and
    ``<directory>/<name>.key_secret`` (secret: stays at this site, mode 0600). Refuses to overwrite."""
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise FileExistsError(f"{path} exists; remove it first if you mean to replace the key")
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)  # a new key folder is this user's alone
    pub, sec = zmq.auth.create_certificates(str(folder), name)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeyError_(f"{path}: no such key file (make one with `spikewire keygen`)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as e:
        raise KeyError_(f"{path}: not a ZeroMQ certificate ({e})") from None
    if public is None or len(public) != 40:
        raise KeyError_(f"{path}: no 40-character public-key in it")
    if need_secret:
        if secret is None or len(secret) != 40:
            raise KeyError_(f"{path}: no secret-key in it (is this the public .key file?)")
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s: a secret key readable by others (mode %o); chmod 600 it", path, mode & 0o777)
    return public, secret


def load_public(path: str | Path) -> bytes:
    """The Z85 public key in a certificate file (public or secret)."""
    return _load(Path(path), need_secret=False)[0]


def load_secret(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` file."""
    public, secret = _load(Path(path), need_secret=True)
    return public, secret


@dataclass(frozen=True)
class CurveConfig:
    """What one process needs for CURVE: its own key pair, the keys it admits (public key -> who), and
    the public key of each remote site it connects to."""

    public: bytes
    secret: bytes
    allowed: dict[bytes, str]
    servers: dict[str, bytes] = field(default_factory=dict)  # site -> its public key

    def make_server(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)

    def make_client(self, sock: zmq.Socket, server_site: str) -> None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.servers[server_site])
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


class Refusals:
    """Counts of refused connections by reason, logging the first of each (peer, reason) and then only
    every hundredth, so a scanner cannot flood the log."""

    def __init__(self, where: str):
        self.where = where
        self.counts: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)

    def add(self, reason: str, detail: str) -> None:
        n = self.counts.get(reason, 0) + 1
        self.counts[reason] = n
        if n == 1 or n % 100 == 0:
            log.warning("%s: refused a connection (%s): %s%s", self.where, reason, detail,
                        "" if n == 1 else f" [{n} so far]")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class ZapHandler:
    """Answers libzmq's ZAP requests for every CURVE server socket in this process's context.

    Must be bound before any CURVE server socket binds. Serviced from the node's loop: ``fd`` is the
    socket's edge-triggered notification fd; ``poll()`` answers everything pending.
    """

    def __init__(self, ctx: zmq.Context, allowed: dict[bytes, str], refusals: Refusals):
        self.allowed = dict(allowed)
        self.refusals = refusals
        self.admitted: dict[str, int] = {}
        self.socket = ctx.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)

    @property
    def fd(self) -> int:
        return self.socket.getsockopt(zmq.FD)

    def poll(self) -> int:
        """Answer every waiting request; returns how many were answered."""
        n = 0
        sock = self.socket
        while sock.get(_EVENTS) & _POLLIN:  # asked first: a receive that finds nothing raises (~15 us cold)
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            n += 1
            sock.send_multipart(self.answer(frames))
        return n

    def answer(self, frames: list[bytes]) -> list[bytes]:
        """The reply frames for one request (RFC 27: version, request id, status code, text, user, metadata)."""
        if len(frames) < 6 or frames[0] != b"1.0":
            self.refusals.add("protocol_error", f"malformed ZAP request ({len(frames)} frames)")
            request_id = frames[1] if len(frames) > 1 else b""
            return [b"1.0", request_id, b"500", b"malformed request", b"", b""]
        request_id, address, mechanism = frames[1], frames[3].decode(errors="replace"), frames[5]
        if mechanism != b"CURVE" or len(frames) < 7 or len(frames[6]) != 32:
            self.refusals.add("mechanism_mismatch", f"{mechanism.decode(errors='replace')} from {address}")
            return [b"1.0", request_id, b"400", b"CURVE required", b"", b""]
        key = z85_encode(frames[6])
        who = self.allowed.get(key)
        if who is None:
            self.refusals.add("key_not_allowed", f"key {key[:8].decode()}... from {address}")
            return [b"1.0", request_id, b"400", b"key not allowed", b"", b""]
        self.admitted[who] = self.admitted.get(who, 0) + 1
        return [b"1.0", request_id, b"200", b"OK", who.encode(), b""]

    def close(self) -> None:
        self.socket.close(linger=0)


_WATCHED = (zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class HandshakeWatch:
    """A monitor on one ZeroMQ socket that turns failed handshakes into counted refusals.

    libzmq does not reconnect after a handshake that failed on a protocol or authentication error (a peer
    with the wrong mechanism or key stays refused even once it is fixed), so a client watch remembers when
    that last happened and the runtime reconnects the socket (``retry_due``) while its link stays down. A
    handshake that succeeds afterwards clears it: the socket is connected again, and a later outage of a
    healthy connection is no reason to tear it down. A connection merely dropped during its handshake (the
    peer or a proxy in between closed it) is no refusal on a client: libzmq reconnects by itself.

    ``server``: the socket binds (connections are accepted). A connection that ends before any handshake
    outcome never presented a valid ZeroMQ greeting, whatever it sent: an HTTP probe, random bytes, or
    nothing (a port scanner's connect-and-close). Each counts once as ``not_zmtp``, decided by its own
    disconnect, whichever events libzmq reported in between (it reports HANDSHAKE_FAILED_NO_DETAIL for some
    of these and nothing for others, depending on what and when the peer sent). Bytes that start like a
    ZMTP greeting and then break the protocol are a ``protocol_error`` (or ``mechanism_mismatch``).
    Refusals of a client key by our own ZAP handler are counted there, not here, so each refusal counts once.

    The catch: libzmq's handshake events do not say which connection they are about (only accept and
    disconnect carry the connection's fd). An outcome is given to the connection accepted most recently
    among those still waiting: a real peer's handshake takes a round trip or two, while a probe may sit for
    seconds waiting for an answer, so the newest is the likely one. Two peers whose handshakes overlap can
    be swapped, which matters only when one of them is then dropped without an outcome.
    """

    def __init__(self, sock: zmq.Socket, refusals: Refusals, server: bool):
        self.refusals = refusals
        self.server = server
        self.pending: list[int] = []  # fds accepted or connected whose handshake has no outcome yet, oldest first
        self.handshakes = 0
        self.failed_at: float | None = None  # monotonic time of a failed handshake not yet retried or healed
        HandshakeWatch._count += 1  # an address of our own: pyzmq's default reuses the socket's fd number
        self.socket = sock
        self.monitor = sock.get_monitor_socket(_WATCHED, addr=f"inproc://spikewire-watch-{os.getpid()}-{self._count}")

    @property
    def fd(self) -> int:
        return self.monitor.getsockopt(zmq.FD)

    def poll(self) -> None:
        monitor = self.monitor
        while monitor.get(_EVENTS) & _POLLIN:  # asked first: a receive that finds nothing raises (~15 us cold)
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = parse_monitor_message(frames)
            except (ValueError, IndexError) as e:  # a monitor frame libzmq did not mean
                log.debug("unparsed monitor message: %s", e)
                continue
            self._on_event(msg["event"], msg["value"], msg["endpoint"].decode(errors="replace"))

    _count = 0

    def retry_due(self, now_monotonic: float, after: float) -> bool:
        """True (once per failure) when a handshake failed at least ``after`` s ago and none has succeeded
        since."""
        if self.failed_at is not None and now_monotonic - self.failed_at >= after:
            self.failed_at = None
            return True
        return False

    def _on_event(self, event: int, value: int, endpoint: str) -> None:
        if event in (zmq.EVENT_ACCEPTED, zmq.EVENT_CONNECTED):
            self.pending.append(value)  # value: the connection's fd
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.handshakes += 1
            self.failed_at = None  # connected: nothing left to retry
            self._settle()
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            self._settle()
            self.failed_at = time.monotonic()
            reason = "mechanism_mismatch" if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH else "protocol_error"
            self.refusals.add(reason, f"on {endpoint} (ZMTP error {value:#x})")
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self._settle()
            self.failed_at = time.monotonic()
            if not self.server:  # our ZAP handler counted it on the server side
                self.refusals.add("server_refused", f"{endpoint} refused our key (status {value})")
        elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # The connection went away mid-handshake (value: an errno). On a server its disconnect, next,
            # counts it. On a client it is a dropped connection, no refusal: libzmq retries it itself, and
            # should it stop, the runtime's retry (once this is ``after`` s old, and only while nothing has
            # succeeded since) takes over.
            log.debug("handshake on %s ended without detail (errno %s)", endpoint, value)
            if not self.server:
                self.failed_at = time.monotonic()
        elif event == zmq.EVENT_DISCONNECTED:
            if value in self.pending:
                self.pending.remove(value)
                if self.server:
                    self.refusals.add("not_zmtp", f"a connection to {endpoint} closed without a valid ZMTP "
                                                  "handshake")

    def _settle(self) -> None:
        if self.pending:
            self.pending.pop()  # the newest (see the class docstring)

    def close(self) -> None:
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError as e:  # the socket is already closed: its monitor went with it
            log.debug("disable_monitor: %s", e)
        self.monitor.close(linger=0)
