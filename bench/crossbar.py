"""A crossbar at scale, live: the time a memristor node takes to answer its input packets.

    spikewire bench crossbar [--network launch/networks/crossbar_100x10.toml] [--duration 20] [--json out.json]

Runs the network under the real supervisor, recorded as a session, and reads the figures from the session:

- **in-node time** per answered packet: from the packet's arrival (the time the node gives the events it
  answers with) to the answer leaving (the journal's send stamp), over every output packet of every node
  that holds devices; p50 / p99 / p99.9 / max in µs;
- the **input link latency** of those nodes (send to receive, the runtime's own histogram);
- pulses applied, devices, and each node's CPU (% of one core, from ``/proc`` schedstat).

The default network is 100 Poisson neurons at 10 Hz (1,000 spikes/s) into a 100 x 10 all-to-all STDP
crossbar. Nodes are found by what they declare (devices), never by kind.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spikewire.bench.loop import _cpu_seconds, wait_ready
from spikewire.core.argtypes import number, output_file

ROOT = Path(__file__).resolve().parent.parent
NETWORK = ROOT / "launch" / "networks" / "crossbar_100x10.toml"
VERSION = 1


def _quantiles(x: np.ndarray) -> dict:
    if not len(x):
        return {"packets": 0}
    return {"packets": int(len(x)), "p50": float(np.median(x)), "p99": float(np.percentile(x, 99)),
            "p999": float(np.percentile(x, 99.9)), "max": float(x.max())}


def in_node(session: Path, nodes: list[str]) -> np.ndarray:
    """Per answered packet of ``nodes``: send stamp minus the events' time (their arrival), µs."""
    from spikewire.streams.journal import SENT, read_journal
    from spikewire.streams.wire import DATA_KINDS

    waits = []
    for name in nodes:
        path = session / "journal" / f"{name}.swj"
        for rec in read_journal(path).records:
            p = rec.packet
            if rec.direction == SENT and p is not None and p.kind in DATA_KINDS and len(p.events):
                waits.append(rec.logged - float(p.events["t"][0]))
    return np.array(waits) * 1e6


def run(network: Path, duration: float, timeout: float = 180.0) -> dict:
    from spikewire.config.network import load_network

    net = load_network(network)
    crossbars = [n for n, spec in net.nodes.items() if spec.declaration.devices]
    if not crossbars:
        raise ValueError(f"{network}: no node declares devices: nothing to time")
    with tempfile.TemporaryDirectory(prefix="swbench-xb-") as tmp:
        session = Path(tmp) / "session"
        proc = subprocess.Popen([sys.executable, "-m", "spikewire", "run", str(network), "--duration", str(duration),
                                 "--session-dir", str(session), "--reset-weights", "--status-every", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            procs = wait_ready(proc, timeout)
            cpu0 = {n: _cpu_seconds(p) for n, p in procs.items()}
            t0 = time.monotonic()
            time.sleep(max(1.0, duration - 1.5))
            window = time.monotonic() - t0
            cpu = {n: (_cpu_seconds(p) - cpu0[n]) / window * 100 for n, p in procs.items()}
            out, _ = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"spikewire run failed ({proc.returncode}): {out[-2000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        report = json.loads((session / "summary.json").read_text())
        waits = in_node(session, crossbars)
    inputs = [ln for ln in report["links"] if ln["link"].split(" -> ")[1].split(".")[0] in crossbars]
    busiest = max(inputs, key=lambda ln: ln["received"]) if inputs else None
    devices = [m for m in report.get("memristors", []) if m["node"] in crossbars]
    return {"version": VERSION, "network": str(network), "duration_s": duration, "nodes": crossbars,
            "devices": len(devices), "pulses": sum(m["ltp_pulses"] + m["ltd_pulses"] for m in devices),
            "in_node_us": _quantiles(waits),
            "input_link": busiest["link"] if busiest else None,
            "input_link_us": ({q: busiest[f"latency_{q}_s"] * 1e6 for q in ("p50", "p99", "p999", "max")}
                              | {"packets": busiest["received"]}) if busiest else {},
            "cpu_pct": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikewire bench crossbar", description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", default=str(NETWORK), help="a network with at least one node that declares devices "
                    "(default launch/networks/crossbar_100x10.toml)")
    ap.add_argument("--duration", type=number(float, above=2.0), default=20.0,
                    help="seconds to run, more than 2 (default 20)")
    ap.add_argument("--json", metavar="PATH", type=output_file, help="write the figures as JSON")
    args = ap.parse_args(argv)
    from spikewire.config.network import NetworkError

    try:
        r = run(Path(args.network), args.duration)
    except NetworkError as e:  # a bad network file: refused before anything starts, as run refuses it
        print(f"{args.network}: {e}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as e:
        print(f"spikewire bench crossbar: {e}", file=sys.stderr)
        return 1
    t = r["in_node_us"]
    print(f"{r['devices']:,} devices in {', '.join(r['nodes'])}, {r['duration_s']:g} s, {r['pulses']:,} pulses")
    if t["packets"]:
        print(f"in-node (arrival -> answer sent), {t['packets']:,} packets: p50 {t['p50']:.0f} us, p99 {t['p99']:.0f} us, "
              f"p99.9 {t['p999']:.0f} us, max {t['max']:.0f} us")
    if r["input_link"]:
        ln = r["input_link_us"]
        print(f"input link {r['input_link']} ({ln['packets']:,} packets): p50 {ln['p50']:.0f} us, "
              f"p99 {ln['p99']:.0f} us, max {ln['max']:.0f} us")
    print("CPU (% of one core): " + ", ".join(f"{n} {c:.1f}" for n, c in sorted(r["cpu_pct"].items())))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
