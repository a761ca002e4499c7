"""Replay: a live node rerun offline against a recorded session gets exactly what it got the first time."""

from __future__ import annotations

import pytest

from conftest import network_copy, read_json
from spikewire.streams.journal import RECEIVED, SENT, read_journal
from spikewire.streams.wire import DATA_KINDS, Kind

pytestmark = pytest.mark.integration


def _data(records, direction, port):
    """(offset from the first, event times) of a journal's data packets on one port/source, probes left out."""
    return [r for r in records if r.direction == direction and r.port == port and r.packet is not None
            and r.packet.kind in DATA_KINDS and r.packet.kind != Kind.PROBE and len(r.packet.events)]


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
