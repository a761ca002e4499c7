"""The three-lab loop of Serb et al. (2020), built and run from Python.

    ANpre (zurich) -> MR1 (southampton) -> CME stimulus -> BN (padova) -> MR2 (southampton) -> ANpost (zurich)

``build()`` makes the same network as launch/networks/paper_loop.toml (tests/test_python_api.py holds
them equal); ``main()`` runs it and prints a few figures from the summary object. Run it with

    .venv/bin/python examples/python/paper_loop.py --duration 10
    .venv/bin/python examples/python/paper_loop.py --toml          # print the network file instead
"""

from __future__ import annotations

import argparse
import sys

import spikewire as sw


def build(base_port: int = 9470) -> sw.Network:
    net = sw.Network("paper_loop", "Padova-Southampton-Zurich loop: ANpre -> MR1 -> BN -> MR2 -> ANpost")
    net.node("zurich", "silicon", site="zurich", dt=1e-4, tick=1e-3, populations={
        "anpre": {"size": 1, "drive": {"kind": "pacemaker", "rate": 10.0, "weight": 4e-9}},  # a 10 Hz pacemaker
        "anpost": {"size": 1},
    })
    net.node("southampton", "memristor", site="southampton", rows=2, cols=2, r_init=14000.0, synapses={
        # rows (pre, post, wordline, bitline); MR1's out events are CME pulse amplitudes [V]
        "mr1": {"table": [[0, 0, 0, 0]], "output": "stimulus", "out_min": 0.0, "out_max": 1.0,
                "post_types": [0, 2]},  # PSPs and spontaneous APs trigger MR1's rule (as the hub did)
        # MR2's are synaptic current steps [A], driven by BN's action potentials only
        "mr2": {"table": [[0, 0, 1, 1]], "output": "synaptic", "out_min": 1.0e-9, "out_max": 8.0e-9,
                "pre_types": [1, 2]},
    })
    net.node("padova", "biological", site="padova", size=1, dt=1e-4, tick=1e-3)  # an Izhikevich RS cell
    (net.link("zurich.anpre.spikes", "southampton.mr1.pre")
        .link("southampton.mr1.out", "padova.stim")
        .link("padova.events", "southampton.mr1.post")
        .link("padova.events", "southampton.mr2.pre")
        .link("southampton.mr2.out", "zurich.anpost.input")
        .link("zurich.anpost.spikes", "southampton.mr2.post"))
    net.monitor(base_port=base_port, probe_from="zurich.anpre.spikes")  # metrics on base_port + node index
    return net


def main(argv: list[str] | None = None) -> sw.RunSummary | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    ap.add_argument("--base-port", type=int, default=9470, help="first metrics port (default 9470)")
    ap.add_argument("--session-dir", help="where to record the session (default sessions/<UTC time>)")
    ap.add_argument("--quiet", action="store_true", help="print only the figures below, not the run's output")
    ap.add_argument("--toml", action="store_true", help="print the network file and exit")
    args = ap.parse_args(argv)

    net = build(args.base_port)
    if args.toml:
        print(net.to_toml(), end="")
        return None
    summary = sw.run(net, duration=args.duration, session_dir=args.session_dir, quiet=args.quiet)
    print(f"\n{summary.outcome} after {summary.duration:.1f} s")
    for population, count in summary.spikes.items():
        print(f"  {population}: {count} spikes")
    for device in summary.memristors:
        print(f"  {device['name']}: {device['r_start'] / 1e3:.1f} -> {device['r_end'] / 1e3:.1f} kOhm")
    mr1 = summary.link("zurich.anpre.spikes", "southampton.mr1.pre")
    print(f"  ANpre -> MR1: {mr1['received']} of {mr1['sent']} packets, p99 {mr1['latency_p99_s'] * 1e6:.0f} us")
    return summary


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result is None or result.ok else 1)
