"""Rig spike detector: compute per chunk against real time at 256, 1,024 and 4,096 channels.

    python bench/detection.py [--channels 256,1024,4096] [--duration 10] [--rate 30000] [--chunk 1e-3]
                              [--cpu N] [--json out.json] [--quick]

For each channel count, synthetic rig data is made up front (untimed): white noise (SD 1) with a
negative-first biphasic spike 8 SD deep at Poisson times, 20 Hz per channel (20,000 spikes/s at 1,024
channels: a busy culture), float32, (samples, channels) in C order as pylsl's ``pull_chunk`` gives it. At
most ~256 MB of it is unique; longer runs loop over it (the sample index keeps counting). It is fed to one
``SpikeDetector`` (default settings: 300-3000 Hz, 4.5 SD, 1 ms dead time) in chunks of ``--chunk``
seconds, back to back, each ``process`` call timed with ``perf_counter``: first the calibration (0.5 s
of data, then the per-channel medians, a few channels per chunk), reported apart; then ``--duration``
seconds of steady state. The baseline in the same run is a bare ``np.copyto`` of each chunk, the least
any detector must do with it.

Figures: per-chunk compute p50 / p99 / max; the share of real time used (summed compute over the data's
duration); the detector's own sample-to-event latency, i.e. a spike's sample waits for the end of its
chunk (up to one chunk, half on average) and then for the chunk's compute. LSL's own transport delay is
not in it. Real time means p99 compute below the chunk's duration (1 ms), on one core: the detector is
single-threaded (``--cpu`` pins the process to make that plain).

Catch: on a 2-vCPU VM the p99 and max move with whatever else runs; the load average is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from spikewire.nodes.kernels import detect
from spikewire.nodes.kernels.detect import SpikeDetector
from spikewire.core.argtypes import number

UNIQUE_BYTES = 256 * 2 ** 20  # synthetic data actually held in memory per channel count
SPIKE_RATE = 20.0  # Hz per channel
SPIKE_DEPTH = 8.0  # trough depth in noise SDs (raw)


def spike_shape(rate: float) -> np.ndarray:
    """A ~1.7 ms negative-first biphasic waveform, trough -1 (sampled at ``rate``)."""
    t = np.arange(int(-0.5e-3 * rate), int(1.2e-3 * rate) + 1) / rate
    w = -np.exp(-0.5 * (t / 0.1e-3) ** 2) + 0.35 * np.exp(-0.5 * ((t - 0.4e-3) / 0.25e-3) ** 2)
    return w / -w.min()


def synthesize(channels: int, samples: int, rate: float, seed: int = 0) -> tuple[np.ndarray, int]:
    """(data float32 (samples, channels), number of spikes in it)."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((samples, channels), dtype=np.float32)
    shape = (SPIKE_DEPTH * spike_shape(rate)).astype(np.float32)
    width = len(shape)
    n_spikes = rng.poisson(SPIKE_RATE * samples / rate * channels)
    starts = rng.integers(0, samples - width, n_spikes)
    chans = rng.integers(0, channels, n_spikes)
    for k in range(width):  # one vectorised add per waveform sample; overlaps simply sum
        np.add.at(data, (starts + k, chans), shape[k])
    return data, int(n_spikes)


