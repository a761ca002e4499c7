"""The session journal: exact round trips, damaged tails skipped and described, a killed node's journal
readable up to its last flush, and journal counts that match what the nodes counted."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest

from conftest import network_copy, read_json
from spikewire.streams.clock import local_clock
from spikewire.streams.journal import FLUSH_PERIOD, RECEIVED, SENT, JournalWriter, read_journal
from spikewire.streams.wire import DATA_KINDS, Kind, empty_events, encode


def _packet(seq: int, n: int = 2) -> bytes:
    ev = empty_events(n)
    ev["t"], ev["id"], ev["value"] = 1.5 + seq, np.arange(n), 0.25
    return encode(Kind.SPIKE, 7, seq, 2.0 + seq, ev)


def _write(path, n: int = 20) -> list[bytes]:
    w = JournalWriter(path, "zurich", ["out", "zurich.in"])
    packets = [_packet(i) for i in range(n)]
    for i, p in enumerate(packets):
        w.log(SENT if i % 2 else RECEIVED, "out" if i % 2 else "zurich.in", 10.0 + i, p)
    w.log(RECEIVED, "zurich.in", 99.0, b"garbage that is not a packet")
    w.close()
    return packets


def test_journal_round_trip_is_exact(tmp_path):
    path = tmp_path / "j.swj"
    packets = _write(path)
    r = read_journal(path)
    assert r.node == "zurich" and r.skipped_bytes == 0 and not r.problem
    assert [rec.raw for rec in r.records[:-1]] == packets
    assert [rec.direction for rec in r.records[:4]] == [RECEIVED, SENT, RECEIVED, SENT]
    assert r.records[1].port == "out" and r.records[0].port == "zurich.in" and r.records[3].logged == 13.0
    assert r.records[5].packet.sequence == 5 and r.records[5].packet.events["t"][0] == 6.5
    assert r.records[-1].packet is None and r.records[-1].raw == b"garbage that is not a packet"


@pytest.mark.parametrize("cut", [1, 7, 30])
def test_truncated_tail_is_skipped_and_measured(tmp_path, cut):
    path = tmp_path / "j.swj"
    _write(path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-cut])  # a crash mid-write
    r = read_journal(path)
    assert len(r.records) == 20  # everything before the damaged last record
    last_record = 8 + 12 + len(b"garbage that is not a packet")  # record header + body header + bytes
    assert r.problem.startswith("truncated") and r.skipped_bytes == last_record - cut


def test_corrupt_tail_fails_its_checksum(tmp_path):
    path = tmp_path / "j.swj"
    _write(path)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF
    path.write_bytes(bytes(data))
    r = read_journal(path)
    assert r.problem == "checksum mismatch" and r.skipped_bytes > 0 and len(r.records) < 21


def test_not_a_journal_is_refused(tmp_path):
    path = tmp_path / "x.swj"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not a spikewire journal"):
        read_journal(path)


@pytest.mark.integration
def test_journal_counts_match_what_the_nodes_counted(cli_run, tmp_path):
    session = tmp_path / "session"
    code, text = cli_run("run", str(network_copy("paper_loop.toml", tmp_path)), "--duration", "4",
                         "--session-dir", str(session)).finish(timeout=90)
    assert code == 0, text
    report = read_json(session / "summary.json")
    prov = read_json(session / "provenance.json")
    assert prov["versions"]["numba"] and prov["command_line"][1] == "run"
    assert set(prov["nodes"]) == {"zurich", "southampton", "padova"}
    assert all("ready" in v and "stopped" in v for v in prov["nodes"].values())
    assert (session / "network.toml").read_text().startswith("# The three-lab loop")
    journals = {n: read_journal(session / "journal" / f"{n}.swj") for n in ("zurich", "southampton", "padova")}
    for j in journals.values():
        assert j.skipped_bytes == 0 and not j.problem
    for link in report["links"]:
        src, dst = link["link"].split(" -> ")
        src_node, src_port = src.split(".", 1)
        dst_node = dst.split(".", 1)[0]
        sent = sum(1 for r in journals[src_node].records if r.direction == SENT and r.port == src_port)
        arrived = [r for r in journals[dst_node].records if r.direction == RECEIVED and r.port == src]
        received = sum(1 for r in arrived if r.packet is not None and r.packet.kind in DATA_KINDS)
        assert sent == link["sent"], link["link"]
        # One connection per upstream per node: the packet is journaled once however many ports it feeds.
        assert received == link["received"], link["link"]
        # The journal keeps everything that arrived: the link's heartbeats too (not counted as data).
        assert any(r.packet is not None and r.packet.kind == Kind.HEARTBEAT for r in arrived), link["link"]


@pytest.mark.integration
def test_a_killed_nodes_journal_reads_back_to_its_last_flush(cli_run, tmp_path):
    session = tmp_path / "session"
    run = cli_run("run", str(network_copy("paper_loop.toml", tmp_path)), "--duration", "60", "--session-dir",
                  str(session), "--status-every", "1")
    pids = dict((n, int(p)) for n, p in re.findall(r"(\w+) \(pid (\d+)\)", run.wait_for("started 3 nodes", 30)))
    run.wait_for("all nodes ready", timeout=60)
    for _ in range(3):
        run.wait_for("padova       t=", timeout=30, new_only=True)
    t_kill = local_clock()
    os.kill(pids["padova"], signal.SIGKILL)
    code, text = run.finish(timeout=60)
    assert code == 1 and "padova" in text
    j = read_journal(session / "journal" / "padova.swj")
    assert j.records, "the killed node's journal should hold what it flushed"
    last = max(r.logged for r in j.records)
    # Flushed every housekeeping period (50 ms, at most FLUSH_PERIOD): the loss window is small.
    assert t_kill - last < FLUSH_PERIOD + 0.3, f"last journaled {t_kill - last:.3f} s before the kill"
    assert j.skipped_bytes == 0 or j.problem.startswith("truncated")
    prov = read_json(session / "provenance.json")
    assert "died" in prov["nodes"]["padova"] and prov["outcome"].startswith("failed")


def test_a_journal_stops_at_its_cap_and_counts_what_it_left_out(tmp_path, caplog):
    path = tmp_path / "capped.swj"
    w = JournalWriter(path, "zurich", ["out"], max_bytes=10_000)
    for i in range(500):
        w.log(SENT, "out", float(i), _packet(i))  # 96 bytes a record
        if i % 50 == 0:
            w.flush()
    w.close()
    size = path.stat().st_size
    assert size <= 10_000 + 200, size  # the cap, give or take the file header
    r = read_journal(path)
    assert not r.problem and len(r.records) == w.records
    assert w.records + w.dropped == 500 and w.dropped > 350
    assert w.summary()["dropped"] == w.dropped
    assert sum("reached its cap" in m for m in caplog.messages) == 1  # logged once, then only counted


def test_run_refuses_a_zero_journal_cap(tmp_path):
    import subprocess

    from conftest import spikewire_cmd

    out = subprocess.run(spikewire_cmd("run", str(network_copy("paper_loop.toml", tmp_path)), "--journal-max-mb", "0"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--journal-max-mb: must be >= 1" in out.stderr
