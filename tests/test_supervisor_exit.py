"""Issue 11, item 18: a run whose node had to be killed at stop is a failed run, and says which node.

A real two-node network runs under the real supervisor; one node is frozen with SIGSTOP while it runs, so
at stop it neither answers nor sends its final report, and the supervisor has to kill it.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from conftest import read_json
from spikewire.launch.ports import free_port_block

pytestmark = pytest.mark.integration


def _pair(tmp_path):
    path = tmp_path / "pair.toml"
    path.write_text(f"""
[network]
name = "pair"
[nodes.src]
kind = "source"
rate = 100.0
[nodes.snk]
kind = "sink"
[[links]]
from = "src.out"
to = "snk.in"
[monitor]
base_port = {free_port_block(2)}
""")
    return path


def test_a_node_killed_at_stop_without_a_final_report_fails_the_run(cli_run, tmp_path):
    session = tmp_path / "session"
    run = cli_run("run", str(_pair(tmp_path)), "--duration", "2", "--json", str(tmp_path / "s.json"),
                  "--session-dir", str(session))
    started = run.wait_for("started 2 nodes", timeout=30)
    pid = int(re.search(r"snk \(pid (\d+)\)", started).group(1))
    run.wait_for("all nodes ready", timeout=60)
    os.kill(pid, signal.SIGSTOP)  # frozen: it will neither stop nor report; the supervisor must kill it
    try:
        code, text = run.finish(timeout=60)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)  # never leave it stopped, whatever the supervisor did
        except ProcessLookupError:
            pass
    assert code == 1, text
    assert re.search(r"node 'snk' .*killed.*no final report", text), text
    summary = read_json(tmp_path / "s.json")
    assert summary["outcome"].startswith("failed") and "snk" in summary["outcome"], summary["outcome"]
    assert summary["killed_at_stop"] == {"snk": {"final_report": False}}, summary.get("killed_at_stop")
    assert summary["nodes"]["src"]["final"] and not summary["nodes"]["snk"]["final"]
    prov = read_json(session / "provenance.json")
    assert "snk" in prov["outcome"] and prov["nodes"]["snk"]["killed"]["final_report"] is False, prov
    assert "killed" not in prov["nodes"]["src"]


def test_a_clean_stop_still_exits_0(cli_run, tmp_path):
    run = cli_run("run", str(_pair(tmp_path)), "--duration", "1", "--json", str(tmp_path / "s.json"), "--no-record")
    code, text = run.finish(timeout=60)
    assert code == 0, text
    summary = read_json(tmp_path / "s.json")
    assert summary["outcome"] == "completed" and summary.get("killed_at_stop", {}) == {}, summary
