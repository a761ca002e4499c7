"""One-way latency of one spikewire link against raw pyzmq PUB->SUB, in the same run.

    python bench/hop_latency.py [--count 5000] [--rate 1000] [--rounds 2] [--json out.json]
    spikewire bench hop        (the same)

spikewire: a ``source`` node publishes ``count`` spike events at ``rate`` through its runtime (encode,
XPUB); a ``sink`` node receives them in its runtime (select wake, decode, validate, sequence and
latency bookkeeping, dispatch) and records arrival minus event time. Two node processes under the
supervisor, exactly as in a run.

raw pyzmq: two bare processes, PUB -> SUB over tcp on 127.0.0.1, the sender pacing the same way and
sending a same-sized message stamped with local_clock(), the receiver blocked in recv().

Rounds alternate raw / spikewire so that drift in machine load hits both; the figures are pooled
over rounds and the ratios spikewire / raw are printed. On a 2-vCPU VM expect a noisy tail.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PAYLOAD = 48  # bytes of a one-event spikewire packet (32-byte header + 16-byte event)


def _raw_pub(endpoint_file: str, count: int, rate: float) -> None:
    import zmq

    from spikewire.streams.clock import local_clock

    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.bind("tcp://127.0.0.1:*")
    Path(endpoint_file).write_text(pub.getsockopt_string(zmq.LAST_ENDPOINT))
    if not pub.poll(30_000):  # the subscription arrives: the same handshake spikewire uses
        raise TimeoutError("raw subscriber never joined")
    pub.recv()
    pad = b"\0" * (PAYLOAD - 8)
    period = 1.0 / rate
    nxt = local_clock() + 0.05
    for _ in range(count):
        wait = nxt - local_clock()
        if wait > 0:
            time.sleep(wait)
        pub.send(struct.pack("<d", local_clock()) + pad)
        nxt += period
    time.sleep(0.2)
    pub.close()
    ctx.term()


def _raw_sub(endpoint_file: str, count: int, out: str) -> None:
    import zmq

    from spikewire.streams.clock import local_clock

    deadline = time.monotonic() + 30
    while not os.path.exists(endpoint_file) or not Path(endpoint_file).read_text():
        if time.monotonic() > deadline:
            raise TimeoutError("raw publisher never bound")
        time.sleep(0.01)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(Path(endpoint_file).read_text())
    lat = np.zeros(count)
    n = 0
    while n < count:
        try:
            msg = sub.recv()
        except zmq.Again:
            break
        lat[n] = local_clock() - struct.unpack_from("<d", msg)[0]
        n += 1
    np.save(out, lat[:n])
    sub.close()
    ctx.term()


def run_raw(count: int, rate: float) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        ep, out = os.path.join(tmp, "ep"), os.path.join(tmp, "lat.npy")
        me = [sys.executable, "-m", "spikewire.bench.hop_latency"]
        sub = subprocess.Popen(me + ["--role", "raw-sub", "--file", ep, "--count", str(count), "--out", out])
        pub = subprocess.Popen(me + ["--role", "raw-pub", "--file", ep, "--count", str(count), "--rate", str(rate)])
        timeout = count / rate + 60
        try:
            pub.wait(timeout)
            sub.wait(timeout)
        finally:
            for p in (pub, sub):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return np.load(out)


def run_spikewire(count: int, rate: float) -> np.ndarray:
    from spikewire.config.network import load_network
    from spikewire.launch.supervisor import Supervisor

    with tempfile.TemporaryDirectory() as tmp:
        net_file = Path(tmp) / "hop.toml"
        net_file.write_text(
            "[nodes.a]\nkind = \"source\"\n"
            f"rate = {rate}\ncount = {count}\n"
            "[nodes.b]\nkind = \"sink\"\n"
            f"capacity = {count}\nreport_samples = true\n"
            "[[links]]\nfrom = \"a.out\"\nto = \"b.in\"\n")
        report_file = Path(tmp) / "report.json"
        with open(os.devnull, "w") as quiet:
            sup = Supervisor(load_network(net_file), duration=count / rate + 0.5, json_path=str(report_file), out=quiet)
            code = sup.run()
        if code != 0:
            raise RuntimeError("spikewire hop run failed")
        from spikewire.nodes.figures import Figures

        return np.asarray(Figures.from_dict(sup.finals["b"]["model"]).info["latency_samples"])


def figures(lat: np.ndarray) -> dict:
    p50, p99 = np.percentile(lat, [50, 99])
    return {"count": int(len(lat)), "p50_us": p50 * 1e6, "p99_us": p99 * 1e6, "max_us": lat.max() * 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--role", choices=["raw-pub", "raw-sub"], help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "raw-pub":
        _raw_pub(args.file, args.count, args.rate)
        return 0
    if args.role == "raw-sub":
        _raw_sub(args.file, args.count, args.out)
        return 0

    raw, sw = [], []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}: raw pyzmq ...", flush=True)
        raw.append(run_raw(args.count, args.rate))
        print(f"round {r + 1}/{args.rounds}: spikewire link ...", flush=True)
        sw.append(run_spikewire(args.count, args.rate))
    f_raw, f_sw = figures(np.concatenate(raw)), figures(np.concatenate(sw))
    ratio = {k: f_sw[k] / f_raw[k] for k in ("p50_us", "p99_us", "max_us")}
    print(f"\none-way latency, {args.count} msgs x {args.rounds} rounds at {args.rate:g}/s")
    print(f"{'':12}{'count':>8}{'p50 us':>10}{'p99 us':>10}{'max us':>10}")
    for name, f in (("raw pyzmq", f_raw), ("spikewire", f_sw)):
        print(f"{name:12}{f['count']:>8}{f['p50_us']:>10.1f}{f['p99_us']:>10.1f}{f['max_us']:>10.1f}")
    print(f"{'ratio':12}{'':>8}{ratio['p50_us']:>10.2f}{ratio['p99_us']:>10.2f}{ratio['max_us']:>10.2f}")
    print("goal: p50 ratio <= 1.5, p99 ratio <= 2.0")
    if args.json:
        Path(args.json).write_text(json.dumps({"raw": f_raw, "spikewire": f_sw, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
