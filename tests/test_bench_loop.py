"""`spikewire bench loop`: the paper's loop against raw pyzmq (and ezmsg, installed by `make test`), for real
and briefly; its JSON keeps the schema the README documents."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import psutil
import pytest

from conftest import network_copy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_bench_loop_measures_all_three_systems_hop_by_hop(tmp_path):
    net = network_copy("paper_loop.toml", tmp_path)
    out = tmp_path / "loop.json"
    done = subprocess.run([sys.executable, "-m", "spikewire", "bench", "loop", "--rates", "20", "--rounds", "1",
                           "--duration", "6", "--network", str(net), "--json", str(out)],
                          capture_output=True, text=True, timeout=200, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["bench"] == "loop" and report["version"] == 1 and report["rounds"] == 1
    systems = report["rates"]["20"]
    expected = {"raw pyzmq", "spikewire"} | ({"ezmsg"} if importlib.util.find_spec("ezmsg") else set())
    assert set(systems) == expected
    for name, r in systems.items():
        rt = r["round_trip_us"]
        assert r["returned"] >= 0.9 * r["sent"] > 0, name
        assert 50 < rt["p50"] <= rt["p99"] <= rt["max"] < 100_000, (name, rt)
        assert len(r["processes"]) == 3 and all(p["rss_mb"] > 10 for p in r["processes"].values()), name
        assert r["loop_cpu_pct"] > 0, name
    sw = systems["spikewire"]
    hops = sw["hops"]
    # in the loop's order, each link's transit then the time inside the node it reached
    assert list(hops) == ["zurich.anpre.spikes -> southampton.mr1.pre", "in southampton (mr1.pre)",
                          "southampton.mr1.out -> padova.stim", "in padova (stim)",
                          "padova.events -> southampton.mr2.pre", "in southampton (mr2.pre)",
                          "southampton.mr2.out -> zurich.anpost.input"]
    for hop, h in hops.items():
        assert 0 < h["p50"] < sw["round_trip_us"]["p50"], hop
    waits = sw["event_to_sent_us"]  # outputs leave when final: a spike within a few steps of its time
    assert waits["zurich.anpre.spikes"]["p50"] < 1000 and waits["padova.events[psp]"]["p50"] >= 20_000
    # the hops account for the round trip (the rest: zurich stamping, sending and receiving its own probe)
    assert sum(h["p50"] for h in hops.values()) < 1.2 * sw["round_trip_us"]["p50"]
    assert all(p["wakes_per_s"] > 1 for p in sw["processes"].values())
    assert set(report["ratios"]["20"]) >= {"p50", "p99"}
    assert "round trip at 20 Hz" in done.stdout and "hop by hop" in done.stdout
    assert not [p for p in psutil.Process().children(recursive=True) if p.is_running()], "processes left behind"


@pytest.mark.parametrize("args, words", [
    (["--rates", "0"], "rates 1-1000 Hz"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--duration", "-1"], "--duration"),
    (["--network", "/nonexistent.toml"], "/nonexistent.toml"),
])
def test_bench_loop_refuses_bad_arguments_in_one_line(args, words):
    done = subprocess.run([sys.executable, "-m", "spikewire", "bench", "loop", *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr


def test_bench_loop_needs_a_probe(tmp_path):
    net = network_copy("paper_loop.toml", tmp_path)
    net.write_text(net.read_text().replace('probe_from = "zurich.anpre.spikes"', ""))
    done = subprocess.run([sys.executable, "-m", "spikewire", "bench", "loop", "--network", str(net)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no [monitor] probe_from" in done.stderr
