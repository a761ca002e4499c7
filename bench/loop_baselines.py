"""Baselines for `spikewire bench loop`: the paper loop's shape, carried by raw pyzmq and by ezmsg.

    python -m spikewire.bench.loop_baselines [--rate 10] [--count 300] [--rounds 1] [--json out.json]

Three processes, four hops: zurich -> southampton -> padova -> southampton -> zurich. Zurich sends a
probe at ``rate``; each forwarder sends it on at once; zurich records the round trip. The probe is 8
float64 (64 bytes; a one-event spikewire packet is 48), all stamped with ``local_clock()``, the same
clock in every process on one machine::

    [seq, z_send, s_arr1, s_send1, p_arr, p_send, s_arr2, s_send2]     (+ z_arr, kept at zurich)

seq >= 0 is a measured probe, -1, -2, ... a warm-up probe (discarded), STOP ends the raw loop. Zurich
sends warm-up probes until one has come back and WARMUP_S has passed, so every link is joined before
anything is measured (PUB/SUB drops what is sent before a subscriber joins).

raw pyzmq: three bare processes, PUB -> SUB over tcp://127.0.0.1 on ephemeral ports (endpoints passed
through files). Forwarders block in recv() with a 1 s timeout and quit after IDLE_S without traffic;
zurich waits in select() on its SUB socket's fd until the next send is due.

ezmsg: one Unit per site (Zurich publishes probes and subscribes to their returns; Southampton and
Padova forward on receipt), in a Collection whose ``process_components`` puts each in its own process
(zurich in the runner's, beside the GraphServer we start on an ephemeral port). The runner is a
subprocess with a timeout, its whole process group killed afterwards. Needs the optional ``ezmsg``.

Result of run_raw / run_ezmsg (times in us, CPU in % of one core, memory in MB)::

    {"system": "raw pyzmq" | "ezmsg 3.9.0", "rate_hz", "count", "sent", "returned",
     "round_trip_us": {"p50", "p99", "p999", "max", "mean"},
     "hops": {"Z->S", "S fwd 1", "S->P", "P fwd", "P->S", "S fwd 2", "S->Z": {"p50", "p99", "mean"}},
     "processes": {"zurich", "southampton", "padova": {"pid", "cpu_pct", "rss_mb", "window_s"}},
     "loop_cpu_pct": sum of the three cpu_pct}

round_trip_us and hops are empty when no probe came back.
Transits (A->B) are sender's send stamp to receiver's arrival stamp; forwards are arrival to send in
one process; per probe the seven add up to the round trip exactly. cpu_pct is each process's CPU over
its own steady window (first measured probe to last), so at 10 Hz loop_cpu_pct is the idle CPU.
rss_mb is the largest RSS sampled at window start, window end and exit. run_ezmsg returns
{"system": "ezmsg", "not_installed": True, "rate_hz", "count"} when ezmsg is not installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from spikewire.streams.clock import local_clock

PROBE = struct.Struct("<8d")  # the raw wire format; ezmsg carries the same 8 float64 as an ndarray
SEQ, Z_SEND, S_ARR1, S_SEND1, P_ARR, P_SEND, S_ARR2, S_SEND2, Z_ARR = range(9)
HOPS = {"Z->S": (Z_SEND, S_ARR1), "S fwd 1": (S_ARR1, S_SEND1), "S->P": (S_SEND1, P_ARR),
        "P fwd": (P_ARR, P_SEND), "P->S": (P_SEND, S_ARR2), "S fwd 2": (S_ARR2, S_SEND2),
        "S->Z": (S_SEND2, Z_ARR)}
ROLES = ("zurich", "southampton", "padova")
STOP = -1e9
WARMUP_S = 0.5      # least warm-up, after the first probe is back
WARMUP_MAX_S = 20.0  # no probe back by then: the loop never joined
DRAIN_S = 1.0       # how long zurich waits for the last returns
IDLE_S = 10.0       # a raw forwarder without traffic this long quits (zurich is gone)


class _Meter:
    """One process's CPU and RSS over its steady window."""

    def __init__(self) -> None:
        self.proc, self.rss, self.start_at, self.stop_at = psutil.Process(), 0, None, None

    def _sample(self) -> tuple[float, float]:
        self.rss = max(self.rss, self.proc.memory_info().rss)
        return time.monotonic(), time.process_time()  # all threads, ns resolution (psutil's: 10 ms ticks)

    def start(self) -> None:
        if self.start_at is None:
            self.start_at = self._sample()

    def stop(self) -> None:
        if self.start_at is not None and self.stop_at is None:
            self.stop_at = self._sample()

    def report(self) -> dict:
        self.stop()
        self._sample()
        rep = {"pid": os.getpid(), "rss_mb": self.rss / 2**20, "cpu_pct": None, "window_s": 0.0}
        if self.stop_at is not None and self.stop_at[0] > self.start_at[0]:
            wall = self.stop_at[0] - self.start_at[0]
            rep.update(cpu_pct=100 * (self.stop_at[1] - self.start_at[1]) / wall, window_s=wall)
        return rep


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.rename(path)  # readers never see half a file


