"""The spikewire wire format: one ZeroMQ frame per packet, a fixed header then an event array.

Layout (little-endian, 32-byte header, no padding)::

    offset size field      meaning
    0      4    magic      b"SPKW"
    4      1    version    WIRE_VERSION (1)
    5      1    kind       Kind: what the events mean (spikes, stimuli, typed biological events, probes),
                           or link control (heartbeat, clock sync)
    6      2    flags      reserved, must be 0
    8      4    source     u32 id of the sending output port (assigned from the network file)
    12     4    count      u32 number of events that follow
    16     8    sequence   u64 per-source packet counter, starting at 0; gaps mean lost packets
    24     8    send_time  f8 local_clock() seconds when the packet was handed to the transport
    32     16*count events numpy structured array EVENT_DTYPE: (t f8, id u4, value f4)

``t`` is when the event happened at its source (local_clock seconds), ``id`` the neuron / device / target
index, ``value`` what the kind says (a weight, a stimulus amplitude, a biological event type).

``encode`` and ``decode`` are the only code that makes or reads these bytes. ``decode`` checks
everything a hostile or broken peer could get wrong and raises a ``WireError`` subclass naming the
fault; the runtime counts it by ``reason`` and drops the packet.
``read_header`` is ``decode`` for a relay that forwards packets unchanged (the fault proxy): the same
checks of the header and the length, without reading the events.
"""

from __future__ import annotations

import math
from math import isfinite
import struct
from enum import IntEnum
from typing import NamedTuple

import numpy as np

MAGIC = b"SPKW"
WIRE_VERSION = 1
HEADER = struct.Struct("<4sBBHIIQd")
HEADER_SIZE = HEADER.size  # 32
EVENT_DTYPE = np.dtype([("t", "<f8"), ("id", "<u4"), ("value", "<f4")])
EVENT_SIZE = EVENT_DTYPE.itemsize  # 16
EVENT = struct.Struct("<dIf")
"""One event's bytes, as EVENT_DTYPE lays them out."""
SMALL_PACKET = 8
"""Packets of at most this many events are checked event by event in Python (faster than numpy's call overhead)."""
MAX_EVENTS = 1 << 16
"""Largest event count one packet may carry (1 MiB of events); bigger bursts are split by the sender."""


class Kind(IntEnum):
    """What a packet's events mean."""

    SPIKE = 1
    """A spike of neuron ``id``; ``value`` is the synaptic weight it carries (1.0 when unweighted)."""
    STIMULUS = 2
    """A stimulus pulse to target ``id``; ``value`` is its amplitude (volts at the electrode)."""
    BIO = 3
    """A typed biological event of neuron ``id``; ``value`` is the type: 0 PSP, 1 stimulated AP, 2 spontaneous AP."""
    PROBE = 4
    """A loop probe; ``id`` is the probe number, ``value`` unused."""
    HEARTBEAT = 5
    """Link liveness, sent every ``[transport] heartbeat_every`` s on every output port. Does not consume a
    sequence number: ``sequence`` is the number the next data packet will carry (so a receiver notices
    lost trailing packets while the link is idle), and the one event's ``t`` is the sender's start time
    (its epoch: a new epoch means the sender restarted and its sequence began again at 0)."""
    CLOCK = 6
    """Clock synchronisation (NTP-style). A receiver sends a ping upstream with one event
    ``(t1, nonce, 0)``; the publisher answers on the link with a pong of two events ``(t1, nonce, 0)``,
    ``(t2, nonce, 0)`` where t2 is when the ping arrived, sent at ``send_time`` t3. Does not consume a
    sequence number."""
    SESSION = 7
    """A site's start state, on the session channel between the supervisors of a multi-site run (never on
    a node's link). Two events: ``(t, flags, duration)`` with ``t`` the proposed start on the sender's
    clock, or the agreed one once ``flags`` has bit 0 (started) set, and ``duration`` the run's length in
    seconds (-1: until stopped); then ``(0, session, sites)`` once started, with ``session`` the 32-bit
    session id and ``sites`` a bit mask of the sites in it (bit i: the i-th site of the network file). The header's ``source`` says which site (launch/barrier.py). Does not consume a sequence number."""


class BioEvent(IntEnum):
    """Event types as Padova reported them."""

    PSP = 0
    STIMULATED_AP = 1
    SPONTANEOUS_AP = 2


class WireError(ValueError):
    """A packet that cannot be decoded. ``reason`` is a short stable label used in counters."""

    reason = "malformed"


class TruncatedPacket(WireError):
    reason = "truncated"


class BadMagic(WireError):
    reason = "bad_magic"


class BadVersion(WireError):
    reason = "bad_version"


class BadKind(WireError):
    reason = "bad_kind"


class BadFlags(WireError):
    reason = "bad_flags"


class BadLength(WireError):
    reason = "bad_length"


class Oversized(WireError):
    reason = "oversized"


class NonFinite(WireError):
    reason = "non_finite"


class Packet(NamedTuple):
    kind: Kind
    source: int
    sequence: int
    send_time: float
    events: np.ndarray


_KINDS = frozenset(int(k) for k in Kind)
DATA_KINDS = frozenset((Kind.SPIKE, Kind.STIMULUS, Kind.BIO, Kind.PROBE))
"""Kinds that consume a sequence number; HEARTBEAT and CLOCK are link control."""


def empty_events(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=EVENT_DTYPE)


