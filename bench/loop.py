"""The paper's closed loop against the floor: spikewire, raw pyzmq of the same shape, and ezmsg.

    spikewire bench loop [--rates 10 1000] [--rounds 3] [--duration 12] [--no-ezmsg] [--json out.json]

The loop is the paper's: zurich -> southampton -> padova -> southampton -> zurich, four hops through three
processes. Each system runs it in turn, rounds alternating (and rotating which system goes first), so that
drift in this machine's load hits them all; every figure is the median over rounds.

- **spikewire**: ``launch/networks/paper_loop.toml`` under the real supervisor, recorded as a session (as
  ``spikewire run`` does by default), metrics exported, its loop probe at the rate. The round trip is the
  probe's; the per-hop figures are the probe's transit on each link (send to arrival, ``probe_latency_s``)
  and its time inside each forwarding node (arrival off the socket to sent, ``probe_forward_s``). Also
  the model's own path: an ANpre spike's time to the ANpost input it caused (zurich's journal: each input
  from MR2 against the last ANpre spike before it, within 50 ms).
- **raw pyzmq** and **ezmsg**: ``bench/loop_baselines.py`` (ezmsg only when installed: the ``[bench]``
  extra).

Per process: CPU over the steady part of the 10 Hz run (% of one core: the loop's idle cost) and peak RSS.

JSON (stable; ``version`` changes if a key does):
``{"bench": "loop", "version": 1, "rounds": R, "duration_s": D, "rates": {"10": {SYSTEM: RESULT}}, "ratios":
{"10": {"p50": spikewire/raw, "p99": ...}}}``; a RESULT has ``round_trip_us`` {p50, p99, p999, max},
``sent``, ``returned``, ``hops`` {name: {p50, p99}} in µs, ``processes`` {name: {cpu_pct, rss_mb}},
``loop_cpu_pct`` (their sum: at 10 Hz, the loop's idle cost), and for spikewire ``spike_to_input_us``
{count, p50, p99, max} and per process ``wakes_per_s``. spikewire's hops are named "A -> B" (a transit) and
"in B" (a forward); the baselines' "Z->S", "S fwd 1", ... (bench/loop_baselines.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import numpy as np
import psutil

from spikewire.config.toml_writer import dumps
from spikewire.core.argtypes import output_file

ROOT = Path(__file__).resolve().parent.parent
PAPER_LOOP = ROOT / "launch" / "networks" / "paper_loop.toml"
CAUSAL_WINDOW = 0.05
"""An ANpost input counts as caused by the last ANpre spike if it came within this many seconds of it."""
BIO_TYPES = {0.0: "psp", 1.0: "stimulated ap", 2.0: "spontaneous ap"}
SETTLE = 3.0
"""Seconds after the start before CPU is sampled (compilation and joins are over)."""


def _us(h: dict) -> dict:
    if not h or not h.get("count"):
        return {"count": 0}
    return {"count": h["count"], **{q: h[q] * 1e6 for q in ("p50", "p99", "p999", "max") if q in h}}


def _network(tmp: Path, rate: float, network: Path, metrics: bool) -> Path:
    data = tomllib.loads(network.read_text())
    data.setdefault("monitor", {})["probe_every"] = 1.0 / rate
    if not metrics:
        data["monitor"]["metrics"] = False
    path = tmp / "loop.toml"
    path.write_text(dumps(data))
    return path


def _scraper(ports: list[int], stop: threading.Event, every: float = 1.0) -> None:
    """GET every node's /metrics once a second, as Prometheus would."""
    while not stop.wait(every):
        for port in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    r.read()
            except OSError as e:  # a node gone at the end of the run: the next round says more
                print(f"  (scrape of :{port} failed: {e})", file=sys.stderr)


