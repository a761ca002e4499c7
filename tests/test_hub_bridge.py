"""The 2017 hub's datagram and the bridge node: codec round trips and every rejection, the weight byte
against REFERENCE.md, the node's logic without sockets, one loopback socket, and a real run in which this
test's UDP socket plays the partner's hub, speaking the raw 8-byte format.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import time

import numpy as np
import pytest

from conftest import read_json
from spikewire.config.network import build_network, node_kinds
from spikewire.core.settings import SettingsError, parse
from spikewire.nodes import hub_bridge
from spikewire.nodes.hub_bridge import HubBridgeNode
from spikewire.streams import hub_udp
from spikewire.streams.hub_udp import (SENDER_PADOVA as D, SENDER_READY as R, SENDER_SOUTHAMPTON as S,
                                       SENDER_ZURICH as A, BadEventType, FieldOutOfRange, HubDatagramError,
                                       IdOutOfRange, NegativeTicks, UnknownSender, WrongLength, decode, encode)
from spikewire.streams.wire import EVENT_DTYPE, Kind

# --- the codec ---------------------------------------------------------------------------------


def test_sender_codes_are_the_hubs():
    assert (A, D, S, R) == (65, 68, 83, 82)
    assert (chr(A), chr(D), chr(S), chr(R)) == ("A", "D", "S", "R")


def test_layout_is_two_big_endian_words():
    data = encode(A, 0x123456, 0, 0xABCDEF)
    assert data == bytes.fromhex("41123456" "00abcdef")
    assert struct.unpack(">II", encode(D, 7, 2, 300)) == (68 << 24 | 7, 2 << 24 | 300)


def test_round_trips_every_sender_and_the_24_bit_extremes():
    rng = random.Random(1)
    cases = [(A, 0, 0, 0), (A, hub_udp.ID_MAX, 255, hub_udp.TICK_WRAP - 1), (R, 0, 0, 0)]
    cases += [(D, rng.randrange(1 << 24), t, rng.randrange(1 << 24)) for t in (0, 1, 2)]
    cases += [(S, rng.randrange(1 << 24), rng.randrange(256), rng.randrange(1 << 24)) for _ in range(200)]
    for case in cases:
        data = encode(*case)
        assert len(data) == hub_udp.DATAGRAM_SIZE
        assert decode(data) == case
        assert decode(memoryview(bytearray(data))) == case


def test_ids_and_ticks_use_24_bits_not_the_original_20():
    # UDPmod.py masked with 0x00fffff: this id would alias to 0x0fffff and these ticks wrap at 52.4 s.
    above_20 = (1 << 20) + 5
    assert decode(encode(A, above_20, 0, above_20)) == (A, above_20, 0, above_20)
    assert above_20 & hub_udp.LEGACY_MASK == 5  # what the original would have sent


def test_encode_wraps_ticks_at_24_bits():
    assert decode(encode(A, 1, 0, hub_udp.TICK_WRAP + 7)).ticks == 7


@pytest.mark.parametrize("args, error, reason", [
    ((ord("X"), 0, 0, 0), UnknownSender, "unknown_sender"),
    ((300, 0, 0, 0), UnknownSender, "unknown_sender"),
    ((A, 1 << 24, 0, 0), IdOutOfRange, "id_out_of_range"),
    ((A, -1, 0, 0), IdOutOfRange, "id_out_of_range"),
    ((S, 0, 256, 0), FieldOutOfRange, "field_out_of_range"),
    ((S, 0, -1, 0), FieldOutOfRange, "field_out_of_range"),
    ((D, 0, 3, 0), BadEventType, "bad_event_type"),
    ((A, 0, 0, -1), NegativeTicks, "negative_ticks"),
])
def test_encode_refuses_what_the_format_cannot_carry(args, error, reason):
    with pytest.raises(error) as info:
        encode(*args)
    assert info.value.reason == reason
    assert isinstance(info.value, HubDatagramError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("data, error, reason", [
    (b"", WrongLength, "wrong_length"),
    (encode(A, 1, 0, 2)[:7], WrongLength, "wrong_length"),
    (encode(A, 1, 0, 2) + b"\x00", WrongLength, "wrong_length"),
    (encode(A, 1, 0, 2) * 2, WrongLength, "wrong_length"),
    (bytes.fromhex("58000001" "00000002"), UnknownSender, "unknown_sender"),  # 'X'
    (bytes.fromhex("00000001" "00000002"), UnknownSender, "unknown_sender"),
    (bytes.fromhex("44000001" "03000002"), BadEventType, "bad_event_type"),  # 'D' with type 3
    (bytes.fromhex("44000001" "09000002"), BadEventType, "bad_event_type"),
])
def test_decode_rejects_with_a_typed_error(data, error, reason):
    with pytest.raises(error) as info:
        decode(data)
    assert info.value.reason == reason
    assert isinstance(info.value, HubDatagramError) and isinstance(info.value, ValueError)


def test_decode_rejects_random_bytes_with_a_reason_and_nothing_else():
    rng = random.Random(3)
    for _ in range(2000):
        data = rng.randbytes(rng.choice([8, 8, 8, rng.randrange(0, 40)]))
        try:
            sender, neuron, _, ticks = decode(data)
        except HubDatagramError as e:
            assert e.reason in {"wrong_length", "unknown_sender", "bad_event_type"}
            continue
        assert sender in hub_udp.SENDERS and 0 <= neuron <= hub_udp.ID_MAX and 0 <= ticks < hub_udp.TICK_WRAP


# --- the weight byte ---------------------------------------------------------------------------


def reference_weight_byte(r, r_min=4e3, r_max=9e3):
    """REFERENCE.md: round(clip(255 * (R - Rmin) / (Rmax - Rmin), 0, 255))."""
    return int(round(float(np.clip(255 * (r - r_min) / (r_max - r_min), 0, 255))))


def test_weight_byte_matches_the_reference_formula():
    rng = np.random.default_rng(5)
    for r in np.concatenate([np.linspace(2e3, 11e3, 2001), rng.uniform(3e3, 10e3, 2000)]):
        x = 255 * (r - 4e3) / 5e3
        if abs(x - np.floor(x) - 0.5) < 1e-9:
            continue  # exact ties: see below
        assert hub_udp.weight_byte(float(r)) == reference_weight_byte(r), r
    assert hub_udp.weight_byte(4e3) == 0 and hub_udp.weight_byte(9e3) == 255
    assert hub_udp.weight_byte(1e3) == 0 and hub_udp.weight_byte(1e6) == 255  # clipped
    assert hub_udp.weight_byte(14e3, r_min=10e3, r_max=17e3) == reference_weight_byte(14e3, 10e3, 17e3) == 146


def test_weight_byte_ties_round_up():
    # 255 * (r - 4000) / 5000 = 0.5 at r = 4000 + 5000 / 510; Python 3's round would give 0 there.
    assert hub_udp.weight_byte(4e3 + 5e3 / 510) == 1
    assert hub_udp.weight_byte(6.5e3) == 128  # 127.5


def test_weight_byte_inverse_and_errors():
    for b in range(256):
        assert hub_udp.weight_byte(hub_udp.resistance_of(b)) == b
    assert hub_udp.resistance_of(0) == 4e3 and hub_udp.resistance_of(255) == 9e3
    for bad in (-1, 256):
        with pytest.raises(ValueError):
            hub_udp.resistance_of(bad)
    with pytest.raises(ValueError):
        hub_udp.weight_byte(float("nan"))
    with pytest.raises(ValueError):
        hub_udp.weight_byte(5e3, r_min=9e3, r_max=4e3)


# --- time --------------------------------------------------------------------------------------


def test_ticks_are_50_us():
    assert hub_udp.TICK == 50e-6
    assert hub_udp.to_ticks(0.0) == 0 and hub_udp.to_ticks(50e-6) == 1 and hub_udp.to_ticks(0.1) == 2000
    assert hub_udp.to_ticks(74e-6) == 1 and hub_udp.to_ticks(76e-6) == 2
    assert hub_udp.seconds_of(2000) == pytest.approx(0.1)
    assert hub_udp.wrap_ticks(hub_udp.TICK_WRAP + 3) == 3
    for bad in (-1e-3, float("nan")):
        with pytest.raises(ValueError):
            hub_udp.to_ticks(bad)


def test_a_receiver_unwraps_relative_timestamps_against_the_gap_it_saw():
    wrap_s = hub_udp.TICK_WRAP * hub_udp.TICK
    assert wrap_s == pytest.approx(838.8608)
    assert hub_udp.unwrap_ticks(400, observed=0.021) == 400  # the usual case: nothing to unwrap
    for interval in (900.0, 2 * wrap_s + 12.3, wrap_s - 0.001):
        true = hub_udp.to_ticks(interval)
        sent = decode(encode(A, 0, 0, true)).ticks
        for jitter in (-0.05, 0.0, 0.05):
            assert hub_udp.unwrap_ticks(sent, observed=interval + jitter) == true


# --- the node's logic, without sockets ---------------------------------------------------------

PEER = ("127.0.0.1", 40001)


def make_bridge(**table) -> HubBridgeNode:
    table = {"kind": "hub_bridge", "peer_port": PEER[1], **table}
    node = HubBridgeNode("bridge", parse(HubBridgeNode.Settings, table, "nodes.bridge"))
    node.start(100.0)
    return node


def emitted(node: HubBridgeNode) -> dict[str, list[tuple]]:
    out = {port: [tuple(e.item()) for e in events] for port, events in node.outbox.pending()}
    node.outbox.clear()
    return out


def events(*rows) -> np.ndarray:
    return np.array(list(rows), dtype=EVENT_DTYPE)


def test_settings_errors_name_the_key():
    with pytest.raises(SettingsError, match=r"^nodes\.b\.peer_port: required"):
        parse(HubBridgeNode.Settings, {"kind": "hub_bridge"}, "nodes.b")
    with pytest.raises(SettingsError, match=r"^nodes\.b\.port: must be between"):
        parse(HubBridgeNode.Settings, {"kind": "hub_bridge", "peer_port": 1, "port": 70000}, "nodes.b")
    with pytest.raises(SettingsError, match=r"^nodes\.b\.peer_host: must not be empty"):
        parse(HubBridgeNode.Settings, {"kind": "hub_bridge", "peer_port": 1, "peer_host": ""}, "nodes.b")
    with pytest.raises(SettingsError, match=r"^nodes\.b\.peer_port: must be an integer"):
        parse(HubBridgeNode.Settings, {"kind": "hub_bridge", "peer_port": "9000"}, "nodes.b")


def test_ports():
    inputs, outputs = HubBridgeNode.ports(make_bridge().settings)
    assert {p: o.kind for p, o in outputs.items()} == {
        "zurich.spikes": Kind.SPIKE, "padova.events": Kind.BIO, "southampton.weights": Kind.SPIKE}
    assert {p: i.accepts for p, i in inputs.items()} == {
        "to_hub.spikes": {Kind.SPIKE}, "to_hub.bio": {Kind.BIO}, "to_hub.weights": {Kind.SPIKE, Kind.STIMULUS}}


def test_datagrams_from_the_hub_become_events_by_sender_at_their_arrival_time():
    node = make_bridge()
    node.datagram_in(encode(A, 7, 0, 400), PEER, 101.0)
    node.datagram_in(encode(D, 3, 2, 123), PEER, 101.5)
    node.datagram_in(encode(S, 5, 51, 9), PEER, 102.0)
    node.datagram_in(encode(R, 0, 0, 0), PEER, 102.5)
    assert emitted(node) == {"zurich.spikes": [(101.0, 7, 1.0)], "padova.events": [(101.5, 3, 2.0)],
                             "southampton.weights": [(102.0, 5, pytest.approx(0.2))]}
    figures = node.figures(103.0, final=True)
    summary = {**figures.info, "rejected": figures.rejected}
    assert summary["datagrams_in"] == 4 and summary["ready_in"] == 1 and summary["rejected"] == {}
    assert summary["in_by_sender"] == {"A": 1, "D": 1, "S": 1, "R": 1}
    assert summary["last_ticks_in"] == {"A": 400, "D": 123, "S": 9, "R": 0}


def test_malformed_or_foreign_datagrams_are_counted_by_reason_and_dropped():
    node = make_bridge()
    good = encode(A, 1, 0, 0)
    node.datagram_in(good[:7], PEER, 101.0)
    node.datagram_in(good + b"\0", PEER, 101.0)
    node.datagram_in(b"", PEER, 101.0)
    node.datagram_in(bytes.fromhex("58000001" "00000002"), PEER, 101.0)
    node.datagram_in(bytes.fromhex("44000001" "07000002"), PEER, 101.0)
    node.datagram_in(good, ("127.0.0.1", PEER[1] + 1), 101.0)
    node.datagram_in(good, ("10.0.0.1", PEER[1]), 101.0)
    assert emitted(node) == {}
    assert node.figures(102.0, final=True).rejected == {"wrong_length": 3, "unknown_sender": 1, "bad_event_type": 1,
                                               "unknown_peer": 2}
    assert node.datagrams_in == 0


def test_spikes_to_the_hub_carry_the_interval_since_the_previous_one():
    node = make_bridge()  # session starts at 100.0
    out = node.encode_events("to_hub.spikes", events((100.1, 0, 1.0), (100.15, 1, 1.0), (100.15, 2, 1.0)))
    assert [decode(d) for d in out] == [(A, 0, 0, 2000), (A, 1, 0, 1000), (A, 2, 0, 0)]
    out = node.encode_events("to_hub.spikes", events((100.14, 3, 1.0), (100.2, 4, 1.0)))
    assert [decode(d).ticks for d in out] == [0, 1200]  # out of order: sent as 0, and the next from there


def test_bio_events_to_the_hub_are_timed_from_the_last_presynaptic_spike_from_the_hub():
    node = make_bridge()
    assert [decode(d) for d in node.encode_events("to_hub.bio", events((100.01, 4, 0.0)))] == [(D, 4, 0, 200)]
    node.datagram_in(encode(A, 0, 0, 0), PEER, 101.0)
    node.datagram_in(encode(D, 0, 1, 0), PEER, 101.2)  # a Padova event is not presynaptic
    out = node.encode_events("to_hub.bio", events((101.02, 4, 1.0), (101.05, 4, 2.0)))
    assert [decode(d) for d in out] == [(D, 4, 1, 400), (D, 4, 2, 1000)]
    node.datagram_in(encode(S, 0, 10, 0), PEER, 102.0)
    assert decode(node.encode_events("to_hub.bio", events((102.003, 4, 0.0)))[0]).ticks == 60


def test_weights_to_the_hub_are_the_byte_of_a_value_in_0_1():
    node = make_bridge()
    out = node.encode_events("to_hub.weights", events((100.5, 9, 0.2), (100.6, 9, 1.7), (100.7, 9, -3.0),
                                                      (100.8, 9, 1.0)))
    assert [decode(d) for d in out] == [(S, 9, 51, 10000), (S, 9, 255, 2000), (S, 9, 0, 2000), (S, 9, 255, 2000)]


def test_events_the_format_cannot_carry_are_counted_not_sent():
    node = make_bridge()
    assert node.encode_events("to_hub.bio", events((100.1, 1, 3.0), (100.1, 1, 1.5))) == []
    assert node.encode_events("to_hub.spikes", events((100.1, 1 << 24, 1.0))) == []
    assert node.figures(101.0, final=True).info["unsent"] == {"bad_event_type": 2, "id_out_of_range": 1}
    # a spike that could not be sent does not restart the interval
    assert decode(node.encode_events("to_hub.spikes", events((100.2, 1, 1.0)))[0]).ticks == 4000


# --- one real socket on loopback ---------------------------------------------------------------


@pytest.fixture
def hub():
    """A UDP socket playing the partner's hub on an ephemeral loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    yield sock
    sock.close()


