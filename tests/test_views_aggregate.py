"""Aggregate views of a 100 -> 10 memristor crossbar run through the real CLI: every status line is one
line within STATUS_WIDTH, `top` and the printed summary show a device set's mean / min / max and a
histogram while the JSON keeps all 1,000 devices, and `plot` draws a weight-matrix heatmap, not 1,000
traces. Then the pieces on their own: fitting a line, the rate wording, rig health on the status line."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT, CliRun, read_json, spikewire_cmd
from spikewire.config.network import load_network
from spikewire.launch.ports import free_port_block
from spikewire.monitor.report import STATUS_WIDTH, fit_line, rate_text, render_status
from spikewire.nodes.figures import AGGREGATE_ABOVE, Spread

PRE, POST = 100, 10


def crossbar_network(directory, duration: float = 4.0):
    """A 100 -> 10 STDP crossbar, every (pre, post) pair on device (wordline pre, bitline post), fed by a
    silicon node's Poisson population and feeding its 10 neurons back."""
    table = ",\n".join(f"  [{i}, {j}, {i}, {j}]" for i in range(PRE) for j in range(POST))
    half = duration / 2
    path = directory / "crossbar.toml"
    path.write_text(f"""
[network]
name = "crossbar100"
[protocol]
phases = [{{ name = "learn", duration = {half} }}, {{ name = "rest", duration = {half} }}]
[nodes.src]
kind = "silicon"
tick = 1e-3
[nodes.src.populations.pre]
size = {PRE}
drive = {{ kind = "poisson", rate = 5.0, weight = 4e-9 }}
[nodes.src.populations.post]
size = {POST}
[nodes.xbar]
kind = "memristor"
rows = {PRE}
cols = {POST}
persist = false
[nodes.xbar.synapses.w]
table = [
{table}
]
output = "synaptic"
out_min = 1.0e-10
out_max = 1.0e-9
plasticity = {{ rule = "stdp" }}
[[links]]
from = "src.pre.spikes"
to = "xbar.w.pre"
[[links]]
from = "xbar.w.out"
to = "src.post.input"
[[links]]
from = "src.post.spikes"
to = "xbar.w.post"
[monitor]
base_port = {free_port_block(3)}
""")
    return path


@pytest.fixture(scope="module")
def crossbar_run(tmp_path_factory):
    """The crossbar run for 4 s (status every 0.5 s) with `top` reading it meanwhile: (network file, run
    output, top output, session folder, JSON summary)."""
    where = tmp_path_factory.mktemp("crossbar")
    path = crossbar_network(where)
    folder, summary = where / "session", where / "summary.json"
    run = CliRun("run", str(path), "--duration", "4", "--status-every", "0.5", "--json", str(summary),
                 "--session-dir", str(folder), cwd=where)
    try:
        run.wait_for("all nodes ready", timeout=60)
        viewed = subprocess.run([sys.executable, "-m", "spikewire.monitor.top", str(path), "--iterations", "3",
                                 "--interval", "1"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                                check=False)
        code, out = run.finish(timeout=60)
    finally:
        run.kill()
    assert code == 0, out
    assert viewed.returncode == 0, viewed.stderr
    return path, out, viewed.stdout, folder, summary


@pytest.mark.integration
def test_status_lines_stay_one_line_and_aggregate(crossbar_run):
    _, out, _, _, _ = crossbar_run
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if "all nodes ready" in ln)
    end = next(i for i, ln in enumerate(lines) if ln.startswith("spikewire run of"))
    status = [ln for ln in lines[start + 1: end] if ln.strip() and not ln.startswith("[")]  # "[node] ..." is a log line
    assert len(status) >= 6, out
    for ln in status:
        assert len(ln) <= STATUS_WIDTH, f"{len(ln)} characters: {ln}"
    xbar = [ln for ln in status if ln.startswith("xbar ")]
    assert xbar and all(re.search(r"w 1000 dev \d+\.\d kOhm \[\d+\.\d\.\.\d+\.\d\]\[.{8}\] LTP/LTD \d+/\d+", ln)
                        for ln in xbar), xbar
    assert any(re.search(r"pre \d+\.\d Hz/neuron \([\d,]+ Hz all 100\)", ln) for ln in status), status
    assert any(re.match(r"protocol +t= *\d+\.\ds phase (learn|rest) \d/2", ln) for ln in status), status


