"""The real three-process loop over loopback: traffic on every link, clean stops, node death."""

from __future__ import annotations

import os
import re
import signal
import time

import psutil
import pytest

from conftest import network_copy, read_json

pytestmark = pytest.mark.integration


def _pids(line: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"(\w+) \(pid (\d+)\)", line)}


def _all_gone(pids, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_paper_loop_carries_traffic_on_every_link(cli_run, tmp_path):
    out = tmp_path / "summary.json"
    run = cli_run("run", str(network_copy("paper_loop.toml", tmp_path)), "--duration", "5", "--json", str(out))
    code, text = run.finish(timeout=90)
    assert code == 0, text
    report = read_json(out)
    assert report["outcome"] == "completed"
    links = {ln["link"]: ln for ln in report["links"]}
    assert len(links) == 6
    for name, ln in links.items():
        assert ln["received"] and ln["received"] > 0, f"no traffic on {name}"
        assert ln["sent"] == ln["received"] + ln["dropped"], name  # nothing in flight after the drain
        assert ln["in_flight"] == 0, name
        assert ln["malformed"] == 0 and ln["dropped"] == 0, name
        assert 0 < ln["latency_p50_s"] < 0.05, name
    neurons = {(n["node"], n["population"]): n for n in report["neurons"]}
    assert 40 <= neurons[("zurich", "anpre")]["spikes"] <= 60  # 10 Hz pacemaker for ~5 s
    bn = neurons[("padova", "padova")]
    assert bn["stimuli"] == links["zurich.anpre.spikes -> southampton.mr1.pre"]["events"]
    assert {m["name"] for m in report["memristors"]} == {"mr1", "mr2"}
    for m in report["memristors"]:
        assert 10e3 <= m["r_end"] <= 17e3
    for name, node in report["nodes"].items():
        assert node["final"], name
        assert node["process"]["max_rss_mb"] < 400, name
    assert "Links" in text and "Memristors" in text and "Neurons" in text


def test_kill_9_of_a_node_stops_the_run_and_names_it(cli_run, tmp_path):
    net = str(network_copy("paper_loop.toml", tmp_path))
    run = cli_run("run", net, "--duration", "60", "--json", str(tmp_path / "s.json"))
    pids = _pids(run.wait_for("started 3 nodes", timeout=30))
    run.wait_for("all nodes ready", timeout=60)
    t_kill = time.monotonic()
    os.kill(pids["padova"], signal.SIGKILL)
    run.wait_for("died", timeout=5)
    noticed = time.monotonic() - t_kill
    code, text = run.finish(timeout=30)
    assert code != 0
    assert "node 'padova' died (killed by SIGKILL)" in text
    assert noticed < 3.0, f"took {noticed:.2f} s to notice"  # the supervisor polls every 0.1 s
    assert _all_gone(pids.values()), "a node process outlived the supervisor"
    report = read_json(tmp_path / "s.json")
    assert report["outcome"].startswith("failed")
    assert report["nodes"]["zurich"]["final"] and report["nodes"]["southampton"]["final"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_summary(cli_run, tmp_path, sig):
    run = cli_run("run", str(network_copy("paper_loop.toml", tmp_path)), "--json", str(tmp_path / "s.json"))
    pids = _pids(run.wait_for("started 3 nodes", timeout=30))
    run.wait_for("all nodes ready", timeout=60)
    run.proc.send_signal(sig)
    code, text = run.finish(timeout=30)
    assert code == 0, text
    report = read_json(tmp_path / "s.json")
    assert report["outcome"] == f"stopped by {sig.name}"
    assert all(n["final"] for n in report["nodes"].values())
    assert _all_gone(pids.values())


def test_memristor_weights_persist_across_runs_unless_reset(cli_run, tmp_path):
    net = str(network_copy("paper_loop.toml", tmp_path))

    def run(*extra):
        out = tmp_path / "s.json"
        code, text = cli_run("run", net, "--duration", "2", "--json", str(out), *extra).finish(timeout=60)
        assert code == 0, text
        return {m["name"]: m for m in read_json(out)["memristors"]}, text

    first, _ = run()
    assert all(m["r_start"] == 14e3 for m in first.values())
    second, text = run()
    assert "crossbar restored from" in text
    for name in first:
        assert second[name]["r_start"] == first[name]["r_end"], name
    fresh, text = run("--reset-weights")
    assert all(m["r_start"] == 14e3 for m in fresh.values())
    assert "starts fresh" in text


def test_a_corrupt_weight_file_stops_the_run_with_its_name(cli_run, tmp_path):
    state = tmp_path / ".spikewire" / "state" / "paper_loop.southampton.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"resistance": [[1.0, 2.0], [3.0, 4.0]]}')  # far outside the device range
    code, text = cli_run("run", str(network_copy("paper_loop.toml", tmp_path)), "--duration", "2").finish(timeout=60)
    # Refused before any node starts, in one line naming the node and the file.
    assert code == 2 and "started" not in text, text
    assert "nodes.southampton: " in text and "outside the device range" in text and str(state) in text