def _read_when_there(path: Path, deadline: float) -> str:
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} never appeared")
        time.sleep(0.01)
    return path.read_text()


# ---- raw pyzmq ---------------------------------------------------------------------------------

def _raw_role(role: str, out: Path, rate: float, count: int) -> None:
    import zmq

    ctx = zmq.Context()
    deadline = time.monotonic() + 30
    pubs = {}
    for name in {"zurich": ["z"], "southampton": ["s_to_p", "s_to_z"], "padova": ["p"]}[role]:
        pubs[name] = pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 500)  # the STOP probe must get out before close
        pub.bind("tcp://127.0.0.1:*")
        _write_json(out / f"ep_{name}", pub.getsockopt_string(zmq.LAST_ENDPOINT))
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, 1000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    for name in {"zurich": ["s_to_z"], "southampton": ["z", "p"], "padova": ["s_to_p"]}[role]:
        sub.connect(json.loads(_read_when_there(out / f"ep_{name}", deadline)))
    meter = _Meter()
    if role == "zurich":
        rows = _raw_zurich(pubs["z"], sub, meter, rate, count)
        np.save(out / "rows.npy", rows)
    else:
        _raw_forward(role, pubs, sub, meter, count)
    _write_json(out / f"{role}.json", meter.report())
    for s in (*pubs.values(), sub):
        s.close()
    ctx.term()


def _raw_forward(role: str, pubs: dict, sub, meter: _Meter, count: int) -> None:
    import zmq

    last = time.monotonic()
    while time.monotonic() - last < IDLE_S:
        try:
            msg = sub.recv()
        except zmq.Again:
            continue
        t = local_clock()
        p = list(PROBE.unpack(msg))
        if role == "padova":
            p[P_ARR], dest, sent_at, final = t, pubs["p"], P_SEND, True
        elif p[P_SEND] == 0.0:
            p[S_ARR1], dest, sent_at, final = t, pubs["s_to_p"], S_SEND1, False
        else:
            p[S_ARR2], dest, sent_at, final = t, pubs["s_to_z"], S_SEND2, True
        p[sent_at] = local_clock()
        dest.send(PROBE.pack(*p))
        last = time.monotonic()
        if p[SEQ] == 0:
            meter.start()
        elif final and p[SEQ] == count - 1:
            meter.stop()
        elif final and p[SEQ] == STOP:
            return


def _raw_zurich(pub, sub, meter: _Meter, rate: float, count: int) -> np.ndarray:
    import zmq

    rows = np.full((count, 9), np.nan)
    fd, period = sub.getsockopt(zmq.FD), 1.0 / rate
    sent, returned, warm, warm_back, stop_back = 0, 0, 0, False, False
    t_begin = nxt = local_clock()
    drain_until = stop_until = None
    while not stop_back:
        # The fd is edge-triggered: drain until EVENTS says empty, and only then wait on it.
        while sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            msg = sub.recv(zmq.NOBLOCK)
            t = local_clock()
            p = PROBE.unpack(msg)
            if p[SEQ] >= 0:
                rows[int(p[SEQ]), :8], rows[int(p[SEQ]), Z_ARR] = p, t
                returned += 1
            elif p[SEQ] == STOP:
                stop_back = True
            else:
                warm_back = True
        now = local_clock()
        if drain_until is None and now >= nxt:
            if warm_back and now - t_begin >= WARMUP_S:
                seq = sent
                sent += 1
            elif now - t_begin > WARMUP_MAX_S:
                raise TimeoutError("no warm-up probe came back: the raw loop never joined")
            else:
                warm += 1
                seq = -warm
            t = local_clock()
            pub.send(PROBE.pack(seq, t, 0, 0, 0, 0, 0, 0))
            if seq >= 0:
                rows[seq, Z_SEND] = t
            if seq == 0:
                meter.start()
            nxt += period
            if sent == count:
                drain_until = local_clock() + DRAIN_S
            continue
        if drain_until is not None and stop_until is None and (returned == count or now > drain_until):
            meter.stop()
            pub.send(PROBE.pack(STOP, local_clock(), 0, 0, 0, 0, 0, 0))
            stop_until = now + 2.0
        if stop_until is not None and now > stop_until:
            break  # the forwarders quit on their own after IDLE_S
        wake = nxt if drain_until is None else now + 0.05
        select.select([fd], [], [], min(max(0.0, wake - local_clock()), 1.0))
    return rows


