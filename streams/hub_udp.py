"""The 2017 hub's UDP datagram (ArC ``UDPmod.py``), for partners who still run the original hub software.

One event per datagram, exactly 8 bytes, two big-endian uint32 words::

    word  bits    field     meaning
    0     31..24  sender    who sent it: 65 'A' Zurich, 68 'D' Padova, 83 'S' Southampton, 82 'R' ready
    0     23..0   neuron    neuron (or synapse target) id, 24 bits
    1     31..24  field     8 bits whose meaning depends on the sender:
                              'D' Padova: the event type, 0 PSP, 1 stimulated AP, 2 spontaneous AP
                              'S' Southampton: the weight byte (``weight_byte``: 0 at r_min .. 255 at r_max)
                              'A' Zurich, 'R' ready: no meaning given; we send 0 and accept any
    1     23..0   ticks     timestamp in 50 us ticks, 24 bits, wrapping at 2**24 ticks (838.8608 s)

Timestamps are *relative*, never absolute: Zurich's are the interval since its previous event, Padova's
the time since the last presynaptic spike. A 24-bit interval wraps, so a receiver unwraps it against what
it saw itself: the true interval is ``ticks + k * 2**24`` for the ``k >= 0`` that lands nearest the gap it
observed between the two arrivals (``unwrap_ticks``). Below 838 s (and any sane spike interval is) the
ticks are the interval as they stand.

The 20-bit quirk: the original code masks outgoing ids and timestamps with ``0x00fffff`` (20 bits, one
hex digit short of 24), so its ids alias above 2**20 - 1 and its timestamps wrap at 2**20 ticks (52.4288 s).
We follow the format instead: ``encode`` takes ids up to 2**24 - 1 (more is an error, never silent
aliasing) and wraps ticks at 2**24; ``decode`` reads all 24 bits. For ids below 2**20 and intervals below
52.4 s, both agree bit for bit; only a longer interval reads differently on an original hub.

``encode`` and ``decode`` are the only code that makes or reads these bytes. Both raise a
``HubDatagramError`` subclass whose ``reason`` is a short stable label for counters.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

DATAGRAM = struct.Struct(">II")
DATAGRAM_SIZE = DATAGRAM.size  # 8

SENDER_ZURICH = ord("A")  # 65
SENDER_PADOVA = ord("D")  # 68
SENDER_SOUTHAMPTON = ord("S")  # 83
SENDER_READY = ord("R")  # 82
SENDERS = {SENDER_ZURICH: "zurich", SENDER_PADOVA: "padova", SENDER_SOUTHAMPTON: "southampton",
           SENDER_READY: "ready"}
"""Every sender code the 2017 hub knows, and the lab (or message) it stands for."""

PADOVA_EVENT_TYPES = frozenset({0, 1, 2})
"""A Padova datagram's field: 0 PSP, 1 stimulated AP, 2 spontaneous AP (``wire.BioEvent``)."""

ID_BITS = 24
ID_MAX = (1 << ID_BITS) - 1
TICK_BITS = 24
TICK_WRAP = 1 << TICK_BITS
TICK = 50e-6
"""One timestamp tick [s]."""
LEGACY_MASK = 0x00FFFFF
"""The mask UDPmod.py really applied to outgoing ids and timestamps (20 bits); documented, not used."""

R_MIN = 4e3
R_MAX = 9e3
"""The hub's default resistance range of the weight byte [Ohm]."""


class HubDatagramError(ValueError):
    """A datagram that cannot be read or made. ``reason`` is a short stable label used in counters."""

    reason = "malformed"


class WrongLength(HubDatagramError):
    reason = "wrong_length"


class UnknownSender(HubDatagramError):
    reason = "unknown_sender"


class BadEventType(HubDatagramError):
    reason = "bad_event_type"


class IdOutOfRange(HubDatagramError):
    reason = "id_out_of_range"


class FieldOutOfRange(HubDatagramError):
    reason = "field_out_of_range"


class NegativeTicks(HubDatagramError):
    reason = "negative_ticks"


class HubDatagram(NamedTuple):
    sender: int
    neuron: int
    field: int
    ticks: int


