"""Replay: a live node rerun offline against a recorded session gets exactly what it got the first time;
what it reads comes from the session reader, and what it cannot replay is refused in one line."""

from __future__ import annotations

import json

import pytest

from conftest import network_copy, read_json
from spikewire.streams.journal import RECEIVED, SENT, read_journal
from spikewire.streams.wire import DATA_KINDS, Kind


def _data(records, direction, port):
    """(offset from the first, event times) of a journal's data packets on one port/source, probes left out."""
    return [r for r in records if r.direction == direction and r.port == port and r.packet is not None
            and r.packet.kind in DATA_KINDS and r.packet.kind != Kind.PROBE and len(r.packet.events)]


@pytest.mark.integration
def test_replay_feeds_a_live_node_the_recorded_traffic_with_its_timing(cli_run, tmp_path):
    original = tmp_path / "original"
    code, text = cli_run("run", str(network_copy("paper_loop.toml", tmp_path)), "--duration", "4",
                         "--session-dir", str(original), "--reset-weights").finish(timeout=90)
    assert code == 0, text
    replay_dir = tmp_path / "replay"
    code, text = cli_run("replay", str(original), "--nodes", "southampton", "--session-dir",
                         str(replay_dir)).finish(timeout=90)
    assert code == 0, text
    assert "replaying zurich, padova" in text
    t0_orig = read_json(original / "provenance.json")["t0_local_clock"]
    t0_new = read_json(replay_dir / "provenance.json")["t0_local_clock"]
    recorded = {n: read_journal(original / "journal" / f"{n}.swj").records for n in ("zurich", "padova")}
    live = read_journal(replay_dir / "journal" / "southampton.swj").records
    for node, port in (("zurich", "anpre.spikes"), ("padova", "events"), ("zurich", "anpost.spikes")):
        sent = _data(recorded[node], SENT, port)
        got = _data(live, RECEIVED, f"{node}.{port}")
        assert len(got) == len(sent), f"{node}.{port}: replayed {len(got)} of {len(sent)} packets"
        orig_t = sorted(t - t0_orig for r in sent for t in r.packet.events["t"])
        new_t = sorted(t - t0_new for r in got for t in r.packet.events["t"])
        assert max(abs(a - b) for a, b in zip(orig_t, new_t)) < 1e-9  # event times shifted exactly
        orig_off = [r.logged - t0_orig for r in sent]
        new_off = [r.logged - t0_new for r in got]
        # Delivered when they were recorded as sent: within a tick plus this machine's jitter.
        assert max(abs(a - b) for a, b in zip(orig_off, new_off)) < 0.05
    summary = read_json(replay_dir / "summary.json")
    assert summary["nodes"]["zurich"]["model"]["replayed_packets"] == len(_data(recorded["zurich"], SENT, "anpre.spikes")) \
        + len(_data(recorded["zurich"], SENT, "anpost.spikes"))


# --- without processes: what the replay reads -----------------------------------------------------------------
def test_a_replay_node_takes_its_journal_and_t0_from_the_reader(tmp_path):
    import numpy as np

    from spikewire.nodes.base import NodeSettings, OutPort
    from spikewire.nodes.replay import ReplayNode
    from spikewire.streams.journal import JournalWriter
    from spikewire.streams.wire import EVENT_DTYPE, encode

    path = tmp_path / "elsewhere.swj"
    w = JournalWriter(path, "zurich", ["out"])
    w.log(SENT, "out", 101.5, encode(Kind.SPIKE, 1, 0, 101.5, np.array([(101.5, 0, 1.0)], dtype=EVENT_DTYPE)))
    w.close()
    outputs = {"out": OutPort(Kind.SPIKE)}
    node = ReplayNode("zurich", NodeSettings(), outputs, tmp_path / "no-session", journal=path, t0=100.0)
    assert [(off, port, ev["t"].tolist()) for off, port, ev in node.queue] == [(1.5, "out", [1.5])]
    # Without them (an older caller), the session's provenance must record t0: a clear error if not.
    session = tmp_path / "session"
    (session / "journal").mkdir(parents=True)
    path.rename(session / "journal" / "zurich.swj")
    (session / "provenance.json").write_text(json.dumps({"created": "2025-01-01T00:00:00+00:00"}))
    with pytest.raises(ValueError, match="records no t0_local_clock"):
        ReplayNode("zurich", NodeSettings(), outputs, session)
    with pytest.raises(ValueError, match="speed must be a finite number > 0"):
        ReplayNode("zurich", NodeSettings(), outputs, session, 0.0, t0=100.0)


def test_replay_refuses_what_it_cannot_replay_in_one_line(tmp_path, capsys):
    from conftest import NETWORKS

    from spikewire.config.session import Session
    from spikewire.launch.cli import main

    assert main(["replay", str(tmp_path / "nowhere"), "--nodes", "zurich"]) == 2
    assert "no such session folder" in capsys.readouterr().err
    site = Session(tmp_path / "site", NETWORKS / "paper_loop.toml", site="zurich", nodes=["zurich"])
    site.provenance["t0_local_clock"] = 100.0
    site.write()
    assert main(["replay", str(tmp_path / "site"), "--nodes", "zurich"]) == 2
    assert "a session of site 'zurich' only" in capsys.readouterr().err
    killed = Session(tmp_path / "killed", NETWORKS / "paper_loop.toml")
    killed.node_event("zurich", "ready", 100.0)  # then killed before it wrote t0: replay cannot place it
    killed.write()
    assert main(["replay", str(tmp_path / "killed"), "--nodes", "zurich"]) == 2
    err = capsys.readouterr().err
    assert "no t0 recorded" in err and err.count("\n") == err.count("spikewire replay: warning: ") + 1, err
