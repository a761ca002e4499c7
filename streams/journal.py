"""The session journal: every packet a node sent or received, append-only, crash-tolerant.

One file per node (``<session>/journal/<node>.swj``). Layout, little-endian::

    file header   b"SWJ1" | u16 header length H | H bytes of UTF-8 JSON {"node", "ports", "created"}
    record        u32 length L | u32 crc32 | L bytes of body
    body          u8 direction (0 sent, 1 received) | u8 reserved 0 | u16 port index | f8 time logged
                  | the packet's bytes exactly as on the wire (streams/wire.py)

``length`` counts the body; ``crc32`` (zlib) covers the body. The writer appends to an in-memory buffer
on the hot path (a few hundred ns per packet) and hands the buffer to the OS with one ``os.write`` at
least every ``FLUSH_PERIOD``: a killed process loses at most that window, since written bytes live in the
page cache (``fsync`` on close, and every ``FSYNC_PERIOD``, bounds a machine crash too). The reader
stops at the first record that is truncated or fails its CRC and reports how many bytes it skipped.

A journal has a size cap (``max_bytes``; ``spikewire run --journal-max-mb``): a flooding peer must not
fill the disk. Past it, records are counted as dropped (in the summary) and not written; the first drop
is logged.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from spikewire.streams.wire import Packet, WireError, decode

MAGIC = b"SWJ1"
RECORD = struct.Struct("<II")
BODY = struct.Struct("<BBHd")
SENT, RECEIVED = 0, 1
FLUSH_PERIOD = 0.1
FSYNC_PERIOD = 5.0
DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB per node: ~20 min of a 100,000 events/s link in one direction

log = logging.getLogger("spikewire.journal")


class JournalWriter:
    def __init__(self, path: Path, node: str, ports: list[str], max_bytes: int = DEFAULT_MAX_BYTES):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.ports = {p: i for i, p in enumerate(ports)}
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        header = json.dumps({"node": node, "ports": ports, "created": time.time()}).encode()
        os.write(self.fd, MAGIC + struct.pack("<H", len(header)) + header)
        self.buf = bytearray()
        self.noted: list[tuple[int, str, float, bytes]] = []  # ``note``d, not yet encoded (``commit``)
        self.note = self.noted.append  # note((direction, port, t, packet)): a list append on the hot path
        self.records = 0
        self.bytes = 0
        self.flushes = 0
        self.flushed_at = -1e9  # the loop time of the last flush (the loop flushes in slack, at least every 0.1 s)
        self.last_fsync = time.monotonic()
        self.max_bytes = max_bytes  # 0: no cap
        self.dropped = 0  # records not written because the journal reached max_bytes

    def log(self, direction: int, port: str, t: float, packet: bytes) -> None:
        if self.dropped or (self.max_bytes and self.bytes + len(self.buf) + len(packet) + 20 > self.max_bytes):
            # Full stays full: smaller records after a refused one would leave silent holes mid-session.
            if not self.dropped:
                log.warning("%s: the journal reached its cap of %d MB; further records are counted, not written",
                            self.path, self.max_bytes >> 20)
            self.dropped += 1
            return
        body = BODY.pack(direction, 0, self.ports[port], t) + packet
        self.buf += RECORD.pack(len(body), zlib.crc32(body))
        self.buf += body
        self.records += 1

    def commit(self) -> None:
        """Encode every ``note``d record (in order) into the buffer. A node notes packets as they pass and
        commits once its answers have left: framing and checksumming a record costs ~20 us cold, which a
        packet would otherwise wait for twice (in and out) on its way through."""
        noted = self.noted
        if noted:
            log_ = self.log
            for rec in noted:
                log_(*rec)
            noted.clear()

    def flush(self, now: float | None = None) -> None:
        """Write what is buffered (``commit``ting first); ``now`` (the loop's time) is kept as ``flushed_at``."""
        self.commit()
        if now is not None:
            self.flushed_at = now
        if self.buf:
            n = os.write(self.fd, self.buf)
            while n < len(self.buf):  # a short write (rare): finish it
                n += os.write(self.fd, memoryview(self.buf)[n:])
            self.bytes += len(self.buf)
            self.buf.clear()
            self.flushes += 1
        if time.monotonic() - self.last_fsync > FSYNC_PERIOD:
            os.fsync(self.fd)
            self.last_fsync = time.monotonic()

    def close(self) -> None:
        self.flush()
        os.fsync(self.fd)
        os.close(self.fd)

    def summary(self) -> dict:
        return {"path": str(self.path), "records": self.records, "bytes": self.bytes, "flushes": self.flushes,
                "dropped": self.dropped, "max_bytes": self.max_bytes}


@dataclass(frozen=True)
class Record:
    direction: int  # SENT or RECEIVED
    port: str
    logged: float  # local_clock() when the node logged it
    packet: Packet | None  # None if the packet itself was malformed (received garbage is journaled too)
    raw: bytes


@dataclass
class ReadResult:
    node: str
    ports: list[str]
    records: list[Record]
    skipped_bytes: int = 0
    problem: str = ""


def read_journal(path: Path) -> ReadResult:
    """Every intact record of a journal; a truncated or corrupt tail is skipped and described."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC or len(data) < 6:
        raise ValueError(f"{path}: not a spikewire journal (bad magic)")
    (hlen,) = struct.unpack_from("<H", data, 4)
    try:
        header = json.loads(data[6 : 6 + hlen])
    except ValueError as e:
        raise ValueError(f"{path}: unreadable journal header ({e})") from None
    ports = list(header["ports"])
    out = ReadResult(header["node"], ports, [])
    pos = 6 + hlen
    while pos < len(data):
        if len(data) - pos < RECORD.size:
            out.problem = "truncated record header"
            break
        length, crc = RECORD.unpack_from(data, pos)
        start, end = pos + RECORD.size, pos + RECORD.size + length
        if length < BODY.size or end > len(data):
            out.problem = "truncated record" if end > len(data) else "bad record length"
            break
        body = data[start:end]
        if zlib.crc32(body) != crc:
            out.problem = "checksum mismatch"
            break
        direction, _, port_index, logged = BODY.unpack_from(body)
        raw = bytes(body[BODY.size :])
        try:
            packet = decode(raw)
        except WireError:
            packet = None
        port = ports[port_index] if port_index < len(ports) else f"#{port_index}"
        out.records.append(Record(direction, port, logged, packet, raw))
        pos = end
    out.skipped_bytes = len(data) - pos
    return out


def iter_events(result: ReadResult, direction: int | None = None) -> Iterator[tuple[Record, object]]:
    """(record, event) for every event of every decodable packet, optionally of one direction."""
    for rec in result.records:
        if rec.packet is None or (direction is not None and rec.direction != direction):
            continue
        for ev in rec.packet.events:
            yield rec, ev
