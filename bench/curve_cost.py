"""What CURVE costs a link: one-way latency and throughput with encryption on against off, same run.

    spikewire bench curve [--count 3000] [--rate 1000] [--blast 20000] [--events 32] [--rounds 3] [--json F]

Each measurement is one spikewire link exactly as the runtime builds it: a ``Publisher`` (XPUB, and for
CURVE a CURVE server whose ZAP handler admits the subscriber's key) in this process, a ``Subscriber``
(XSUB, a CURVE client for CURVE) in a child process, over TCP on 127.0.0.1.

* latency: ``count`` one-event packets at ``rate``; arrival time minus send time in the receiver
  (one machine, one clock), p50 / p99.
* throughput: ``blast`` packets of ``events`` events sent as fast as the send queue takes them; the
  receiver's packets per second from the first to the last arrival (every one must arrive).

Rounds alternate the order of plain and CURVE so that drifting machine load hits both; figures are
medians over rounds, and the ratios CURVE / plain are what to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

END_ID = 0xFFFFFFFF


def _receiver(args) -> int:
    import zmq

    from spikewire.streams.clock import local_clock
    from spikewire.streams.security import CurveConfig
    from spikewire.streams.wire import decode
    from spikewire.streams.zmq_link import Subscriber

    spec = json.loads(Path(args.spec).read_text())
    ctx = zmq.Context()
    curve = None
    if spec["curve"]:
        curve = CurveConfig(spec["client_public"].encode(), spec["client_secret"].encode(), {},
                            {"server": spec["server_public"].encode()})
    sub = Subscriber(ctx, 1_000_000, curve, "server")
    sub.connect(spec["endpoint"])
    latencies: list[float] = []
    blast_first = blast_last = 0.0
    blast_n = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not sub.socket.poll(10_000):
            break
        buf = sub.socket.recv()
        now = local_clock()
        p = decode(buf)
        if p.kind == 5 or p.kind == 6:  # heartbeats and clock sync are not part of the measurement
            continue
        if len(p.events) == 1 and p.events[0]["id"] == END_ID:
            break
        if len(p.events) == 1:
            latencies.append(now - p.send_time)
        else:
            if blast_n == 0:
                blast_first = now
            blast_last = now
            blast_n += 1
    Path(args.out).write_text(json.dumps({"latencies": latencies, "blast_n": blast_n,
                                          "blast_s": blast_last - blast_first}))
    sub.close()
    ctx.term()
    return 0


def _measure(curve_on: bool, count: int, rate: float, blast: int, events: int, workdir: Path) -> dict:
    import zmq

    from spikewire.streams.clock import local_clock
    from spikewire.streams.security import CurveConfig, Refusals, ZapHandler
    from spikewire.streams.wire import EVENT_DTYPE, Kind
    from spikewire.streams.zmq_link import Publisher

    ctx = zmq.Context()
    server_pub, server_sec = zmq.curve_keypair()
    client_pub, client_sec = zmq.curve_keypair()
    zap = None
    curve = None
    if curve_on:
        curve = CurveConfig(server_pub, server_sec, {client_pub: "bench"}, {})
        zap = ZapHandler(ctx, curve.allowed, Refusals("bench"))
    pub = Publisher(ctx, Kind.SPIKE, 1, "tcp://127.0.0.1:*", 1_000_000, curve)
    spec, out = workdir / "spec.json", workdir / "out.json"
    spec.write_text(json.dumps({"curve": curve_on, "endpoint": pub.endpoint, "server_public": server_pub.decode(),
                                "client_public": client_pub.decode(), "client_secret": client_sec.decode()}))
    child = subprocess.Popen([sys.executable, "-m", "spikewire.bench.curve_cost", "--role", "receiver", "--spec",
                              str(spec), "--out", str(out)])
    try:
        deadline = time.monotonic() + 30
        while pub.poll_subscriptions() < 1:
            if zap is not None:
                zap.poll()
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("the receiver never joined")
            time.sleep(0.001)
        one = np.zeros(1, EVENT_DTYPE)
        period, nxt = 1.0 / rate, local_clock() + 0.05
        for _ in range(count):
            while (wait := nxt - local_clock()) > 0:
                time.sleep(wait)
            pub.publish(one)
            nxt += period
        time.sleep(0.1)
        many = np.zeros(events, EVENT_DTYPE)
        t0 = time.perf_counter()
        for _ in range(blast):
            while not pub.publish(many):  # a full queue: wait for it rather than drop (counted anyway)
                time.sleep(0.0005)
        send_s = time.perf_counter() - t0
        end = np.zeros(1, EVENT_DTYPE)
        end[0]["id"] = END_ID
        time.sleep(0.05)
        pub.publish(end)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        pub.close()
        if zap is not None:
            zap.close()
        ctx.term()
    res = json.loads(out.read_text())
    lat = np.array(res["latencies"])
    if res["blast_n"] != blast:
        raise RuntimeError(f"{'curve' if curve_on else 'plain'}: {res['blast_n']} of {blast} blast packets arrived")
    return {"latency_p50_s": float(np.percentile(lat, 50)), "latency_p99_s": float(np.percentile(lat, 99)),
            "latency_n": len(lat), "packets_per_s": blast / res["blast_s"] if res["blast_s"] > 0 else float("nan"),
            "events_per_s": blast * events / res["blast_s"] if res["blast_s"] > 0 else float("nan"),
            "send_s": send_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikewire bench curve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=3000, help="paced packets for latency (default 3000)")
    ap.add_argument("--rate", type=float, default=1000.0, help="their rate per second (default 1000)")
    ap.add_argument("--blast", type=int, default=20000, help="packets for throughput (default 20000)")
    ap.add_argument("--events", type=int, default=32, help="events per throughput packet (default 32)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of plain + CURVE (default 3)")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    ap.add_argument("--role", choices=["receiver"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "receiver":
        return _receiver(args)
    for name in ("count", "blast", "events", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if not args.rate > 0:
        ap.error("--rate must be > 0")
    runs: dict[str, list[dict]] = {"plain": [], "curve": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ("plain", "curve") if r % 2 == 0 else ("curve", "plain")
            for mode in order:
                print(f"round {r + 1}/{args.rounds}: {mode} ...", file=sys.stderr, flush=True)
                runs[mode].append(_measure(mode == "curve", args.count, args.rate, args.blast, args.events, Path(tmp)))
    med = {mode: {k: float(np.median([x[k] for x in rs])) for k in rs[0]} for mode, rs in runs.items()}
    ratio = {k: med["curve"][k] / med["plain"][k] for k in ("latency_p50_s", "latency_p99_s", "packets_per_s")}
    print(f"\nCURVE on vs off, one link over TCP on 127.0.0.1 (medians of {args.rounds} rounds)")
    print(f"{'':22}{'plain':>14}{'CURVE':>14}{'CURVE/plain':>14}")
    print(f"{'latency p50 [us]':22}{med['plain']['latency_p50_s'] * 1e6:14.1f}{med['curve']['latency_p50_s'] * 1e6:14.1f}"
          f"{ratio['latency_p50_s']:14.2f}")
    print(f"{'latency p99 [us]':22}{med['plain']['latency_p99_s'] * 1e6:14.1f}{med['curve']['latency_p99_s'] * 1e6:14.1f}"
          f"{ratio['latency_p99_s']:14.2f}")
    print(f"{f'packets/s ({args.events} events)':22}{med['plain']['packets_per_s']:14,.0f}"
          f"{med['curve']['packets_per_s']:14,.0f}{ratio['packets_per_s']:14.2f}")
    print(f"{'events/s':22}{med['plain']['events_per_s']:14,.0f}{med['curve']['events_per_s']:14,.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": runs, "median": med, "ratio": ratio,
                                               "machine": {"cpus": os.cpu_count()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
