"""Network files: every broken variant of paper_loop.toml is rejected before anything starts.

Each case is checked twice: in process (``load_network`` raises ``NetworkError`` naming the key) and through
the command line (``spikewire check`` / ``spikewire run`` exit 2 with one line on stderr naming the key).
The CLI processes run under a guard (a ``sitecustomize`` on PYTHONPATH) that records and refuses any
attempt to start a child process, so "nothing starts" is checked, not assumed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import spikewire.launch
from spikewire.config.network import NetworkError, load_network

PAPER_LOOP = Path(spikewire.launch.__file__).parent / "networks" / "paper_loop.toml"
CLI_TIMEOUT = 30.0  # hard stop for any CLI process; "quick" is asserted separately
RUN_QUICK = 10.0

SPAWN_GUARD = '''
import os
_marker = os.environ.get("SPIKEWIRE_TEST_SPAWN_MARKER")
if _marker:
    import subprocess, _posixsubprocess

    def _refuse(name):
        def refuse(*args, **kwargs):
            with open(_marker, "a") as f:
                f.write(name + "\\n")
            raise RuntimeError("test guard: " + name + " would start a process")
        return refuse

    for _n in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen", "execv", "execve", "execvp",
               "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe"):
        if hasattr(os, _n):
            setattr(os, _n, _refuse("os." + _n))
    subprocess.Popen._execute_child = _refuse("subprocess.Popen")
    _posixsubprocess.fork_exec = _refuse("_posixsubprocess.fork_exec")
'''


# --------------------------------------------------------------------------------------------------
# Broken variants of paper_loop.toml
# --------------------------------------------------------------------------------------------------


def original() -> str:
    return PAPER_LOOP.read_text()


def replace_once(text: str, old: str, new: str) -> str:
    if old not in text:
        raise LookupError(f"paper_loop.toml changed: {old!r} not found; update this test's case")
    return text.replace(old, new, 1)


def in_section(text: str, header: str, old: str, new: str) -> str:
    """Replace the first ``old`` after the line ``header``."""
    start = text.index(header) + len(header)
    return text[:start] + replace_once(text[start:], old, new)


EXTRA_LINK = '\n[[links]]\nfrom = "zurich.anpre.spikes"\nto = "southampton.mr1.pre"\n'


@dataclass(frozen=True)
class Case:
    name: str
    make: object  # text -> broken text
    key: str
    reason: str  # a fragment of the reason


CASES = [
    Case("unknown_kind", lambda t: in_section(t, "[nodes.zurich]", 'kind = "silicon"', 'kind = "silicone"'),
         "nodes.zurich.kind", "unknown node kind 'silicone'"),
    Case("link_to_missing_port", lambda t: replace_once(t, 'to = "padova.stim"', 'to = "padova.stimulus"'),
         "links[1].to", "no input port 'stimulus'"),
    Case("link_from_missing_port",
         lambda t: replace_once(t, 'from = "zurich.anpre.spikes"', 'from = "zurich.anpre.spike"'),
         "links[0].from", "no output port 'anpre.spike'"),
    Case("link_to_missing_node", lambda t: replace_once(t, 'to = "padova.stim"', 'to = "bologna.stim"'),
         "links[1].to", "no node named 'bologna'"),
    Case("link_port_without_node_prefix", lambda t: replace_once(t, 'to = "padova.stim"', 'to = "padova"'),
         "links[1].to", "must be '<node>.<port>'"),
    Case("duplicate_node_table", lambda t: t + '\n[nodes.zurich]\nkind = "silicon"\n',
         "nodes.zurich", "declared twice"),
    Case("duplicate_key_in_node", lambda t: in_section(t, "[nodes.zurich]", "dt = 1e-4", "dt = 1e-4\ndt = 2e-4"),
         "nodes.zurich.dt", "twice"),
    Case("duplicate_link", lambda t: t + EXTRA_LINK, "links[6]", "duplicates links[0]"),
    Case("negative_dt", lambda t: in_section(t, "[nodes.zurich]", "dt = 1e-4", "dt = -1e-4"),
         "nodes.zurich.dt", "must be > 0"),
    Case("zero_dt_biological", lambda t: in_section(t, "[nodes.padova]", "dt = 1e-4", "dt = 0.0"),
         "nodes.padova.dt", "must be > 0"),
    Case("string_for_number", lambda t: replace_once(t, "r_init = 14000.0", 'r_init = "14000"'),
         "nodes.southampton.r_init", "must be a number"),
    Case("string_for_nested_number", lambda t: replace_once(t, "rate = 10.0", 'rate = "10"'),
         "nodes.zurich.populations.anpre.drive.rate", "must be a number"),
    Case("bool_for_integer", lambda t: in_section(t, "[nodes.padova]", "size = 1", "size = true"),
         "nodes.padova.size", "must be an integer"),
    Case("typo_in_node_key", lambda t: replace_once(t, "r_init = 14000.0", "r_inti = 14000.0"),
         "nodes.southampton.r_inti", "unknown key"),
    Case("typo_in_link_key", lambda t: replace_once(t, 'to = "padova.stim"', 'too = "padova.stim"'),
         "links[1].too", "unknown key"),
    Case("kind_mismatch", lambda t: replace_once(t, 'to = "padova.stim"', 'to = "zurich.anpost.input"'),
         "links[1]", "sends STIMULUS events but zurich.anpost.input accepts SPIKE"),
    Case("external_source_below_1000",
         lambda t: t + '\n[[links]]\nendpoint = "tcp://127.0.0.1:5999"\nsource = 999\nto = "southampton.mr1.pre"\n',
         "links[6].source", ">= 1000"),
    Case("external_source_missing",
         lambda t: t + '\n[[links]]\nendpoint = "tcp://127.0.0.1:5999"\nto = "southampton.mr1.pre"\n',
         "links[6].source", ">= 1000"),
]

# The `run` command is exercised on a few cases covering each layer (TOML, settings, links).
RUN_CASES = ["duplicate_node_table", "negative_dt", "kind_mismatch", "external_source_below_1000"]


def write_case(directory: Path, case: Case) -> Path:
    path = directory / f"{case.name}.toml"
    path.write_text(case.make(original()))
    return path


# --------------------------------------------------------------------------------------------------
# In process
# --------------------------------------------------------------------------------------------------


def test_paper_loop_loads():
    net = load_network(PAPER_LOOP)
    assert net.name == "paper_loop"
    assert set(net.nodes) == {"zurich", "southampton", "padova"}
    assert len(net.links) == 6
    # Every output port has its own source id, all below the external range.
    assert sorted(net.source_ids.values()) == list(range(1, len(net.source_ids) + 1))
    assert all(0 < ln.source_id < 1000 for ln in net.links)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_load_network_names_key_and_reason(case, tmp_path):
    path = write_case(tmp_path, case)
    with pytest.raises(NetworkError) as e:
        load_network(path)
    message = str(e.value)
    assert "\n" not in message
    assert case.key in message and case.reason in message, message
    if case.name not in ("duplicate_node_table", "duplicate_key_in_node"):  # TOML syntax errors name the file
        assert e.value.key == case.key
        assert case.reason in e.value.reason


def test_valid_external_link_loads(tmp_path):
    path = tmp_path / "ext.toml"
    path.write_text(original() + '\n[[links]]\nendpoint = "tcp://127.0.0.1:5999"\nsource = 1000\n'
                                 'to = "southampton.mr1.pre"\n')
    net = load_network(path)
    ext = net.links[-1]
    assert (ext.src_node, ext.endpoint, ext.source_id) == ("", "tcp://127.0.0.1:5999", 1000)


def test_missing_file(tmp_path):
    with pytest.raises(NetworkError) as e:
        load_network(tmp_path / "nope.toml")
    assert "cannot read" in str(e.value)


# --------------------------------------------------------------------------------------------------
# Command line, as a subprocess
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    spawned: str  # what the guard refused ("" when nothing tried to start a process)


def _cli(args: list[str], guard_dir: Path, marker: Path, cwd: Path) -> CliResult:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(guard_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["SPIKEWIRE_TEST_SPAWN_MARKER"] = str(marker)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "spikewire", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    spawned = marker.read_text() if marker.exists() else ""
    return CliResult(proc.returncode, proc.stdout, proc.stderr, elapsed, spawned)


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("guard")
    (d / "sitecustomize.py").write_text(SPAWN_GUARD)
    return d


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, guard_dir) -> dict[tuple[str, str], CliResult]:
    """Run every CLI invocation once, a few at a time (each is ~0.5 s of interpreter start-up)."""
    work = tmp_path_factory.mktemp("cli")
    jobs = {}
    for case in CASES:
        path = write_case(work, case)
        jobs[("check", case.name)] = ["check", str(path)]
        if case.name in RUN_CASES:
            jobs[("run", case.name)] = ["run", str(path), "--duration", "1"]
    jobs[("check", "valid")] = ["check", str(PAPER_LOOP)]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {k: pool.submit(_cli, args, guard_dir, work / f"spawned-{k[0]}-{k[1]}", work)
                   for k, args in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


def test_spawn_guard_works(guard_dir, tmp_path):
    """Control: under the guard, a Python that starts a child process is caught."""
    marker = tmp_path / "spawned"
    env = dict(os.environ, PYTHONPATH=str(guard_dir), SPIKEWIRE_TEST_SPAWN_MARKER=str(marker))
    proc = subprocess.run([sys.executable, "-c", "import subprocess; subprocess.run(['true'])"],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env)
    assert proc.returncode != 0
    assert "subprocess.Popen" in marker.read_text()


def test_check_accepts_paper_loop(cli_results):
    r = cli_results[("check", "valid")]
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout and "3 nodes, 6 links" in r.stdout
    # Only warnings (the paced population's input has no link), never an error line.
    assert all(line.startswith("warning: ") for line in r.stderr.splitlines()), r.stderr
    assert r.spawned == ""


def _assert_one_line_naming(r: CliResult, case: Case, path_name: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert path_name in line
    assert case.key in line, line
    assert case.reason in line, line
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_check_rejects_with_key_and_reason(case, cli_results):
    r = cli_results[("check", case.name)]
    _assert_one_line_naming(r, case, f"{case.name}.toml")
    assert r.stdout == ""
    assert r.spawned == "", f"check tried to start a process: {r.spawned}"


@pytest.mark.parametrize("case", [c for c in CASES if c.name in RUN_CASES], ids=lambda c: c.name)
def test_run_rejects_before_anything_starts(case, cli_results):
    r = cli_results[("run", case.name)]
    _assert_one_line_naming(r, case, f"{case.name}.toml")
    assert r.elapsed < RUN_QUICK, f"run took {r.elapsed:.1f} s to reject a broken file"
    assert r.spawned == "", f"run started a process for a broken file: {r.spawned}"


def test_check_names_the_file_once_for_a_toml_syntax_error(cli_results):
    """The CLI prefixes the file name; the error for unparsable TOML must not carry it a second time."""
    r = cli_results[("check", "duplicate_node_table")]
    assert r.returncode == 2
    assert r.stderr.count("duplicate_node_table.toml") == 1, r.stderr
