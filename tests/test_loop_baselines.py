"""The baseline loops of `bench loop`, run for real: three processes over loopback, raw pyzmq and ezmsg."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import psutil
import pytest

from spikewire.bench.loop_baselines import HOPS, ROLES, run_ezmsg, run_raw

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

RATE, COUNT = 50.0, 40
HAS_EZMSG = importlib.util.find_spec("ezmsg") is not None


def _no_children_left(pids) -> None:
    assert psutil.Process().children(recursive=True) == []
    for pid in pids:  # ezmsg's forwarders are grandchildren: reaped by the runner, or killed with its group
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid


def _check_loop(res: dict) -> None:
    assert json.loads(json.dumps(res)) == res
    assert res["sent"] == res["returned"] == COUNT
    rt = res["round_trip_us"]
    assert 0 < rt["p50"] <= rt["p99"] <= rt["p999"] <= rt["max"] < 50_000
    hops = res["hops"]
    assert list(hops) == list(HOPS)
    for name, h in hops.items():  # a stamp left out would make its two hops absurd, one of them negative
        assert 0 < h["p50"] <= h["p99"] < 50_000, name
    assert sum(h["mean"] for h in hops.values()) == pytest.approx(rt["mean"], rel=1e-6)
    assert 0.5 < sum(h["p50"] for h in hops.values()) / rt["p50"] < 2.0
    window = (COUNT - 1) / RATE
    for role in ROLES:
        p = res["processes"][role]
        assert window * 0.8 < p["window_s"] < window + 2.0, role
        assert 0 < p["cpu_pct"] < 100, role
        assert 10 < p["rss_mb"] < 400, role
    assert res["loop_cpu_pct"] == pytest.approx(sum(res["processes"][r]["cpu_pct"] for r in ROLES))
    _no_children_left([p["pid"] for p in res["processes"].values()])


def test_raw_pyzmq_loop_returns_every_probe_with_a_full_breakdown():
    res = run_raw(RATE, COUNT, timeout=40)
    assert res["system"] == "raw pyzmq"
    _check_loop(res)


def test_ezmsg_loop_returns_every_probe_or_says_it_is_not_installed():
    res = run_ezmsg(RATE, COUNT, timeout=40)
    if not HAS_EZMSG:
        assert res == {"system": "ezmsg", "not_installed": True, "rate_hz": RATE, "count": COUNT}
        return
    assert res["system"].startswith("ezmsg 3.")
    _check_loop(res)


def test_without_ezmsg_the_module_imports_and_run_ezmsg_says_not_installed():
    # In a fresh interpreter where `import ezmsg` fails, whether or not it is installed here.
    code = ("import sys, json; sys.modules['ezmsg'] = None\n"
            "from spikewire.bench.loop_baselines import run_ezmsg\n"
            "print(json.dumps(run_ezmsg(10.0, 5)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"system": "ezmsg", "not_installed": True, "rate_hz": 10.0, "count": 5}


def _loop_processes(count: int) -> list[psutil.Process]:
    """Live processes of a loop run with this count, wherever they are in the tree (an orphan is not a child)."""
    return [proc for proc in psutil.process_iter(["cmdline", "status"])
            if "spikewire.bench.loop_baselines" in (proc.info["cmdline"] or [])
            and str(count) in proc.info["cmdline"] and proc.info["status"] != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("run", [run_raw, pytest.param(run_ezmsg, marks=pytest.mark.skipif(
    not HAS_EZMSG and not os.environ.get("CI"), reason="ezmsg not installed: no process tree to kill"))])
def test_a_loop_past_its_timeout_is_killed_with_all_its_processes(run):
    count = 9973  # marks this run's command lines
    shm_before = set(os.listdir("/dev/shm"))
    with pytest.raises(subprocess.TimeoutExpired):
        run(10.0, count, timeout=3.0)
    _no_children_left([])
    assert _loop_processes(count) == []
    assert set(os.listdir("/dev/shm")) - shm_before == set()  # ezmsg's buffers, unlinked on the way out
