"""Does serving Prometheus scrapes stall a node's loop? Tick lag with and without scraping, same run.

    python bench/scrape_impact.py [--duration 15]
    spikewire bench scrape      (the same)

Runs the paper loop with its clock-driven nodes paced tick by tick (lookahead 0, so every 1 ms tick's
wake is measured) in four configurations, one after the other in this run:

    none              no scraper
    loop, 1 Hz        our design: the exposition is rendered in the loop at a quiet moment, and the HTTP
                      thread serves the cached bytes; scraped every second
    loop, 10 Hz       the same, scraped ten times a second (stress)
    scrape, 1 Hz      the naive design: render on each request in the HTTP thread (``[monitor] render``)

and prints, per clocked node, the loop lag p99 / p99.9 / max (how late the loop woke for a due tick)
and tick compute p99, from the run's own summary. The configurations alternate for ``--rounds`` rounds
and each figure is the median over rounds: on a 2-vCPU VM one run's tail is mostly the machine's noise.
A 1 Hz scrape touches at most one tick in a thousand, so if it stalled the loop it would show in p99.9
and max, not p99.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from spikewire.launch.ports import free_port_block
from spikewire.core.argtypes import number

ROOT = Path(__file__).resolve().parent.parent


def _network(tmp: Path, render: str) -> tuple[Path, list[int]]:
    text = (ROOT / "launch" / "networks" / "paper_loop.toml").read_text()
    base = free_port_block(3)
    text = re.sub(r"base_port = \d+", f'base_port = {base}\nrender = "{render}"', text)
    text = text.replace("tick = 1e-3\n", "tick = 1e-3\nlookahead = 0.0\n")
    path = tmp / f"scrape_{render}.toml"
    path.write_text(text)
    return path, [base, base + 1, base + 2]


def _scraper(ports: list[int], hz: float, stop: threading.Event, stats: dict) -> None:
    while not stop.wait(1.0 / hz):
        for port in ports:
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    r.read()
                stats["ok"] += 1
                stats["max_s"] = max(stats["max_s"], time.perf_counter() - t)
            except OSError:
                stats["failed"] += 1


def run_one(tmp: Path, render: str, hz: float, duration: float) -> dict:
    net, ports = _network(tmp, render)
    out = tmp / "summary.json"
    proc = subprocess.Popen([sys.executable, "-m", "spikewire", "run", str(net), "--duration", str(duration),
                             "--json", str(out), "--reset-weights"], cwd=tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    stop, stats = threading.Event(), {"ok": 0, "failed": 0, "max_s": 0.0}
    scraper = None
    try:
        for line in proc.stdout:
            if "all nodes ready" in line:
                break
        if hz:
            scraper = threading.Thread(target=_scraper, args=(ports, hz, stop, stats), daemon=True)
            scraper.start()
        proc.communicate(timeout=duration + 60)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if scraper is not None:
            scraper.join(5)
    report = json.loads(out.read_text())
    nodes = {}
    for name, n in report["nodes"].items():
        loop = n.get("loop") or {}
        if loop.get("ticks"):
            nodes[name] = {"lag_p99_us": loop["lag_s"]["p99"] * 1e6, "lag_p999_us": loop["lag_s"]["p999"] * 1e6,
                           "lag_max_us": loop["lag_s"]["max"] * 1e6,
                           "tick_p99_us": loop["tick_compute_s"]["p99"] * 1e6, "overruns": loop["overruns"]}
    return {"render": render, "scrape_hz": hz, "scrapes": stats["ok"], "failed": stats["failed"],
            "slowest_scrape_ms": stats["max_s"] * 1e3, "nodes": nodes}


def _median_rounds(rounds: list[dict]) -> dict:
    import statistics

    out = dict(rounds[0])
    out["scrapes"] = sum(r["scrapes"] for r in rounds)
    out["failed"] = sum(r["failed"] for r in rounds)
    out["slowest_scrape_ms"] = max(r["slowest_scrape_ms"] for r in rounds)
    out["nodes"] = {node: {k: statistics.median(r["nodes"][node][k] for r in rounds) for k in figs}
                    for node, figs in rounds[0]["nodes"].items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikewire bench scrape", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=number(above=0), default=12.0, help="seconds per run (default 12)")
    ap.add_argument("--rounds", type=number(int, above=0), default=3,
                    help="alternating rounds with and without scrapes (default 3)")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)
    configs = (("loop", 0.0), ("loop", 1.0), ("loop", 10.0), ("scrape", 1.0))
    by_config: dict[tuple, list] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for render, hz in configs:
                print(f"round {r + 1}/{args.rounds}: render={render}, scrape {hz:g} Hz, {args.duration:g} s ...",
                      flush=True)
                by_config[(render, hz)].append(run_one(Path(tmp), render, hz, args.duration))
    results = [_median_rounds(by_config[c]) for c in configs]
    print(f"\nmedian over {args.rounds} rounds")
    print(f"{'configuration':<20}{'node':<9}{'lag p99':>9}{'p99.9':>9}{'max':>9}{'tick p99':>10}"
          f"{'overruns':>9}{'scrapes':>9}{'slowest ms':>11}   (us unless noted)")
    for r in results:
        label = f"{r['render']}, " + (f"{r['scrape_hz']:g} Hz" if r["scrape_hz"] else "no scrape")
        for i, (node, f) in enumerate(r["nodes"].items()):
            extra = f"{r['scrapes']:>9}{r['slowest_scrape_ms']:>11.1f}" if i == 0 else ""
            print(f"{label if i == 0 else '':<20}{node:<9}{f['lag_p99_us']:>9.0f}{f['lag_p999_us']:>9.0f}"
                  f"{f['lag_max_us']:>9.0f}{f['tick_p99_us']:>10.0f}{f['overruns']:>9.0f}{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
