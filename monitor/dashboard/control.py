"""The dashboard's two controls, forwarded to the supervisor's control endpoint.

The supervisor serves a ZeroMQ REP socket (its address and secret are in the live file): a JSON request
``{"secret", "action": "hold"|"release"|"mark"|"ping", "text", "source"}`` is answered ``{"ok": true, "t"}``
or ``{"ok": false, "error"}``. A fresh REQ socket per request, so a supervisor that never answers leaves
no socket stuck waiting for its reply.
"""

from __future__ import annotations

import json

import zmq

ACTIONS = ("hold", "release", "mark")
MARK_MAX = 500


def check_request(action: str, text: str | None) -> str | None:
    """Why a control request cannot be sent (None: it can)."""
    if action not in ACTIONS:
        return f"unknown action {action!r} (one of {', '.join(ACTIONS)})"
    if action == "mark":
        if not isinstance(text, str) or not text.strip():
            return "a mark needs a text"
        if len(text) > MARK_MAX or not text.isprintable():
            return f"a mark's text is at most {MARK_MAX} printable characters"
    return None


def send_control(ctx: zmq.Context, endpoint: str, secret: str, action: str, text: str | None = None,
                 source: str = "dashboard", timeout: float = 3.0) -> dict:
    """The supervisor's reply, or {"ok": False, "error"} if it did not answer within ``timeout`` s."""
    request = {"secret": secret, "action": action, "source": source}
    if text is not None:
        request["text"] = text
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(endpoint)
        sock.send(json.dumps(request).encode())
        raw = sock.recv()
    except zmq.Again:
        return {"ok": False, "error": f"the supervisor did not answer within {timeout:g} s"}
    except zmq.ZMQError as e:
        return {"ok": False, "error": f"control endpoint {endpoint}: {e}"}
    finally:
        sock.close(linger=0)
    try:
        reply = json.loads(raw)
    except ValueError:
        return {"ok": False, "error": "the supervisor's reply is not JSON"}
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        return {"ok": False, "error": "the supervisor's reply has no 'ok'"}
    return reply