def run(channels: int, rate: float, chunk: int, duration: float, log) -> dict:
    unique = max(chunk, min(int(UNIQUE_BYTES // (4 * channels)) // chunk * chunk, int(duration * rate)))
    t0 = time.perf_counter()
    data, n_spikes = synthesize(channels, unique, rate)
    log(f"  {channels} channels: {unique / rate:.2f} s of unique data ({data.nbytes / 2 ** 20:.0f} MB, "
        f"{n_spikes} spikes) made in {time.perf_counter() - t0:.1f} s")
    detector = SpikeDetector(channels, rate, max_chunk=chunk)
    detector.warm_up()
    n_unique = unique // chunk
    floor_buf = np.empty((chunk, channels), np.float32)

    def chunk_at(k: int) -> np.ndarray:
        j = k % n_unique
        return data[j * chunk:(j + 1) * chunk]

    gc.collect()
    calibration = []
    k = 0
    while not detector.calibrated:
        c = chunk_at(k)
        t = time.perf_counter()
        detector.process(c, k * chunk)
        calibration.append(time.perf_counter() - t)
        k += 1
    n_chunks = round(duration * rate / chunk)
    compute = np.empty(n_chunks)
    floor = np.empty(n_chunks)
    events = 0
    for i in range(n_chunks):
        c = chunk_at(k)
        t = time.perf_counter()
        idx, _ = detector.process(c, k * chunk)
        t1 = time.perf_counter()
        np.copyto(floor_buf, c)
        t2 = time.perf_counter()
        compute[i] = t1 - t
        floor[i] = t2 - t1
        events += len(idx)
        k += 1
    chunk_s = chunk / rate
    p50, p99, mx = (float(np.percentile(compute, q)) for q in (50, 99, 100))
    return {"channels": channels, "chunks": n_chunks, "chunk_s": chunk_s, "p50_us": p50 * 1e6, "p99_us": p99 * 1e6,
            "max_us": mx * 1e6, "mean_us": float(compute.mean()) * 1e6, "realtime_share": float(compute.sum()) /
            (n_chunks * chunk_s), "copy_p50_us": float(np.median(floor)) * 1e6,
            "calibration_s": len(calibration) * chunk_s, "calibration_max_us": max(calibration) * 1e6,
            "calibration_p99_us": float(np.percentile(calibration, 99)) * 1e6,
            "spikes_per_s": events / (n_chunks * chunk_s),
            "latency_mean_us": (chunk_s / 2 + float(compute.mean())) * 1e6,
            "latency_worst_p99_us": (chunk_s + p99) * 1e6, "realtime": p99 < chunk_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikewire bench detect", description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", default="256,1024,4096", help="comma-separated channel counts (default 256,1024,4096)")
    ap.add_argument("--duration", type=number(above=0), default=10.0,
                    help="timed seconds of data per channel count (default 10)")
    ap.add_argument("--rate", type=number(above=0), default=30_000.0, help="sampling rate [Hz] (default 30000)")
    ap.add_argument("--chunk", type=number(above=0), default=1e-3, help="chunk length [s] (default 0.001)")
    ap.add_argument("--cpu", type=number(int, at_least=0), help="pin the process to this CPU")
    ap.add_argument("--quick", action="store_true", help="1,024 channels, 3 s")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)
    sizes = [1024] if args.quick else [int(x) for x in args.channels.split(",")]
    duration = 3.0 if args.quick else args.duration
    chunk = round(args.chunk * args.rate)
    if chunk < 1 or duration <= 0 or any(n < 1 for n in sizes):
        ap.error("--chunk must hold at least one sample; --duration and --channels must be positive")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    def log(msg: str) -> None:
        print(msg, flush=True)

    load = os.getloadavg()
    log(f"spike detector: {args.rate:g} Hz, {chunk}-sample ({chunk / args.rate * 1e3:g} ms) chunks, "
        f"{duration:g} s timed per size; {os.cpu_count()} CPUs"
        f"{f', pinned to CPU {args.cpu}' if args.cpu is not None else ''}, load {load[0]:.2f} {load[1]:.2f}")
    t = time.perf_counter()
    detect.warm_up()
    log(f"kernels compiled or loaded from cache in {time.perf_counter() - t:.2f} s")
    results = [run(n, args.rate, chunk, duration, log) for n in sizes]

    log(f"\n{'channels':>8}{'p50 us':>9}{'p99 us':>9}{'max us':>9}{'RT used':>9}{'copy us':>9}{'spikes/s':>10}"
        f"{'calib s':>9}{'calib max us':>14}{'latency mean/worst us':>24}")
    for r in results:
        log(f"{r['channels']:>8}{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}{r['max_us']:>9.1f}{r['realtime_share']:>9.1%}"
            f"{r['copy_p50_us']:>9.1f}{r['spikes_per_s']:>10.0f}{r['calibration_s']:>9.2f}"
            f"{r['calibration_max_us']:>14.1f}{r['latency_mean_us']:>14.0f} / {r['latency_worst_p99_us']:>6.0f}")
    log("p50/p99/max: compute per process() call; RT used: summed compute / data duration; copy: np.copyto of the "
        "chunk alone (baseline);\nlatency: a spike's sample to its event returned = wait for the chunk's end "
        "(mean half a chunk, worst a whole one) + compute (mean; worst uses p99). LSL transport not included.")
    for r in results:
        log(f"real time at {r['channels']} channels: {'yes' if r['realtime'] else 'NO'} "
            f"(p99 {r['p99_us'] / 1e3:.3f} ms {'<' if r['realtime'] else '>='} {r['chunk_s'] * 1e3:g} ms per "
            f"{r['chunk_s'] * 1e3:g} ms chunk)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "load": load, "python": platform.python_version(),
                        "pinned_cpu": args.cpu},
            "settings": {"rate_hz": args.rate, "chunk_samples": chunk, "duration_s": duration,
                         "spike_rate_hz": SPIKE_RATE, "spike_depth_sd": SPIKE_DEPTH},
            "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