def encode(sender: int, neuron: int, field: int, ticks: int) -> bytes:
    """The 8 bytes of one event. ``ticks`` wraps at 2**24; an id above 24 bits is an error."""
    if sender not in SENDERS:
        raise UnknownSender(f"sender code {sender!r} is not one of {sorted(SENDERS)}")
    if not 0 <= neuron <= ID_MAX:
        raise IdOutOfRange(f"neuron id {neuron} does not fit in {ID_BITS} bits")
    if not 0 <= field <= 0xFF:
        raise FieldOutOfRange(f"field {field} does not fit in 8 bits")
    if sender == SENDER_PADOVA and field not in PADOVA_EVENT_TYPES:
        raise BadEventType(f"Padova event type {field}; expected 0 (PSP), 1 (stimulated AP) or 2 (spontaneous AP)")
    if ticks < 0:
        raise NegativeTicks(f"ticks {ticks} < 0; timestamps are intervals")
    return DATAGRAM.pack(sender << 24 | neuron, field << 24 | (ticks & (TICK_WRAP - 1)))


def decode(data: bytes | bytearray | memoryview) -> HubDatagram:
    """Validate and read one datagram: (sender, neuron, field, ticks)."""
    if len(data) != DATAGRAM_SIZE:
        raise WrongLength(f"{len(data)} bytes; a hub datagram is exactly {DATAGRAM_SIZE}")
    w0, w1 = DATAGRAM.unpack(data)
    sender, field = w0 >> 24, w1 >> 24
    if sender not in SENDERS:
        raise UnknownSender(f"sender code {sender} ({chr(sender)!r}) is not one of {sorted(SENDERS)}")
    if sender == SENDER_PADOVA and field not in PADOVA_EVENT_TYPES:
        raise BadEventType(f"Padova event type {field}; expected 0, 1 or 2")
    return HubDatagram(sender, w0 & ID_MAX, field, w1 & (TICK_WRAP - 1))


# --- the weight byte -------------------------------------------------------------------------------
def weight_byte(r: float, r_min: float = R_MIN, r_max: float = R_MAX) -> int:
    """The hub's weight byte of resistance ``r``: ``round(clip(255 (r - r_min) / (r_max - r_min), 0, 255))``.

    It grows with resistance (0 at r_min, the strongest synapse; 255 at r_max). Exact half-way values
    round up (Python 3's ``round`` would take the even neighbour); they need r exactly on a half step."""
    if not math.isfinite(r):
        raise ValueError(f"resistance must be finite, got {r!r}")
    if not r_max > r_min:
        raise ValueError(f"r_max ({r_max!r}) must be above r_min ({r_min!r})")
    x = min(max(255.0 * (r - r_min) / (r_max - r_min), 0.0), 255.0)
    return math.floor(x + 0.5)


def resistance_of(byte: int, r_min: float = R_MIN, r_max: float = R_MAX) -> float:
    """The resistance a weight byte stands for (the centre of its step; clipped values read as the ends)."""
    if not 0 <= byte <= 0xFF:
        raise ValueError(f"a weight byte is 0..255, got {byte!r}")
    return r_min + (r_max - r_min) * byte / 255.0


# --- time ----------------------------------------------------------------------------------------
def to_ticks(seconds: float) -> int:
    """Whole 50 us ticks nearest to ``seconds`` (>= 0), not yet wrapped (``encode`` wraps)."""
    if not seconds >= 0:  # also rejects NaN
        raise ValueError(f"an interval must be >= 0 s, got {seconds!r}")
    return math.floor(seconds / TICK + 0.5)


def seconds_of(ticks: int) -> float:
    return ticks * TICK


def wrap_ticks(ticks: int) -> int:
    """What 24 bits keep of ``ticks``."""
    return ticks & (TICK_WRAP - 1)


def unwrap_ticks(ticks: int, observed: float) -> int:
    """The interval in ticks that a wrapped 24-bit ``ticks`` stands for, given the gap ``observed`` [s]
    between the two arrivals at the receiver: ``ticks + k * 2**24`` for the ``k >= 0`` nearest to it.

    Network jitter moves ``observed`` by milliseconds, far less than half a wrap (419 s), so ``k`` is
    unambiguous whenever the receiver saw both events."""
    k = max(0, round((to_ticks(max(observed, 0.0)) - ticks) / TICK_WRAP))
    return ticks + k * TICK_WRAP
