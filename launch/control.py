"""The control channel between the supervisor and its node processes: JSON over ZeroMQ ROUTER/DEALER.

Messages are small JSON objects with a ``type`` (never pickle). The exchange, in order::

    node -> supervisor   {"type": "bound", "outputs": {port: endpoint}}
    supervisor -> node   {"type": "connect", "inputs": {port: [[source_id, endpoint, label], ...]}}
    node -> supervisor   {"type": "ready", "warm_up_s": float}
    supervisor -> node   {"type": "start", "t0": float, "duration": float | null}
    node -> supervisor   {"type": "status", ...}            every second while running
    supervisor -> node   {"type": "drain"}   stop producing (no more ticks); keep receiving and answering,
                                             so what is in flight lands and every count balances
    supervisor -> node   {"type": "stop"}
    supervisor -> node   {"type": "operator_hold", "on": bool, "source": str}   any time after "connect": hold
                                             (or release) stimulation and programming by hand
    node -> supervisor   {"type": "operator_hold_ack", "on": bool, "source": str, "interlocked": bool,
                          "holding": bool, "reason": str}
    node -> supervisor   {"type": "final", "summary": {...}}  then the node exits 0
    node -> supervisor   {"type": "error", "message": str}    then the node exits 1
"""

from __future__ import annotations

import json
import logging
import time

import zmq

log = logging.getLogger("spikewire.control")


def _decode(raw: bytes) -> dict:
    msg = json.loads(raw)
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ValueError("control message must be a JSON object with a string 'type'")
    return msg


class ControlClient:
    """The node's end: a DEALER whose identity is the node name."""

    def __init__(self, ctx: zmq.Context, endpoint: str, name: str):
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 1000)  # let the final summary leave before the process exits
        self.socket.setsockopt(zmq.IDENTITY, name.encode())
        self.socket.connect(endpoint)
        self._pending: list[dict] = []  # what arrived while ``wait`` waited for something else

    @property
    def fd(self) -> int:
        return self.socket.getsockopt(zmq.FD)

    def send(self, msg: dict) -> None:
        self.socket.send(json.dumps(msg).encode())

    def poll(self) -> list[dict]:
        out, self._pending = self._pending, []
        while True:
            try:
                out.append(_decode(self.socket.recv(zmq.NOBLOCK)))
            except zmq.Again:
                return out

    def wait(self, kind: str, timeout: float) -> dict:
        """Block until a message of ``kind`` arrives (a ``stop`` meanwhile raises InterruptedError). Any
        other message is kept for ``poll``: an operator hold sent before the start is never lost."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {kind!r} from the supervisor within {timeout} s")
            if poller.poll(int(remaining * 1000) + 1):
                msg = _decode(self.socket.recv())
                if msg["type"] == kind:
                    return msg
                if msg["type"] == "stop":
                    raise InterruptedError("stopped by the supervisor before the run started")
                self._pending.append(msg)

    def close(self) -> None:
        self.socket.close()


class ControlServer:
    """The supervisor's end: a ROUTER bound to loopback; messages are tagged with the node name."""

    def __init__(self, ctx: zmq.Context, host: str = "127.0.0.1"):
        self.socket = ctx.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(f"tcp://{host}:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.malformed = 0  # messages that were not [node name, JSON object]: counted and dropped

    def send(self, node: str, msg: dict) -> None:
        self.socket.send_multipart([node.encode(), json.dumps(msg).encode()])

    def recv(self, timeout: float) -> tuple[str, dict] | None:
        """One well-formed message within ``timeout`` seconds, or None. Anything else that arrives (a
        stray or hostile peer on the port) is counted, logged once, and skipped."""
        deadline = time.monotonic() + timeout
        while self.socket.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            frames = self.socket.recv_multipart()
            try:
                if len(frames) != 2:
                    raise ValueError(f"{len(frames)} frames, expected 2")
                return frames[0].decode(), _decode(frames[1])
            except ValueError as e:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
                self.malformed += 1
                if self.malformed == 1:
                    log.warning("dropped a malformed control message (%s); further ones are only counted", e)
        return None

    def close(self) -> None:
        self.socket.close(linger=0)
