"""Faults between sites, all on 127.0.0.1 and bounded in time: a site killed and restarted, random and
mutated packets on every listening port, and a sender ten times faster than its receiver."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import zmq

from conftest import CliRun, anpre_via, inter_site_link, read_json, sites_copy
from spikewire.config.network import load_network
from spikewire.streams.clock import local_clock
from spikewire.streams.wire import EVENT_DTYPE, Kind, WireError, decode, encode


def _session_events(folder: Path, node: str) -> list[dict]:
    """Runtime events (link down/up, restarts, interlock) from a session's status.jsonl."""
    out = []
    for line in (folder / "status.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("node") == node or rec.get("node") is None:
            out += [e for e in rec.get("log", []) if isinstance(e, dict) and "event" in e and e.get("node") == node]
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_site(run: CliRun) -> None:
    """SIGKILL a site's supervisor: its nodes die with it (PR_SET_PDEATHSIG), like a lab losing power."""
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(timeout=10)


def test_a_killed_site_is_noticed_within_a_second_and_rejoins(sites, tmp_path):
    group = sites(sites_copy(tmp_path))
    for site in ("zurich", "southampton"):
        group.start(site, 16.0)
    padova = group.start("padova", 60.0)
    for run in group.runs.values():
        run.wait_for("all nodes ready", timeout=60)
    deadline = time.monotonic() + 30  # the loop runs through Padova: Southampton's status line hears it
    while "padova" not in group.runs["southampton"].wait_for("southampton ", timeout=30, new_only=True):
        assert time.monotonic() < deadline, "Southampton never heard from Padova"
    pid, nodes = padova.proc.pid, _children(padova.proc.pid)
    assert nodes, "Padova's node process not found"
    _kill_site(padova)
    t_kill = local_clock()
    del group.runs["padova"]
    # Its node processes die with it (SIGTERM from the kernel on their parent's death); wait until they have.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(n) for n in nodes):
        time.sleep(0.05)
    assert not any(_alive(n) for n in nodes), "Padova's node outlived its supervisor"
    group.runs["southampton"].wait_for("padova.events silent for", timeout=10)  # noticed before Padova is back
    group.start("padova", 16.0, tag="2")  # Padova comes back (and outlasts the others); nobody else restarts
    out = group.finish(timeout=120)
    assert pid != group.runs["padova2"].proc.pid

    south = out["southampton"]
    row = inter_site_link(south, "padova.events -> southampton.mr2.pre")
    assert row["outages"] == 1 and row["restarts"] == 1 and row["state"] == "up", row
    # The restarted Padova's events arrived after its restart (its session is shorter than the gap).
    assert row["received"] > 0
    # Noticed within a second of the kill (peer_timeout 0.6 s + one housekeeping period).
    events = _session_events(tmp_path / "sessions" / "southampton", "southampton")
    down = [e for e in events if e["event"] == "link_down" and e["source"] == "padova.events"]
    assert down and 0 < down[0]["t"] - t_kill < 1.0, (down, t_kill)
    assert any(e["event"] == "link_up" and e["source"] == "padova.events" for e in events), events
    # The interlock held Southampton's stimulation and programming while Padova was gone, then released.
    holds = [e for e in events if e["event"] == "interlock_hold"]
    assert holds and any(e["event"] == "interlock_release" for e in events), events
    il = south["nodes"]["southampton"]["interlock"]
    assert il["holds"] >= 1 and il["held_s"] > 1.0, il
    # Zurich's link from Southampton never went down: Zurich was not disturbed.
    zrow = inter_site_link(out["zurich"], "southampton.mr2.out -> zurich.anpost.input")
    assert zrow["outages"] == 0 and zrow["restarts"] == 0, zrow


def _listening_ports(pids: list[int]) -> set[int]:
    """TCP ports on which any of these processes listens (from /proc, no tools needed)."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _ping_until_answered(sock: zmq.Socket, nonce: int, timeout: float) -> None:
    """Send a clock ping with ``nonce`` upstream (again every 0.2 s: pongs are rate-limited per second)
    until its pong comes back; fails the test after ``timeout`` s."""
    ev = np.zeros(1, EVENT_DTYPE)
    ev[0] = (1.0, nonce, 0.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.send(encode(Kind.CLOCK, 0, 0, 1.0, ev))
        until = time.monotonic() + 0.2
        while (left := until - time.monotonic()) > 0 and sock.poll(int(left * 1000) + 1):
            try:
                pk = decode(sock.recv())
            except WireError:
                continue
            if pk.kind == Kind.CLOCK and len(pk.events) == 2 and int(pk.events[0]["id"]) == nonce:
                return
    raise AssertionError(f"no pong for ping {nonce:#x} within {timeout} s")


def _metric(url: str, name: str) -> float:
    """The sum of a metric's samples at a live /metrics endpoint (0 if it has none yet)."""
    import urllib.request

    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _mutations(good: bytes, rng: random.Random, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        b = bytearray(good)
        how = i % 4
        if how == 0:  # flip a few bits anywhere
            for _ in range(rng.randint(1, 4)):
                j = rng.randrange(len(b))
                b[j] ^= 1 << rng.randrange(8)
        elif how == 1:  # truncate
            b = b[: rng.randrange(len(b))]
        elif how == 2:  # extend
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        else:  # overwrite a header field with random bytes
            j = rng.randrange(32)
            b[j : j + 4] = bytes(rng.randrange(256) for _ in range(4))
        out.append(bytes(b))
    return out


def test_random_and_mutated_packets_on_every_port(tmp_path):
    """Southampton runs alone (plaintext, so the fuzzer can speak ZMTP to it). Garbage bytes go to every
    TCP port its processes listen on; random and mutated packets come in as a fake Zurich (data) and go
    up to its publisher as a fake subscriber (pings). Every one is counted, and the site carries on."""
    net_path = sites_copy(tmp_path, curve=False, keys=False)
    net = load_network(net_path)
    rng = random.Random(7)
    ctx = zmq.Context()
    fake = ctx.socket(zmq.XPUB)  # bound before Southampton starts, so its subscriber joins at once
    fake.setsockopt(zmq.LINGER, 0)
    fake.setsockopt(zmq.XPUB_VERBOSE, 1)
    fake.bind(net.fixed_endpoint("zurich", "anpre.spikes", bind=True))
    run = CliRun("run", str(net_path), "--site", "southampton", "--start-wait", "0", "--duration", "40", "--json",
                 str(tmp_path / "s.json"), "--no-record", cwd=tmp_path)
    try:
        run.wait_for("all nodes ready", timeout=60)
        assert fake.poll(10_000), "Southampton never subscribed to the fake Zurich"
        fake.recv()
        # 1. Garbage on every listening TCP port of the site's processes (supervisor and node).
        ports = _listening_ports([run.proc.pid, *_children(run.proc.pid)])
        metrics_port = net.metrics_port("southampton")
        assert metrics_port in ports and len(ports) >= 4, ports  # metrics, mr1.out, mr2.out, control
        for port in sorted(ports):
            for n in (1, 16, 300, 5000):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(bytes(rng.randrange(256) for _ in range(n)))
        # 2. Random and mutated data packets from the fake Zurich; classify each as the runtime must.
        source = net.source_ids[("zurich", "anpre.spikes")]
        ev = np.zeros(3, EVENT_DTYPE)
        ev["t"], ev["value"] = local_clock(), 1.0
        packets = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 120))) for _ in range(100)]
        packets += _mutations(encode(Kind.SPIKE, source, 5, local_clock(), ev), rng, 300)
        packets += [encode(Kind.SPIKE, source, seq, local_clock(), ev) for seq in range(1000, 1010)]  # valid
        # Classify each as the runtime must: undecodable, foreign or of a kind mr1.pre refuses -> malformed;
        # link control (heartbeat, clock) -> neither; the rest (data) -> received, or malformed as
        # bad_sequence when its number is a corrupt jump (which of the two depends on what came before it).
        surely_bad, data, control = 0, 0, 0
        for p in packets:
            try:
                pk = decode(p)
            except WireError:
                surely_bad += 1
                continue
            if pk.source != source or pk.kind not in (Kind.SPIKE, Kind.PROBE, Kind.HEARTBEAT, Kind.CLOCK):
                surely_bad += 1
            elif pk.kind in (Kind.HEARTBEAT, Kind.CLOCK):
                control += 1
            else:
                data += 1
        for p in packets:
            fake.send(p)
        # 3. Random and mutated pings up to Southampton's publisher, from a plaintext subscriber. A ping that
        #    is answered shows the connection is up; one answered after the junk shows all of it was read
        #    (one connection keeps its order).
        up = ctx.socket(zmq.XSUB)
        up.setsockopt(zmq.LINGER, 0)
        up.send(b"\x01")
        up.connect(net.fixed_endpoint("southampton", "mr1.out", bind=False))
        ping = encode(Kind.CLOCK, 0, 0, 0.0, np.zeros(1, EVENT_DTYPE))
        _ping_until_answered(up, 0xC0FFEE, timeout=20)
        for p in _mutations(ping, rng, 100) + [bytes(rng.randrange(1, 256) for _ in range(20)) for _ in range(50)]:
            up.send(p)
        _ping_until_answered(up, 0xBEEF, timeout=20)
        # The site still serves metrics after all that.
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "spikewire_node_up" in text
        up.close(linger=0)
        run.proc.terminate()
        code, output = run.finish(timeout=60)
    finally:
        run.kill()
        fake.close(linger=0)
        ctx.destroy(linger=0)
    assert code == 0, output
    summary = read_json(tmp_path / "s.json")
    assert summary["nodes"]["southampton"]["final"], output
    row = inter_site_link(summary, "zurich.anpre.spikes -> southampton.mr1.pre")
    # Every packet is accounted for: accepted, dropped as malformed with a reason, or refused as a repeat of a
    # sequence number already delivered (the mutations keep many headers' sequence number 5).
    assert row["received"] + row["malformed"] + row["duplicates"] == len(packets) - control, (
        row, data, control, surely_bad)
    assert row["malformed"] >= surely_bad and row["received"] >= 10, (row, data, control, surely_bad)  # 10 valid
    assert set(row["malformed_by_reason"]) <= {"truncated", "bad_magic", "bad_version", "bad_kind", "bad_flags",
                                                "oversized", "non_finite", "unknown_source", "wrong_kind",
                                                "bad_sequence", "bad_time"}, row
    node = summary["nodes"]["southampton"]
    assert node["refused"].get("not_zmtp", 0) + node["refused"].get("protocol_error", 0) >= 8, node["refused"]
    # The publisher counted the junk sent up to it: everything that was not a well-formed ping (the
    # mutations that still are one get answered, harmlessly).
    assert node["outputs"]["mr1.out"]["upstream_malformed"] >= 100, node["outputs"]