def spike_to_input(journal_path: Path, spike_port: str = "anpre.spikes", source: str = "southampton.mr2.out") -> dict:
    """Each input from ``source`` against the last ``spike_port`` spike before it (within CAUSAL_WINDOW), µs."""
    from spikewire.streams.journal import RECEIVED, SENT, read_journal
    from spikewire.streams.wire import Kind

    spikes, arrivals = [], []
    for rec in read_journal(journal_path).records:
        p = rec.packet
        if p is None or p.kind == Kind.PROBE or not len(p.events):
            continue
        if rec.direction == SENT and rec.port == spike_port:
            spikes.extend(p.events["t"].tolist())
        elif rec.direction == RECEIVED and rec.port == source:
            arrivals.append(rec.logged)
    spikes_a = np.sort(np.array(spikes))
    lat = []
    for t in arrivals:
        i = np.searchsorted(spikes_a, t) - 1
        if i >= 0 and t - spikes_a[i] <= CAUSAL_WINDOW:
            lat.append(t - spikes_a[i])
    if not lat:
        return {"count": 0}
    x = np.array(lat) * 1e6
    return {"count": len(x), "p50": float(np.median(x)), "p99": float(np.percentile(x, 99)), "max": float(x.max())}


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of every thread of ``proc`` [s], to the nanosecond where Linux's schedstat has it (psutil's
    figure counts 10 ms ticks: too coarse for a process at 2 % of a core over ten seconds)."""
    try:
        tasks = os.listdir(f"/proc/{proc.pid}/task")
        return sum(int(Path(f"/proc/{proc.pid}/task/{t}/schedstat").read_text().split()[0]) for t in tasks) / 1e9
    except (OSError, ValueError, IndexError):  # not Linux, or a thread gone meanwhile: the coarse figure
        return sum(proc.cpu_times()[:2])


def wait_ready(proc: subprocess.Popen, timeout: float) -> dict[str, psutil.Process]:
    """Read a `spikewire run`'s output until "all nodes ready" (RuntimeError with its last lines if it exits or
    ``timeout`` passes first); its node processes by node name."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while not lines or "all nodes ready" not in lines[-1]:
        if time.monotonic() > deadline or proc.poll() is not None:
            rest = proc.stdout.read() if proc.poll() is not None else ""
            raise RuntimeError("the network did not become ready:\n" + "".join(lines[-20:]) + rest)
        lines.append(proc.stdout.readline())
    nodes = {}
    for child in psutil.Process(proc.pid).children():
        cmd = child.cmdline()
        if "--node" in cmd:
            nodes[cmd[cmd.index("--node") + 1]] = child
    return nodes


def event_to_sent(session: Path) -> dict:
    """Per node.port: how long after its time each data event left (the journal's send stamp minus the
    event's time), µs. With outputs released when final this is at most about a model step."""
    from spikewire.streams.journal import SENT, read_journal
    from spikewire.streams.wire import DATA_KINDS, Kind

    out = {}
    for path in sorted((session / "journal").glob("*.swj")):
        waits: dict[str, list[float]] = {}
        for rec in read_journal(path).records:
            p = rec.packet
            if rec.direction == SENT and p is not None and p.kind in DATA_KINDS and p.kind != Kind.PROBE:
                if p.kind == Kind.BIO:  # by type: a PSP is final only when its window has passed
                    for t, _, value in p.events.tolist():
                        waits.setdefault(f"{rec.port}[{BIO_TYPES.get(value, value)}]", []).append(rec.logged - t)
                else:
                    waits.setdefault(rec.port, []).extend((rec.logged - p.events["t"]).tolist())
        for port, w in waits.items():
            x = np.array(w) * 1e6
            out[f"{path.stem}.{port}"] = {"count": len(x), "p50": float(np.median(x)), "p99": float(np.percentile(x, 99)),
                                          "max": float(x.max())}
    return out


