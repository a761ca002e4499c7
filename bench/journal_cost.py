"""What recording a session costs: journal write cost per event, and the largest rate journaled live.

    python bench/journal_cost.py        spikewire bench journal      (the same)

1. Write cost, in process: ``JournalWriter.log`` + its share of the 50 ms flush, per packet of 1, 10 and
   100 events, against a baseline measured in the same run: ``encode`` of the same packet (the work every
   sent packet costs anyway).
2. Live: a ``source`` node sends to a ``sink`` node for a few seconds at increasing event rates (1 kHz
   ticks, ``burst`` events per packet), with the session recorded and without, alternating. The sink's
   received count, link latency p99 and the journal's size are read from the summary; a rate is
   "sustained" when nothing is lost and the latency p99 stays within 2x of the unrecorded run's
   (or 1 ms, whichever is larger).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from spikewire.launch.ports import free_port_block
from spikewire.streams.journal import SENT, JournalWriter
from spikewire.streams.wire import Kind, empty_events, encode
from spikewire.core.argtypes import number


def write_cost(n_events: int, packets: int = 20000) -> tuple[float, float]:
    """(journal ns per event, encode ns per event) for packets of n_events."""
    ev = empty_events(n_events)
    ev["t"] = 1.0
    data = encode(Kind.SPIKE, 1, 0, 1.0, ev)
    with tempfile.TemporaryDirectory() as tmp:
        w = JournalWriter(Path(tmp) / "j.swj", "bench", ["out"])
        c0 = time.perf_counter()
        for i in range(packets):
            w.log(SENT, "out", 1.0, data)
            if i % 50 == 49:  # ~ a 50 ms flush at 1 kHz packets
                w.flush()
        w.close()
        journal = time.perf_counter() - c0
    c0 = time.perf_counter()
    for i in range(packets):
        encode(Kind.SPIKE, 1, i, 1.0, ev)
    enc = time.perf_counter() - c0
    return journal / packets / n_events * 1e9, enc / packets / n_events * 1e9


def live(tmp: Path, burst: int, record: bool, duration: float) -> dict:
    net = tmp / f"j_{burst}_{record}.toml"
    net.write_text(f"""[monitor]
base_port = {free_port_block(2)}
[nodes.src]
kind = "source"
rate = 1000.0
burst = {burst}
[nodes.rx]
kind = "sink"
capacity = 10
[[links]]
from = "src.out"
to = "rx.in"
""")
    out = tmp / "summary.json"
    args = [sys.executable, "-m", "spikewire", "run", str(net), "--duration", str(duration), "--json", str(out)]
    args += ["--session-dir", str(tmp / f"s_{burst}_{record}_{time.monotonic_ns()}")] if record else ["--no-record"]
    subprocess.run(args, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=duration + 90,
                   check=True)
    r = json.loads(out.read_text())
    link = r["links"][0]
    journal_bytes = 0
    if record:
        sess = max(tmp.glob(f"s_{burst}_True_*"), key=lambda p: p.stat().st_mtime)
        journal_bytes = sum(f.stat().st_size for f in (sess / "journal").iterdir())
    return {"burst": burst, "record": record, "events_per_s": 1000 * burst, "sent": link["sent"],
            "received": link["received"], "lost": link["sent"] - link["received"],
            "p99_us": (link["latency_p99_s"] or 0) * 1e6, "journal_mb": journal_bytes / 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikewire bench journal", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=number(above=0), default=4.0, help="seconds per live rate tried (default 4)")
    ap.add_argument("--bursts", default="1,10,100,1000", help="events per 1 ms packet to try, comma-separated (default 1,10,100,1000)")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)
    print("1. write cost per event (same run, in process)")
    print(f"{'events/packet':>14}{'journal ns/event':>18}{'encode ns/event':>17}{'ratio':>8}")
    costs = []
    for n in (1, 10, 100):
        j, e = write_cost(n)
        costs.append({"events_per_packet": n, "journal_ns_per_event": j, "encode_ns_per_event": e})
        print(f"{n:>14}{j:>18.0f}{e:>17.0f}{j / e:>8.2f}")
    print("\n2. live: source -> sink at 1 kHz packets, recorded vs not")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for burst in (int(b) for b in args.bursts.split(",")):
            base = live(Path(tmp), burst, False, args.duration)
            rec = live(Path(tmp), burst, True, args.duration)
            ok = rec["lost"] == 0 and rec["p99_us"] <= max(2 * base["p99_us"], 1000)
            rows.append({"plain": base, "recorded": rec, "sustained": ok})
            print(f"{1000 * burst:>9} ev/s: plain p99 {base['p99_us']:7.0f} us lost {base['lost']:>5} | recorded p99 "
                  f"{rec['p99_us']:7.0f} us lost {rec['lost']:>5}, journal {rec['journal_mb']:7.1f} MB"
                  f"  -> {'sustained' if ok else 'NOT sustained'}")
    best = max((r["recorded"]["events_per_s"] for r in rows if r["sustained"]), default=0)
    print(f"\nlargest sustained rate journaled (of those tried): {best:,} events/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"write_cost": costs, "live": rows, "largest_sustained": best}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
