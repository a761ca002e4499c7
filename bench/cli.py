"""`spikewire bench ...`: the benchmarks' subcommands, added to the command line by the entry point
(``spikewire/__main__.py``) because bench sits above launch and launch never imports it."""

from __future__ import annotations

import argparse

from spikewire.core.argtypes import number


def _hop(args) -> int:
    from spikewire.bench.hop_latency import main as hop_main

    return hop_main(["--count", str(args.count), "--rate", str(args.rate)] + (["--json", args.json] if args.json else []))


def _demo(args) -> int:
    from spikewire.bench.demo_resources import main as demo_main

    return demo_main(["--duration", str(args.duration)] + (["--json", args.json] if args.json else []))


def _adex(argv: list[str]) -> int:
    from spikewire.bench.adex_scaling import main as adex_main

    return adex_main(argv)


def _scrape(argv: list[str]) -> int:
    from spikewire.bench.scrape_impact import main as scrape_main

    return scrape_main(argv)


def _detect(argv: list[str]) -> int:
    from spikewire.bench.detection import main as detect_main

    return detect_main(argv)


def _journal(argv: list[str]) -> int:
    from spikewire.bench.journal_cost import main as journal_main

    return journal_main(argv)


def _curve(argv: list[str]) -> int:
    from spikewire.bench.curve_cost import main as curve_main

    return curve_main(argv)


def _crossbar(argv: list[str]) -> int:
    from spikewire.bench.crossbar import main as crossbar_main

    return crossbar_main(argv)


def _dashboard(argv: list[str]) -> int:
    from spikewire.bench.dashboard_cost import main as dashboard_main

    return dashboard_main(argv)


def _loop(argv: list[str]) -> int:
    from spikewire.bench.loop import main as loop_main

    return loop_main(argv)


PASS_THROUGH = {"loop": (_loop, "the paper's closed loop: round trip, hop by hop, idle CPU and RSS vs raw pyzmq and ezmsg"),
                "crossbar": (_crossbar, "a 100 x 10 STDP crossbar at 1,000 spikes/s: in-node time per packet, input "
                             "link latency, CPU"),
                "adex": (_adex, "largest AdEx population in real time; speed vs Brian2"),
                "scrape": (_scrape, "loop lag with and without Prometheus scrapes"),
                "journal": (_journal, "session journal: write cost per event and the largest rate recorded live"),
                "detect": (_detect, "spike detection per 1 ms chunk at 256 / 1,024 / 4,096 channels x 30 kHz"),
                "curve": (_curve, "one link's latency and throughput with CURVE on against off"),
                "dashboard": (_dashboard, "loop probe and tick lag with the dashboard attached against not; its CPU at "
                              "1,000 spikes/s")}
"""`spikewire bench NAME ARGS...` hands ARGS (including --help) to that benchmark's own main()."""


def pass_through(argv: list[str]) -> int | None:
    """Run `bench NAME ARGS...` for a benchmark with its own parser; None if ``argv`` is not one."""
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in PASS_THROUGH:
        return PASS_THROUGH[argv[1]][0](argv[2:])
    return None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that compare against a baseline in the same run")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    h = bsub.add_parser("hop", help="one-way latency of one spikewire link vs raw pyzmq PUB->SUB",
                        description="One-way latency of one spikewire link against raw pyzmq PUB->SUB, in the same run.")
    h.add_argument("--count", type=number(int, above=0), default=5000, help="messages per measurement (default 5000)")
    h.add_argument("--rate", type=number(above=0), default=1000.0, help="messages per second (default 1000)")
    h.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    h.set_defaults(func=_hop)
    d = bsub.add_parser("demo", help="the demo's CPU per node, peak memory and tick compute p99",
                        description="The demo network's CPU per node, peak memory and tick compute p99.")
    d.add_argument("--duration", type=number(above=0), default=20.0, help="seconds to run the demo (default 20)")
    d.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    d.set_defaults(func=_demo)
    for name, (_, text) in PASS_THROUGH.items():
        bsub.add_parser(name, help=f"{text} (spikewire bench {name} --help)", add_help=False)
