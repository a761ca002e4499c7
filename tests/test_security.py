"""CURVE between sites: keys, the allow-list, plaintext refused, every refusal counted and logged.

Southampton runs alone as a real site process. Test clients then try its inter-site publisher without
CURVE, with a key the network file does not list, and with Padova's key; and a plaintext publisher
poses as Zurich to inject packets into Southampton.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
import tomllib
import urllib.request

import numpy as np
import pytest
import zmq
import zmq.auth

from conftest import CliRun, read_json, site_ports, sites_copy, spikewire_cmd
from spikewire.config.network import load_network
from spikewire.streams.wire import EVENT_DTYPE, Kind, decode, encode


def _receive_until(sock: zmq.Socket, done, timeout: float) -> list[bytes]:
    """Messages until ``done(message)`` is true for one; fails the test after ``timeout`` s."""
    got, deadline = [], time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            got.append(sock.recv())
            if done(got[-1]):
                return got
    raise AssertionError(f"not received within {timeout} s ({len(got)} messages)")


def _waiting(sock: zmq.Socket) -> list[bytes]:
    """What has arrived on ``sock`` by now."""
    got = []
    while sock.poll(0):
        got.append(sock.recv())
    return got


def _xsub(ctx, endpoint: str, server_key: bytes | None = None, keys: tuple[bytes, bytes] | None = None):
    s = ctx.socket(zmq.XSUB)
    s.setsockopt(zmq.LINGER, 0)
    if server_key is not None:
        s.curve_serverkey = server_key
        s.curve_publickey, s.curve_secretkey = keys
    s.send(b"\x01")
    s.connect(endpoint)
    return s


def test_keygen_writes_a_key_pair_and_never_overwrites(tmp_path):
    out = subprocess.run(spikewire_cmd("keygen", "lab", "--dir", str(tmp_path / "k")), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out
    pub, sec = tmp_path / "k" / "lab.key", tmp_path / "k" / "lab.key_secret"
    public, secret = zmq.auth.load_certificate(str(sec))
    assert zmq.auth.load_certificate(str(pub)) == (public, None) and len(secret) == 40
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    again = subprocess.run(spikewire_cmd("keygen", "lab", "--dir", str(tmp_path / "k")), capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr
    assert zmq.auth.load_certificate(str(sec))[1] == secret  # untouched


def test_a_site_admits_only_listed_keys_and_refuses_plaintext(tmp_path):
    net_path = sites_copy(tmp_path)
    net = load_network(net_path)
    ports = site_ports(net_path)
    keys = tmp_path / "keys"
    southampton_pub = zmq.auth.load_certificate(str(keys / "southampton.key"))[0]
    padova = zmq.auth.load_certificate(str(keys / "padova.key_secret"))
    mr1_out = f"tcp://127.0.0.1:{ports['southampton']}"  # the site's first inter-site port (mr1.out)
    assert net.fixed_endpoint("southampton", "mr1.out", bind=False) == mr1_out
    anpre = net.fixed_endpoint("zurich", "anpre.spikes", bind=False)  # where Southampton expects Zurich
    metrics_port = net.metrics_port("southampton")

    run = CliRun("run", str(net_path), "--site", "southampton", "--start-wait", "0", "--duration", "30", "--json",
                 str(tmp_path / "s.json"), "--no-record", cwd=tmp_path)
    ctx = zmq.Context()
    try:
        run.wait_for("all nodes ready", timeout=60)
        # 1. A plaintext subscriber: the handshake fails (mechanism mismatch); it gets nothing.
        plain = _xsub(ctx, mr1_out)
        # 2. A CURVE subscriber whose key the network file does not list: refused by ZAP; nothing, and its
        #    clock ping (the one thing a subscriber sends upstream) never reaches the publisher.
        rogue = _xsub(ctx, mr1_out, southampton_pub, zmq.curve_keypair())
        rogue.send(encode(Kind.CLOCK, 0, 0, 0.0, np.zeros(1, EVENT_DTYPE)))
        # 3. Padova's key: admitted; Southampton's publisher heartbeats while idle.
        good = _xsub(ctx, mr1_out, southampton_pub, padova)
        # 4. A plaintext publisher posing as Zurich at Zurich's address: Southampton's CURVE client refuses it.
        fake = ctx.socket(zmq.XPUB)
        fake.setsockopt(zmq.LINGER, 0)
        fake.bind(anpre)
        spikes = np.zeros(1, EVENT_DTYPE)
        source = net.source_ids[("zurich", "anpre.spikes")]

        got_good = _receive_until(good, lambda b: decode(b).kind == Kind.HEARTBEAT, timeout=10)
        assert all(decode(b).source == net.source_ids[("southampton", "mr1.out")] for b in got_good)
        for seq in range(20):
            fake.send(encode(Kind.SPIKE, source, seq, 0.0, spikes))
        # The refusals are exported while the site runs (the exposition is refreshed about once a second).
        deadline = time.monotonic() + 20
        while True:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            refused = {line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                       for line in text.splitlines() if line.startswith("spikewire_connections_refused_total{")}
            if refused.get("key_not_allowed", 0) >= 1 and refused.get("mechanism_mismatch", 0) >= 2:
                break
            assert time.monotonic() < deadline, refused
            time.sleep(0.2)
        # Refused, and meanwhile the good subscriber has had heartbeats: the other two got nothing.
        assert _waiting(plain) == [] and _waiting(rogue) == []
        for s in (plain, rogue, good, fake):
            s.close(linger=0)
        run.proc.terminate()  # Ctrl-C/SIGTERM: a clean stop with the summary
        code, output = run.finish(timeout=60)
    finally:
        run.kill()
        ctx.destroy(linger=0)
    assert code == 0, output
    summary = read_json(tmp_path / "s.json")
    node = summary["nodes"]["southampton"]
    assert node["refused"]["key_not_allowed"] >= 1 and node["refused"]["mechanism_mismatch"] >= 2, node["refused"]
    # Nothing the fake Zurich sent got in.
    row = [ln for ln in summary["links"] if ln["link"] == "zurich.anpre.spikes -> southampton.mr1.pre"][0]
    assert row["received"] == 0 and row["malformed"] == 0, row
    # Each kind of refusal is logged (the first of each in full).
    assert "refused a connection (key_not_allowed)" in output and "refused a connection (mechanism_mismatch)" in output


def test_network_file_security_errors_name_the_key(tmp_path):
    from spikewire.config.network import NetworkError, build_network

    base = tomllib.loads(sites_copy(tmp_path, keys=False).read_text())
    base["security"] = {"curve": "required"}
    no_sites = {k: v for k, v in base.items() if k != "sites"}
    for data, key in ((no_sites, "security.curve"),
                      ({**base, "security": {"curve": "sometimes"}}, "security.curve"),
                      ({**base, "sites": {**base["sites"], "padova": {"port": 70000}}}, "sites.padova.port"),
                      ({**base, "sites": {k: v for k, v in base["sites"].items() if k != "padova"}}, "nodes.padova.site")):
        try:
            build_network(data, path=tmp_path / "x.toml")
        except NetworkError as e:
            assert e.key == key, (e, key)
        else:
            raise AssertionError(f"accepted a file with a bad {key}")


def test_curve_benchmark_runs_and_reports_both_modes(tmp_path):
    """`spikewire bench curve` end to end, in miniature: both modes deliver every packet, the JSON has
    the ratios (their values are machine figures for the notes, not something to assert)."""
    out = subprocess.run(spikewire_cmd("bench", "curve", "--rounds", "1", "--count", "200", "--blast", "500",
                                       "--json", str(tmp_path / "c.json")), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    res = read_json(tmp_path / "c.json")
    for mode in ("plain", "curve"):
        m = res["median"][mode]
        assert m["latency_n"] == 200 and m["packets_per_s"] > 0 and 0 < m["latency_p50_s"] < 0.05, m
    assert set(res["ratio"]) == {"latency_p50_s", "latency_p99_s", "packets_per_s"}
    assert "CURVE/plain" in out.stdout


# --- issue 11, item 18: what a port scanner gets counted as ----------------------------------------------------
# A connection dropped before any ZMTP handshake outcome never presented a ZeroMQ greeting: `not_zmtp`, whether it
# sent an HTTP request, random bytes or nothing at all (a plain connect-and-close scan), and whatever libzmq made
# of it (for some of these it reports HANDSHAKE_FAILED_NO_DETAIL first, for others only the disconnect).
HTTP_PROBE = b"GET / HTTP/1.0\r\n\r\n"


def _scan(port: int, data: bytes = b"", hold: float = 0.0) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        if data:
            s.sendall(data)
        if hold:
            time.sleep(hold)


SCANS = ([(b"", 0.0)] * 3 + [(HTTP_PROBE, 0.0)] * 3 + [(HTTP_PROBE, 0.2)] * 2 + [(bytes(range(200)), 0.0)] * 2
         + [(bytes(range(1, 100)), 0.1)] + [(b"", 0.3)] + [(b"\x00" * 9, 0.0)])


def _settle(watch, refusals, until, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"refusals {refusals.counts}, pending {watch.pending}")
        watch.poll()
        time.sleep(0.01)


def _server(ctx, curve: bool):
    from spikewire.streams.security import HandshakeWatch, Refusals

    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    keys = zmq.curve_keypair()
    if curve:
        pub.curve_server = True
        pub.curve_publickey, pub.curve_secretkey = keys
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    refusals = Refusals("scanned")
    return pub, port, keys[0], refusals, HandshakeWatch(pub, refusals, server=True)


@pytest.mark.parametrize("curve", [False, True], ids=["plaintext", "curve"])
@pytest.mark.parametrize("pace", ["one_by_one", "burst"])
def test_a_port_scan_counts_as_not_zmtp_whatever_it_sends_and_its_timing(curve, pace):
    ctx = zmq.Context()
    try:
        pub, port, server_key, refusals, watch = _server(ctx, curve)
        for i, (data, hold) in enumerate(SCANS):
            _scan(port, data, hold)
            if pace == "one_by_one":
                _settle(watch, refusals, lambda: refusals.counts["not_zmtp"] == i + 1)
        _settle(watch, refusals, lambda: refusals.counts["not_zmtp"] == len(SCANS))
        # A real ZeroMQ subscriber still counts as a handshake, and nothing else moved.
        good = _xsub(ctx, f"tcp://127.0.0.1:{port}", server_key if curve else None,
                     zmq.curve_keypair() if curve else None)
        _settle(watch, refusals, lambda: watch.handshakes == 1)
        good.close(linger=0)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # its disconnect is no refusal
            watch.poll()
            time.sleep(0.01)
        assert refusals.counts == {**dict.fromkeys(refusals.counts, 0), "not_zmtp": len(SCANS)}, refusals.counts
        watch.close()
        pub.close(linger=0)
    finally:
        ctx.destroy(linger=0)


def test_a_slow_scanner_does_not_take_a_real_peers_handshake():
    """An HTTP probe holding its connection open (waiting for an answer that never comes) while a real
    subscriber connects: the subscriber's handshake is its own, and the probe still counts as not_zmtp."""
    ctx = zmq.Context()
    try:
        pub, port, _, refusals, watch = _server(ctx, curve=False)
        probe = socket.create_connection(("127.0.0.1", port), timeout=2)
        probe.sendall(HTTP_PROBE)
        _settle(watch, refusals, lambda: len(watch.pending) == 1)
        good = _xsub(ctx, f"tcp://127.0.0.1:{port}")
        _settle(watch, refusals, lambda: watch.handshakes == 1)
        probe.close()
        _settle(watch, refusals, lambda: refusals.counts["not_zmtp"] == 1)
        good.close(linger=0)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            watch.poll()
            time.sleep(0.01)
        assert refusals.total == 1 and watch.pending == [], (refusals.counts, watch.pending)
        watch.close()
        pub.close(linger=0)
    finally:
        ctx.destroy(linger=0)