def readable(fd: int, timeout: float = 5.0) -> None:
    assert select.select([fd], [], [], timeout)[0], "nothing arrived within the timeout"


def test_bridge_socket_on_loopback(hub, monkeypatch):
    node = make_bridge(peer_port=hub.getsockname()[1])
    try:
        node.warm_up()
        (fd,) = node.fds()
        assert node.sock.getblocking() is False
        node.on_events("to_hub.spikes", Kind.SPIKE, events((100.1, 5, 1.0)), 100.2)
        data, addr = hub.recvfrom(64)
        assert decode(data) == (A, 5, 0, 2000) and addr == node.address

        monkeypatch.setattr(hub_bridge, "MAX_DATAGRAMS_PER_WAKE", 2)
        for i in range(3):
            hub.sendto(encode(A, i, 0, 0), node.address)
        hub.sendto(b"\x00" * 9, node.address)
        readable(fd)
        node.on_readable(fd, 101.0)  # reads two: the rest stays readable for the next wake
        assert [e[1] for e in emitted(node)["zurich.spikes"]] == [0, 1]
        readable(fd, 0.5)
        node.on_readable(fd, 101.1)
        node.on_readable(fd, 101.2)  # nothing left: returns at EAGAIN, never blocks
        assert emitted(node) == {"zurich.spikes": [(101.1, 2, 1.0)]}
        assert node.rejected == {"wrong_length": 1}
        assert node.figures(102.0, final=True).info["datagrams_out"] == 1 and node.datagrams_in == 3

        with pytest.raises(SettingsError, match=r"^nodes\.other\.port: cannot bind UDP"):
            HubBridgeNode("other", parse(HubBridgeNode.Settings, {"kind": "hub_bridge", "peer_port": 9,
                                                                  "port": node.address[1]}, "nodes.other")).open()
    finally:
        node.close()
    assert node.sock is None


