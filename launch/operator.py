"""The operator's control endpoint: hold, release and mark a running network from outside it (the dashboard).

A ZeroMQ REP socket bound to 127.0.0.1 on a random port, which the supervisor serves in its own loop (a
few requests per pass: it never blocks the loop). Its address and secret are in the live file
(config/live.py), readable only by the user who started the run. One request, one reply, JSON (UTF-8,
never pickle)::

    request  {"secret": "<32 hex digits>", "action": "hold" | "release" | "mark" | "ping",
              "source": "<who asks: printable, at most 64 characters>",
              "text": "<the mark's note: printable, at most 500 characters>"}
    reply    {"ok": true, "t": <local_clock() when accepted>}          (hold/release add "nodes": [told])
             {"ok": false, "error": "<one line>"}                      ("forbidden" for a wrong secret)

A request is a single frame of at most MAX_REQUEST bytes; a longer one (up to MAX_FRAME, beyond which
ZeroMQ drops the connection unanswered), several frames, bad JSON or bad fields are answered with an
error. Every request is counted: accepted per action, refused per reason (the run summary's ``controls``).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import zmq

from spikewire.streams.clock import local_clock

log = logging.getLogger("spikewire.operator")

MAX_REQUEST = 4096
"""Largest request answered [bytes]."""
MAX_FRAME = 65536
"""Largest frame the socket accepts at all: a longer one makes ZeroMQ drop the connection, unanswered."""
MAX_TEXT = 500
MAX_SOURCE = 64
ACTIONS = ("hold", "release", "mark", "ping")
SERVE_BUDGET = 16
"""Requests answered per pass of the supervisor's loop (a flood cannot starve it)."""


class Refused(ValueError):
    """A request answered with an error; ``reason`` is how it is counted."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Request:
    action: str
    source: str
    text: str


def _printable(msg: dict, key: str, limit: int, default: str) -> str:
    value = msg.get(key, default)
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise Refused("invalid", f"{key!r} must be printable text of at most {limit} characters")
    return value


def parse_request(raw: bytes, secret: str) -> Request:
    """The request in ``raw``, checked; Refused (with its reason) if it is not one to act on."""
    if len(raw) > MAX_REQUEST:
        raise Refused("too_large", f"request of {len(raw)} bytes; at most {MAX_REQUEST}")
    try:
        msg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused("malformed", "not a UTF-8 JSON object") from None
    if not isinstance(msg, dict):
        raise Refused("malformed", "not a UTF-8 JSON object")
    given = msg.get("secret")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), secret.encode()):
        raise Refused("forbidden", "forbidden")
    action = msg.get("action")
    if action not in ACTIONS:
        raise Refused("invalid", f"'action' must be one of {', '.join(ACTIONS)}")
    return Request(action, _printable(msg, "source", MAX_SOURCE, "operator"), _printable(msg, "text", MAX_TEXT, ""))


class OperatorEndpoint:
    """The REP socket and its counts. ``handler(request, t)`` acts on an accepted request and returns what
    the reply adds (``{"nodes": [...]}``); a ``Refused`` it raises is answered and counted like any other."""

    def __init__(self, ctx: zmq.Context, handler: Callable[[Request, float], dict], host: str = "127.0.0.1"):
        self.handler = handler
        self.secret = secrets.token_hex(16)
        self.socket = ctx.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        self.socket.bind(f"tcp://{host}:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.accepted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def serve(self, budget: int = SERVE_BUDGET) -> int:
        """Answer up to ``budget`` waiting requests without blocking; returns how many."""
        for n in range(budget):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            self.socket.send(json.dumps(self._answer(frames)).encode())
        return budget

    def _answer(self, frames: list[bytes]) -> dict:
        try:
            if len(frames) != 1:
                raise Refused("malformed", f"{len(frames)} frames; a request is one")
            req = parse_request(frames[0], self.secret)
            t = local_clock()
            extra = self.handler(req, t)
        except Refused as e:
            self.refused[e.reason] += 1
            if self.refused[e.reason] == 1:
                log.warning("refused a control request (%s: %s); further ones are only counted", e.reason, e)
            return {"ok": False, "error": str(e)}
        self.accepted[req.action] += 1
        return {"ok": True, "t": t, **extra}

    def summary(self) -> dict:
        return {"endpoint": self.endpoint, "accepted": dict(self.accepted), "refused": dict(self.refused)}

    def close(self) -> None:
        self.socket.close(linger=0)