def test_a_ten_times_faster_sender_keeps_memory_bounded_and_counts_drops(cli_run, tmp_path):
    """A 2,000 packet/s source into a sink that needs 5 ms per packet (200/s), with small queues: the
    sender drops at its full queue (counted), the receiver's gaps match, memory stays flat, and the slow
    node still answers the supervisor (a budgeted drain does not starve its loop)."""
    from spikewire.launch.ports import free_port_block

    net = tmp_path / "flood.toml"
    net.write_text(f"""
[network]
name = "flood"
[nodes.fast]
kind = "source"
rate = 2000.0
burst = 50                 # 848-byte packets: enough to fill the kernel's socket buffers too
[nodes.slow]
kind = "sink"
cost = 0.005
[[links]]
from = "fast.out"
to = "slow.in"
hwm = 200
sockbuf = 65536
[monitor]
base_port = {free_port_block(4)}
""")
    run = cli_run("run", str(net), "--duration", "6", "--json", str(tmp_path / "f.json"), "--no-record")
    code, output = run.finish(timeout=90)
    assert code == 0, output
    rep = read_json(tmp_path / "f.json")
    row = rep["links"][0]
    sent, dropped, received, gaps = row["sent"], row["send_queue_drops"], row["received"], row["gaps"]
    ticks = rep["nodes"]["fast"]["loop"]["ticks"]
    assert sent + dropped == ticks, row  # every packet the source made was sent or counted as dropped
    assert dropped > ticks / 2, row  # back-pressure reached the sender, and its drops were counted there
    assert received < ticks / 5, row  # the receiver really was the bottleneck
    # Nothing vanished between the ends: what was sent arrived, was lost (gaps), or was still queued.
    assert gaps == 0 and 0 <= row["in_flight"] == sent - received, row
    assert row["in_flight"] < 1000, row  # the queue between them is bounded by hwm and sockbuf
    # Bounded memory: neither process grew with the backlog. An idle node is ~150 MB (numba, numpy, zmq);
    # the queues here hold at most a few thousand 48-byte packets.
    for name in ("fast", "slow"):
        assert rep["nodes"][name]["process"]["max_rss_mb"] < 300, rep["nodes"][name]["process"]