def test_an_unresolvable_peer_names_the_key():
    node = make_bridge(peer_host="no-such-host.invalid")
    with pytest.raises(SettingsError, match=r"^nodes\.bridge\.peer_host: cannot resolve"):
        node.open()
    assert node.sock is None


# --- a real run: this test's socket is the partner's hub ----------------------------------------


def test_hub_bridge_is_a_registered_node_kind():
    assert node_kinds().get("hub_bridge") is HubBridgeNode, "register HubBridgeNode in config/network.py::node_kinds()"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


RATE = 50.0

NETWORK = """
[network]
name = "hub_bridge_test"

[monitor]
metrics = false

[nodes.bridge]
kind = "hub_bridge"
port = {bridge_port}
peer_host = "127.0.0.1"
peer_port = {hub_port}

[nodes.src]
kind = "source"
rate = {rate}
size = 3

[nodes.sink]
kind = "sink"

[[links]]
from = "src.out"
to = "bridge.to_hub.spikes"

[[links]]
from = "bridge.zurich.spikes"
to = "sink.in"

[[links]]
from = "bridge.padova.events"
to = "sink.in"

[[links]]
from = "bridge.southampton.weights"
to = "sink.in"
"""


@pytest.mark.integration
def test_a_partner_hub_speaking_the_raw_format(cli_run, tmp_path, hub):
    bridge_port = free_udp_port()
    net = tmp_path / "hub.toml"
    net.write_text(NETWORK.format(bridge_port=bridge_port, hub_port=hub.getsockname()[1], rate=RATE))
    build_network(__import__("tomllib").loads(net.read_text()))  # fails here, naming the key, if the file is wrong
    out = tmp_path / "summary.json"
    run = cli_run("run", str(net), "--duration", "4", "--json", str(out))
    hub.setblocking(False)
    received: list[tuple[bytes, tuple]] = []

    def receive(until_exit: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([hub], [], [], 0.05)[0]:
                while True:
                    try:
                        received.append(hub.recvfrom(64))
                    except BlockingIOError:
                        break
                if not until_exit:
                    return
            elif run.proc.poll() is not None:
                return
        if not until_exit:
            code, text = run.finish(timeout=30)
            pytest.fail(f"no datagram from the bridge within {timeout} s (exit {code}):\n{text}")

    # The bridge's first datagram says it is running: from here on, what we send is read.
    receive(until_exit=False, timeout=60)
    bridge = ("127.0.0.1", bridge_port)
    valid = [encode(A, 7, 0, 123), encode(A, 8, 0, 0), encode(A, hub_udp.ID_MAX, 0, hub_udp.TICK_WRAP - 1),
             encode(D, 3, 0, 10), encode(D, 3, 1, 20), encode(D, 3, 2, 30),
             encode(S, 5, 0, 1), encode(S, 5, 255, 2),
             encode(R, 0, 0, 0)]  # ready: accepted, no event
    noise = random.Random(2017).randbytes(8)
    with pytest.raises(HubDatagramError) as noise_error:
        decode(noise)
    malformed = [valid[0][:7], valid[0] + b"\x00", bytes.fromhex("58000001" "00000002"), noise,
                 bytes.fromhex("44000003" "09000002")]
    for data in valid + malformed:
        hub.sendto(data, bridge)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.sendto(valid[0], bridge)

    receive(until_exit=True, timeout=60)
    code, text = run.finish(timeout=30)
    assert code == 0, text
    receive(until_exit=True, timeout=0.2)  # whatever landed after the last poll

    report = read_json(out)
    assert report["outcome"] == "completed", text
    expected = {"wrong_length": 2, "unknown_sender": 1, "bad_event_type": 1, "unknown_peer": 1}
    expected[noise_error.value.reason] = expected.get(noise_error.value.reason, 0) + 1
    assert report["nodes"]["bridge"]["rejected"] == expected
    links = {ln["link"]: ln for ln in report["links"]}
    assert links["bridge.zurich.spikes -> sink.in"]["events"] == 3
    assert links["bridge.padova.events -> sink.in"]["events"] == 3
    assert links["bridge.southampton.weights -> sink.in"]["events"] == 2
    for ln in links.values():
        assert ln["malformed"] == 0 and ln["in_flight"] == 0, ln

    # What the bridge sent: one 'A' datagram per source spike, ids cycling, 20 ms apart in 50 us ticks.
    spikes_in = links["src.out -> bridge.to_hub.spikes"]["events"]
    assert 0.6 * 4 * RATE <= spikes_in <= 1.1 * 4 * RATE
    assert len(received) == spikes_in
    assert {addr for _, addr in received} == {bridge}
    decoded = [decode(data) for data, _ in received]
    assert {d.sender for d in decoded} == {A} and {d.field for d in decoded} == {0}
    assert [d.neuron for d in decoded] == [i % 3 for i in range(len(decoded))]
    period = round(1 / RATE / hub_udp.TICK)  # 400
    ticks = np.array([d.ticks for d in decoded[1:]])
    assert abs(np.median(ticks) - period) <= 0.05 * period, ticks
    assert decoded[0].ticks < 10 * period  # the first: since the session start
