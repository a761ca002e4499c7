"""Non-volatile weights a lab can trust (issue 11.8, 11.15): saved as they change, locked to one run,
and a run that does not start from r_init says so."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import read_json
from spikewire.launch.ports import free_port_block

pytestmark = pytest.mark.integration


def _stdp_net(tmp_path: Path, extra: str = "", r_init: float = 14e3, file: str = "learn.toml") -> Path:
    """Two pacemakers drive a crossbar's pre and post at 50 Hz: STDP potentiates on every post event."""
    net = tmp_path / file
    net.write_text(f"""
[network]
name = "learn"
[monitor]
base_port = {free_port_block(3)}
[nodes.pre]
kind = "source"
rate = 50.0
[nodes.post]
kind = "source"
rate = 50.0
[nodes.syn]
kind = "memristor"
r_init = {r_init}
[nodes.syn.synapses.mr1]
table = [[0, 0, 0, 0]]
plasticity = {{ rule = "stdp", ltp_voltage = 0.8, ltp_width = 1e-6 }}
[[links]]
from = "pre.out"
to = "syn.mr1.pre"
[[links]]
from = "post.out"
to = "syn.mr1.post"
{extra}
""")
    return net


def _node_pid(run, name: str) -> int:
    line = run.wait_for("started", timeout=30)
    m = re.search(rf"\b{name} \(pid (\d+)\)", line)
    if m is None:
        pytest.fail(f"no pid for {name} in {line!r}")
    return int(m.group(1))


def test_weights_survive_kill_9(cli_run, tmp_path):
    """Issue 11.15: learning is saved as it happens, so kill -9 of the node loses at most ~0.1 s of it."""
    run = cli_run("run", str(_stdp_net(tmp_path)), "--duration", "30", "--no-record")
    pid = _node_pid(run, "syn")
    run.wait_for("all nodes ready", timeout=60)
    state = tmp_path / ".spikewire" / "state" / "learn.syn.json"
    def learnt() -> float | None:  # the saved resistance once it moved off r_init (a rename: never half a file)
        try:
            r = json.loads(state.read_text())["resistance"][0][0]
        except OSError:
            return None
        return r if abs(r - 14e3) > 1 else None

    deadline = time.monotonic() + 20
    while learnt() is None:  # saved while running: never on main, where only a clean stop saved
        assert time.monotonic() < deadline, "the crossbar was not saved while learning"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    code, text = run.finish(timeout=60)
    assert code != 0, text  # a killed node is a failed run
    assert learnt() is not None  # the learning before the kill was kept


def test_state_file_is_locked_against_a_second_run(cli_run, tmp_path):
    net = _stdp_net(tmp_path)
    first = cli_run("run", str(net), "--duration", "20", "--no-record")
    first.wait_for("all nodes ready", timeout=60)
    other = _stdp_net(tmp_path, file="other.toml")  # the same network (name), other ports
    second = cli_run("run", str(other), "--duration", "5", "--no-record")
    code, text = second.finish(timeout=60)
    first.kill()
    # Refused before anything starts: one line naming the node, no traceback.
    assert code == 2 and "nodes.syn: " in text and "is in use by another run" in text, text
    assert "started" not in text and "Traceback" not in text, text


@pytest.mark.parametrize("content", ["{truncated", '{"resistance": [[1e9, NaN], [14000, -5]]}',
                                     '{"resistance": [[14000, 14000, 14000]]}', "\u0000\u0001binary"])
def test_a_spoilt_state_file_is_refused_before_anything_starts(cli_run, tmp_path, content):
    net = _stdp_net(tmp_path)
    state = tmp_path / ".spikewire" / "state" / "learn.syn.json"
    state.parent.mkdir(parents=True)
    state.write_text(content)
    code, text = cli_run("run", str(net), "--duration", "1", "--no-record").finish(timeout=60)
    assert code == 2 and text.count("\n") == 0 and "nodes.syn: " in text and "crossbar state" in text, text
    code, text = cli_run("run", str(net), "--duration", "1", "--no-record", "--reset-weights").finish(timeout=60)
    assert code == 0, text


def test_a_run_that_continues_saved_weights_says_so(cli_run, tmp_path):
    """Issue 11.8: a rerun restores saved weights loudly, the summary and provenance say from where,
    and [protocol] reset_weights = true starts fresh."""
    net = _stdp_net(tmp_path)
    code, text = cli_run("run", str(net), "--duration", "2", "--no-record").finish(timeout=60)
    assert code == 0, text
    out = tmp_path / "s.json"
    code, text = cli_run("run", str(net), "--duration", "1", "--json", str(out),
                         "--session-dir", str(tmp_path / "sess")).finish(timeout=60)
    assert code == 0, text
    assert "not from r_init" in text and "Warnings" in text
    report = read_json(out)
    start = report["nodes"]["syn"]["model"]["start_state"]
    assert start["source"] == "file" and start["path"].endswith("learn.syn.json"), start
    assert any("not from r_init" in w for w in report["warnings"])
    prov = json.loads((tmp_path / "sess" / "provenance.json").read_text())
    assert prov["start_state"]["syn"]["source"] == "file"

    fresh = _stdp_net(tmp_path, "[protocol]\nreset_weights = true\nphases = [{ name = \"a\", duration = 1.0 }]")
    code, text = cli_run("run", str(fresh), "--json", str(out), "--no-record").finish(timeout=60)
    assert code == 0, text
    report = read_json(out)
    assert report["nodes"]["syn"]["model"]["start_state"]["source"] == "reset"
    assert report["memristors"][0]["r_start"] == 14e3


def test_devices_starting_at_a_bound_are_flagged(cli_run, tmp_path):
    out = tmp_path / "s.json"
    code, text = cli_run("run", str(_stdp_net(tmp_path, r_init=17e3)), "--duration", "1", "--json", str(out),
                         "--no-record").finish(timeout=60)
    assert code == 0, text
    report = read_json(out)
    assert report["nodes"]["syn"]["model"]["start_state"]["at_r_max"] == ["mr1"]
    assert any("start at r_max" in w for w in report["warnings"]), report["warnings"]


def test_synaptic_output_has_a_sane_default_scale():
    """Issue 11.9: a synaptic crossbar without out_max delivered 1 A steps."""
    from spikewire.nodes.memristor import SynapseSettings

    assert SynapseSettings(output="synaptic").out_range == (0.0, 4e-9)
    assert SynapseSettings(output="stimulus").out_range == (0.0, 1.0)
