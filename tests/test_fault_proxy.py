"""The fault proxy: real XPUB / SUB sockets on loopback, faults injected between them, and the receiver's own
counts (lost sequence numbers, out-of-order arrivals as a receiving link counts them) compared exactly with
what the proxy says it did."""

from __future__ import annotations

import json
import math
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq
from spikewire.tools.fault_proxy import FaultProxy, main
from spikewire.streams.wire import (EVENT_DTYPE, HEADER, HEADER_SIZE, NonFinite, WireError, decode, encode,
                                    read_header)

pytestmark = pytest.mark.timeout(60)

SPIKE = 1
HEARTBEAT = 5  # a control packet: consumes no sequence number, never dropped
WAIT = 10.0  # s: generous ceiling for anything that should take milliseconds


@pytest.fixture(autouse=True)
def no_proxy_thread_left():
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("fault-proxy")]
    assert not left, f"proxy threads still running: {left}"


class Zmq:
    """A context whose sockets (all linger=0) are closed when the test ends."""

    def __init__(self):
        self.context = zmq.Context()
        self.sockets: list[zmq.Socket] = []

    def socket(self, kind: int) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.context.destroy(linger=0)


@pytest.fixture
def ctx():
    context = Zmq()
    yield context
    context.close()


def make_xpub(ctx: Zmq, secret_key: bytes | None = None) -> tuple[zmq.Socket, int]:
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue raises instead of silently dropping
    if secret_key is not None:
        pub.setsockopt(zmq.CURVE_SERVER, 1)
        pub.setsockopt(zmq.CURVE_SECRETKEY, secret_key)
    pub.bind("tcp://127.0.0.1:*")
    return pub, int(pub.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


def make_sub(ctx: Zmq, proxy: FaultProxy, curve: tuple[bytes, bytes, bytes] | None = None) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    if curve is not None:
        server_public, public, secret = curve
        sub.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        sub.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sub.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(proxy.endpoint)
    return sub


def wait_subscribed(pub: zmq.Socket, sub: zmq.Socket | None = None, timeout: float = WAIT) -> None:
    """Wait for a subscription notice (b"\\x01") at the XPUB; unsubscription notices are skipped. ``sub`` is
    polled meanwhile: libzmq re-sends a SUB's subscriptions after a reconnect only once the application
    thread touches the socket (the I/O thread's "hiccup" command waits in the socket's mailbox)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sub is not None:
            sub.poll(0)
        if pub.poll(50) and pub.recv()[:1] == b"\x01":
            return
    pytest.fail(f"no subscription reached the publisher within {timeout} s")


def packet(kind: int, source: int, seq: int, n_events: int = 0) -> bytes:
    return encode(kind, source, seq, time.monotonic(), np.zeros(n_events, dtype=EVENT_DTYPE))


def send(pub: zmq.Socket, data) -> None:
    if isinstance(data, list):
        pub.send_multipart(data, zmq.NOBLOCK)
    else:
        pub.send(data, zmq.NOBLOCK)


def header(msg: bytes) -> tuple[int, int, int, float]:
    """(kind, source, sequence, send_time) of any spikewire packet, including kinds wire.decode does not know."""
    _, _, kind, _, source, _, seq, send_time = HEADER.unpack_from(msg)
    return kind, source, seq, send_time


def collect(sub: zmq.Socket, got: list, seconds: float) -> None:
    """Receive (with arrival times) for ``seconds``: used instead of sleeping between sends."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if sub.poll(max(1, int(left * 1000))):
            got.append((time.monotonic(), sub.recv_multipart()))


def receive_all(sub: zmq.Socket, proxy: FaultProxy, published: int, received_before: int = 0,
                timeout: float = WAIT, got: list | None = None) -> list:
    """Every message (as a list of frames, with its arrival time) until the proxy has read all ``published``
    messages, has nothing left queued, and the subscriber has got everything the proxy sent on (counting
    ``received_before`` messages taken earlier)."""
    got = [] if got is None else got
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while sub.poll(50):
            got.append((time.monotonic(), sub.recv_multipart()))
        down = proxy.stats()["down"]
        if down["messages_in"] == published and down["pending_messages"] == 0 and \
                len(got) + received_before == down["messages_out"]:
            if sub.poll(100):  # nothing more may come
                pytest.fail("the subscriber got more messages than the proxy forwarded")
            return got
    down = proxy.stats()["down"]
    pytest.fail(f"traffic did not settle within {timeout} s: published {published}, received {len(got)}, "
                f"proxy down stats {down}")


def runtime_out_of_order(seqs) -> int:
    """The receiver's count (the receiving link's sequence policy): a sequence not above the highest seen so far."""
    highest, n = -1, 0
    for seq in seqs:
        if seq > highest:
            highest = seq
        else:
            n += 1
    return n


def data_seqs(got, source: int) -> list[int]:
    out = []
    for _, frames in got:
        if len(frames) == 1 and frames[0][:4] == b"SPKW" and frames[0][5] == SPIKE:
            pkt = decode(frames[0])
            if pkt.source == source:
                out.append(pkt.sequence)
    return out


def test_clean_passthrough_keeps_everything_in_order(ctx):
    pub, port = make_xpub(ctx)
    with FaultProxy(target=("127.0.0.1", port)) as proxy:
        sub = make_sub(ctx, proxy)
        wait_subscribed(pub)
        sent = []
        for i in range(200):
            sent.append([packet(SPIKE, 3, i, 1000 if i % 50 == 7 else i % 5)])  # 16 kB long frames too
            if i % 40 == 0:
                sent.append([packet(HEARTBEAT, 3, 0)])
            if i == 100:
                sent.append([b"topic", b"a multipart non-spikewire message"])
                sent.append([b""])
        for msg in sent:
            send(pub, msg if len(msg) > 1 else msg[0])
        got = receive_all(sub, proxy, len(sent))
        assert [frames for _, frames in got] == sent
        stats = proxy.stats()
    src = stats["sources"]["3"]
    assert src == {"received": 200, "forwarded": 200, "dropped": 0, "discarded": 0, "out_of_order": 0,
                   "reordered_by_swap": 0, "pending": 0}
    down, up = stats["down"], stats["up"]
    assert (down["data_packets"], down["control_packets"], down["other_messages"]) == (200, 5, 2)
    assert down["bytes_in"] == down["bytes_out"] and up["bytes_in"] == up["bytes_out"]
    assert down["commands_by_name"] == {"READY": 1}
    assert up["commands_by_name"] == {"READY": 1, "SUBSCRIBE": 1}  # ZMTP 3.1: subscriptions are commands
    assert stats["links"][0]["mechanism"] == {"down": "NULL", "up": "NULL"}
    json.dumps(stats)


def test_fixed_delay_is_applied_to_every_packet(ctx):
    pub, port = make_xpub(ctx)
    with FaultProxy(target=("127.0.0.1", port), delay=0.05) as proxy:
        sub = make_sub(ctx, proxy)
        wait_subscribed(pub)
        got = []
        for i in range(20):
            send(pub, packet(SPIKE, 1, i))
            collect(sub, got, 0.02)  # receive while sending, so arrival times are when packets arrive
        got = receive_all(sub, proxy, 20, got=got)
        stats = proxy.stats()
    latencies = sorted(arrived - header(frames[0])[3] for arrived, frames in got)
    assert [header(frames[0])[2] for _, frames in got] == list(range(20))
    assert latencies[0] >= 0.045
    assert latencies[len(latencies) // 2] <= 0.15
    assert latencies[-1] <= 1.0  # a loaded machine may stall the odd one
    delay = stats["down"]["delay_s"]
    assert delay["count"] == 20
    assert delay["min"] == pytest.approx(0.05, abs=1e-6) and delay["max"] == pytest.approx(0.05, abs=1e-6)
    assert stats["down"]["emit_delay_s"]["min"] >= 0.05 - 1e-6


def run_lossy(ctx, seed: int) -> tuple[dict, dict]:
    pub, port = make_xpub(ctx)
    sent = 0
    try:
        with FaultProxy(target=("127.0.0.1", port), loss=0.2, seed=seed) as proxy:
            sub = make_sub(ctx, proxy)
            try:
                wait_subscribed(pub)
                for i in range(400):
                    send(pub, packet(SPIKE, 1, i, i % 3))
                    sent += 1
                    if i < 300:
                        send(pub, packet(SPIKE, 2, i))
                        sent += 1
                    if i % 10 == 0:
                        send(pub, packet(HEARTBEAT, 1, 0))
                        sent += 1
                got = receive_all(sub, proxy, sent)
                stats = proxy.stats()
            finally:
                sub.close(linger=0)
    finally:
        pub.close(linger=0)
    missing = {1: set(range(400)) - set(data_seqs(got, 1)), 2: set(range(300)) - set(data_seqs(got, 2))}
    heartbeats = sum(1 for _, frames in got if header(frames[0])[0] == HEARTBEAT)
    return {"missing": missing, "heartbeats": heartbeats, "n_data": len(data_seqs(got, 1)) + len(data_seqs(got, 2))}, \
        stats


def test_loss_is_counted_exactly_and_seeded(ctx):
    first, stats = run_lossy(ctx, seed=3)
    for source in (1, 2):
        dropped = stats["sources"][str(source)]["dropped"]
        assert dropped > 0
        assert len(first["missing"][source]) == dropped  # receiver_lost_sequence_numbers == proxy dropped
        assert stats["sources"][str(source)]["forwarded"] + dropped == (400 if source == 1 else 300)
    assert first["heartbeats"] == 40 == stats["down"]["control_packets"]  # control packets are never dropped
    assert stats["down"]["dropped"] == 700 - first["n_data"]
    second, _ = run_lossy(ctx, seed=3)
    assert second["missing"] == first["missing"]  # the same stream meets the same losses


def lookalikes() -> list[bytes]:
    """Frames that start like a spike packet but that wire.decode refuses, each for another reason."""
    good = packet(SPIKE, 7, 0, 2)

    def patched(offset: int, fmt: str, value) -> bytes:
        out = bytearray(good)
        struct.pack_into(fmt, out, offset, value)
        return bytes(out)

    return [patched(4, "<B", 2),  # wire version 2
            patched(5, "<B", 99),  # an unknown kind
            patched(6, "<H", 1),  # reserved flags set
            patched(24, "<d", math.nan),  # send time
            good[:-1],  # a byte short of its events
            good + b"\0"]  # a byte over


def test_only_packets_wire_accepts_can_be_lost(ctx):
    """The proxy reads headers through wire.read_header: a frame wire refuses is relayed untouched as an
    "other" message and never dropped, even at loss 1, while every data packet is and no heartbeat is."""
    pub, port = make_xpub(ctx)
    odd = lookalikes()
    heartbeat = packet(HEARTBEAT, 7, 20)
    with FaultProxy(target=("127.0.0.1", port), loss=1.0) as proxy:
        sub = make_sub(ctx, proxy)
        wait_subscribed(pub)
        for i in range(20):
            send(pub, packet(SPIKE, 7, i))
        for frame in odd + [heartbeat]:
            send(pub, frame)
        got = receive_all(sub, proxy, 20 + len(odd) + 1)
        stats = proxy.stats()
    assert [frames for _, frames in got] == [[frame] for frame in odd + [heartbeat]]
    down = stats["down"]
    assert (down["data_packets"], down["control_packets"], down["other_messages"]) == (20, 1, len(odd))
    assert stats["sources"] == {"7": {"received": 20, "forwarded": 0, "dropped": 20, "discarded": 0,
                                      "out_of_order": 0, "reordered_by_swap": 0, "pending": 0}}


def test_the_proxy_reads_a_header_as_wire_decode_does():
    """wire.read_header (at the offset a ZMTP frame header puts the packet) accepts and refuses what
    wire.decode does, with the same error, except that it never reads the events."""
    rng = random.Random(1)
    packets = [packet(kind, 3, 5, n) for kind in (SPIKE, HEARTBEAT) for n in (0, 1, 3)]
    refused = set()
    for _ in range(3000):
        pkt = bytearray(rng.choice(packets))
        for _ in range(rng.randint(0, 2)):
            pkt[rng.randrange(HEADER_SIZE)] = rng.randrange(256)
        pkt = bytes(pkt)[:rng.choice((len(pkt), len(pkt), len(pkt) - 1, 10))] + bytes(rng.choice((0, 0, 1, 16)))
        frame = bytes(rng.choice((2, 9))) + pkt
        head = len(frame) - len(pkt)
        try:
            expected = decode(pkt)
        except WireError as exc:  # the events are zeros: every refusal is the header's or the length's
            with pytest.raises(type(exc)):
                read_header(frame, head)
            refused.add(exc.reason)
            continue
        got = read_header(frame, head)
        assert (got.kind, got.source, got.sequence, got.send_time, got.count) == \
            (expected.kind, expected.source, expected.sequence, expected.send_time, len(expected.events))
    assert refused >= {"truncated", "bad_magic", "bad_version", "bad_kind", "bad_flags", "oversized"}
    nan_event = bytearray(packet(SPIKE, 3, 5, 1))
    struct.pack_into("<f", nan_event, HEADER_SIZE + 12, math.nan)
    assert read_header(bytes(nan_event)).count == 1
    with pytest.raises(NonFinite):
        decode(bytes(nan_event))


def test_jitter_reorders_and_out_of_order_matches_the_receiver(ctx):
    pub, port = make_xpub(ctx)
    with FaultProxy(target=("127.0.0.1", port), jitter=0.04, seed=5) as proxy:
        sub = make_sub(ctx, proxy)
        wait_subscribed(pub)
        for i in range(150):
            send(pub, packet(SPIKE, 1, i))
            send(pub, packet(SPIKE, 2, i))
            if i % 10 == 9:
                time.sleep(0.003)
        got = receive_all(sub, proxy, 300)
        stats = proxy.stats()
    total = 0
    for source in (1, 2):
        seqs = data_seqs(got, source)
        assert sorted(seqs) == list(range(150))
        assert runtime_out_of_order(seqs) == stats["sources"][str(source)]["out_of_order"]
        total += runtime_out_of_order(seqs)
    assert total > 0 and stats["down"]["dropped"] == 0
    assert stats["down"]["delay_s"]["max"] <= 0.04


def test_reorder_swaps_a_packet_with_its_successor(ctx):
    pub, port = make_xpub(ctx)
    with FaultProxy(target=("127.0.0.1", port), reorder=0.3, seed=11) as proxy:
        sub = make_sub(ctx, proxy)
        wait_subscribed(pub)
        for i in range(200):
            send(pub, packet(SPIKE, 4, i))
            time.sleep(0.001)
        got = receive_all(sub, proxy, 200)
        stats = proxy.stats()
    seqs = data_seqs(got, 4)
    assert sorted(seqs) == list(range(200))
    src = stats["sources"]["4"]
    assert src["reordered_by_swap"] > 0
    assert runtime_out_of_order(seqs) == src["out_of_order"] == src["reordered_by_swap"]
    for j in range(1, len(seqs)):
        if seqs[j] < seqs[j - 1]:
            assert seqs[j - 1] == seqs[j] + 1  # swapped with its immediate successor, nothing more


def test_set_faults_to_clean_mid_run(ctx):
    pub, port = make_xpub(ctx)
    with FaultProxy(target=("127.0.0.1", port), loss=0.3, jitter=0.03, reorder=0.2, seed=2) as proxy:
        sub = make_sub(ctx, proxy)
        wait_subscribed(pub)
        for i in range(200):
            send(pub, packet(SPIKE, 1, i))
            if i % 10 == 9:
                time.sleep(0.002)
        faults = proxy.set_faults(delay=0, jitter=0, loss=0, reorder=0)
        dropped_at_switch = proxy.stats()["sources"]["1"]["dropped"]
        for i in range(200, 400):
            send(pub, packet(SPIKE, 1, i))
        got = receive_all(sub, proxy, 400)
        stats = proxy.stats()
    assert faults["down"] == {"delay": 0, "jitter": 0, "loss": 0, "reorder": 0}
    assert stats["faults"]["up"] == {"delay": 0, "jitter": 0}
    seqs = data_seqs(got, 1)
    src = stats["sources"]["1"]
    assert src["dropped"] == dropped_at_switch > 0  # nothing lost after the switch
    assert len(set(range(400)) - set(seqs)) == src["dropped"]
    after = [s for s in seqs if s >= 200]
    assert after == list(range(200, 400))  # all there, in order
    assert runtime_out_of_order(seqs) == src["out_of_order"]


def test_drop_connections_then_zeromq_reconnects(ctx):
    pub, port = make_xpub(ctx)
    with FaultProxy(target=("127.0.0.1", port), delay=0.005) as proxy:
        sub = make_sub(ctx, proxy)
        wait_subscribed(pub)
        for i in range(10):
            send(pub, packet(SPIKE, 1, i))
        assert data_seqs(receive_all(sub, proxy, 10), 1) == list(range(10))
        assert proxy.drop_connections() == 1
        wait_subscribed(pub, sub)  # the SUB reconnected through the proxy and subscribed again
        for i in range(10, 20):
            send(pub, packet(SPIKE, 1, i))
        assert data_seqs(receive_all(sub, proxy, 20, received_before=10), 1) == list(range(10, 20))
        stats = proxy.stats()
    assert stats["connections"]["accepted"] == 2
    assert stats["connections"]["cut"] == 1 and stats["connections"]["open"] == 1
    assert stats["sources"]["1"]["forwarded"] == 20
    assert [link["cut"] for link in stats["links"]] == [True, False]


def test_curve_stream_only_gets_the_fixed_delay(ctx):
    # No skip without CURVE: inter-site security needs it, so a libzmq built without it must fail here.
    assert zmq.has("curve"), "libzmq was built without CURVE"
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    pub, port = make_xpub(ctx, secret_key=server_secret)
    # jitter, loss and reordering would break the encryption: the proxy must ignore them on a CURVE stream
    with FaultProxy(target=("127.0.0.1", port), delay=0.03, jitter=0.05, loss=0.5, reorder=0.5) as proxy:
        sub = make_sub(ctx, proxy, curve=(server_public, client_public, client_secret))
        wait_subscribed(pub)
        for i in range(60):
            send(pub, packet(SPIKE, 9, i, i % 4))
            time.sleep(0.002)
        got = []
        deadline = time.monotonic() + WAIT
        while len(got) < 60 and time.monotonic() < deadline:
            if sub.poll(50):
                got.append((time.monotonic(), sub.recv()))
        stats = proxy.stats()
    assert [decode(msg).sequence for _, msg in got] == list(range(60))
    assert min(arrived - decode(msg).send_time for arrived, msg in got) >= 0.025
    link = stats["links"][0]
    assert link["mechanism"] == {"down": "CURVE", "up": "CURVE"}
    down = stats["down"]
    assert down["raw_bytes"] == down["bytes_in"] and down["data_packets"] == 0 and down["dropped"] == 0
    assert stats["sources"] == {}


def test_non_zmtp_bytes_pass_through_with_delay():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(WAIT)
    client = conn = None
    try:
        with FaultProxy(target=server.getsockname(), delay=0.03) as proxy:
            client = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
            conn, _ = server.accept()
            conn.settimeout(WAIT)
            start = time.monotonic()
            client.sendall(b"hello")
            assert conn.recv(100) == b"hello"
            conn.sendall(b"world")
            assert client.recv(100) == b"world"
            assert time.monotonic() - start >= 0.055
            stats = proxy.stats()
    finally:
        for sock in (client, conn, server):
            if sock is not None:
                sock.close()
    assert stats["links"][0]["mechanism"] == {"down": "pre-ZMTP3", "up": "pre-ZMTP3"}
    assert stats["down"]["raw_fallbacks"] == stats["up"]["raw_fallbacks"] == 1


@pytest.mark.parametrize("args, message", [
    (["--delay", "-0.1"], "seconds >= 0"),
    (["--jitter", "abc"], "not a number"),
    (["--loss", "1.5"], "probability"),
    (["--reorder", "nan"], "probability"),
    (["--stats-every", "-1"], "seconds >= 0"),
    (["--listen", "0.0.0.0:0"], "loopback"),
    (["--to", "127.0.0.1"], "HOST:PORT"),
    (["--to", "127.0.0.1:0"], "cannot be 0"),
    (["--to", "127.0.0.1:99999"], "0..65535"),
])
def test_cli_rejects_bad_arguments(args, message, capsys):
    argv = {"--listen": "127.0.0.1:0", "--to": "127.0.0.1:5555"}
    for i in range(0, len(args), 2):
        argv[args[i]] = args[i + 1]
    with pytest.raises(SystemExit) as exc:
        main([item for pair in argv.items() for item in pair])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_constructor_rejects_bad_values():
    with pytest.raises(ValueError, match="probability"):
        FaultProxy(target=("127.0.0.1", 5555), loss=2)
    with pytest.raises(ValueError, match="seconds"):
        FaultProxy(target=("127.0.0.1", 5555), delay=-1)
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(listen=("0.0.0.0", 0), target=("127.0.0.1", 5555))
    proxy = FaultProxy(target=("127.0.0.1", 5555))
    with pytest.raises(ValueError, match="probability"):
        proxy.set_faults(reorder=-0.1)


def read_line(stream, timeout: float, what: str) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        pytest.fail(f"no {what} line within {timeout} s")
    line = stream.readline()
    if not line:
        pytest.fail(f"the proxy closed its {what} before printing a line")
    return line


def test_cli_runs_prints_stats_and_stops_on_sigterm(ctx):
    pub, port = make_xpub(ctx)
    proc = subprocess.Popen([sys.executable, "-m", "spikewire.tools.fault_proxy", "--listen", "127.0.0.1:0",
                             "--to", f"127.0.0.1:{port}", "--delay", "0.01", "--stats-every", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        banner = read_line(proc.stderr, 30.0, "stderr")
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{match.group(1)}")
        wait_subscribed(pub)
        for i in range(5):
            send(pub, packet(SPIKE, 6, i))
        for i in range(5):
            assert sub.poll(int(WAIT * 1000)), "a packet did not come through the CLI proxy"
            assert decode(sub.recv()).sequence == i
        deadline = time.monotonic() + WAIT
        while True:
            stats = json.loads(read_line(proc.stdout, WAIT, "stats"))
            if stats["sources"].get("6", {}).get("forwarded") == 5:
                break
            assert time.monotonic() < deadline, stats
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0
        final = json.loads(out.strip().splitlines()[-1])
        assert final["sources"]["6"]["forwarded"] == 5 and final["faults"]["down"]["delay"] == 0.01
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            pytest.fail(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def zmtp_frame(body: bytes, flags: int = 0) -> bytes:
    if len(body) > 255:
        return bytes([flags | 0x02]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def test_zmtp30_peer_fragmented_frames_and_subscription_messages(ctx):
    """A hand-written ZMTP 3.0 publisher: the SUB then sends its subscription as a message (b"\\x01"), not a
    SUBSCRIBE command, and the publisher's frames reach the proxy cut at arbitrary byte boundaries."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(WAIT)
    conn = None
    try:
        with FaultProxy(target=server.getsockname(), delay=0.002, loss=0.0) as proxy:
            sub = make_sub(ctx, proxy)
            conn, _ = server.accept()
            conn.settimeout(WAIT)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(b"\xff" + bytes(7) + b"\x01\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32))
            greeting = recv_exactly(conn, 64)
            assert greeting[10] == 3 and greeting[12:16] == b"NULL"
            conn.sendall(zmtp_frame(b"\x05READY\x0bSocket-Type" + (3).to_bytes(4, "big") + b"PUB", 0x04))
            flags, size = recv_exactly(conn, 2)
            assert flags == 0x04 and recv_exactly(conn, size).startswith(b"\x05READY")
            assert recv_exactly(conn, 3) == b"\x00\x01\x01"  # a one-byte message: subscribe to everything
            packets = [packet(SPIKE, 8, i, 1000 if i == 2 else i) for i in range(4)]
            stream = b"".join(zmtp_frame(p) for p in packets)
            for start in range(200):  # the first packets a byte at a time, the rest in 7-byte pieces
                conn.sendall(stream[start:start + 1])
                time.sleep(0.0005)
            for start in range(200, len(stream), 7):
                conn.sendall(stream[start:start + 7])
            got = receive_all(sub, proxy, 4)
            stats = proxy.stats()
    finally:
        if conn is not None:
            conn.close()
        server.close()
    assert [frames[0] for _, frames in got] == packets
    assert stats["up"]["subscription_messages"] == 1 and stats["up"]["commands_by_name"] == {"READY": 1}
    assert stats["down"]["data_packets"] == 4 and stats["down"]["raw_fallbacks"] == 0
    assert stats["links"][0]["mechanism"] == {"down": "NULL", "up": "NULL"}
