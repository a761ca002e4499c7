"""Cross-node checks of a network file (issue 9): what a link's source emits must fit what its destination
takes, by the sizes and value ranges the ports declare (nodes/base.py ``InPort``/``OutPort``).

* ids: a source emitting ids its destination does not have is an error, unless the destination is a
  crossbar table (``named``): then a warning (those events are refused as unknown_id); a table naming ids
  its source never emits is an error, naming the row;
* values: an output whose range exceeds its input's plausible range is an error naming both;
* unconnected input and output ports are warnings (``Network.warnings``), printed by ``check`` and at the
  start of ``run`` (stderr, ``warning:``), never failing either.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from conftest import network_copy
from spikewire.config.network import NetworkError, build_network, load_network
from test_network_file import guard_dir  # noqa: F401  (a fixture)
from test_network_validation import _assert_refused, _cli_limited

NETWORKS = Path(__file__).resolve().parent.parent / "launch" / "networks"
PAPER_LOOP = NETWORKS / "paper_loop.toml"


def loop() -> dict:
    return tomllib.loads(PAPER_LOOP.read_text())


def refused(data: dict) -> NetworkError:
    with pytest.raises(NetworkError) as e:
        build_network(data)
    assert "\n" not in str(e.value)
    return e.value


def pops(data):
    return data["nodes"]["zurich"]["populations"]


def syn(data, name):
    return data["nodes"]["southampton"]["synapses"][name]


# --- ids ----------------------------------------------------------------------------------------------------


def test_table_row_naming_a_neuron_the_source_lacks_is_an_error():
    """Row (5, 0, 0, 0) of mr1 listens to neuron 5 of a 2-neuron population: it would never be driven."""
    data = loop()
    pops(data)["anpre"]["size"] = 2
    syn(data, "mr1")["table"] = [[5, 0, 0, 0]]
    e = refused(data)
    assert e.key == "links[0]", e
    for part in ("nodes.southampton.synapses.mr1.table[0]", "id 5", "zurich.anpre.spikes", "0..1"):
        assert part in e.reason, e


def test_table_row_sending_to_a_neuron_the_destination_lacks_is_an_error():
    """Row (0, 5, 1, 1) of mr2 sends to neuron 5 of the 2-neuron anpost: its events would be dropped."""
    data = loop()
    pops(data)["anpost"]["size"] = 2
    syn(data, "mr2")["table"] = [[0, 5, 1, 1]]
    e = refused(data)
    assert e.key == "links[4]", e
    for part in ("southampton.mr2.out", "zurich.anpost.input", "5", "nodes.southampton.synapses.mr2.table[0]"):
        assert part in e.reason, e


def test_source_with_more_ids_than_a_plain_destination_is_an_error():
    """mr1's second row stimulates neuron 2 of the 1-neuron culture."""
    data = loop()
    syn(data, "mr1")["table"] = [[0, 0, 0, 0], [0, 2, 0, 1]]
    e = refused(data)
    assert e.key == "links[1]", e
    assert "southampton.mr1.out" in e.reason and "padova.stim" in e.reason, e


def test_source_with_more_ids_than_a_table_names_is_a_warning():
    data = loop()
    pops(data)["anpre"]["size"] = 3
    net = build_network(data)
    hits = [w for w in net.warnings if w.startswith("links[0]")]
    assert len(hits) == 1, net.warnings
    assert "zurich.anpre.spikes" in hits[0] and "unknown_id" in hits[0], hits


# --- value ranges -------------------------------------------------------------------------------------------


def test_synaptic_output_of_one_ampere_into_a_silicon_neuron_is_an_error():
    """mr2 with out_max = 1 (the old default) would deliver 1 A steps to anpost (475 Hz neurons)."""
    data = loop()
    syn(data, "mr2")["out_max"] = 1.0
    e = refused(data)
    assert e.key == "links[4]", e
    for part in ("southampton.mr2.out", "emits values up to 1", "zurich.anpost.input", "accepts at most", "(A)",
                 "nodes.southampton.synapses.mr2.out_max", "nodes.zurich.input_ranges"):
        assert part in e.reason, e


