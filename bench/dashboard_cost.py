"""Does watching a run in the dashboard cost its loop anything? The same run with and without it attached.

    spikewire bench dashboard [--duration 20] [--rounds 2] [--json PATH]

Runs the paper loop (``--network``) alternately without and with ``spikewire run --dashboard`` and a page
stand-in reading its WebSocket feed (every frame, as a browser would), for ``--rounds`` rounds each, and
prints the loop probe's round trip p50/p99 and each clocked node's tick lag p99 (how late its loop woke for
a due tick) from the run's own summary, the median over rounds, on against off. Then it runs a 100-neuron
Poisson population at 10 Hz (``--crossbar-network``: 1,000 spikes/s into a 100 x 10 crossbar) with the
dashboard attached and reports the dashboard process's CPU (user + system over the run's middle, % of one
core) and the events a second its feed carried.

The catch: on a 2-vCPU machine one run's p99 moves by tens of percent from round to round on its own, so
compare the on/off difference with the spread between rounds of the same setting (both printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import psutil

from spikewire.core.argtypes import number
from spikewire.launch.ports import free_port_block

NETWORKS = Path(__file__).resolve().parent.parent / "launch" / "networks"


class Page:
    """A page stand-in: reads every frame of the dashboard's WebSocket feed until told to stop."""

    def __init__(self, base: str):
        self.base, self.frames, self.bytes, self.events = base, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._read()), daemon=True)
        self._thread.start()

    async def _read(self) -> None:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while not self._stop.is_set():
                try:
                    async with http.ws_connect(f"{self.base}/ws", timeout=aiohttp.ClientWSTimeout(ws_close=2)) as ws:
                        while not self._stop.is_set():
                            msg = await ws.receive(timeout=2.0)
                            if msg.type != aiohttp.WSMsgType.TEXT:
                                return
                            self.frames += 1
                            self.bytes += len(msg.data)
                            self.events += sum(len(v) for v in json.loads(msg.data).get("events", {}).values())
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    if time.monotonic() > deadline:
                        return
                    await asyncio.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _collect(stream, into: list[str]) -> None:
    for line in stream:
        into.append(line)


def run_once(network: Path, duration: float, dashboard: bool, work: Path, tag: str) -> dict:
    out = work / f"{tag}.json"
    cmd = [sys.executable, "-m", "spikewire", "run", str(network), "--duration", str(duration), "--json", str(out),
           "--session-dir", str(work / tag), "--base-port", str(free_port_block(8))]
    if dashboard:
        cmd += ["--dashboard", f"127.0.0.1:{free_port_block(1)}"]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=_collect, args=(proc.stdout, lines), daemon=True).start()
    page = dash = None
    cpu = None
    try:
        deadline = time.monotonic() + 90
        while not any("all nodes ready" in ln for ln in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{network.name} did not start:\n" + "".join(lines[-20:]))
            time.sleep(0.05)
        if dashboard:
            while not (url := next((ln.split()[1] for ln in lines if ln.startswith("dashboard: http")), None)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the dashboard did not start:\n" + "".join(lines[-20:]))
                time.sleep(0.05)
            page = Page(url.split("/?")[0])
            dash = next(p for p in psutil.Process(proc.pid).children() if "dashboard" in " ".join(p.cmdline()))
            time.sleep(min(3.0, duration / 4))
            c0, t0 = sum(dash.cpu_times()[:2]), time.monotonic()
            e0 = page.events
            time.sleep(max(1.0, duration - 2 * min(3.0, duration / 4)))
            c1, t1 = sum(dash.cpu_times()[:2]), time.monotonic()
            cpu = {"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "events_per_s": (page.events - e0) / (t1 - t0),
                   "frames": page.frames, "kB_per_s": page.bytes / 1e3 / max(1e-9, t1 - t0)}
        if proc.wait(timeout=duration + 90) != 0:
            raise RuntimeError(f"{network.name} failed:\n" + "".join(lines[-20:]))
    finally:
        if page is not None:
            page.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    summary = json.loads(out.read_text())
    probe = (summary.get("probes") or {}).get("latency_s") or {}
    lag = {n: f["loop"]["lag_s"]["p99"] for n, f in summary["nodes"].items()
           if (f.get("loop") or {}).get("lag_s", {}).get("count")}
    return {"probe_p50": probe.get("p50"), "probe_p99": probe.get("p99"), "lag_p99": lag, "dashboard": cpu}


def _us(x) -> str:
    return "-" if x is None else f"{x * 1e6:,.0f}"


def _change(on: float | None, off: float | None) -> str:
    return "-" if not on or not off else f"{100 * (on - off) / off:+.0f} %"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikewire bench dashboard", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--network", type=Path, default=NETWORKS / "paper_loop.toml", help="the loop (default paper_loop)")
    ap.add_argument("--duration", type=number(above=0), default=20.0, help="seconds per run (default 20)")
    ap.add_argument("--rounds", type=number(int, above=0), default=2, help="runs with and without, alternating "
                    "(default 2 each)")
    ap.add_argument("--crossbar-network", type=Path, default=NETWORKS / "crossbar_100x10.toml",
                    help="the 1,000 spikes/s network for the dashboard's CPU (default crossbar_100x10)")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)
    results: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="spikewire-bench-dashboard-") as tmp:
        work = Path(tmp)
        for i in range(args.rounds):
            for setting in ("off", "on"):
                print(f"round {i + 1}/{args.rounds}: {args.network.name}, dashboard {setting}", flush=True)
                results[setting].append(run_once(args.network, args.duration, setting == "on", work, f"{setting}{i}"))
        print(f"{args.crossbar_network.name} with the dashboard attached", flush=True)
        heavy = run_once(args.crossbar_network, args.duration, True, work, "crossbar")

    def med(setting: str, get):
        values = [v for r in results[setting] if (v := get(r)) is not None]
        return (statistics.median(values), min(values), max(values)) if values else (None, None, None)

    rows = [("loop probe p50", lambda r: r["probe_p50"]), ("loop probe p99", lambda r: r["probe_p99"])]
    nodes = sorted({n for rs in results.values() for r in rs for n in r["lag_p99"]})
    rows += [(f"tick lag p99 {n}", lambda r, n=n: r["lag_p99"].get(n)) for n in nodes]
    print(f"\n{args.network.name}, {args.duration:g} s runs, median of {args.rounds} (range), us")
    print(f"{'figure':<26} {'off':>22} {'on':>22} {'change':>8}")
    table = {}
    for name, get in rows:
        off, on = med("off", get), med("on", get)
        table[name] = {"off": off[0], "on": on[0], "off_range": off[1:], "on_range": on[1:]}
        print(f"{name:<26} {_us(off[0]):>8} ({_us(off[1])}-{_us(off[2])}) {_us(on[0]):>8} ({_us(on[1])}-{_us(on[2])})"
              f" {_change(on[0], off[0]):>8}")
    loop_cpu = [r["dashboard"]["cpu_pct"] for r in results["on"] if r["dashboard"]]
    d = heavy["dashboard"]
    print(f"\ndashboard process: {statistics.median(loop_cpu):.1f} % of a core on {args.network.name}; "
          f"{d['cpu_pct']:.1f} % on {args.crossbar_network.name} with its feed carrying {d['events_per_s']:,.0f} "
          f"events/s ({d['frames']} frames, {d['kB_per_s']:.0f} kB/s to the page)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": results, "table": table, "crossbar": heavy}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
