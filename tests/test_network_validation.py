"""Malformed network files that used to get past validation (issue 11): each is refused before anything
starts, on one line naming the key, by ``load_network`` and by ``spikewire check`` / ``spikewire run``.

The classes, each with several members so that a fix covers the class and not the one file a tester sent:

* names that become paths (the network's name, sites, populations, synapse groups, a state file);
* sizes bounded by the memory they need, before anything allocates (populations, crossbars, tables,
  plasticity history, per-step buffers, the number of node processes);
* integers beyond 64 bits or the field's own range (wire ids, ZeroMQ's int32 options);
* files that are not UTF-8 text, too large, or nested too deeply for the parser;
* addresses: bind addresses, site addresses, external endpoints and ``via``;
* ports that collide (a site's inter-site ports against a node's metrics port);
* messages stay one line whatever bytes the file holds.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from spikewire.config.network import NetworkError, build_network, load_network
from test_network_file import CLI_TIMEOUT, RUN_QUICK, CliResult, guard_dir  # noqa: F401  (guard_dir is a fixture)

NETWORKS = Path(__file__).resolve().parent.parent / "launch" / "networks"
PAPER_LOOP = NETWORKS / "paper_loop.toml"
PAPER_SITES = NETWORKS / "paper_sites.toml"
CHECK_MEMORY = 3 << 30
"""Address space a ``spikewire check`` of a malformed file may use (the 10^9-neuron file grew to 24 GB)."""


def loop() -> str:
    return PAPER_LOOP.read_text()


def sites() -> str:
    return PAPER_SITES.read_text().replace('curve = "required"', 'curve = "off"')


def sub(text: str, old: str, new: str, after: str = "") -> str:
    """``text`` with the first ``old`` after the line ``after`` replaced by ``new``."""
    start = text.index(after) + len(after) if after else 0
    if old not in text[start:]:
        raise LookupError(f"the shipped network changed: {old!r} not found; update this test's case")
    return text[:start] + text[start:].replace(old, new, 1)


EXT_LINK = '\n[[links]]\nendpoint = "{ep}"\nsource = 1000\nto = "southampton.mr1.pre"\n'


@dataclass(frozen=True)
class Case:
    name: str
    make: object  # () -> the file's text
    key: str
    reason: str  # a fragment of the reason


CASES = [
    # --- names that become paths ------------------------------------------------------------------
    Case("network_name_traversal", lambda: sub(loop(), 'name = "paper_loop"', 'name = "../../../elsewhere"'),
         "network.name", "letters, digits"),
    Case("network_name_absolute", lambda: sub(loop(), 'name = "paper_loop"', 'name = "/tmp/elsewhere"'),
         "network.name", "letters, digits"),
    Case("network_name_too_long", lambda: sub(loop(), 'name = "paper_loop"', f'name = "{"n" * 300}"'),
         "network.name", "at most 64"),
    Case("population_name_traversal",
         lambda: sub(loop(), "[nodes.zurich.populations.anpost]", '[nodes.zurich.populations."../anpost"]')
         .replace('"zurich.anpost.', '"zurich.../anpost.'),
         "nodes.zurich.populations.../anpost", "letters, digits"),
    Case("population_name_with_dot",
         lambda: sub(loop(), "[nodes.zurich.populations.anpost]", '[nodes.zurich.populations."an.post"]')
         .replace('"zurich.anpost.', '"zurich.an.post.'),
         "nodes.zurich.populations.an.post", "letters, digits"),
    Case("synapse_name_with_space",
         lambda: sub(loop(), "[nodes.southampton.synapses.mr2]", '[nodes.southampton.synapses."mr 2"]')
         .replace('"southampton.mr2.', '"southampton.mr 2.'),
         "nodes.southampton.synapses.mr 2", "letters, digits"),
    Case("site_name_traversal", lambda: sub(sites(), "[sites.padova]", '[sites."../padova"]')
         .replace('site = "padova"', 'site = "../padova"'),
         "sites.../padova", "letters, digits"),
    Case("site_label_with_slash", lambda: sub(loop(), 'site = "padova"', 'site = "pad/ova"'),
         "nodes.padova.site", "letters, digits"),
    Case("state_file_escapes", lambda: sub(loop(), "r_init = 14000.0", 'r_init = 14000.0\nstate_file = "../../x.json"'),
         "nodes.southampton.state_file", "'..'"),
    Case("state_file_escapes_midway",
         lambda: sub(loop(), "r_init = 14000.0", 'r_init = 14000.0\nstate_file = "state/../../x.json"'),
         "nodes.southampton.state_file", "'..'"),
    Case("state_file_absolute",
         lambda: sub(loop(), "r_init = 14000.0", 'r_init = 14000.0\nstate_file = "/tmp/crossbar.json"'),
         "nodes.southampton.state_file", "relative"),
    Case("state_file_not_json",
         lambda: sub(loop(), "r_init = 14000.0", 'r_init = 14000.0\nstate_file = "paper_loop.toml"'),
         "nodes.southampton.state_file", ".json"),
    # --- sizes, bounded by the memory they need -----------------------------------------------------
    Case("population_1e9", lambda: sub(loop(), "size = 1", "size = 1_000_000_000", "[nodes.zurich.populations.anpost]"),
         "nodes.zurich.populations.anpost.size", "needs ~"),
    Case("biological_1e9", lambda: sub(loop(), "size = 1", "size = 1_000_000_000", "[nodes.padova]"),
         "nodes.padova.size", "needs ~"),
    Case("crossbar_rows", lambda: sub(loop(), "rows = 2", "rows = 1_000_000"), "nodes.southampton.rows", "needs ~"),
    Case("crossbar_cols", lambda: sub(loop(), "cols = 2", "cols = 100_000"), "nodes.southampton.cols", "needs ~"),
    Case("table_id_1e9", lambda: sub(loop(), "table = [[0, 0, 1, 1]]", "table = [[1_000_000_000, 0, 1, 1]]"),
         "nodes.southampton.synapses.mr2.table", "row 0 names id 1,000,000,000"),
    Case("plasticity_history", lambda: sub(loop(), "post_types = [0, 2]",
                                           "post_types = [0, 2]\nplasticity = { ltp_above = 1_000_000_000 }"),
         "nodes.southampton.synapses.mr1.plasticity.ltp_above", "must be between 0 and 1000"),
    Case("steps_per_tick", lambda: sub(loop(), "dt = 1e-4", "dt = 1e-12", "[nodes.zurich]"),
         "nodes.zurich.tick", "needs ~"),
    Case("steps_per_tick_overflow", lambda: sub(loop(), "dt = 1e-4", "dt = 1e-300", "[nodes.zurich]"),
         "nodes.zurich.tick", "1e+297 steps per tick"),
    Case("per_step_buffers", lambda: sub(sub(loop(), "tick = 1e-3", "tick = 0.1", "[nodes.zurich]"),
                                        "size = 1", "size = 400_000", "[nodes.zurich.populations.anpost]"),
         "nodes.zurich.tick", "needs ~"),
    # --- integers beyond 64 bits or the field's range -------------------------------------------------
    Case("int_65_bits", lambda: sub(loop(), "r_init = 14000.0", "r_init = 14000.0\nseed = 36893488147419103232"),
         "nodes.southampton.seed", "64-bit"),
    Case("int_negative_65_bits",
         lambda: sub(loop(), "[nodes.padova]", "[nodes.padova]\nseed = -36893488147419103232"),
         "nodes.padova.seed", "64-bit"),
    Case("int_5000_digits", lambda: sub(loop(), "rows = 2", "rows = " + "9" * 5000), "", "not valid TOML"),
    Case("source_beyond_u32", lambda: loop() + '\n[[links]]\nendpoint = "tcp://127.0.0.1:5999"\n'
                                               'source = 4294967296\nto = "southampton.mr1.pre"\n',
         "links[6].source", "4294967295"),
    Case("hwm_beyond_int32", lambda: sub(loop(), 'to = "padova.stim"', 'to = "padova.stim"\nhwm = 99999999999'),
         "links[1].hwm", "must be between"),
    Case("hwm_insane", lambda: sub(loop(), 'to = "padova.stim"', 'to = "padova.stim"\nhwm = 1_000_000_000'),
         "links[1].hwm", "must be between"),
    # --- addresses -------------------------------------------------------------------------------------
    Case("node_bind_hostname", lambda: sub(loop(), 'site = "padova"', 'site = "padova"\nbind = "example.com"'),
         "nodes.padova.bind", "IPv4 address"),
    Case("node_bind_garbage", lambda: sub(loop(), 'site = "padova"', 'site = "padova"\nbind = "not an address!"'),
         "nodes.padova.bind", "IPv4 address"),
    Case("node_bind_bad_octet", lambda: sub(loop(), 'site = "padova"', 'site = "padova"\nbind = "256.1.1.1"'),
         "nodes.padova.bind", "IPv4 address"),
    Case("node_bind_empty", lambda: sub(loop(), 'site = "padova"', 'site = "padova"\nbind = ""'),
         "nodes.padova.bind", "IPv4 address"),
    Case("node_bind_ipv6", lambda: sub(loop(), 'site = "padova"', 'site = "padova"\nbind = "::1"'),
         "nodes.padova.bind", "IPv6"),
    Case("site_bind_hostname", lambda: sub(sites(), 'port = 9520', 'port = 9520\nbind = "padova.example.org"'),
         "sites.padova.bind", "IPv4 address"),
    Case("site_address_garbage", lambda: sub(sites(), 'address = "127.0.0.1"', 'address = "bad_host!"',
                                             "[sites.padova]"),
         "sites.padova.address", "host name"),
    Case("site_address_wildcard", lambda: sub(sites(), 'address = "127.0.0.1"', 'address = "0.0.0.0"',
                                              "[sites.padova]"),
         "sites.padova.address", "wildcard"),
    Case("site_address_label_too_long", lambda: sub(sites(), 'address = "127.0.0.1"',
                                                    f'address = "{"a" * 64}.example.org"', "[sites.padova]"),
         "sites.padova.address", "host name"),
    Case("endpoint_no_host", lambda: loop() + EXT_LINK.format(ep="tcp://:5999"), "links[6].endpoint", "host"),
    Case("endpoint_port_0", lambda: loop() + EXT_LINK.format(ep="tcp://127.0.0.1:0"), "links[6].endpoint",
         "1-65535"),
    Case("endpoint_port_70000", lambda: loop() + EXT_LINK.format(ep="tcp://127.0.0.1:70000"), "links[6].endpoint",
         "1-65535"),
    Case("endpoint_no_port", lambda: loop() + EXT_LINK.format(ep="tcp://127.0.0.1"), "links[6].endpoint", "port"),
    Case("endpoint_wildcard", lambda: loop() + EXT_LINK.format(ep="tcp://*:5999"), "links[6].endpoint", "wildcard"),
    Case("endpoint_bad_host", lambda: loop() + EXT_LINK.format(ep="tcp://bad_host:5999"), "links[6].endpoint",
         "host name"),
    Case("endpoint_inproc", lambda: loop() + EXT_LINK.format(ep="inproc://feed"), "links[6].endpoint", "inproc"),
    Case("via_no_port", lambda: sub(sites(), 'to = "padova.stim"', 'to = "padova.stim"\nvia = "tcp://127.0.0.1"'),
         "links[1].via", "port"),
    Case("via_port_0", lambda: sub(sites(), 'to = "padova.stim"', 'to = "padova.stim"\nvia = "tcp://127.0.0.1:0"'),
         "links[1].via", "1-65535"),
    # --- ports that collide ------------------------------------------------------------------------------
    Case("site_port_on_metrics_port", lambda: sub(sites(), "port = 9520", "port = 9491"), "sites.padova.port",
         "metrics"),
    Case("site_port_range_on_metrics_port", lambda: sub(sites(), "port = 9500", "port = 9489"), "sites.zurich.port",
         "metrics"),
]


def _write(tmp_path: Path, case: Case) -> Path:
    path = tmp_path / f"{case.name}.toml"
    path.write_text(case.make())
    return path


def _refused(path: Path, key: str, reason: str) -> NetworkError:
    with pytest.raises(NetworkError) as e:
        load_network(path)
    message = str(e.value)
    assert "\n" not in message and "\r" not in message
    assert e.value.key == key, message
    assert reason in e.value.reason, message
    return e.value


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_malformed_file_is_refused_naming_the_key(case, tmp_path):
    _refused(_write(tmp_path, case), case.key, case.reason)


def test_size_refused_before_anything_allocates(tmp_path):
    """The 10^9-neuron population is refused by its size field, within a small address space."""
    case = next(c for c in CASES if c.name == "population_1e9")
    path = _write(tmp_path, case)
    code = ("import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({CHECK_MEMORY}, {CHECK_MEMORY}))\n"
            "from spikewire.config.network import NetworkError, load_network\n"
            "try:\n"
            f"    load_network({str(path)!r})\n"
            "except NetworkError as e:\n"
            "    print(e.key)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == case.key


def test_size_message_says_how_much_memory(tmp_path):
    e = _refused(_write(tmp_path, next(c for c in CASES if c.name == "population_1e9")),
                 "nodes.zurich.populations.anpost.size", "needs ~")
    assert "GB" in e.reason or "GiB" in e.reason, e.reason


def test_too_many_nodes():
    nodes = {f"n{i}": {"kind": "sink"} for i in range(1000)}
    with pytest.raises(NetworkError) as e:
        build_network({"nodes": nodes, "monitor": {"metrics": False}})
    assert e.value.key == "nodes" and "needs ~" in e.value.reason


def test_populations_are_bounded_together():
    """Each population within its own bound, but not all of them in one node."""
    data = tomllib.loads(loop())
    data["nodes"]["zurich"]["populations"].update({f"p{i}": {"size": 1_500_000} for i in range(3)})
    with pytest.raises(NetworkError) as e:
        build_network(data)
    assert e.value.key == "nodes.zurich.populations" and "needs ~" in e.value.reason, e.value


def test_table_length_bounded():
    rows = [[i, 0, i // 256, i % 256] for i in range(70_000)]
    data = tomllib.loads(loop())
    data["nodes"]["southampton"].update(rows=280, cols=256)
    data["nodes"]["southampton"]["synapses"]["mr1"]["table"] = rows
    with pytest.raises(NetworkError) as e:
        build_network(data)
    assert e.value.key == "nodes.southampton.synapses.mr1.table", e.value
    assert "at most" in e.value.reason


def test_two_memristors_sharing_a_state_file_are_refused(tmp_path):
    data = tomllib.loads(loop())
    data["nodes"]["southampton"]["state_file"] = "state/crossbar.json"
    data["nodes"]["copy"] = {**data["nodes"]["southampton"], "site": "elsewhere"}
    with pytest.raises(NetworkError) as e:
        build_network(data, path=tmp_path / "net.toml")
    assert e.value.key == "nodes.copy.state_file" and "southampton" in e.value.reason


# --- files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b'[network]\nname = "caf\xe9"\n',
                                     bytes(range(256)) * 4], ids=["binary", "latin1", "all_bytes"])
def test_non_utf8_file_is_refused_on_one_line(content, tmp_path):
    path = tmp_path / "net.toml"
    path.write_bytes(content)
    e = _refused(path, "", "not UTF-8 text")
    assert "cannot read" in e.reason


def test_file_larger_than_any_network_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.toml"
    with open(path, "wb") as f:
        f.truncate(1 << 34)  # sparse: 16 GiB of zeros on no disk
    _refused(path, "", "larger than")


def test_a_directory_is_refused(tmp_path):
    _refused(tmp_path, "", "cannot read")


@pytest.mark.parametrize("text", ["a = " + "[" * 100_000 + "]" * 100_000 + "\n",
                                  "a = " + "{ b = " * 100_000 + "1" + " }" * 100_000 + "\n",
                                  "[network]\ndescription = " + "[" * 5_000 + "]" * 5_000 + "\n"],
                         ids=["arrays", "inline_tables", "arrays_in_a_table"])
def test_deep_nesting_is_refused_on_one_line(text, tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text(text)
    with pytest.raises(NetworkError) as e:
        load_network(path)
    assert "\n" not in str(e.value)
    assert "nested" in str(e.value) or "must be a string" in str(e.value)


# --- messages are one short line whatever the file holds -------------------------------------------------------


@pytest.mark.parametrize("text", [
    '[nodes."pa\\ndova"]\nkind = "sink"\n',
    '[nodes.padova]\nkind = "sink"\n"x\\u001b[2Jy" = 1\n',
    '[nodes.padova]\nkind = "sink"\n"x\\ry" = 1\n',
    f'[nodes.padova]\nkind = "{"s" * 100_000}"\n',
    '[nodes.padova]\nkind = "sink"\nlsl_export = ["a\\nb"]\n',
], ids=["newline_in_node_name", "escape_in_key", "cr_in_key", "huge_value", "newline_in_value"])
def test_message_is_one_printable_line(text, tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(text)
    with pytest.raises(NetworkError) as e:
        load_network(path)
    message = str(e.value)
    assert message.isprintable(), repr(message)
    assert len(message) < 1000, len(message)


# --- what stays valid -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in NETWORKS.glob("*.toml")))
def test_shipped_networks_still_load(name):
    load_network(NETWORKS / name, check_keys=False)


@pytest.mark.parametrize("edit", [
    lambda t: sub(t, 'site = "padova"', 'site = "padova"\nbind = "0.0.0.0"'),
    lambda t: sub(t, "r_init = 14000.0", 'r_init = 14000.0\nstate_file = "state/southampton.json"'),
    lambda t: sub(t, "r_init = 14000.0", 'r_init = 14000.0\nstate_file = ".spikewire/mr.json"'),
    lambda t: t + EXT_LINK.format(ep="tcp://partner.example.org:5999"),
    lambda t: t + EXT_LINK.format(ep="tcp://10.1.2.3:5999"),
    lambda t: t + EXT_LINK.format(ep="ipc:///tmp/spikewire-feed"),
    lambda t: sub(t, 'to = "padova.stim"', 'to = "padova.stim"\nhwm = 1_000_000'),
    lambda t: sub(t, "size = 1", "size = 10_000", "[nodes.zurich.populations.anpost]"),
    lambda t: sub(t, 'name = "paper_loop"', 'name = "paper-loop_2"'),
], ids=["bind_any", "state_file_below", "state_file_hidden_dir", "endpoint_hostname", "endpoint_ip", "endpoint_ipc",
        "hwm_large", "population_10k", "name_dash"])
def test_valid_variants_load(edit, tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(edit(loop()))
    load_network(path)


@pytest.mark.parametrize("edit", [
    lambda t: sub(t, "port = 9520", 'port = 9520\nbind = "*"'),
    lambda t: sub(t, "port = 9520", 'port = 9520\nbind = "0.0.0.0"'),
    lambda t: sub(t, 'address = "127.0.0.1"', 'address = "padova.example.org"', "[sites.padova]"),
    lambda t: sub(t, 'to = "padova.stim"', 'to = "padova.stim"\nvia = "tcp://relay.example.org:7000"'),
], ids=["site_bind_star", "site_bind_any", "site_address_hostname", "via_hostname"])
def test_valid_site_variants_load(edit, tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(edit(sites()))
    load_network(path)


def test_default_name_from_an_odd_file_name_is_made_safe(tmp_path):
    path = tmp_path / "my loop (v2).toml"
    path.write_text(sub(loop(), 'name = "paper_loop"\n', ""))
    assert load_network(path).name == "my_loop__v2_"


# --- the command line: check and run refuse with exit 2, one line, nothing started ---------------------------------

CLI_CASES = ["network_name_traversal", "population_1e9", "crossbar_rows", "int_65_bits", "hwm_beyond_int32",
             "node_bind_garbage", "endpoint_port_0", "site_port_on_metrics_port", "state_file_escapes"]
RUN_CASES = ["network_name_traversal", "population_1e9", "endpoint_port_0", "site_port_on_metrics_port"]


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (CHECK_MEMORY, CHECK_MEMORY))


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("cli")
    files = {c.name: _write(work, c) for c in CASES if c.name in CLI_CASES}
    files["binary"] = work / "binary.toml"
    files["binary"].write_bytes(b"\x00\xff\xfe garbage \x80")
    files["deep"] = work / "deep.toml"
    files["deep"].write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    return files


def _assert_refused(r, name: str, key: str, reason: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1, r.stderr
    assert f"{name}.toml" in lines[0] and key in lines[0] and reason in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert r.spawned == "", f"a process was started: {r.spawned}"


# `check` on every case; `run` (slower: it must also refuse before spawning) on a few cases of each class.
@pytest.mark.parametrize("command, name", [("check", n) for n in CLI_CASES + ["binary", "deep"]]
                         + [("run", n) for n in CLI_CASES + ["binary", "deep"] if n in RUN_CASES + ["binary"]])
def test_cli_refuses_before_anything_starts(command, name, cli_files, guard_dir, tmp_path):  # noqa: F811
    args = [command, str(cli_files[name])] + (["--duration", "1", "--no-record"] if command == "run" else [])
    t0 = time.monotonic()
    r = _cli_limited(args, guard_dir, tmp_path)
    case = next((c for c in CASES if c.name == name), None)
    key, reason = (case.key, case.reason) if case else ("", "not UTF-8" if name == "binary" else "nested")
    _assert_refused(r, name, key, reason)
    assert r.stdout == ""
    assert time.monotonic() - t0 < RUN_QUICK


def _cli_limited(args: list[str], guard: Path, work: Path):
    """A ``spikewire`` subprocess under the spawn guard (see test_network_file) and a capped address space,
    so a check that allocates for a huge size fails instead of swapping the machine."""
    marker = work / "spawned"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(guard)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["SPIKEWIRE_TEST_SPAWN_MARKER"] = str(marker)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "spikewire", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, env=env, cwd=work, stdin=subprocess.DEVNULL, preexec_fn=_limit_memory)
    spawned = marker.read_text() if marker.exists() else ""
    return CliResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0, spawned)


def test_run_refuses_a_bind_address_of_another_machine(guard_dir, tmp_path):  # noqa: F811
    """A well-formed address this machine does not have passes ``check`` (the node may run at another site)
    but ``run`` refuses it before any node starts, instead of one node failing after the others started."""
    path = tmp_path / "elsewhere.toml"
    path.write_text(sub(loop(), 'site = "padova"', 'site = "padova"\nbind = "203.0.113.7"'))  # TEST-NET-3
    assert _cli_limited(["check", str(path)], guard_dir, tmp_path).returncode == 0
    r = _cli_limited(["run", str(path), "--duration", "1", "--no-record"], guard_dir, tmp_path)
    _assert_refused(r, "elsewhere", "nodes.padova.bind", "not an address of this machine")
