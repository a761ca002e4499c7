"""ZMTP 3.x read one direction at a time: the greeting, then frames cut into commands and whole messages.

The reader never holds bytes back from the relay longer than it must: greeting bytes are handed on as they
come, a command as soon as its frame is complete, a message once its last frame is. Anything it cannot
follow (a pre-3.0 greeting, a mechanism other than NULL, malformed framing, a message over
``MAX_MESSAGE`` bytes) turns the rest of the stream into opaque bytes, handed on as they come.

ZMTP 3.x facts relied on (libzmq 4.3.5):

* Each side starts with a 64-byte greeting: signature ``0xFF``, 8 bytes, ``0x7F`` (the 8 bytes are not
  all zero: libzmq sends ``00..01``, a ZMTP 1.0 length), version major/minor, a 20-byte mechanism name,
  as-server, filler. libzmq sends it in parts (10 bytes, then the major version once it has seen the
  peer's signature, then the rest), so greeting bytes are relayed as they come: waiting for all 64
  would deadlock the two peers.
* Then frames: flags (bit0 MORE, bit1 LONG, bit2 COMMAND), a 1-byte or 8-byte big-endian size, the
  body. A message is frames up to one without MORE; commands (READY, SUBSCRIBE / CANCEL in ZMTP 3.1,
  PING / PONG, ERROR) are single frames between messages.
* Between two libzmq 4.3.5 peers (ZMTP 3.1) subscriptions travel up as SUBSCRIBE / CANCEL commands;
  with a ZMTP 3.0 peer they are messages starting with ``0x01`` / ``0x00``.
* Only a NULL-mechanism stream can be parsed: CURVE carries data as encrypted MESSAGE commands.
"""

from __future__ import annotations

from typing import Protocol

GREETING_SIZE = 64
FLAG_MORE = 0x01
FLAG_LONG = 0x02
FLAG_COMMAND = 0x04
MAX_MESSAGE = 64 << 20
"""Largest message (all frames, bytes) buffered whole; a bigger one switches the stream to opaque bytes."""
PRE_ZMTP3 = "pre-ZMTP3"
"""``mechanism`` of a stream whose greeting is not ZMTP 3.x."""

_GREETING = 0
_FRAMES = 1
_RAW = 2


class Sink(Protocol):
    """What a :class:`ZmtpReader` hands on; ``now`` is when the bytes arrived."""

    def stream_bytes(self, data: bytes, now: float) -> None:
        """Greeting bytes, or the opaque rest of a stream the reader cannot follow."""

    def command(self, frame: bytes, name: str, now: float) -> None:
        """One command frame (its ZMTP frame header included) and the command's name."""

    def message(self, data: bytes, head: int, single: bool, now: float) -> None:
        """One whole message as it was framed: ``data`` is its frames (frame headers included), the first
        frame's body starting at ``data[head]``; ``single``: it is one frame."""

    def fell_back(self) -> None:
        """The stream turned opaque after a bad greeting, malformed framing or an oversized message."""


def command_name(frame: bytes, head: int) -> str:
    """The name of the command in ``frame`` (a frame with COMMAND set, whose body starts at ``head``)."""
    body = frame[head:]
    return body[1:1 + body[0]].decode("ascii", "replace") if body else ""


def is_subscription(data: bytes, head: int) -> bool:
    """Whether an up-going message (body at ``data[head]``) is a ZMTP 3.0 subscribe or cancel."""
    return data[head:head + 1] in (b"\x00", b"\x01")


class ZmtpReader:
    """Cuts one direction of a ZMTP byte stream into what :class:`Sink` receives, however it is fragmented."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.mechanism: str | None = None
        """The security mechanism the greeting named (``PRE_ZMTP3`` if it was not ZMTP 3.x), once known."""
        self._mode = _GREETING
        self._greeting = bytearray()
        self._buf = bytearray()
        self._frames: list[bytes] = []
        self._frames_size = 0
        self._first_header = 0

    @property
    def buffered(self) -> int:
        """Bytes read but not yet handed on: a partial frame, or the frames of an unfinished message."""
        return len(self._buf) + self._frames_size

    def clear(self) -> None:
        """Forget what is buffered (the connection is gone)."""
        self._buf.clear()
        self._frames.clear()
        self._frames_size = 0

    def feed(self, data: bytes, now: float) -> None:
        if self._mode == _GREETING:
            data = self._greet(data, now)
        if data:
            if self._mode == _FRAMES:
                self._parse(data, now)
            else:
                self.sink.stream_bytes(data, now)

    def _greet(self, data: bytes, now: float) -> bytes:
        take = GREETING_SIZE - len(self._greeting)
        part, rest = data[:take], data[take:]
        self._greeting += part
        self.sink.stream_bytes(part, now)
        g = self._greeting
        if g[0] != 0xFF or (len(g) >= 10 and not g[9] & 0x01) or (len(g) >= 11 and g[10] < 3):
            self.mechanism = PRE_ZMTP3
            self._mode = _RAW
            self.sink.fell_back()
        elif len(g) == GREETING_SIZE:
            self.mechanism = bytes(g[12:32]).rstrip(b"\0").decode("ascii", "replace")
            self._mode = _FRAMES if self.mechanism == "NULL" else _RAW
        return rest

    def _parse(self, data: bytes, now: float) -> None:
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        fallback = False
        with memoryview(buf) as view:
            while n - pos >= 2:
                flags = buf[pos]
                if flags & 0xF8 or (flags & FLAG_COMMAND and (flags & FLAG_MORE or self._frames)):
                    fallback = True
                    break
                if flags & FLAG_LONG:
                    if n - pos < 9:
                        break
                    size = int.from_bytes(view[pos + 1:pos + 9], "big")
                    head = 9
                else:
                    size = buf[pos + 1]
                    head = 2
                if self._frames_size + head + size > MAX_MESSAGE:
                    fallback = True
                    break
                end = pos + head + size
                if end > n:
                    break
                frame = bytes(view[pos:end])
                pos = end
                if flags & FLAG_COMMAND:
                    self.sink.command(frame, command_name(frame, head), now)
                    continue
                if not self._frames:
                    self._first_header = head
                self._frames.append(frame)
                self._frames_size += len(frame)
                if not flags & FLAG_MORE:
                    self._message(now)
            if fallback:
                rest = bytes(view[pos:])
        if fallback:
            partial = b"".join(self._frames) + rest
            self.clear()
            self._mode = _RAW
            self.sink.fell_back()
            self.sink.stream_bytes(partial, now)
        else:
            del buf[:pos]

    def _message(self, now: float) -> None:
        frames = self._frames
        single = len(frames) == 1
        data = frames[0] if single else b"".join(frames)
        frames.clear()
        self._frames_size = 0
        self.sink.message(data, self._first_header, single, now)