def run_spikewire(rate: float, duration: float, network: Path = PAPER_LOOP, metrics: bool = True,
                  scrape: bool = False, timeout: float = 120.0) -> dict:
    """One run of the paper loop with its probe at ``rate``; see the module docstring for the figures."""
    from spikewire.monitor.report import probe_hops

    with tempfile.TemporaryDirectory(prefix="swbench-") as tmp:
        tmp = Path(tmp)
        net = _network(tmp, rate, network, metrics)
        session = tmp / "session"
        proc = subprocess.Popen([sys.executable, "-m", "spikewire", "run", str(net), "--duration", str(duration),
                                 "--session-dir", str(session), "--status-every", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stop = threading.Event()
        try:
            nodes = wait_ready(proc, timeout)
            if scrape:
                base = tomllib.loads(net.read_text()).get("monitor", {}).get("base_port", 9470)
                threading.Thread(target=_scraper, args=([base + i for i in range(len(nodes))], stop),
                                 daemon=True).start()
            time.sleep(SETTLE)
            cpu0 = {n: _cpu_seconds(p) for n, p in nodes.items()}
            t0 = time.monotonic()
            time.sleep(max(1.0, duration - SETTLE - 1.5))
            window = time.monotonic() - t0
            cpu = {n: (_cpu_seconds(p) - cpu0[n]) / window * 100 for n, p in nodes.items()}
            pids = {n: p.pid for n, p in nodes.items()}
            out, _ = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"spikewire run failed ({proc.returncode}): {out[-2000:]}")
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        report = json.loads((session / "summary.json").read_text())
        result = {"system": "spikewire", "rate_hz": rate, "hops": {}, "processes": {}}
        for name, f in report["nodes"].items():
            p = f.get("process") or {}
            elapsed = report.get("duration_s") or duration
            result["processes"][name] = {"pid": pids.get(name), "cpu_pct": cpu.get(name), "window_s": window,
                                         "rss_mb": p.get("max_rss_mb"), "wakes_per_s": p.get("wakes", 0) / elapsed}
        pr = report.get("probes") or {}
        result.update(sent=pr.get("sent", 0), returned=pr.get("returned", 0), round_trip_us=_us(pr.get("latency_s")))
        result["hops"] = {name: _us(h) for name, h in probe_hops(report)}
        result["loop_cpu_pct"] = sum(p["cpu_pct"] or 0.0 for p in result["processes"].values())
        result["event_to_sent_us"] = event_to_sent(session)
        zurich = session / "journal" / "zurich.swj"
        if zurich.exists():
            result["spike_to_input_us"] = spike_to_input(zurich)
        return result


def _median_result(results: list[dict]) -> dict:
    """Figure by figure, the median over rounds (the structure of the first)."""
    def med(values):
        nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return statistics.median(nums) if nums else values[0]

    def merge(items):
        first = items[0]
        if isinstance(first, dict):
            return {k: merge([it.get(k) for it in items if isinstance(it, dict) and k in it]) for k in first}
        return med(items)

    out = merge(results)
    out["rounds"] = len(results)
    return out


def _row(name: str, r: dict) -> str:
    rt = r.get("round_trip_us", {})
    procs = r.get("processes", {})
    rss = max((p.get("rss_mb") or 0 for p in procs.values()), default=0)
    return (f"{name:<12}{rt.get('p50', float('nan')):>8.0f}{rt.get('p99', float('nan')):>8.0f}"
            f"{rt.get('p999', float('nan')):>8.0f}{rt.get('max', float('nan')):>8.0f}"
            f"{r.get('loop_cpu_pct', float('nan')):>9.2f}{rss:>9.0f}   {r.get('returned', '-')}/{r.get('sent', '-')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikewire bench loop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[10.0, 1000.0], help="probe rates [Hz] (default 10 1000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per rate (default 3)")
    ap.add_argument("--duration", type=float, default=12.0, help="seconds per spikewire run (default 12)")
    ap.add_argument("--no-ezmsg", action="store_true", help="leave ezmsg out even when it is installed")
    ap.add_argument("--network", type=Path, default=PAPER_LOOP, help="spikewire's network (default the paper's "
                    "loop; its [monitor] probe_from must go round a loop)")
    ap.add_argument("--scrape", action="store_true", help="scrape every node's /metrics at 1 Hz during spikewire's runs")
    ap.add_argument("--json", metavar="PATH", type=output_file, help="write the figures as JSON")
    args = ap.parse_args(argv)
    if args.rounds < 1 or not args.duration >= SETTLE + 3 or not math.isfinite(args.duration) \
            or any(not 1 <= r <= 1000 for r in args.rates):
        ap.error(f"--rounds must be >= 1, --duration >= {SETTLE + 3:g} s, and rates 1-1000 Hz (a probe every 1 ms "
                 "to 1 s)")
    from spikewire.config.network import NetworkError, load_network, preflight

    try:  # the checks `spikewire run` makes, before anything runs
        net = load_network(args.network)
        preflight(net, reset_state=True)
    except NetworkError as e:
        ap.error(f"--network {args.network}: {e}")
    if not net.monitor.probe_from:
        ap.error(f"--network {args.network}: no [monitor] probe_from, so no loop probe to time")
    from spikewire.bench import loop_baselines as base

    systems = {"raw pyzmq": lambda rate: base.run_raw(rate, int(rate * (args.duration - SETTLE))),
               "spikewire": lambda rate: run_spikewire(rate, args.duration, args.network, scrape=args.scrape)}
    if not args.no_ezmsg:
        if importlib.util.find_spec("ezmsg") is not None:
            systems["ezmsg"] = lambda rate: base.run_ezmsg(rate, int(rate * (args.duration - SETTLE)))
        else:
            print("ezmsg is not installed (pip install 'spikewire[bench]'): measuring raw pyzmq and spikewire")
    report = {"bench": "loop", "version": 1, "rounds": args.rounds, "duration_s": args.duration, "rates": {},
              "ratios": {}}
    for rate in args.rates:
        runs: dict[str, list[dict]] = {name: [] for name in systems}
        order = list(systems)
        for rnd in range(args.rounds):
            for name in order[rnd % len(order):] + order[:rnd % len(order)]:
                print(f"rate {rate:g} Hz, round {rnd + 1}/{args.rounds}: {name} ...", flush=True)
                runs[name].append(systems[name](rate))
        med = {name: _median_result(rs) for name, rs in runs.items() if rs and rs[0] is not None}
        if not med["spikewire"].get("returned"):
            print(f"no loop probe came back to {net.monitor.probe_from}: [monitor] probe_from must start a path that "
                  "returns to its node", file=sys.stderr)
            return 1
        key = f"{rate:g}"
        report["rates"][key] = med
        raw, sw = med.get("raw pyzmq", {}).get("round_trip_us", {}), med["spikewire"].get("round_trip_us", {})
        report["ratios"][key] = {q: sw[q] / raw[q] for q in ("p50", "p99", "p999", "max") if raw.get(q) and sw.get(q)}
        if "ezmsg" in med:
            ez = med["ezmsg"].get("round_trip_us", {})
            report["ratios"][key].update({f"{q}_vs_ezmsg": sw[q] / ez[q] for q in ("p50", "p99") if ez.get(q) and sw.get(q)})
        rounds = "1 round" if args.rounds == 1 else f"median of {args.rounds} rounds"
        print(f"\nround trip at {rate:g} Hz (µs, {rounds}; CPU: the whole loop, % of one core)")
        print(f"{'system':<12}{'p50':>8}{'p99':>8}{'p99.9':>8}{'max':>8}{'CPU %':>9}{'RSS MB':>9}   returned")
        for name, r in med.items():
            print(_row(name, r))
        ratios = report["ratios"][key]
        print("spikewire / raw pyzmq: " + ", ".join(f"{q} {v:.2f}x" for q, v in ratios.items() if "_vs_" not in q))
        if "p50_vs_ezmsg" in ratios:
            print("spikewire / ezmsg: " + ", ".join(f"{q[:-9]} {v:.2f}x" for q, v in ratios.items() if "_vs_" in q))
        print("spikewire's probe, hop by hop, in the loop's order (p50 / p99 µs):")
        for hop, h in med["spikewire"].get("hops", {}).items():
            print(f"  {hop:<44}{h.get('p50', float('nan')):>8.0f}{h.get('p99', float('nan')):>8.0f}")
        for port, w in med["spikewire"].get("event_to_sent_us", {}).items():
            print(f"  {port + ': event -> sent':<44}{w['p50']:>8.0f}{w['p99']:>8.0f}")
        s2i = med["spikewire"].get("spike_to_input_us", {})
        if s2i.get("count"):
            print(f"  {'ANpre spike -> ANpost input (through BN)':<44}{s2i['p50']:>8.0f}{s2i['p99']:>8.0f}"
                  f"   ({s2i['count']:.0f} pairs)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
