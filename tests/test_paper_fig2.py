"""Acceptance: the paper's Fig. 2 protocol, run end to end as a scientist would run it.

`spikewire run launch/networks/paper_fig2.toml` (none / LTP / none / LTD, 10 s each) over real node
processes; the assertions are the paper's shape, read from the per-phase table of the JSON summary.
"""

from __future__ import annotations

import pytest

from conftest import network_copy, read_json

pytestmark = pytest.mark.integration


def test_fig2_protocol_reproduces_the_papers_shape(cli_run, tmp_path):
    out = tmp_path / "fig2.json"
    run = cli_run("run", str(network_copy("paper_fig2.toml", tmp_path)), "--json", str(out))
    code, text = run.finish(timeout=150)
    assert code == 0, text
    assert "Protocol phases" in text
    phases = {p["phase"]: p for p in read_json(out)["phases"]}
    assert list(phases) == ["none-1", "ltp", "none-2", "ltd"]
    none1, ltp, none2, ltd = (phases[k] for k in ("none-1", "ltp", "none-2", "ltd"))

    # ANpre follows the schedule: 10 Hz pacemaker, faster for LTP, slower for LTD.
    for phase, rate in ((none1, 10), (ltp, 30), (none2, 10), (ltd, 2)):
        assert phase["anpre Hz"] == pytest.approx(rate, abs=0.5), phase["phase"]

    # MR1 potentiates during LTP (resistance falls) and depresses during LTD (it rises).
    assert ltp["mr1 LTP"] > 0 and ltp["mr1 kOhm"] < none1["mr1 kOhm"] - 1.0
    assert ltd["mr1 LTD"] > 0 and ltd["mr1 kOhm"] > none2["mr1 kOhm"] + 1.0
    # Non-volatile in between: the 'none' phase at 10 Hz leaves it where LTP put it.
    assert none2["mr1 kOhm"] == pytest.approx(ltp["mr1 kOhm"], abs=0.3)

    # After LTP the same 10 Hz pacemaker evokes BN action potentials far more often ...
    assert none2["padova stim AP"] >= 2 * none1["padova stim AP"] + 10
    # ... and they fall once LTD starts.
    assert ltd["padova stim AP"] <= 0.5 * none2["padova stim AP"]