def run_raw(rate: float, count: int, timeout: float = 60.0) -> dict:
    """The loop over bare pyzmq PUB/SUB; see the module docstring for the result."""
    me = [sys.executable, "-m", "spikewire.bench.loop_baselines", "--rate", str(rate), "--count", str(count)]
    with tempfile.TemporaryDirectory(prefix="loop-raw-") as tmp:
        out = Path(tmp)
        procs = {role: subprocess.Popen(me + ["--role", role, "--out", tmp], start_new_session=True)
                 for role in reversed(ROLES)}
        deadline = time.monotonic() + timeout
        try:
            for role in ROLES:  # zurich first: the forwarders follow it out
                if procs[role].wait(max(0.1, deadline - time.monotonic())) != 0:
                    raise RuntimeError(f"raw loop process {role} exited with {procs[role].returncode}")
        finally:
            _reap(list(procs.values()))
        return _result("raw pyzmq", rate, count, out)


# ---- ezmsg -------------------------------------------------------------------------------------

def _ezmsg_loop():
    """The ezmsg units and collection, defined on first use: ezmsg and asyncio (which loads OpenSSL) would
    add 17 MB to each raw process."""
    import asyncio

    import ezmsg.core as ez

    class LoopSettings(ez.Settings):
        rate: float
        """Probes per second sent by zurich."""
        count: int
        """Measured probes (warm-up ones come on top)."""
        out: str
        """Folder for each process's report."""

    class ZurichState(ez.State):
        rows: np.ndarray
        returned: int
        warm_back: bool
        meter: _Meter

    class Zurich(ez.Unit):
        SETTINGS = LoopSettings
        STATE = ZurichState
        OUT = ez.OutputStream(np.ndarray)
        IN = ez.InputStream(np.ndarray)

        async def initialize(self) -> None:
            self.STATE.rows = np.full((self.SETTINGS.count, 9), np.nan)
            self.STATE.returned, self.STATE.warm_back, self.STATE.meter = 0, False, _Meter()

        @ez.publisher(OUT)
        async def probes(self):
            period, n, st = 1.0 / self.SETTINGS.rate, self.SETTINGS.count, self.STATE
            t_begin = nxt = local_clock()
            seq, warm = 0, 0
            while seq < n:
                await asyncio.sleep(max(0.0, nxt - local_clock()))
                if st.warm_back and local_clock() - t_begin >= WARMUP_S:
                    st.rows[seq, Z_SEND] = t = local_clock()
                    seq += 1
                    yield self.OUT, np.array([seq - 1, t, 0, 0, 0, 0, 0, 0])
                    if seq == 1:
                        st.meter.start()
                elif local_clock() - t_begin > WARMUP_MAX_S:
                    break  # never joined: the report shows nothing returned
                else:
                    warm += 1
                    yield self.OUT, np.array([-warm, local_clock(), 0, 0, 0, 0, 0, 0])
                nxt += period
            drain_until = local_clock() + DRAIN_S
            while st.returned < n and local_clock() < drain_until:
                await asyncio.sleep(0.01)
            np.save(Path(self.SETTINGS.out) / "rows.npy", st.rows)
            _write_json(Path(self.SETTINGS.out) / "zurich.json", st.meter.report())
            raise ez.NormalTermination

        @ez.subscriber(IN)
        async def returns(self, msg: np.ndarray) -> None:
            t = local_clock()
            if msg[SEQ] >= 0:
                self.STATE.rows[int(msg[SEQ]), :8], self.STATE.rows[int(msg[SEQ]), Z_ARR] = msg, t
                self.STATE.returned += 1
            else:
                self.STATE.warm_back = True

    class ForwarderState(ez.State):
        meter: _Meter

    class _Forwarder(ez.Unit):
        SETTINGS = LoopSettings
        STATE = ForwarderState
        ROLE = ""

        async def initialize(self) -> None:
            self.STATE.meter = _Meter()

        def stamp(self, msg: np.ndarray, arrived: float, arr_at: int) -> np.ndarray:
            p = msg.copy()  # msg may be a view on shared memory owned by ezmsg
            p[arr_at], p[arr_at + 1] = arrived, local_clock()
            return p

        def sent(self, p: np.ndarray, final: bool) -> None:
            """After the publish, so that the meter's samples land in neither transit nor forward."""
            if p[SEQ] == 0:
                self.STATE.meter.start()
            elif final and p[SEQ] == self.SETTINGS.count - 1:
                self.STATE.meter.stop()

        async def shutdown(self) -> None:
            _write_json(Path(self.SETTINGS.out) / f"{self.ROLE}.json", self.STATE.meter.report())

    class Southampton(_Forwarder):
        ROLE = "southampton"
        FROM_Z = ez.InputStream(np.ndarray)
        TO_P = ez.OutputStream(np.ndarray)
        FROM_P = ez.InputStream(np.ndarray)
        TO_Z = ez.OutputStream(np.ndarray)

        @ez.subscriber(FROM_Z)
        @ez.publisher(TO_P)
        async def outward(self, msg: np.ndarray):
            p = self.stamp(msg, local_clock(), S_ARR1)
            yield self.TO_P, p
            self.sent(p, False)

        @ez.subscriber(FROM_P)
        @ez.publisher(TO_Z)
        async def homeward(self, msg: np.ndarray):
            p = self.stamp(msg, local_clock(), S_ARR2)
            yield self.TO_Z, p
            self.sent(p, True)

    class Padova(_Forwarder):
        ROLE = "padova"
        IN = ez.InputStream(np.ndarray)
        OUT = ez.OutputStream(np.ndarray)

        @ez.subscriber(IN)
        @ez.publisher(OUT)
        async def bounce(self, msg: np.ndarray):
            p = self.stamp(msg, local_clock(), P_ARR)
            yield self.OUT, p
            self.sent(p, True)

    class PaperLoop(ez.Collection):
        SETTINGS = LoopSettings
        ZURICH = Zurich()
        SOUTHAMPTON = Southampton()
        PADOVA = Padova()

        def configure(self) -> None:
            for unit in (self.ZURICH, self.SOUTHAMPTON, self.PADOVA):
                unit.apply_settings(self.SETTINGS)

        def network(self) -> ez.NetworkDefinition:
            return ((self.ZURICH.OUT, self.SOUTHAMPTON.FROM_Z), (self.SOUTHAMPTON.TO_P, self.PADOVA.IN),
                    (self.PADOVA.OUT, self.SOUTHAMPTON.FROM_P), (self.SOUTHAMPTON.TO_Z, self.ZURICH.IN))

        def process_components(self):
            return (self.ZURICH, self.SOUTHAMPTON, self.PADOVA)

    return ez, PaperLoop, LoopSettings


