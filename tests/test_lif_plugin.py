"""The element contract from outside: examples/lif_plugin is a separate package (its own pyproject.toml,
an entry point in ``spikewire.elements``) adding ``kind = "lif"``; no line of spikewire names it. `make
test` installs it. A network using it runs, and its spikes show in the run summary, on the node's
Prometheus endpoint, in `spikewire plot`'s data and in the NWB export as units of the right population."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
import warnings
from importlib import metadata
from pathlib import Path

import pytest

from spikewire.launch.ports import free_port_block
from conftest import ROOT, read_json

EXAMPLE = ROOT / "examples" / "lif_plugin"
SIZE = 20


def _plugin_installed() -> None:
    names = {ep.name: ep.value for ep in metadata.entry_points(group="spikewire.elements")}
    if names.get("lif") != "spikewire_lif.node:LifNode":
        pytest.fail("examples/lif_plugin is not installed in this venv (`make test` installs it: "
                    "pip install examples/lif_plugin)")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def test_the_plugin_kind_is_registered_without_touching_spikewire():
    _plugin_installed()
    from spikewire.nodes.element import kinds

    cls = kinds()["lif"]
    assert cls.__module__ == "spikewire_lif.node"
    src = (EXAMPLE / "spikewire_lif" / "node.py").read_text().splitlines()
    assert len(src) < 100, f"the node class file has {len(src)} lines"
    assert not list(ROOT.glob("nodes/*lif*")), "spikewire itself must not carry the LIF kind"
    package = [p for d in ("spikewire", "core", "streams", "nodes", "config", "monitor", "launch", "tools", "bench")
               for p in (ROOT / d).rglob("*.py")]
    assert len(package) > 50 and not any("spikewire_lif" in p.read_text() or '"lif"' in p.read_text()
                                         for p in package), "a spikewire module names the plugin"


def test_a_network_with_the_plugin_kind_runs_and_shows_everywhere(tmp_path, cli_run):
    _plugin_installed()
    base = free_port_block(8)
    net = tmp_path / "lif_loop.toml"
    net.write_text(re.sub(r"base_port = \d+", f"base_port = {base}", (EXAMPLE / "lif_loop.toml").read_text()))
    session, summary_path = tmp_path / "session", tmp_path / "summary.json"
    run = cli_run("run", str(net), "--duration", "3", "--session-dir", str(session), "--json", str(summary_path))
    run.wait_for("all nodes ready", timeout=90)

    # Prometheus: the cortex node (third: base_port + 2) exports the population's spikes while running.
    spikes = 0.0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not spikes:
        try:
            m = re.search(r'^spikewire_spikes_total\{node="cortex",population="cortex"\} (\S+)$', _scrape(base + 2),
                          re.M)
        except (urllib.error.URLError, OSError):
            m = None
        spikes = float(m.group(1)) if m else 0.0
        time.sleep(0.3)
    assert spikes > 0, "no cortex spikes on its metrics endpoint"

    code, out = run.finish(timeout=60)
    assert code == 0, out
    summary = read_json(summary_path)
    (row,) = [n for n in summary["neurons"] if n["node"] == "cortex"]
    assert row["population"] == "cortex" and row["neuron"] == f"all {SIZE}" and row["spikes"] > 3 * SIZE, row
    assert summary["nodes"]["cortex"]["kind"] == "lif"
    link = next(ln for ln in summary["links"] if ln["link"] == "southampton.syn.out -> cortex.input")
    assert link["received"] == link["sent"] > 0 and link["out_of_range"] == 0, link

    # spikewire plot: the data it draws has the LIF population as a spiking node of the right size.
    from spikewire.monitor.plot import plot_session, read_session

    png = plot_session(session, tmp_path / "lif.png")
    assert Path(png).stat().st_size > 10_000
    data = read_session(session)
    (cortex,) = [n for n in data.nodes if n.name == "cortex"]
    assert cortex.sizes == {"cortex": SIZE}
    times, ids = cortex.populations["cortex"]
    assert len(times) == row["spikes"] and set(ids.tolist()) <= set(range(SIZE))

    # NWB: one unit per LIF neuron, with the population and its spikes.
    from pynwb import NWBHDF5IO

    from spikewire.monitor.nwb_export import export_nwb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_nwb(session, tmp_path / "lif.nwb")
    with NWBHDF5IO(str(tmp_path / "lif.nwb"), "r") as io:
        units = io.read().units.to_dataframe()
    mine = units[units["node"] == "cortex"]
    assert len(mine) == SIZE and set(mine["population"]) == {"cortex"} and set(mine["node_kind"]) == {"lif"}
    assert sorted(mine["neuron_id"]) == list(range(SIZE))
    assert sum(len(t) for t in mine["spike_times"]) == row["spikes"]


def test_figures_of_a_population_the_kind_does_not_declare_are_a_report_warning(tmp_path):
    """A plugin whose figures name another population than it declares would make the summary and the
    NWB export disagree: the report says so."""
    from spikewire.config.network import load_network
    from spikewire.monitor.report import build_report
    from spikewire.nodes.figures import Figures, PopulationFigures

    net = tmp_path / "one.toml"
    net.write_text('[nodes.cortex]\nkind = "silicon"\n[nodes.cortex.populations.cortex]\nsize = 2\n')
    network = load_network(net)
    f = Figures(elapsed=1.0, populations={"other": PopulationFigures.of([3, 4])})
    report = build_report(network, {"cortex": {"model": f.to_dict()}}, 1.0, "completed")
    assert report["warnings"] == ["cortex: its figures report population 'other', which its kind does not declare "
                                  "(declared: cortex)"]
    ok = Figures(elapsed=1.0, populations={"cortex": PopulationFigures.of([3, 4])})
    assert build_report(network, {"cortex": {"model": ok.to_dict()}}, 1.0, "completed")["warnings"] == []