def test_default_output_range_too_large_for_a_small_neuron_names_the_setting():
    """mr2 left at its default synaptic scale, into neurons of a tiny capacitance."""
    data = loop()
    del syn(data, "mr2")["out_max"]
    pops(data)["anpost"]["neuron"] = {"c_m": 1e-12}
    e = refused(data)
    assert e.key == "links[4]" and "nodes.southampton.synapses.mr2.out_max" in e.reason, e


def test_negative_output_below_the_input_range_is_an_error():
    data = loop()
    syn(data, "mr2")["out_min"] = -1e-3
    e = refused(data)
    assert e.key == "links[4]" and "down to" in e.reason and "out_min" in e.reason, e


def test_stimulus_beyond_the_cme_range_is_an_error():
    data = loop()
    syn(data, "mr1")["out_max"] = 50.0
    e = refused(data)
    assert e.key == "links[1]" and "padova.stim" in e.reason and "(V)" in e.reason, e


def test_input_ranges_widen_what_an_input_accepts():
    data = loop()
    syn(data, "mr2")["out_max"] = 1.0
    data["nodes"]["zurich"]["input_ranges"] = {"anpost.input": [-2.0, 2.0]}
    build_network(data)


def test_output_beyond_float32_is_an_error_even_into_any_value():
    """The wire carries values as float32: 1e39 would arrive as inf."""
    data = loop()
    data["nodes"]["tap"] = {"kind": "sink"}
    syn(data, "mr2")["out_max"] = 1e39
    data["links"] = [ln for ln in data["links"] if ln["from"] != "southampton.mr2.out"]
    data["links"].append({"from": "southampton.mr2.out", "to": "tap.in"})
    e = refused(data)
    assert e.key == f"links[{len(data['links']) - 1}]" and "float32" in e.reason, e


# --- unconnected ports: warnings ----------------------------------------------------------------------------


def test_paper_loop_warns_only_about_the_paced_population():
    net = load_network(PAPER_LOOP)
    assert len(net.warnings) == 1, net.warnings
    assert net.warnings[0].startswith("nodes.zurich") and "anpre.input" in net.warnings[0]


def test_unconnected_ports_are_warnings_not_errors():
    data = loop()
    data["links"] = [ln for ln in data["links"] if ln["from"] != "zurich.anpost.spikes"]
    net = build_network(data)
    joined = "\n".join(net.warnings)
    assert "anpost.spikes" in joined and "mr2.post" in joined, net.warnings
    assert all("\n" not in w and w.startswith("nodes.") for w in net.warnings)


def test_an_lsl_export_is_a_connection():
    data = loop()
    data["links"] = [ln for ln in data["links"] if ln["from"] != "zurich.anpost.spikes"]
    data["nodes"]["zurich"]["lsl_export"] = ["anpost.spikes"]
    assert not any("anpost.spikes" in w for w in build_network(data).warnings)


@pytest.mark.parametrize("name", sorted(p.name for p in NETWORKS.glob("*.toml")))
def test_shipped_networks_pass_the_cross_node_checks(name):
    net = load_network(NETWORKS / name, check_keys=False)
    assert all(w.startswith("nodes.") for w in net.warnings), net.warnings  # no link-level warnings


# --- the command line -----------------------------------------------------------------------------------------


def test_check_prints_warnings_and_succeeds(guard_dir, tmp_path):  # noqa: F811
    r = _cli_limited(["check", str(PAPER_LOOP)], guard_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("warning: nodes.zurich") and "anpre.input" in lines[0], r.stderr


def test_check_and_run_refuse_a_mismatched_link(guard_dir, tmp_path):  # noqa: F811
    path = tmp_path / "amps.toml"
    path.write_text(PAPER_LOOP.read_text().replace("out_max = 8.0e-9", "out_max = 1.0"))
    for command in (["check", str(path)], ["run", str(path), "--duration", "1", "--no-record"]):
        r = _cli_limited(command, guard_dir, tmp_path)
        _assert_refused(r, "amps", "links[4]", "zurich.anpost.input accepts at most")


@pytest.mark.integration
def test_run_prints_warnings_at_its_start_and_runs(cli_run, tmp_path):
    path = network_copy("paper_loop.toml", tmp_path)
    run = cli_run("run", str(path), "--duration", "1", "--no-record")
    first = run.wait_for("warning:", timeout=30)
    assert "nodes.zurich" in first and "anpre.input" in first
    code, output = run.finish(timeout=90)
    assert code == 0, output
    assert output.index("warning:") < output.index("all nodes ready"), output