def encode(kind: int, source: int, sequence: int, send_time: float, events: np.ndarray) -> bytes:
    """Packet bytes for ``events`` (an EVENT_DTYPE array, any length up to MAX_EVENTS)."""
    n = len(events)
    if n > MAX_EVENTS:
        raise Oversized(f"{n} events in one packet; at most {MAX_EVENTS}")
    if events.dtype != EVENT_DTYPE:
        raise TypeError(f"events must have dtype {EVENT_DTYPE}, got {events.dtype}")
    return HEADER.pack(MAGIC, WIRE_VERSION, int(kind), 0, source, n, sequence, send_time) + events.tobytes()


def decode(buf: bytes | memoryview) -> Packet:
    """Validate and decode one packet. The returned events are a read-only view of ``buf``."""
    size = len(buf)
    if size < HEADER_SIZE:
        raise TruncatedPacket(f"{size} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, kind, flags, source, count, sequence, send_time = HEADER.unpack_from(buf)
    known = _KIND_OF.get(kind)
    # One test for the usual packet; the errors' order below is the contract (tests, the fault proxy).
    if magic != MAGIC or version != WIRE_VERSION or known is None or flags or size != HEADER_SIZE + count * EVENT_SIZE \
            or count > MAX_EVENTS:
        _refuse_header(size, magic, version, kind, flags, count)
    if not isfinite(send_time):
        raise NonFinite("send_time is not finite")
    if count == 1:  # the usual packet: one spike, one probe (numpy's checks cost more than all the rest)
        t, _, value = EVENT.unpack_from(buf, HEADER_SIZE)
        if not (isfinite(t) and isfinite(value)):
            raise NonFinite("an event time or value is NaN or infinite")
        events = np.frombuffer(buf, EVENT_DTYPE, 1, HEADER_SIZE)
    elif count > SMALL_PACKET:
        events = np.frombuffer(buf, EVENT_DTYPE, count, HEADER_SIZE)
        if not (np.isfinite(events["t"]).all() and np.isfinite(events["value"]).all()):
            raise NonFinite("an event time or value is NaN or infinite")
    else:
        for t, _, value in EVENT.iter_unpack(buf[HEADER_SIZE:]):
            if not (isfinite(t) and isfinite(value)):
                raise NonFinite("an event time or value is NaN or infinite")
        events = np.frombuffer(buf, EVENT_DTYPE, count, HEADER_SIZE)
    return Packet(known, source, sequence, send_time, events)


def _refuse_header(size: int, magic: bytes, version: int, kind: int, flags: int, count: int) -> None:
    """Raise the error a header that failed ``decode``'s one test deserves, in the order of the checks."""
    if magic != MAGIC:
        raise BadMagic(f"magic {magic!r}, expected {MAGIC!r}")
    if version != WIRE_VERSION:
        raise BadVersion(f"wire version {version}, this build speaks {WIRE_VERSION}")
    if kind not in _KINDS:
        raise BadKind(f"unknown packet kind {kind}")
    if flags != 0:
        raise BadFlags(f"reserved flags must be 0, got {flags}")
    if count > MAX_EVENTS:
        raise Oversized(f"count {count} exceeds {MAX_EVENTS}")
    expected = HEADER_SIZE + count * EVENT_SIZE
    if size < expected:
        raise TruncatedPacket(f"{size} bytes for {count} events; expected {expected}")
    raise Oversized(f"{size} bytes for {count} events; expected {expected}")


def encode_events(kind: int, source: int, sequence: int, send_time: float, payload: bytes, count: int) -> bytes:
    """Packet bytes for ``count`` events already packed as ``payload`` (``EVENT.pack`` per event), for paths
    that never need an array (a probe forwarded through a node)."""
    if count > MAX_EVENTS or len(payload) != count * EVENT_SIZE:
        raise ValueError(f"{len(payload)} payload bytes for {count} events (at most {MAX_EVENTS} of {EVENT_SIZE})")
    return HEADER.pack(MAGIC, WIRE_VERSION, int(kind), 0, source, count, sequence, send_time) + payload


class Header(NamedTuple):
    """A validated header (``read_header``); ``count`` events follow it."""

    kind: Kind
    source: int
    count: int
    sequence: int
    send_time: float


_KIND_OF = {int(k): k for k in Kind}  # Kind(k) costs a microsecond; a relay reads 10^5 headers a second


def read_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """Validate the header of the packet that fills ``buf[offset:]`` and return it, without reading the events.

    For code that forwards packets unchanged and only needs to know what they are (the fault proxy reads a
    ZMTP frame with the packet after the frame's own header, hence ``offset``). Checks what ``decode``
    checks, in the same order and with the same errors, except the events' finiteness: a packet that
    passes here can still fail ``decode`` with ``NonFinite``."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    size = len(buf) - offset
    if size < HEADER_SIZE:
        raise TruncatedPacket(f"{size} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, kind, flags, source, count, sequence, send_time = HEADER.unpack_from(buf, offset)
    known = _KIND_OF.get(kind)
    if magic != MAGIC or version != WIRE_VERSION or known is None or flags or size != HEADER_SIZE + count * EVENT_SIZE \
            or count > MAX_EVENTS:
        _refuse_header(size, magic, version, kind, flags, count)
    if not isfinite(send_time):
        raise NonFinite("send_time is not finite")
    return Header(known, source, count, sequence, send_time)
