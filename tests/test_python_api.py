"""Networks from Python: built, loaded and changed with the validation of network files, written back as
the same TOML, and run from a script with the run summary back as an object.

Round trips are checked on every shipped network file; the paper loop built from scratch (the example in
examples/python/) must be paper_loop.toml exactly; a bad value gives the one line the file would. One real
2 s run of that loop goes through the public API; calling it from a thread other than the main one is
refused before anything starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path

import pytest

import spikewire as sw
from spikewire.config.build import NetworkBuilder
from spikewire.config.network import NetworkError, build_network, load_network
from spikewire.config.toml_writer import dumps
from spikewire.launch.api import RunSummary, _network_file
from spikewire.launch.ports import free_port_block

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "launch" / "networks"
SHIPPED = sorted(NETWORKS.glob("*.toml"))
EXAMPLES = ROOT / "examples" / "python"


def example():
    """examples/python/paper_loop.py as a module."""
    spec = importlib.util.spec_from_file_location("paper_loop_example", EXAMPLES / "paper_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """The shipped network files with the CURVE keys paper_sites.toml names, in a folder of the test's own:
    a fresh clone has no keys (`spikewire keygen` makes them), and tests never write into launch/."""
    from spikewire.streams.security import keygen

    folder = tmp_path_factory.mktemp("networks")
    for path in SHIPPED:  # paper_sites keeps its keys in ~/.spikewire/keys: here, beside the copy
        (folder / path.name).write_text(path.read_text().replace('"~/.spikewire/keys/', '"keys/'))
    for site in ("zurich", "southampton", "padova"):
        keygen(folder / "keys", site)
    return folder


def same_network(a, b) -> bool:
    return dataclasses.replace(a, path=None) == dataclasses.replace(b, path=None)


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_a_network_file_read_and_written_again_is_the_same_data(path, networks):
    path = networks / path.name
    net = sw.load(path)
    text = net.to_toml()
    assert tomllib.loads(text) == tomllib.loads(path.read_text())
    assert NetworkBuilder.from_toml(text).to_toml() == text  # the layout is stable too
    assert net.matches_file()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_toml_a_builder_writes_loads_to_an_equal_network(path, tmp_path, networks):
    path = networks / path.name
    shutil.copytree(networks / "keys", tmp_path / "keys")  # paper_sites names its key files relative to itself
    net = sw.load(path)
    saved = net.save(tmp_path / path.name)
    assert same_network(load_network(saved), load_network(path))
    assert same_network(net.check(), load_network(path))


def test_the_paper_loop_built_from_scratch_is_paper_loop_toml(tmp_path):
    net = example().build()
    assert net.to_dict() == tomllib.loads((NETWORKS / "paper_loop.toml").read_text())
    checked = net.check()
    assert checked.path is None and same_network(checked, load_network(NETWORKS / "paper_loop.toml"))
    assert same_network(load_network(net.save(tmp_path / "loop.toml")), checked)
    assert [ln.label for ln in checked.links][0] == "zurich.anpre.spikes -> southampton.mr1.pre"


def test_python_values_become_toml_values():
    np = pytest.importorskip("numpy")
    net = sw.Network("values").node("zurich", "silicon", tick=np.float64(1e-3), populations={
        "p": {"size": np.int64(3), "v_init": np.array([-0.07, -0.065, -0.06]),
              "neuron": {"tau_w": (0.1, 0.144, 0.2), "a": np.float32(2e-9)}}})
    data = net.to_dict()
    p = data["nodes"]["zurich"]["populations"]["p"]
    assert p == {"size": 3, "v_init": [-0.07, -0.065, -0.06], "neuron": {"tau_w": [0.1, 0.144, 0.2],
                                                                          "a": float(np.float32(2e-9))}}
    assert type(p["size"]) is int and type(data["nodes"]["zurich"]["tick"]) is float
    assert tomllib.loads(net.to_toml()) == data
    net.check()


def test_the_writer_round_trips_what_tomllib_reads():
    import datetime

    data = {"top": 3, "when": datetime.date(2020, 1, 2),
            "a b": {"x.y": 'q"uo\\te\n\t\x01\x7f é', "empty": {}, "none": [], "rows": [[1, 2], [3.5, -0.0]],
                    "big": 1e300, "small": 1e-9, "inf": float("inf"), "yes": True, "neg": -5},
            "only_tables": {"t": {"k": 1}}, "empty": {},
            "long": {"v": 1, "xs": list(range(200)), "words": ["w" * 50] * 4, "inline": {"p": [{"a": 1}]}},
            "arr": [{"k": 1, "sub": {"z": 2}}, {"k": 2, "sub": {"deep": {"q": 1}}}]}
    text = dumps(data)
    assert tomllib.loads(text) == data
    assert max(len(line) for line in text.splitlines()) <= 120
    with pytest.raises(TypeError, match=r"^\"a b\"\.x: set is not a TOML value"):
        dumps({"a b": {"x": {1}}})


# --------------------------------------------------------------------------------------------------
# The same validation, the same one line
# --------------------------------------------------------------------------------------------------

# (dotted key the builder sets, its value, the TOML line it replaces, the line that replaces it)
BAD = [
    ("nodes.zurich.dt", -1e-4, "dt = 1e-4\ntick = 1e-3\n\n[nodes.zurich.populations.anpre]",
     "dt = -1e-4\ntick = 1e-3\n\n[nodes.zurich.populations.anpre]"),
    ("nodes.zurich.dt", "1e-4", "dt = 1e-4\ntick = 1e-3\n\n[nodes.zurich.populations.anpre]",
     'dt = "1e-4"\ntick = 1e-3\n\n[nodes.zurich.populations.anpre]'),
    ("nodes.southampton.r_nit", 14000.0, "r_init = 14000.0", "r_init = 14000.0\nr_nit = 14000.0"),
    ("nodes.padova.kind", "biologic", 'kind = "biological"', 'kind = "biologic"'),
    ("links[0].from", "zurich.anpre.spike", 'from = "zurich.anpre.spikes"\nto = "southampton.mr1.pre"',
     'from = "zurich.anpre.spike"\nto = "southampton.mr1.pre"'),
    ("monitor.probe_every", 0.0, 'probe_from = "zurich.anpre.spikes"',
     'probe_from = "zurich.anpre.spikes"\nprobe_every = 0.0'),
]


@pytest.mark.parametrize("key, value, old, new", BAD, ids=[f"{c[0]}={c[1]!r}" for c in BAD])
def test_a_bad_value_gives_the_line_the_file_would(key, value, old, new, tmp_path):
    text = (NETWORKS / "paper_loop.toml").read_text()
    if old not in text:
        raise LookupError(f"paper_loop.toml changed: {old!r} not found; update this case")
    bad = tmp_path / "paper_loop.toml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(NetworkError) as from_file:
        load_network(bad)
    net = sw.load(NETWORKS / "paper_loop.toml").set(key, value)
    with pytest.raises(NetworkError) as from_python:
        net.check()
    assert str(from_python.value) == str(from_file.value)
    assert str(from_python.value).startswith(key.split("[")[0].rsplit(".", 1)[0]) and "\n" not in str(from_python.value)
    with pytest.raises(NetworkError) as loading:
        sw.load(bad)
    assert str(loading.value) == str(from_file.value)
    assert sw.load(bad, check=False).get(key) == value  # a broken file can be loaded to repair it


def test_a_network_built_from_scratch_is_refused_naming_the_key():
    net = sw.Network("tiny").node("zurich", "silicon", dt=-1e-4, populations={"p": {"size": 1}})
    with pytest.raises(NetworkError, match=r"^nodes\.zurich\.dt: must be > 0, got -0\.0001$"):
        net.check()
    net.set("nodes.zurich.dt", 1e-4).link("zurich.p.spikes", "zurich.p.inputs")
    with pytest.raises(NetworkError, match=r"^links\[0\]\.to: node 'zurich' has no input port 'p.inputs'; its "
                                           r"inputs are: p\.input$"):
        net.check()
    net.links[0]["to"] = "zurich.p.input"  # a spike (value 1) is no synaptic current step
    with pytest.raises(NetworkError, match=r"^links\[0\]: zurich\.p\.spikes emits values up to 1 but"):
        net.check()
    net.unlink("zurich.p.spikes", "zurich.p.input").check()
    net.nodes["zurich"]["tick"] = None
    with pytest.raises(NetworkError, match=r"^nodes\.zurich\.tick: None: a network file has no null"):
        net.check()
    with pytest.raises(NetworkError, match=r"^network\.name: a network name"):
        sw.Network("no spaces")


def test_editing_a_loaded_network():
    net = sw.load(NETWORKS / "paper_loop.toml")
    net.nodes["zurich"]["dt"] = 5e-5
    net.set("nodes.zurich.populations.anpre.drive.rate", 20.0)
    net.set('nodes.zurich.input_ranges."anpost.input"', (-1e-7, 1e-7))
    assert net.get("nodes.zurich.dt") == 5e-5 and net.get("links[1].to") == "padova.stim"
    assert net.get("nodes.zurich.refractory", None) is None
    checked = net.check()
    assert checked.nodes["zurich"].settings.dt == 5e-5
    assert checked.nodes["zurich"].settings.populations["anpre"].drive.rate == 20.0
    assert not net.matches_file()
    assert tomllib.loads(net.to_toml())["nodes"]["zurich"]["input_ranges"] == {"anpost.input": [-1e-7, 1e-7]}
    with pytest.raises(KeyError, match="links\\[9\\]: no such entry"):
        net.set("links[9].delay", 0.01)
    with pytest.raises(KeyError, match="is not a dotted key"):
        net.get("nodes..dt")
    with pytest.raises(NetworkError, match=r"^nodes\.zurich: declared twice"):
        net.node("zurich", "silicon")

    variant = net.copy().remove_node("padova")
    assert "padova" in net.nodes and len(net.links) == 6
    assert list(variant.nodes) == ["zurich", "southampton"]
    assert [(ln["from"], ln["to"]) for ln in variant.links] == [
        ("zurich.anpre.spikes", "southampton.mr1.pre"), ("southampton.mr2.out", "zurich.anpost.input"),
        ("zurich.anpost.spikes", "southampton.mr2.post")]
    variant.unlink("zurich.anpost.spikes", "southampton.mr2.post")
    with pytest.raises(NetworkError, match="^links: no link from a.b to c.d$"):
        variant.unlink("a.b", "c.d")
    assert len(variant.check().links) == 2


def test_a_protocol_in_python():
    net = example().build().protocol([("none", 5.0), {"name": "ltp", "duration": 5.0}], reset_weights=True)
    net.phase("ltd", 2.5)
    checked = net.check()
    assert checked.phases == (("none", 0.0, 5.0), ("ltp", 5.0, 10.0), ("ltd", 10.0, 12.5))
    assert checked.reset_weights
    assert tomllib.loads(net.to_toml())["protocol"]["phases"][2] == {"name": "ltd", "duration": 2.5}


def test_a_builder_adds_no_empty_tables_of_its_own():
    net = sw.load(NETWORKS / "paper_loop.toml")
    assert net.get("protocol.phases", None) is None
    net.links  # noqa: B018 (a view: looking must not change the file)
    assert net.to_dict() == tomllib.loads((NETWORKS / "paper_loop.toml").read_text())
    assert "protocol" not in tomllib.loads(net.to_toml())


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def test_import_spikewire_is_light():
    code = ("import sys, spikewire\n"
            "heavy = [m for m in ('numba', 'zmq', 'numpy', 'spikewire.launch.supervisor') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert callable(spikewire.run) and spikewire.Network is spikewire.NetworkBuilder\n"
            "assert 'numba' not in sys.modules and 'spikewire.launch.supervisor' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_run_from_another_thread_is_refused_at_once():
    errors: list[BaseException] = []

    def target():
        try:
            sw.run(NETWORKS / "paper_loop.toml", duration=1.0, record=False, quiet=True)
        except RuntimeError as e:
            errors.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(errors) == 1 and "must be called from the main thread" in str(errors[0])
    assert "SIGINT" in str(errors[0]) and "spikewire run" in str(errors[0])


def test_run_refuses_bad_arguments_and_networks_before_starting(tmp_path, networks):
    with pytest.raises(ValueError, match="not both"):
        sw.run(NETWORKS / "paper_loop.toml", out=io.StringIO(), quiet=True)
    with pytest.raises(ValueError, match="duration: must be a number of seconds > 0"):
        sw.run(NETWORKS / "paper_loop.toml", duration=-1)
    with pytest.raises(TypeError, match="without a file"):
        sw.run(build_network(tomllib.loads((NETWORKS / "paper_loop.toml").read_text())), record=False)
    bad = example().build().set("nodes.southampton.r_init", -1.0)
    with pytest.raises(NetworkError, match=r"^nodes\.southampton\.r_init: "):
        sw.run(bad, duration=1.0, session_dir=tmp_path / "s", quiet=True)
    assert not (tmp_path / "s").exists()  # refused before anything started or was recorded
    with pytest.raises(NetworkError, match=r"^sites: no site 'lyon'; sites are: zurich, southampton, padova$"):
        sw.run(networks / "paper_sites.toml", site="lyon", record=False, quiet=True)


def test_the_file_nodes_read(tmp_path, monkeypatch, networks):
    """An unchanged loaded network runs its own file; a changed one a copy that means the same (key files
    absolute; next to its file when a node writes a file named relative to it), removed afterwards."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    shutil.copytree(networks / "keys", tmp_path / "lab" / "keys")
    original = tmp_path / "lab" / "paper_sites.toml"
    shutil.copy(networks / "paper_sites.toml", original)

    with _network_file(sw.load(original)) as net:
        assert net.path == original
    changed = sw.load(original).set("nodes.zurich.dt", 5e-5)
    with _network_file(changed) as net:
        assert net.path.parent.parent == tmp_path / "tmp" and net.name == "paper_sites"
        assert Path(net.sites["zurich"].public_key) == tmp_path / "lab" / "keys" / "zurich.key"
        assert same_network(dataclasses.replace(net, sites=None), dataclasses.replace(changed.check(), sites=None))
    assert not any((tmp_path / "tmp").iterdir())

    changed.set("nodes.southampton.state_file", "state/crossbar.json")
    with _network_file(changed) as net:
        assert net.path.parent == tmp_path / "lab" and net.path.name.startswith(".paper_sites.")
        assert net.node_context(False)["network_dir"] == str(tmp_path / "lab")
    assert sorted(p.name for p in (tmp_path / "lab").iterdir()) == ["keys", "paper_sites.toml"]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_short_run_from_python_returns_its_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a memristor keeps its crossbar under .spikewire/ here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    handler = signal.getsignal(signal.SIGINT)
    summary = example().main(["--duration", "2", "--base-port", str(free_port_block(8)), "--session-dir",
                              str(tmp_path / "session"), "--quiet"])
    printed = capsys.readouterr().out
    assert "spikewire: started" not in printed and "completed after 2.0 s" in printed  # quiet: the example's only

    assert isinstance(summary, sw.RunSummary) and summary.ok and summary.outcome == "completed"
    assert summary.exit_code == 0 and 1.9 <= summary.duration <= 2.5
    assert 15 <= summary.spikes["zurich.anpre"] <= 25  # a 10 Hz pacemaker for 2 s
    assert {m["name"] for m in summary.memristors} == {"mr1", "mr2"}
    assert len(summary.links) == 6
    mr1 = summary.link("zurich.anpre.spikes", "southampton.mr1.pre")
    assert mr1["sent"] >= 15 and mr1["sent"] == mr1["received"] + mr1["dropped"] and mr1["malformed"] == 0
    with pytest.raises(KeyError, match="no link"):
        summary.link("zurich.anpre.spikes", "padova.stim")
    assert summary.phases == [] and summary.nodes["zurich"]["final"]

    assert summary.session == tmp_path / "session"
    recorded = RunSummary.read(summary.session)
    assert recorded.to_dict() == json.loads(json.dumps(summary.to_dict(), default=float))
    assert tomllib.loads((summary.session / "network.toml").read_text())["nodes"] == example().build().to_dict()["nodes"]
    assert not any((tmp_path / "tmp").iterdir())  # the copy the nodes read is gone
    assert signal.getsignal(signal.SIGINT) is handler

    text = str(summary)
    assert text.startswith("spikewire run of 'paper_loop': completed") and "Neurons" in text
    markdown = summary._repr_markdown_()
    assert "| zurich | anpre | 0 |" in markdown and "| zurich.anpre.spikes -> southampton.mr1.pre |" in markdown
    assert repr(summary).startswith("<RunSummary 'paper_loop': completed after 2.0 s;")


# --------------------------------------------------------------------------------------------------
# The examples
# --------------------------------------------------------------------------------------------------


def test_the_example_prints_the_network_file(capsys):
    assert example().main(["--toml"]) is None
    assert capsys.readouterr().out == sw.load(NETWORKS / "paper_loop.toml").to_toml()


def test_the_notebook_is_a_notebook_whose_code_compiles():
    notebook = json.loads((EXAMPLES / "paper_loop.ipynb").read_text())
    assert notebook["nbformat"] == 4
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert cells and all(not c.get("outputs") for c in cells)
    for i, cell in enumerate(cells):
        compile("".join(cell["source"]), f"cell {i}", "exec")
    assert any("sw.run(" in "".join(c["source"]) for c in cells)
