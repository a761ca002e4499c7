"""Per-node placement (cpu, priority, spin): refused before anything starts when impossible, and in
effect on the real node processes when possible. Also: numba stays out of processes that run no kernel."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import psutil
import pytest

from conftest import ROOT, free_port_block, network_copy, read_json
from spikewire.config.network import NetworkError, build_network, parse_network_text, preflight

pytestmark = pytest.mark.integration

PAPER = (ROOT / "launch" / "networks" / "paper_loop.toml").read_text()
CPUS = sorted(os.sched_getaffinity(0))


def _with(**tables: str) -> str:
    """paper_loop with extra lines at the top of the named node tables."""
    text = PAPER
    for node, extra in tables.items():
        text = text.replace(f"[nodes.{node}]\n", f"[nodes.{node}]\n{extra}\n", 1)
    return text


@pytest.mark.parametrize("tables, key, words", [
    ({"zurich": "cpu = [4095]"}, "nodes.zurich.cpu", "not available here"),
    ({"zurich": "cpu = [0, 0]"}, "nodes.zurich.cpu", "distinct"),
    ({"zurich": "cpu = [-1]"}, "nodes.zurich.cpu", "distinct CPU numbers 0-4095"),
    ({"zurich": "cpu = 1"}, "nodes.zurich.cpu", "must be an array"),
    ({"zurich": "spin = true"}, "nodes.zurich.spin", "needs cpu"),
    ({"zurich": f"spin = true\ncpu = [{CPUS[0]}]\npriority = 5"}, "nodes.zurich.spin", "starves"),
    ({"zurich": "priority = 100"}, "nodes.zurich.priority", "between 0 and 99"),
    ({"zurich": "priority = 1.5"}, "nodes.zurich.priority", ""),
    ({"zurich": f"spin = true\ncpu = [{CPUS[-1]}]", "padova": f"cpu = [{CPUS[-1]}]"}, "nodes.zurich.cpu",
     "core of its own"),
])
def test_impossible_placement_is_refused_naming_the_key(tables, key, words):
    with pytest.raises(NetworkError) as err:
        preflight(build_network(parse_network_text(_with(**tables))))
    assert str(err.value).startswith(f"{key}:"), err.value
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_spikewire_run_refuses_before_starting_anything(tmp_path):
    net = tmp_path / "bad.toml"
    net.write_text(_with(southampton="spin = true"))
    before = {p.pid for p in psutil.process_iter()}
    done = subprocess.run([sys.executable, "-m", "spikewire", "run", str(net), "--duration", "2"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert "nodes.southampton.spin: needs cpu" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    spawned = {p.pid for p in psutil.process_iter()} - before
    assert not any("node_main" in " ".join(psutil.Process(p).cmdline()) for p in spawned if psutil.pid_exists(p))


@pytest.mark.skipif((len(CPUS) < 2 or os.geteuid() != 0) and not os.environ.get("CI"),
                    reason="needs two CPUs and real-time scheduling rights (CI has both: there it runs)")
def test_placement_takes_effect_on_the_node_processes(cli_run, tmp_path):
    """southampton spins on its own CPU; zurich and padova share the other, zurich at SCHED_FIFO 1."""
    spin_cpu, other = CPUS[-1], CPUS[0]
    net = network_copy("paper_loop.toml", tmp_path)
    text = net.read_text()
    for node, extra in (("southampton", f"cpu = [{spin_cpu}]\nspin = true"),
                        ("zurich", f"cpu = [{other}]\npriority = 1"), ("padova", f"cpu = [{other}]")):
        text = text.replace(f"[nodes.{node}]\n", f"[nodes.{node}]\n{extra}\n", 1)
    net.write_text(text)
    out = tmp_path / "summary.json"
    run = cli_run("run", str(net), "--duration", "4", "--json", str(out))
    run.wait_for("all nodes ready", timeout=90)
    nodes = {}
    for child in psutil.Process(run.proc.pid).children():
        cmd = child.cmdline()
        nodes[cmd[cmd.index("--node") + 1]] = child
    assert set(nodes) == {"zurich", "southampton", "padova"}
    for name, cpus in (("southampton", {spin_cpu}), ("zurich", {other}), ("padova", {other})):
        for thread in nodes[name].threads():  # ZeroMQ's I/O thread too
            assert os.sched_getaffinity(thread.id) == cpus, (name, thread.id)
    assert os.sched_getscheduler(nodes["zurich"].pid) == os.SCHED_FIFO
    assert os.sched_getparam(nodes["zurich"].pid).sched_priority == 1
    assert os.sched_getscheduler(nodes["padova"].pid) == os.SCHED_OTHER
    busy = nodes["southampton"].cpu_percent(interval=None)
    time.sleep(1.0)
    busy = nodes["southampton"].cpu_percent(interval=None)
    assert busy > 50, f"a spinning node should keep its core busy, used {busy:.0f} %"
    code, text = run.finish(timeout=60)
    assert code == 0, text
    report = read_json(out)
    links = {ln["link"]: ln for ln in report["links"]}
    assert all(ln["received"] > 0 for name, ln in links.items() if not name.startswith("zurich.anpost")), links


def test_loading_a_network_imports_no_numba():
    """Every kind is imported to load a network; only a process whose element runs a kernel loads numba."""
    code = ("import sys; from spikewire.config.network import load_network; "
            f"load_network({str(ROOT / 'launch' / 'networks' / 'paper_loop.toml')!r}); "
            "print('numba' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_node_that_runs_no_kernel_stays_small(cli_run, tmp_path):
    """The linear crossbar with no plasticity rule runs no numba kernel: its process never loads numba."""
    net = tmp_path / "nokernel.toml"
    text = (ROOT / "examples" / "linear_crossbar" / "fig2_linear.toml").read_text()
    text = text.replace('plasticity = { rule = "srdp", ltp_voltage = 0.8, ltd_voltage = -1.0 }',
                        'plasticity = { rule = "none" }')
    net.write_text(re.sub(r"base_port = \d+", f"base_port = {free_port_block(8)}", text))
    out = tmp_path / "summary.json"
    code, text = cli_run("run", str(net), "--duration", "3", "--json", str(out), "--no-record").finish(timeout=90)
    assert code == 0, text
    nodes = read_json(out)["nodes"]
    assert nodes["southampton"]["process"]["max_rss_mb"] < 100, nodes["southampton"]["process"]
    assert nodes["zurich"]["process"]["max_rss_mb"] > nodes["southampton"]["process"]["max_rss_mb"] + 30


def test_real_time_priority_the_os_refuses_is_refused_before_any_node_starts(tmp_path):
    """Root without CAP_SYS_NICE (a container, say) may not schedule real-time: `run` asks the OS first."""
    net = tmp_path / "rt.toml"
    net.write_text(_with(zurich="priority = 10"))
    done = subprocess.run(["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", sys.executable, "-m",
                           "spikewire", "run", str(net), "--duration", "2"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "nodes.zurich.priority: the OS refuses real-time scheduling" in done.stderr
    assert "started" not in done.stdout and "Traceback" not in done.stderr


def test_a_spinning_nodes_core_shared_within_its_site_is_refused_by_check(tmp_path):
    """A property of the file alone: `spikewire check` says so, not only `run`."""
    net = tmp_path / "spin.toml"
    net.write_text(_with(zurich=f"spin = true\ncpu = [{CPUS[-1]}]", padova=f"cpu = [{CPUS[-1]}]"))
    done = subprocess.run([sys.executable, "-m", "spikewire", "check", str(net)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "nodes.zurich.cpu: CPU" in done.stderr and "core of its own" in done.stderr
