"""`spikewire device --sweep`: one pulse's change against resistance, from the node's own crossbar model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spikewire.monitor import device as dev
from spikewire.core.settings import parse
from spikewire.nodes.memristor import MemristorSettings

from conftest import ROOT

NET = ROOT / "launch" / "networks" / "crossbar_100x10.toml"


def test_the_default_device_sweeps_and_says_where_pulses_balance(cli_run, tmp_path):
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    code, text = cli_run("device", "--sweep", "--json", str(out), "--out", str(png)).finish(timeout=60)
    assert code == 0, text
    s = json.loads(out.read_text())
    r, d_ltp, d_ltd = (np.array(s[k]) for k in ("r", "d_ltp", "d_ltd"))
    assert r[0] == s["r_min"] and r[-1] == s["r_max"] and len(r) == 41
    assert (d_ltp <= 0).all() and (d_ltd >= 0).all()  # LTP lowers R, LTD raises it, never past the range
    assert np.all(np.diff(s["after_ltp"]) <= 0) and np.all(np.diff(s["after_ltd"]) >= 0)
    assert s["tipping_r"] and all(s["r_min"] < x < s["r_max"] for x in s["tipping_r"])
    v = s["balancing_ltd_voltage"]
    assert -5 < v < 0
    # the suggested voltage does balance the LTP pulse at mid-range
    p = s["pulses"]
    settings = parse(MemristorSettings, {"synapses": {"s": {}}}, "device")
    check = dev.sweep(settings, dev.Pulses(p["ltp_voltage"], p["ltp_width"], v, p["ltd_width"]), points=3)
    assert abs(check.d_ltd[1]) == pytest.approx(abs(check.d_ltp[1]), rel=1e-3)
    assert "one LTD pulse undoes" in text and "tipping point" in text and png.stat().st_size > 10_000


def test_a_network_node_sweeps_with_its_groups_pulses(cli_run, tmp_path):
    out = tmp_path / "s.json"
    code, text = cli_run("device", str(NET), "crossbar", "--sweep", "--points", "5", "--json", str(out)).finish(timeout=60)
    assert code == 0, text
    assert json.loads(out.read_text())["pulses"]["ltd_voltage"] == -0.9 and len(json.loads(out.read_text())["r"]) == 5


@pytest.mark.parametrize("args, words", [
    ((str(NET), "nope", "--sweep"), "no node 'nope'"),
    ((str(NET), "chip", "--sweep"), "not a node of programmable devices"),
    ((str(NET), "crossbar", "--group", "x", "--sweep"), "no synapse group 'x'"),
    ((str(NET), "--sweep"), "give both NETWORK and NODE"),
    ((), "--sweep"),
    (("--sweep", "--points", "2"), "--points"),
])
def test_bad_arguments_are_one_line_errors(cli_run, args, words):
    code, text = cli_run("device", *args).finish(timeout=60)
    assert code == 2 and words in text and "Traceback" not in text, text


def test_an_instrument_is_never_programmed(monkeypatch):
    from spikewire.nodes import crossbar as cb
    from spikewire.nodes.tiox import TiOxCrossbar

    class Instrument(TiOxCrossbar):
        persistent = False

        def pulse(self, *a):
            raise AssertionError("a sweep programmed a real device")
    monkeypatch.setattr(cb, "crossbar_class", lambda name: Instrument)
    settings = parse(MemristorSettings, {"synapses": {"s": {}}}, "device")
    with pytest.raises(ValueError, match="instrument"):
        dev.sweep(settings, dev.Pulses(0.8, 1e-4, -0.9, 1e-4))