def _ezmsg_runner(out: str, rate: float, count: int) -> None:
    # Our own GraphServer on an ephemeral port: ez.run's default (127.0.0.1:25978) would join any
    # other ezmsg graph running on the machine.
    ez, PaperLoop, LoopSettings = _ezmsg_loop()
    server = ez.GraphServer()
    server.start(("127.0.0.1", 0))
    try:
        ez.run(LOOP=PaperLoop(LoopSettings(rate=rate, count=count, out=out)), graph_address=server.address)
    finally:
        server.stop()


def run_ezmsg(rate: float, count: int, timeout: float = 60.0) -> dict:
    """The loop in ezmsg; {"system": "ezmsg", "not_installed": True, ...} when ezmsg is missing."""
    if importlib.util.find_spec("ezmsg") is None:  # the optional [bench] extra
        return {"system": "ezmsg", "not_installed": True, "rate_hz": rate, "count": count}
    me = [sys.executable, "-m", "spikewire.bench.loop_baselines", "--rate", str(rate), "--count", str(count)]
    with tempfile.TemporaryDirectory(prefix="loop-ezmsg-") as tmp:
        log = open(Path(tmp) / "log", "w+")
        proc = subprocess.Popen(me + ["--role", "ezmsg", "--out", tmp], start_new_session=True,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout)
            missing = [r for r in ROLES if not (Path(tmp) / f"{r}.json").exists()]
            if code != 0 or missing:
                log.seek(0)
                raise RuntimeError(f"ezmsg loop exited with {code}, no report from {missing}:\n{log.read()[-3000:]}")
        finally:
            _reap([proc], grace=5.0)
            log.close()
        return _result(f"ezmsg {importlib.metadata.version('ezmsg')}", rate, count, Path(tmp))


