"""The Crossbar seam from outside: examples/linear_crossbar is a separate package adding the device model
``linear`` through the ``spikewire.crossbars`` entry point. A network using it runs the paper's Fig. 2
protocol; its devices' resistances and pulses show as devices (never units) in the phase table, the
metrics and the NWB export, with the model's own step (400 Ohm per LTP pulse at the configured rate)."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
import warnings
from importlib import metadata

import numpy as np
import pytest

from conftest import ROOT, read_json
from spikewire.launch.ports import free_port_block

EXAMPLE = ROOT / "examples" / "linear_crossbar"
STEP = 5e6 * 0.8 * 100e-6  # rate x LTP voltage x width = 400 Ohm


def _installed() -> None:
    found = {ep.name: ep.value for ep in metadata.entry_points(group="spikewire.crossbars")}
    if found.get("linear") != "spikewire_linear.crossbar:LinearCrossbar":
        pytest.fail("examples/linear_crossbar is not installed in this venv (`make test` installs it)")


def test_the_model_is_one_small_class_outside_spikewire():
    _installed()
    from spikewire.nodes.crossbar import crossbars

    assert crossbars()["linear"].__module__ == "spikewire_linear.crossbar"
    assert len((EXAMPLE / "spikewire_linear" / "crossbar.py").read_text().splitlines()) < 80


def test_linear_devices_show_as_devices_in_phase_table_metrics_and_nwb(tmp_path, cli_run):
    _installed()
    base = free_port_block(8)
    net = tmp_path / "fig2_linear.toml"
    net.write_text(re.sub(r"base_port = \d+", f"base_port = {base}", (EXAMPLE / "fig2_linear.toml").read_text())
                   .replace("duration = 2.0", "duration = 1.5")
                   .replace("[[0, 10.0], [2, 30.0], [4, 10.0], [6, 2.0]]", "[[0, 10.0], [1.5, 30.0], [3, 10.0], [4.5, 2.0]]"))
    session, out = tmp_path / "session", tmp_path / "summary.json"
    run = cli_run("run", str(net), "--session-dir", str(session), "--json", str(out))
    run.wait_for("all nodes ready", timeout=90)

    # Metrics: southampton (second node: base_port + 1) exports each device's resistance.
    text = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and 'device="mr1"' not in text:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{base + 1}/metrics", timeout=2) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    assert re.search(r'^spikewire_memristor_resistance_ohms\{device="mr1",node="southampton"\} 1\d{4}', text, re.M) \
        or re.search(r'^spikewire_memristor_resistance_ohms\{node="southampton",device="mr1"\} 1\d{4}', text, re.M), text

    code, output = run.finish(timeout=60)
    assert code == 0, output
    summary = read_json(out)
    mr1 = next(m for m in summary["memristors"] if m["name"] == "mr1")
    assert mr1["ltp_pulses"] > 0 and mr1["wordline"] == 0 and mr1["bitline"] == 0
    assert not [n for n in summary["neurons"] if n["node"] == "southampton"]
    ltp = next(p for p in summary["phases"] if p["phase"] == "ltp")
    assert ltp["mr1 LTP"] > 0 and "mr1 kOhm" in ltp and "mr2 kOhm" in ltp

    from pynwb import NWBHDF5IO

    from spikewire.monitor.nwb_export import export_nwb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_nwb(session, tmp_path / "linear.nwb")
    with NWBHDF5IO(str(tmp_path / "linear.nwb"), "r") as io:
        nwb = io.read()
        assert "southampton" not in set(nwb.units.to_dataframe()["node"])
        series = nwb.acquisition["resistance_mr1"]
        assert series.unit == "ohm" and len(series.data) > 2
        pulses = nwb.get_events_table("plasticity_pulses").to_dataframe() if hasattr(nwb, "get_events_table") \
            else nwb.events["plasticity_pulses"].to_dataframe()
    ltp_rows = pulses[(pulses["device"] == "mr1") & (pulses["direction"] == "ltp")]
    assert len(ltp_rows) == mr1["ltp_pulses"]
    assert set(np.round(ltp_rows["voltage"], 6)) == {0.8}
    steps = (ltp_rows["r_before"] - ltp_rows["r_after"]).to_numpy()
    unclipped = ltp_rows["r_after"].to_numpy() > 10e3 + 1e-6
    assert np.allclose(steps[unclipped], STEP), steps
