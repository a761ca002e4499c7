"""The wire format: encode/decode round trips and every rejection, with its error class and reason.

hypothesis is not installed in the test venv, so the property checks are seeded random loops.
"""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest

from spikewire.streams import wire
from spikewire.streams.wire import (EVENT_DTYPE, EVENT_SIZE, HEADER, HEADER_SIZE, MAGIC, MAX_EVENTS, WIRE_VERSION,
                                    BadKind, BadLength, BadMagic, BadVersion, Kind, NonFinite, Oversized,
                                    TruncatedPacket, WireError, decode, encode)


def make_events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["t"] = 1000.0 + np.cumsum(rng.random(n))
    ev["id"] = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    ev["value"] = rng.normal(0, 1e-9, n).astype(np.float32)
    return ev


def header(magic=MAGIC, version=WIRE_VERSION, kind=int(Kind.SPIKE), flags=0, source=7, count=0, sequence=3,
           send_time=12.5) -> bytes:
    return HEADER.pack(magic, version, kind, flags, source, count, sequence, send_time)


def assert_same_packet(pkt, kind, source, sequence, send_time, events):
    assert pkt.kind is Kind(kind)
    assert pkt.source == source
    assert pkt.sequence == sequence
    assert pkt.send_time == send_time
    assert pkt.events.dtype == EVENT_DTYPE
    assert len(pkt.events) == len(events)
    assert pkt.events.tobytes() == events.tobytes()  # bit-exact, NaN-free


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------


def test_layout_is_the_documented_one():
    assert HEADER_SIZE == 32 and EVENT_SIZE == 16
    ev = np.array([(1.5, 0x01020304, 2.0)], dtype=EVENT_DTYPE)
    buf = encode(Kind.BIO, 0xAABBCCDD, 0x1122334455667788, 3.25, ev)
    assert len(buf) == 48
    assert buf[0:4] == b"SPKW"
    assert buf[4] == 1 and buf[5] == int(Kind.BIO)
    assert buf[6:8] == b"\x00\x00"
    assert struct.unpack_from("<IIQd", buf, 8) == (0xAABBCCDD, 1, 0x1122334455667788, 3.25)
    assert struct.unpack_from("<dIf", buf, 32) == (1.5, 0x01020304, 2.0)


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 17, 1000])
@pytest.mark.parametrize("kind", list(Kind))
def test_round_trip(n, kind):
    ev = make_events(n, seed=n)
    buf = encode(kind, 42, 9, 123.456, ev)
    assert len(buf) == HEADER_SIZE + n * EVENT_SIZE
    assert_same_packet(decode(buf), kind, 42, 9, 123.456, ev)


def test_round_trip_at_max_events():
    ev = make_events(MAX_EVENTS, seed=1)
    buf = encode(Kind.SPIKE, 1, 2, 3.0, ev)
    assert len(buf) == HEADER_SIZE + MAX_EVENTS * EVENT_SIZE
    assert_same_packet(decode(buf), Kind.SPIKE, 1, 2, 3.0, ev)


def test_encode_refuses_one_more_than_max_events():
    with pytest.raises(Oversized) as e:
        encode(Kind.SPIKE, 1, 2, 3.0, wire.empty_events(MAX_EVENTS + 1))
    assert e.value.reason == "oversized"


def test_encode_refuses_wrong_dtype():
    with pytest.raises(TypeError):
        encode(Kind.SPIKE, 1, 2, 3.0, np.zeros(3, dtype=[("t", "<f8"), ("id", "<u4"), ("value", "<f8")]))


def test_round_trip_extreme_header_fields():
    ev = make_events(3)
    for source, sequence, send_time in [(0, 0, 0.0), (2**32 - 1, 2**64 - 1, -1e300), (5, 2**63, 1e300)]:
        assert_same_packet(decode(encode(Kind.PROBE, source, sequence, send_time, ev)),
                           Kind.PROBE, source, sequence, send_time, ev)


def test_round_trip_random_packets():
    rng = random.Random(5)
    for i in range(200):
        n = rng.choice([0, 1, rng.randrange(2, 300)])
        kind = rng.choice(list(Kind))
        source, sequence = rng.randrange(2**32), rng.randrange(2**64)
        send_time = rng.uniform(-1e6, 1e6)
        ev = make_events(n, seed=i)
        assert_same_packet(decode(encode(kind, source, sequence, send_time, ev)), kind, source, sequence, send_time, ev)


def test_decode_accepts_memoryview_and_bytearray():
    ev = make_events(4)
    buf = encode(Kind.STIMULUS, 1, 2, 3.0, ev)
    for b in (memoryview(buf), bytearray(buf)):
        assert_same_packet(decode(b), Kind.STIMULUS, 1, 2, 3.0, ev)


def test_decoded_events_are_read_only_view():
    pkt = decode(encode(Kind.SPIKE, 1, 2, 3.0, make_events(2)))
    with pytest.raises(ValueError):
        pkt.events["t"][0] = 0.0


def test_encode_takes_a_non_contiguous_slice():
    ev = make_events(10)
    every_other = ev[::2]
    assert_same_packet(decode(encode(Kind.SPIKE, 1, 2, 3.0, every_other)), Kind.SPIKE, 1, 2, 3.0,
                       np.ascontiguousarray(every_other))


# --------------------------------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------------------------------


def rejects(buf, cls, reason):
    with pytest.raises(cls) as e:
        decode(buf)
    assert type(e.value) is cls
    assert isinstance(e.value, WireError) and isinstance(e.value, ValueError)
    assert e.value.reason == reason
    assert str(e.value)  # a message for the log
    return e.value