@pytest.mark.integration
def test_top_shows_the_crossbar_in_aggregate(crossbar_run):
    _, _, viewed, _, _ = crossbar_run
    last = viewed.split("\n\n")[-1]
    row = next(ln for ln in last.splitlines() if ln.startswith("xbar "))
    assert re.search(r"w 1000 devices \d+\.\d\d kOhm mean \[\d+\.\d\d\.\.\d+\.\d\d\] sd \d+\.\d\d \[.{8}\] "
                     r"LTP \d+ LTD \d+", row), row
    assert "w[0->0]" not in last and len(row) < 300, row
    assert re.search(r"pre \d+\.\d Hz/neuron \([\d,]+ Hz all 100\)", last), last


@pytest.mark.integration
def test_summary_shows_mean_min_max_and_the_json_keeps_every_device(crossbar_run):
    path, out, _, _, summary_path = crossbar_run
    summary = read_json(summary_path)
    assert len(summary["memristors"]) == PRE * POST
    assert {(m["wordline"], m["bitline"]) for m in summary["memristors"]} == {(i, j) for i in range(PRE)
                                                                            for j in range(POST)}
    (dset,) = summary["device_sets"]
    assert dset["node"] == "xbar" and dset["set"] == "w" and dset["devices"] == PRE * POST
    ends = [m["r_end"] for m in summary["memristors"]]
    assert dset["r_end"]["mean"] == pytest.approx(sum(ends) / len(ends))
    assert (dset["r_end"]["min"], dset["r_end"]["max"]) == (min(ends), max(ends))
    assert sum(dset["r_end"]["counts"]) == PRE * POST
    assert dset["ltp_pulses"] == sum(m["ltp_pulses"] for m in summary["memristors"])
    text = out[out.index("spikewire run of"):]
    head = next(ln for ln in text.splitlines() if ln.startswith("node  set"))
    for column in ("R end mean kOhm", "min", "max", "sd", "R end histogram"):
        assert column in head, head
    row = next(ln for ln in text.splitlines() if ln.startswith("xbar  w"))
    assert f"{dset['r_end']['mean'] / 1e3:.3f}" in row and f"{dset['r_end']['min'] / 1e3:.3f}" in row, row
    assert "w[0->0]" not in text and len(text.splitlines()) < 80, text  # no 1,000 rows
    # The phase table has the set's mean, range and pulses, not 3,000 columns.
    phases = summary["phases"]
    assert {"w kOhm mean", "w kOhm min", "w kOhm max", "w LTP", "w LTD"} <= set(phases[0]), phases[0]
    assert not any(k.startswith("w[") for k in phases[0])