# --- issue 11, item 17: a handshake that failed at start must not poison the link --------------------------------
def test_a_handshake_failed_at_start_is_healed_by_the_next_success():
    """Through a proxy whose publisher is not up yet, the subscriber's first handshakes fail (the proxy
    accepts, then drops it); libzmq retries on its own and connects once the publisher binds. From then
    on the connection is healthy: nothing may be left that would have the runtime tear it down at the
    first quiet moment (``retry_due``)."""
    from spikewire.launch.ports import free_port_block
    from spikewire.tools.fault_proxy import FaultProxy
    from spikewire.streams.security import HandshakeWatch, Refusals

    target = free_port_block(1)  # nothing listens there yet
    ctx = zmq.Context()
    proxy = FaultProxy(target=("127.0.0.1", target)).start()
    try:
        refusals = Refusals("subscriber")
        sub = ctx.socket(zmq.XSUB)
        sub.setsockopt(zmq.LINGER, 0)
        watch = HandshakeWatch(sub, refusals, server=False)
        sub.send(b"\x01")
        sub.connect(proxy.endpoint)
        deadline = time.monotonic() + 5
        while proxy.stats()["connections"]["upstream_failures"] < 2:  # failed at start, and again
            assert time.monotonic() < deadline, proxy.stats()["connections"]
            watch.poll()
            time.sleep(0.02)
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(f"tcp://127.0.0.1:{target}")
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 3:  # the healthy connection carries messages
            assert time.monotonic() < deadline, (watch.handshakes, len(got))
            watch.poll()
            pub.send(b"packet")
            if sub.poll(50):
                got.append(sub.recv())
        watch.poll()
        assert watch.handshakes == 1
        # However long the link is quiet later on, the failure at start is no reason to reconnect.
        assert not watch.retry_due(time.monotonic() + 60.0, 1.0)
        # A dropped connection is not a refusal: nobody refused anything.
        assert refusals.total == 0, refusals.counts
        watch.close()
        for s in (sub, pub):
            s.close(linger=0)
    finally:
        proxy.stop()
        ctx.destroy(linger=0)