# ---- common ------------------------------------------------------------------------------------

def _reap(procs: list[subprocess.Popen], grace: float = 0.0) -> None:
    """Stop each process's whole group (each was started as a session leader), then wait for it. With a
    grace, SIGINT first: ezmsg then unlinks its shared memory, which a SIGKILL leaves in /dev/shm."""
    for p in procs:
        if grace and p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                pass  # SIGKILL below
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is empty: everything in it exited
        p.wait(10)


def _result(system: str, rate: float, count: int, out: Path) -> dict:
    rows = np.load(out / "rows.npy")
    back = rows[~np.isnan(rows[:, Z_ARR])]
    us = lambda x: float(x) * 1e6  # noqa: E731
    rt = back[:, Z_ARR] - back[:, Z_SEND]
    res = {"system": system, "rate_hz": rate, "count": count, "sent": int(np.count_nonzero(~np.isnan(rows[:, Z_SEND]))),
           "returned": len(back), "round_trip_us": {}, "hops": {}}
    if len(back):
        res["round_trip_us"] = dict(zip(("p50", "p99", "p999"), map(us, np.percentile(rt, [50, 99, 99.9]))),
                                    max=us(rt.max()), mean=us(rt.mean()))
        for name, (a, b) in HOPS.items():
            d = back[:, b] - back[:, a]
            res["hops"][name] = {"p50": us(np.percentile(d, 50)), "p99": us(np.percentile(d, 99)), "mean": us(d.mean())}
    res["processes"] = {r: json.loads((out / f"{r}.json").read_text()) for r in ROLES}
    res["loop_cpu_pct"] = sum(p["cpu_pct"] or 0.0 for p in res["processes"].values())
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spikewire.bench.loop_baselines", description=__doc__.split("\n\n")[0],
                                 epilog="spikewire bench loop runs these beside spikewire's own loop.")
    ap.add_argument("--rate", type=float, default=10.0, help="probes per second (default 10)")
    ap.add_argument("--count", type=int, default=300, help="probes measured per round (default 300)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, alternating raw pyzmq and ezmsg (default 1)")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    ap.add_argument("--role", choices=[*ROLES, "ezmsg"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "ezmsg":
        _ezmsg_runner(args.out, args.rate, args.count)
        return 0
    if args.role:
        _raw_role(args.role, Path(args.out), args.rate, args.count)
        return 0
    results = []
    timeout = args.count / args.rate + 60
    for r in range(args.rounds):  # alternate, so that drift in machine load hits both
        for run in (run_raw, run_ezmsg):
            res = run(args.rate, args.count, timeout)
            results.append(res)
            if res.get("not_installed"):
                print(f"round {r + 1}: {res['system']}: not installed")
                continue
            rt, procs = res["round_trip_us"], res["processes"]
            print(f"round {r + 1}: {res['system']:12} {res['returned']}/{res['count']} back  round trip p50 "
                  f"{rt['p50']:.0f}  p99 {rt['p99']:.0f}  p99.9 {rt['p999']:.0f}  max {rt['max']:.0f} us  "
                  f"loop CPU {res['loop_cpu_pct']:.2f} %  RSS "
                  + " / ".join(f"{p['rss_mb']:.0f}" for p in procs.values()) + " MB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