@pytest.mark.integration
def test_plot_draws_a_weight_matrix_and_a_histogram(crossbar_run, tmp_path):
    from spikewire.monitor.plot import build_figure

    _, _, _, folder, summary_path = crossbar_run
    out = tmp_path / "crossbar.png"
    done = subprocess.run(spikewire_cmd("plot", str(folder), "--out", str(out)), capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    fig = build_figure(folder)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    resistance = fig.axes[titles.index("memristor resistance")]
    entries = [t.get_text() for t in resistance.get_legend().get_texts()]
    assert len(resistance.lines) < 10 and len(entries) < 10, entries  # not 1,000 traces
    assert "xbar.w mean of 1000" in entries and "xbar.w min–max" in entries, entries
    images = [im for ax in fig.axes for im in ax.images if im.get_gid() == "device-heatmap"]
    assert len(images) == 1
    (image,) = images
    grid = image.get_array()
    assert grid.shape == (PRE, POST) and not grid.mask.any()
    summary = read_json(summary_path)
    by_address = {(m["wordline"], m["bitline"]): m["r_end"] for m in summary["memristors"]}
    assert grid[7, 3] == pytest.approx(by_address[(7, 3)] / 1e3)  # row = wordline (pre), column = bitline (post)
    heat = image.axes
    assert (heat.get_ylabel(), heat.get_xlabel()) == ("wordline", "bitline")
    assert "resistance by wordline × bitline (1000 devices)" in heat.get_title(loc="left")
    # the legend's pulse counts are the node's exact ones, whatever its pulse log kept one by one
    ltp, ltd = (sum(m[f"{k}_pulses"] for m in summary["memristors"]) for k in ("ltp", "ltd"))
    assert f"LTP pulse ({ltp})" in entries and f"LTD pulse ({ltd})" in entries, (entries, ltp, ltd)
    assert any("resistance at the end" in ax.get_ylabel() for ax in fig.axes)  # the colour bar
    hist = fig.axes[titles.index("xbar.w: distribution")]
    assert len(hist.patches) >= 2 and hist.get_ylabel() == "devices"


# --- the pieces -------------------------------------------------------------------------------------------

def test_fit_line_keeps_what_fits_and_counts_the_rest():
    parts = ["alpha " * 5, "beta " * 5, "gamma " * 30, "delta"]
    line = fit_line("node", parts, 80)
    assert len(line) <= 80 and line.endswith("+2 more") and "beta" in line
    assert fit_line("node", ["a", "b"], 80) == "node  a  b"
    assert len(fit_line("n" * 200, ["a"], 50)) == 50


def test_rates_are_per_neuron_and_per_population():
    assert rate_text("anpre", 1, 10.0) == "anpre 10.0 Hz"
    assert rate_text("pre", 100, 1234.0) == "pre 12.3 Hz/neuron (1,234 Hz all 100)"
    assert rate_text("pre", 100, None) == "pre - Hz"


def test_spread_and_the_aggregate_threshold():
    sp = Spread.of([1.0, 2.0, 3.0, 10.0])
    assert (sp.n, sp.min, sp.max, sp.mean) == (4, 1.0, 10.0, 4.0) and sum(sp.counts) == 4
    assert Spread.of([5.0, 5.0]).counts[0] == 2
    with pytest.raises(ValueError, match="non-empty"):
        Spread.of([])
    assert AGGREGATE_ABOVE == 16


def test_a_rig_that_is_down_leads_the_status_line(tmp_path):
    path = crossbar_network(tmp_path)
    net = load_network(path)
    figures = {"elapsed": 2.0, "populations": {"pre": {"size": 100, "spikes": 500}}, "devices": {},
               "rig": {"rig_up": False, "calibrated": False, "stim_ready": True, "stim_held": 4,
                       "stim_held_no_consumer": 0}}
    links = {f"{k}": {"label": f"xbar.w.out -> src.post.input{k}", "gaps": 0, "malformed": {},
                      "latency_s": {"count": 5, "p50": 1e-4, "p99": 2e-4}, "upstream": {"state": "up"}}
             for k in range(12)}
    st = {"t": 10.0, "elapsed": 2.0, "model": figures, "inputs": {"post.input": {"links": links}},
          "interlock": {"holding": True, "reason": "stale input"}}
    (proto, line, _) = render_status(net, {"src": st}, {"src": dict(st, t=9.0, model=dict(figures, populations={
        "pre": {"size": 100, "spikes": 0}}))})
    assert proto.startswith("protocol") and "phase rest 2/2 0.0/2s" in proto
    # What needs attention first; what no longer fits is counted, never wrapped.
    assert line == "src          t=  2.0s  INTERLOCK HOLD (stale input)  RIG DOWN UNCALIBRATED stim ok held 4  +2 more"
    wide = render_status(net, {"src": st}, {"src": dict(st, t=9.0, model=dict(figures, populations={
        "pre": {"size": 100, "spikes": 0}}))}, width=200)[1]
    assert wide.endswith("held 4  pre 5.0 Hz/neuron (500 Hz all 100)  <-xbar p50/p99 100/200us"), wide  # one connection
    assert json.dumps(st)  # a status message as the runtime sends it: plain JSON


def test_a_nodes_first_status_line_shows_its_rate_since_the_start(tmp_path):
    # Found from the outside: the first line of a busy population said 0.0 Hz (no earlier message to take a
    # difference from), and a node whose status came every 2 s showed it twice.
    net = load_network(crossbar_network(tmp_path))
    st = {"t": 10.0, "elapsed": 2.0, "model": {"elapsed": 2.0, "populations": {"pre": {"size": 100, "spikes": 2000}},
                                               "devices": {}}}
    (_, line, _) = render_status(net, {"src": st}, {"src": st}, width=200)
    assert "pre 10.0 Hz/neuron (1,000 Hz all 100)" in line, line
