"""The demo's budgets: CPU per node in steady state, peak memory, tick compute p99.

    python bench/demo_resources.py [--network launch/networks/paper_loop.toml] [--duration 20]
    spikewire bench demo        (the same)

Runs the network under the real supervisor, samples each node process's CPU time (psutil) over the
steady part of the run (after a settling period), and reads peak RSS and tick compute from the run's
JSON summary. As a baseline measured in the same run it also times a bare process that only wakes
every 1 ms (what a node paced tick by tick would pay for waking alone on this machine).

Goals (issue 2): total idle CPU of the 3-node demo < 10 % of one core; each node's peak RSS < 200 MB;
each node's tick compute p99 < 200 us.
"""

from __future__ import annotations

import argparse
import json
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def bare_wake_cpu(seconds: float = 3.0, period: float = 1e-3) -> float:
    """CPU (% of one core) of a loop that only sleeps until the next 1 ms deadline."""
    c0, t0 = time.process_time(), time.monotonic()
    nxt = t0
    while time.monotonic() - t0 < seconds:
        nxt += period
        wait = nxt - time.monotonic()
        if wait > 0:
            select.select([], [], [], wait)
    return (time.process_time() - c0) / seconds * 100


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", default=str(ROOT / "launch" / "networks" / "paper_loop.toml"))
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=4.0, help="seconds after start before sampling CPU")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        proc = subprocess.Popen([sys.executable, "-m", "spikewire", "run", args.network, "--duration",
                                 str(args.duration), "--json", str(summary)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            line = ""
            deadline = time.monotonic() + 90
            while "all nodes ready" not in line:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the demo did not become ready")
                line = proc.stdout.readline()
            time.sleep(args.settle)
            nodes = {p.cmdline()[p.cmdline().index("--node") + 1]: p for p in psutil.Process(proc.pid).children()}
            cpu0 = {n: sum(p.cpu_times()[:2]) for n, p in nodes.items()}
            window = max(1.0, args.duration - args.settle - 2.0)
            t0 = time.monotonic()
            time.sleep(window)
            cpu = {n: (sum(p.cpu_times()[:2]) - cpu0[n]) / (time.monotonic() - t0) * 100 for n, p in nodes.items()}
            sup_cpu = psutil.Process(proc.pid).cpu_percent(interval=0.5)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        report = json.loads(summary.read_text())
    baseline = bare_wake_cpu()
    rows = []
    for name, node in report["nodes"].items():
        tc = node["loop"]["tick_compute_s"]
        rows.append({"node": name, "cpu_pct": cpu.get(name, float("nan")), "peak_rss_mb": node["process"]["max_rss_mb"],
                     "tick_p99_us": tc["p99"] * 1e6 if tc.get("count") else None,
                     "ticks": node["loop"]["ticks"], "computed": node["loop"].get("computed"),
                     "rollbacks": node["loop"].get("rollbacks")})
    total = sum(r["cpu_pct"] for r in rows)
    print(f"{'node':<14}{'cpu %':>8}{'peak MB':>9}{'tick p99 us':>13}{'ticks':>8}{'computed':>10}{'rollbacks':>10}")
    for r in rows:
        p99 = f"{r['tick_p99_us']:.0f}" if r["tick_p99_us"] is not None else "-"
        print(f"{r['node']:<14}{r['cpu_pct']:>8.2f}{r['peak_rss_mb']:>9.0f}{p99:>13}{r['ticks']:>8}"
              f"{r['computed'] or '-':>10}{r['rollbacks'] if r['rollbacks'] is not None else '-':>10}")
    print(f"{'all nodes':<14}{total:>8.2f}   (supervisor {sup_cpu:.1f} %)")
    print(f"baseline: a bare 1 kHz wake loop costs {baseline:.2f} % of a core on this machine")
    print("goals: all nodes < 10 % of a core; peak < 200 MB per node; tick p99 < 200 us")
    if args.json:
        Path(args.json).write_text(json.dumps({"nodes": rows, "total_cpu_pct": total, "supervisor_cpu_pct": sup_cpu,
                                               "bare_wake_1khz_cpu_pct": baseline}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