def test_a_proxy_injecting_delay_jitter_loss_and_reordering_shows_in_the_metrics(sites, tmp_path):
    """Zurich -> Southampton goes through the fault proxy (20 ms each way, 10 ms jitter, 10 % loss, 10 %
    swaps) into a 100 ms jitter buffer, for 5 s; then the proxy only delays, so every count settles. The
    loop keeps running, and Southampton's figures for the link match what the proxy did, one for one."""
    from spikewire.launch.ports import free_port_block
    from spikewire.tools.fault_proxy import FaultProxy

    via_port = free_port_block(1)
    label = "zurich.anpre.spikes -> southampton.mr1.pre"

    net_path = sites_copy(tmp_path, curve=False, keys=False,
                          edit=anpre_via(via_port, 'delay = 0.1\nlate = "deliver"\n'))
    net = load_network(net_path)
    target = net.fixed_endpoint("zurich", "anpre.spikes", bind=False).removeprefix("tcp://").split(":")
    source = str(net.source_ids[("zurich", "anpre.spikes")])
    proxy = FaultProxy(listen=("127.0.0.1", via_port), target=(target[0], int(target[1])), delay=0.02,
                       jitter=0.01, loss=0.1, reorder=0.1, seed=3)
    proxy.start()
    try:
        group = sites(net_path)
        for site in ("zurich", "southampton", "padova"):
            group.start(site, 10.0)
        for run in group.runs.values():
            run.wait_for("all nodes ready", timeout=60)
        # Faults until enough were injected to show (~5 s of traffic) and Southampton's interlock held on them.
        holds = f"http://127.0.0.1:{net.metrics_port('southampton')}/metrics"
        deadline = time.monotonic() + 60
        while True:
            faulty = proxy.stats()["sources"].get(source, {})
            if faulty.get("dropped", 0) >= 6 and faulty.get("out_of_order", 0) >= 3 and _metric(
                    holds, "spikewire_interlock_holds_total") >= 1:
                break
            assert time.monotonic() < deadline, faulty
            time.sleep(0.1)
        proxy.set_faults(delay=0.02, jitter=0.0, loss=0.0, reorder=0.0)
        out = group.finish(timeout=120)
        stats = proxy.stats()
    finally:
        proxy.stop()
    src = stats["sources"][source]
    assert faulty.get("dropped", 0) >= 3 and faulty.get("out_of_order", 0) >= 3, faulty  # faults were injected
    row = inter_site_link(out["southampton"], label)
    # Exactly what was injected: every packet the proxy dropped is a gap, every one it reordered arrived
    # out of order, and nothing else was lost.
    assert row["gaps"] == src["dropped"] + src["discarded"], (row, src)
    assert row["out_of_order"] == src["out_of_order"], (row, src)
    assert row["received"] == src["forwarded"], (row, src)
    # 20 ms each way (+ up to 10 ms jitter): the latency and the clock exchange's round trip show it,
    # and the symmetric delay leaves the offset estimate near zero.
    assert 0.018 < row["latency_p50_s"] < 0.06, row
    assert 0.035 < row["rtt_s"] < 0.1 and abs(row["clock_offset_s"]) < 0.006, row
    # The jitter buffer turned 20-30 ms of jittery delay into a constant 100 ms. Only packets the proxy held
    # back for a swap (until the next message, up to ~100 ms later) could miss it; they were delivered
    # at once and counted late, as the link's policy says.
    jb = row["jitter_buffer"]
    assert jb["late_dropped"] == 0 and jb["late_delivered"] <= src["reordered_by_swap"], (jb, src)
    # The loop kept running through it (loop probes cross the proxied link and come back)...
    probes = out["zurich"]["probes"]
    assert probes["returned"] >= 20, probes
    # ... and the 10 % loss held Southampton's stimulation and programming, released once the faults stopped.
    il = out["southampton"]["nodes"]["southampton"]["interlock"]
    assert il["holds"] >= 1 and not il["holding"], il