def test_a_refused_handshake_is_retried_until_one_succeeds():
    """The other half of ``retry_due``: a plaintext subscriber against a CURVE publisher fails on a protocol
    error, after which libzmq gives up; the runtime's retry is due (once) until a handshake succeeds."""
    from spikewire.streams.security import HandshakeWatch, Refusals

    ctx = zmq.Context()
    try:
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.curve_server = True
        pub.curve_publickey, pub.curve_secretkey = zmq.curve_keypair()
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        refusals = Refusals("subscriber")
        sub = ctx.socket(zmq.XSUB)
        sub.setsockopt(zmq.LINGER, 0)
        watch = HandshakeWatch(sub, refusals, server=False)
        sub.connect(f"tcp://127.0.0.1:{port}")
        deadline = time.monotonic() + 5
        while watch.failed_at is None:
            assert time.monotonic() < deadline, refusals.counts
            watch.poll()
            time.sleep(0.02)
        assert refusals.counts["mechanism_mismatch"] == 1
        failed = watch.failed_at
        assert not watch.retry_due(failed + 0.5, 1.0)
        assert watch.retry_due(failed + 1.0, 1.0) and not watch.retry_due(failed + 2.0, 1.0)  # once per failure
        watch.close()
        for s in (sub, pub):
            s.close(linger=0)
    finally:
        ctx.destroy(linger=0)