@pytest.mark.parametrize("size", [0, 1, 4, 31])
def test_truncated_header(size):
    buf = encode(Kind.SPIKE, 1, 2, 3.0, make_events(2))
    rejects(buf[:size], TruncatedPacket, "truncated")


def test_bad_magic():
    good = encode(Kind.SPIKE, 1, 2, 3.0, make_events(1))
    rejects(b"SPKX" + good[4:], BadMagic, "bad_magic")
    rejects(b"\x00" * len(good), BadMagic, "bad_magic")
    rejects(header(magic=b"spkw"), BadMagic, "bad_magic")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_bad_version(version):
    rejects(header(version=version), BadVersion, "bad_version")


@pytest.mark.parametrize("kind", [0, 8, 200, 255])
def test_bad_kind(kind):
    rejects(header(kind=kind), BadKind, "bad_kind")


@pytest.mark.parametrize("flags", [1, 0x8000, 0xFFFF])
def test_nonzero_flags_rejected(flags):
    with pytest.raises(WireError) as e:
        decode(header(flags=flags))
    assert "flag" in str(e.value)


def test_nonzero_flags_get_their_own_reason():
    """Counters are kept by ``reason``: a flags fault must not be counted as a length fault."""
    with pytest.raises(WireError) as e:
        decode(header(flags=1))
    assert not isinstance(e.value, (BadLength, TruncatedPacket, Oversized))
    assert "flag" in e.value.reason


def test_count_above_max_events():
    rejects(header(count=MAX_EVENTS + 1), Oversized, "oversized")
    rejects(header(count=2**32 - 1), Oversized, "oversized")


def test_count_above_max_events_even_when_body_matches():
    body = wire.empty_events(MAX_EVENTS + 1).tobytes()
    rejects(header(count=MAX_EVENTS + 1) + body, Oversized, "oversized")


@pytest.mark.parametrize("count, n_body, missing", [(1, 0, 0), (3, 2, 0), (2, 2, 1), (2, 1, 8), (MAX_EVENTS, 0, 0)])
def test_body_shorter_than_count(count, n_body, missing):
    body = make_events(n_body).tobytes()
    if missing:
        body = body[:-missing] if body else b""
    rejects(header(count=count) + body, TruncatedPacket, "truncated")


@pytest.mark.parametrize("count, extra", [(0, 1), (0, 16), (2, 1), (2, 16), (1, 15)])
def test_body_longer_than_count(count, extra):
    body = make_events(count).tobytes() + b"\x00" * extra
    rejects(header(count=count) + body, Oversized, "oversized")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_send_time(bad):
    rejects(header(send_time=bad), NonFinite, "non_finite")
    rejects(encode(Kind.SPIKE, 1, 2, bad, make_events(3)), NonFinite, "non_finite")


@pytest.mark.parametrize("field", ["t", "value"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", [0, 5, 9])
def test_non_finite_event_field(field, bad, where):
    ev = make_events(10)
    ev[field][where] = bad
    rejects(encode(Kind.SPIKE, 1, 2, 3.0, ev), NonFinite, "non_finite")


@pytest.mark.parametrize("field", ["t", "value"])
def test_opposite_infinities_do_not_cancel(field):
    ev = make_events(4)
    ev[field][1] = math.inf
    ev[field][2] = -math.inf
    rejects(encode(Kind.SPIKE, 1, 2, 3.0, ev), NonFinite, "non_finite")


def test_nan_payload_with_sign_bit_rejected():
    ev = make_events(2)
    raw = bytearray(encode(Kind.SPIKE, 1, 2, 3.0, ev))
    struct.pack_into("<Q", raw, HEADER_SIZE, 0xFFF8000000000001)  # a negative quiet NaN in t
    rejects(bytes(raw), NonFinite, "non_finite")
    raw = bytearray(encode(Kind.SPIKE, 1, 2, 3.0, ev))
    struct.pack_into("<I", raw, HEADER_SIZE + EVENT_SIZE + 12, 0x7F800001)  # a signalling NaN in value
    rejects(bytes(raw), NonFinite, "non_finite")


def test_checks_run_in_documented_order():
    """A packet with several faults is reported by the first check (header before body)."""
    rejects(header(magic=b"XXXX", version=9, kind=99), BadMagic, "bad_magic")
    rejects(header(version=9, kind=99, count=MAX_EVENTS + 1), BadVersion, "bad_version")
    rejects(header(kind=99, count=5), BadKind, "bad_kind")


def test_every_reason_is_distinct_and_stable():
    classes = [TruncatedPacket, BadMagic, BadVersion, BadKind, BadLength, Oversized, NonFinite]
    reasons = [c.reason for c in classes]
    assert len(set(reasons)) == len(reasons)
    assert all(issubclass(c, WireError) for c in classes)


def test_random_corruptions_never_escape_as_other_errors():
    """Flip bytes of good packets: decode either succeeds or raises a WireError, never anything else."""
    rng = random.Random(9)
    good = encode(Kind.BIO, 3, 4, 5.0, make_events(6))
    for _ in range(2000):
        raw = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        cut = rng.choice([len(raw), rng.randrange(len(raw) + 1)])
        try:
            pkt = decode(bytes(raw[:cut]))
        except WireError:
            continue
        assert np.isfinite(pkt.events["t"]).all() and np.isfinite(pkt.events["value"]).all()
        assert math.isfinite(pkt.send_time)
