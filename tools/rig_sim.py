"""A mock recording rig in its own process, speaking only LSL: ``spikewire rig-sim`` /
``python -m spikewire.tools.rig_sim``.

It stands where an amplifier app (Open Ephys, an Intan/Blackrock/Neuralink bridge) would, so spikewire's
loop can be closed through LSL in tests and demos, with a ground truth to score against.

Data stream (outlet, named ``--name``, default ``spikewire-rig-sim``):
    type ``--type`` (default ``Voltage``: the unit-neutral name for raw electrode voltage; Open Ephys
    and amplifier apps often say ``EEG`` or ``Extracellular``, so pass ``--type`` to mimic one),
    ``--channels`` channels in microvolts at the nominal rate ``--rate``, in channel format ``--format``
    (default float32; double64 mimics mne-lsl's PlayerLSL and amplifier apps that publish doubles;
    integer formats carry whole microvolts, rounded and saturated at the format's range); source_id
    ``spikewire-rig-sim:<name>:<seed>``. Every sample carries its own timestamp on ``local_clock``:
    sample i is stamped ``t0 + i / rate`` exactly (t0 is in the truth header), pushed in
    fixed chunks of ``round(rate * chunk_ms / 1000)`` samples once the chunk's last sample is due.
    desc (XDF meta-data conventions):
        channels/channel*: label ch0..chN-1, unit microvolts, type <stream type>
        acquisition: manufacturer "spikewire rig-sim", model "rig-sim", version
        manufacturer: "spikewire rig-sim" (also at top level, where some readers look)
        rig_sim: chunk_samples, noise_uv, spike_uv, spike_rate, seed, truth layout version
        stimulation: stream (the command stream it listens to), layout "target_channel,amplitude,width_s"
Signal per channel: white Gaussian noise (SD ``--noise-uv``) + an LFP-like drift (two slow sinusoids,
peak ``--lfp-uv``) + biphasic spikes (trough ``--snr * --noise-uv`` deep, negative first, ~1 ms) at
Poisson times (``--spike-rate``, with a ``--refractory-ms`` dead time; the mean rate stays
``--spike-rate``). Noise is read at a random offset of a pre-drawn bank of 2**21+ Gaussian values per
chunk (drawing 30 M fresh normals a second costs a quarter of a core at 1,024 channels): Gaussian and
white within a chunk, but segments recur across chunks, so do not test noise statistics beyond the SD.

Stimulation (inlet, stream named ``--stim-stream``, default ``spikewire-stim``): irregular rate,
3 channels ``[target channel, amplitude, width_s]``, any numeric format (float32 documented). Each
command evokes a spike on the target channel ``--evoked-latency-ms`` after the command's timestamp
with probability ``--evoked-prob`` when ``|amplitude| >= --evoked-threshold`` (default 0: always);
width is recorded only. The stream is looked for in the background (a ContinuousResolver polled every
``--stim-retry`` s) so the rig streams whether or not spikewire is up; if the sender goes away the
rig goes back to looking. Command timestamps are taken as ``local_clock`` times of this machine
(no clock-sync round trips, which would stall the data loop): the catch of machine-scoped LSL.
A command too late for its latency gets its spike as soon as possible, flagged ``late``.

Ground truth (``--truth PATH``): JSON lines, written and flushed before the chunk holding a spike's
first sample is pushed (a killed rig leaves a usable file; skip a last line without a newline):
    {"kind": "header", "format": "spikewire-rig-sim-truth/1", "stream": .., "source_id": .., "t0": ..,
     "rate": .., "channels": .., "channel_format": .., "chunk_samples": .., "spike_uv": .., "noise_uv": ..,
     "trough_offset": .., "template_samples": .., ...}                      first line, once
    {"kind": "spike", "t": T, "sample": I, "channel": C, "evoked": false}   spontaneous spike
    {"kind": "spike", "t": T, "sample": I, "channel": C, "evoked": true, "command_t": TC, "late": false}
    {"kind": "stim", "t": TC, "channel": C, "amplitude": A, "width_s": W, "evoked": true|false,
     "reason": "evoked"|"chance"|"below threshold"|"bad channel"|"too far ahead"|"queue full"}
``sample`` is the index of the spike's trough (the waveform's most negative sample) counting from 0 at
t0, and ``t = t0 + sample / rate`` is that sample's LSL timestamp. A "bad channel" stim record carries
the channel value as received.

Spikewire should push each command with an explicit timestamp (when the stimulus is meant to happen,
on local_clock); ``push_sample(x)`` without one is stamped at the push.

Memory is fixed after start (the 8 MB noise bank, a ~0.5 MB drawn-ahead window, at most ``MAX_PENDING``
queued evoked spikes, liblsl's ``--lsl-reserve-ms`` of preallocated samples, and ``--max-buffered`` whole
seconds of outlet queue per consumer that falls behind: ~50 MB resident at 32 channels, ~75 MB at 1,024,
plus up to 250 MB a stalled consumer at 1,024 channels);
SIGINT/SIGTERM close the outlet and exit 0. CPU on a 2-vCPU VM: ~10 % of a core at 32 channels, ~23 % at
1,024, ~6 % more with a consumer; it goes on the 1 kHz wake-ups, per-chunk numpy calls on cold caches and
liblsl's send per chunk, so ``--chunk-ms 10`` costs a fraction.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from spikewire import __version__
from spikewire.core.argtypes import number
from spikewire.streams import clock  # noqa: F401  (sets the machine-scoped LSLAPICFG before pylsl loads)

import pylsl  # noqa: E402
from pylsl.util import LostError  # noqa: E402  (pylsl does not re-export it)

TRUTH_FORMAT = "spikewire-rig-sim-truth/1"
STIM_LAYOUT = ("target_channel", "amplitude", "width_s")
MAX_PENDING = 4096
"""Evoked spikes waiting for their time; commands beyond this are refused (reason "queue full")."""
MAX_AHEAD_S = 10.0
"""A command whose evoked spike would fall further ahead than this is refused (a sender's clock is off)."""
NOISE_BANK_MIN = 1 << 21
REFUSALS = ("bad channel", "too far ahead", "queue full")
FORMATS = {"float32": (pylsl.cf_float32, np.float32), "double64": (pylsl.cf_double64, np.float64),
           "int8": (pylsl.cf_int8, np.int8), "int16": (pylsl.cf_int16, np.int16),
           "int32": (pylsl.cf_int32, np.int32), "int64": (pylsl.cf_int64, np.int64)}
"""``--format``: every numeric LSL channel format, with the numpy type each chunk is pushed as."""


def spike_template(rate: float) -> tuple[np.ndarray, int]:
    """A biphasic extracellular spike sampled at ``rate``: trough -1 at index ``pre``, then a positive
    lobe (0.35, 0.5 ms later); spans -0.4 ms .. +1.1 ms. Returns (template, pre)."""
    pre = max(1, math.ceil(0.4e-3 * rate))
    post = max(1, math.ceil(1.1e-3 * rate))
    t_ms = (np.arange(-pre, post + 1) / rate) * 1e3
    w = -np.exp(-0.5 * (t_ms / 0.1) ** 2) + 0.35 * np.exp(-0.5 * ((t_ms - 0.5) / 0.2) ** 2)
    w /= -w[pre]
    return w.astype(np.float32), pre


class SyntheticRecording:
    """Extracellular voltage of ``n_channels`` electrodes in microvolts, one fixed-size chunk at a time.

    Pure numpy, no LSL: ``next_chunk()`` returns the samples [start, start + chunk) and the spikes
    whose waveform begins in them. Spontaneous spikes come from one seeded generator, so for a given
    seed the data are the same whatever the timing, until an evoked spike is added.

    The catch is cost: at 1 ms chunks every numpy call and every pass over the data is paid a
    thousand times a second, mostly with cold caches after a sleep. So the LFP and the spikes are
    drawn ahead into a window of ``window_chunks`` chunks (LFP once per window, spikes overlap-added
    as they come due) and a chunk is one add: window rows + a slice of the noise bank.
    """

    WINDOW_BYTES = 1 << 19
    """Target size of the drawn-ahead window: a few chunks at 1,024 channels, ~100 at 32."""

    def __init__(self, n_channels: int, rate: float, chunk: int, *, spike_rate: float, spike_uv: float,
                 noise_uv: float, lfp_uv: float, refractory_s: float, seed: int):
        self.n_channels, self.rate, self.chunk = n_channels, rate, chunk
        self.spike_uv, self.noise_uv = float(spike_uv), float(noise_uv)
        bank_rng, self.spike_rng, lfp_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        self.bank_rng = bank_rng
        self.bank = bank_rng.standard_normal(max(NOISE_BANK_MIN, 4 * chunk * n_channels), dtype=np.float32)
        self.bank *= np.float32(noise_uv)
        self.offsets: list[int] = []
        template, self.pre = spike_template(rate)
        self.template = template * np.float32(spike_uv)
        self.span = np.arange(len(template))
        self.window_chunks = int(np.clip(self.WINDOW_BYTES // (4 * chunk * n_channels), 1, 256))
        rows = self.window_chunks * chunk
        # Window rows [0, rows) plus room for spikes spilling past its end, carried into the next window.
        self.acc = np.zeros((rows + len(template), n_channels), np.float32)
        self.pos = rows  # the first chunk opens a window
        self.out = np.empty((chunk, n_channels), np.float32)
        self.frac = (np.arange(chunk, dtype=np.float32) / chunk)[None, :, None]
        # LFP: two sinusoids per channel, 0.5-3 Hz (60 %) and 4-12 Hz (40 %), random phases, as phasors
        # evaluated at chunk boundaries and drawn as straight lines in between (at <= 12 Hz the chord of
        # a 1 ms chunk is within 0.1 % of the arc).
        freqs = np.stack([lfp_rng.uniform(0.5, 3.0, n_channels), lfp_rng.uniform(4.0, 12.0, n_channels)])
        self.lfp_phasor = np.exp(1j * lfp_rng.uniform(0, 2 * np.pi, (2, n_channels)))
        boundaries = np.arange(self.window_chunks + 1) * chunk / rate  # chunk starts in a window, and its end
        self.lfp_turns = np.exp(2j * np.pi * freqs[None] * boundaries[:, None, None])
        self.lfp_amp = (lfp_uv * np.array([0.6, 0.4]))[None, :, None]
        self.refractory = max(1, round(refractory_s * rate))
        # Dead-time Poisson: ISI = refractory + exponential, so the mean rate is spike_rate.
        self.isi_scale = rate / spike_rate - self.refractory if spike_rate > 0 else math.inf
        if self.isi_scale <= 0:
            raise ValueError(f"spike rate {spike_rate} Hz is impossible with a {refractory_s * 1e3} ms "
                             "refractory period")
        never = np.iinfo(np.int64).max // 2
        self.next_spike = (np.full(n_channels, never, np.int64) if math.isinf(self.isi_scale)
                           else self.pre + self._intervals(n_channels) - self.refractory)
        self.next_due = int(self.next_spike.min()) - self.pre  # first sample of the earliest spontaneous spike
        self.pending: list[tuple[int, int, dict]] = []  # evoked: (trough sample, channel, truth extras)
        self.start = 0

    def _intervals(self, n: int) -> np.ndarray:
        return self.refractory + np.floor(self.spike_rng.exponential(self.isi_scale, n)).astype(np.int64)

    def schedule_evoked(self, sample: int, channel: int, extras: dict) -> bool:
        """Queue a spike with its trough at ``sample`` on ``channel``; one whose waveform would begin in
        data already generated moves to the earliest sample still possible (extras["late"] = True)."""
        if len(self.pending) >= MAX_PENDING:
            return False
        earliest = self.start + self.pre
        extras["late"] = sample < earliest
        self.pending.append((max(sample, earliest), channel, extras))
        return True

    def next_chunk(self) -> tuple[np.ndarray, list[tuple[int, int, dict | None]]]:
        """(samples [chunk, n_channels] float32 µV, spikes [(trough sample, channel, evoked extras or None)]).
        The array is reused by the next call."""
        start, n, pre = self.start, self.chunk, self.pre
        end = start + n
        if self.pos + n > self.window_chunks * n:
            self._open_window()
        spikes: list[tuple[int, int, dict | None]] = []
        while self.next_due < end:
            due = np.flatnonzero(self.next_spike - pre < end)
            troughs = self.next_spike[due]
            self._render(troughs - pre - start, due)
            spikes.extend((s, c, None) for s, c in zip(troughs.tolist(), due.tolist()))
            self.next_spike[due] += self._intervals(due.size)
            self.next_due = int(self.next_spike.min()) - pre
        if self.pending:
            ready = [p for p in self.pending if p[0] - pre < end]
            if ready:
                self.pending = [p for p in self.pending if p[0] - pre >= end]
                self._render(np.array([p[0] for p in ready]) - pre - start, np.array([p[1] for p in ready]))
                spikes.extend(ready)
        if not self.offsets:
            self.offsets = self.bank_rng.integers(0, self.bank.size - n * self.n_channels + 1, 1024).tolist()
        offset = self.offsets.pop()
        noise = self.bank[offset:offset + n * self.n_channels].reshape(n, self.n_channels)
        np.add(noise, self.acc[self.pos:self.pos + n], out=self.out)
        self.pos += n
        self.start = end
        return self.out, spikes

    def _open_window(self) -> None:
        """Move the spikes spilling past the window's end to its start and draw the next window's LFP."""
        rows, spill = self.window_chunks * self.chunk, len(self.template)
        carry = self.acc[rows:].copy()
        lfp = (self.lfp_amp * (self.lfp_phasor[None] * self.lfp_turns).imag).sum(axis=1).astype(np.float32)
        window = self.acc[:rows].reshape(self.window_chunks, self.chunk, self.n_channels)
        np.multiply(self.frac, (lfp[1:] - lfp[:-1])[:, None, :], out=window)
        window += lfp[:-1, None, :]
        self.acc[:spill] += carry
        self.acc[rows:] = 0.0
        self.lfp_phasor *= self.lfp_turns[-1]
        self.pos = 0

    def _render(self, offsets: np.ndarray, channels: np.ndarray) -> None:
        rows = self.pos + offsets[:, None] + self.span[None, :]
        np.add.at(self.acc, (rows, channels[:, None]), self.template[None, :])


class TruthWriter:
    """The ground truth as JSON lines (format in the module docstring); one write and flush per chunk."""

    def __init__(self, path: str | None):
        self.file = open(path, "w", encoding="utf-8") if path else None
        self.lines: list[str] = []

    def add(self, record: dict) -> None:
        if self.file:
            self.lines.append(json.dumps(record))

    def spike(self, t: float, sample: int, channel: int) -> None:
        if self.file:  # the hot path: thousands a second at 1,024 channels; skip json.dumps
            self.lines.append(f'{{"kind": "spike", "t": {t!r}, "sample": {sample}, "channel": {channel}, '
                              f'"evoked": false}}')

    def flush(self) -> None:
        if self.file and self.lines:
            self.file.write("\n".join(self.lines) + "\n")
            self.file.flush()
            self.lines.clear()

    def close(self) -> None:
        if self.file:
            self.flush()
            self.file.close()


@dataclass
class StimCommand:
    """One sample of the stim stream: its timestamp and the documented layout [target channel, amplitude, width_s]."""

    t: float
    channel: float
    amplitude: float
    width_s: float


SHUTDOWN_S = 2.0
"""Longest the LSL teardown may take at exit before the process leaves anyway (its record is written first)."""


class StimListener:
    """Commands from the stimulation stream, never blocking: resolution runs in liblsl's background
    ContinuousResolver, polled every ``retry_s``; the inlet is pulled with timeout 0 when it holds
    commands, and every ``LOSS_CHECK_S`` anyway, since only a pull reports a lost sender
    (``recover=False`` makes it raise LostError). A lost sender sends it back to resolving, so a
    restarted spikewire is found again even with a new source_id."""

    LOSS_CHECK_S = 0.1

    def __init__(self, name: str, retry_s: float, log):
        self.name, self.retry_s, self.log = name, retry_s, log
        self.resolver: pylsl.ContinuousResolver | None = None
        self.inlet: pylsl.StreamInlet | None = None
        self.next_look = self.next_pull = 0.0
        self.refused: set[str] = set()
        self.connections = 0

    @property
    def state(self) -> str:
        return f"connected to {self.name!r}" if self.inlet else f"looking for {self.name!r}"

    def poll(self, now: float) -> list[StimCommand]:
        if self.inlet is None:
            if now >= self.next_look:
                self.next_look = now + self.retry_s
                self._look()
            return []
        if now < self.next_pull and not self.inlet.samples_available():
            return []  # 0.3 us instead of a 6 us pull, a thousand times a second
        self.next_pull = now + self.LOSS_CHECK_S
        try:
            data, stamps = self.inlet.pull_chunk(timeout=0.0, max_samples=256, as_numpy=True)
        except LostError:
            self.log(f"stim stream {self.name!r} lost; looking for it again")
            self.inlet = None
            self.next_look = now + self.retry_s
            return []
        return [StimCommand(float(t), *(float(v) for v in row)) for row, t in zip(data, stamps)]

    def close(self) -> None:
        self.inlet = self.resolver = None  # pylsl destroys both when dropped

    def _look(self) -> None:
        if self.resolver is None:
            self.resolver = pylsl.ContinuousResolver(prop="name", value=self.name)
            self.next_look = pylsl.local_clock() + min(self.retry_s, 0.2)  # its first answers come quickly
            return
        for info in self.resolver.results():
            uid = info.uid()
            if info.channel_count() != len(STIM_LAYOUT) or info.channel_format() == pylsl.cf_string:
                if uid not in self.refused:
                    self.refused.add(uid)
                    self.log(f"ignoring stream {self.name!r} from {info.hostname()}: {info.channel_count()} channels "
                             f"of format {info.channel_format()}, want 3 numeric [{', '.join(STIM_LAYOUT)}]")
                continue
            self.inlet = pylsl.StreamInlet(info, max_buflen=360, recover=False)  # irregular: 36,000 commands
            self.resolver = None  # a fresh one after a loss forgets the dead sender
            self.connections += 1
            self.log(f"stim stream {self.name!r} found (source_id {info.source_id()!r} on {info.hostname()})")
            return


def _shrink_liblsl_reserve(reserve_ms: int, log) -> None:
    """liblsl preallocates ``[tuning] OutletBufferReserveMs`` (default 5,000 ms) of samples per outlet:
    620 MB and 0.2 s of start-up at 1,024 channels x 30 kHz. Hand liblsl the configuration file this
    process was given (machine-scoped) plus a smaller reserve, unless the file sets one itself. Only
    works before liblsl's first real use, so call it first; samples beyond the reserve are allocated
    on demand."""
    path = os.environ.get("LSLAPICFG", "")
    if not os.path.isfile(path):
        log(f"LSLAPICFG={path!r} is not a file; liblsl keeps its 5 s outlet reserve")
        return
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if "OutletBufferReserveMs" not in text:
        pylsl.set_config_content(f"{text}\n[tuning]\nOutletBufferReserveMs = {reserve_ms}\n")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spikewire rig-sim", description="A mock recording rig on LSL: synthetic "
                                 "extracellular voltage out, stimulation commands in, ground truth to a file.")
    ap.add_argument("--channels", type=number(int, above=0), default=32, help="electrodes (default 32)")
    ap.add_argument("--rate", type=number(above=0), default=30000.0, help="sampling rate [Hz] (default 30000)")
    ap.add_argument("--chunk-ms", type=number(above=0), default=1.0,
                    help="push one chunk of round(rate*chunk_ms/1000) samples this often [ms] (default 1)")
    ap.add_argument("--duration", type=number(above=0), default=None,
                    help="seconds of data to stream (default: until SIGINT/SIGTERM)")
    ap.add_argument("--name", default="spikewire-rig-sim", help="LSL stream name (default spikewire-rig-sim)")
    ap.add_argument("--type", default="Voltage", help="LSL stream type (default Voltage; e.g. EEG, Extracellular)")
    ap.add_argument("--format", choices=tuple(FORMATS), default="float32",
                    help="channel format of the data stream (default float32; double64 as mne-lsl's player "
                    "publishes; integer formats carry whole microvolts, saturated at the format's range)")
    ap.add_argument("--spike-rate", type=number(at_least=0), default=5.0,
                    help="spontaneous spikes per second per channel (default 5)")
    ap.add_argument("--refractory-ms", type=number(above=0), default=2.0,
                    help="dead time after each spontaneous spike [ms] (default 2)")
    ap.add_argument("--snr", type=number(above=0), default=8.0, help="spike trough depth / noise SD (default 8)")
    ap.add_argument("--noise-uv", type=number(above=0), default=10.0, help="noise SD [µV] (default 10)")
    ap.add_argument("--lfp-uv", type=number(at_least=0), default=20.0,
                    help="peak of the slow LFP-like drift [µV] (default 20)")
    ap.add_argument("--seed", type=number(int, at_least=0), default=None,
                    help="random seed (default: fresh; it is printed and goes into the source_id)")
    ap.add_argument("--truth", metavar="PATH", help="write every spike and stimulus as JSON lines to PATH")
    ap.add_argument("--stim-stream", default="spikewire-stim",
                    help="name of the stimulation command stream to listen to (default spikewire-stim)")
    ap.add_argument("--stim-retry", type=number(above=0), default=1.0,
                    help="seconds between looks for the stimulation stream (default 1)")
    ap.add_argument("--stim-after", type=number(at_least=0), default=0.0,
                    help="seconds after start before the stimulator listens, as a stimulator armed after the "
                    "recording starts (default 0)")
    ap.add_argument("--evoked-latency-ms", type=number(at_least=0), default=5.0,
                    help="command timestamp to evoked spike trough [ms] (default 5)")
    ap.add_argument("--evoked-prob", type=number(at_least=0, at_most=1), default=1.0,
                    help="probability that a command evokes a spike (default 1)")
    ap.add_argument("--evoked-threshold", type=number(at_least=0), default=0.0,
                    help="commands with |amplitude| below this evoke nothing (default 0)")
    ap.add_argument("--max-buffered", type=number(int, above=0), default=2,
                    help="seconds of data the outlet queues for a consumer that falls behind (default 2)")
    ap.add_argument("--lsl-reserve-ms", type=number(int, above=0), default=200,
                    help="samples liblsl preallocates for the outlet [ms]; its default 5000 is 620 MB at "
                    "1024 ch x 30 kHz (default 200; a [tuning] OutletBufferReserveMs in LSLAPICFG wins)")
    ap.add_argument("--status-every", type=number(above=0), default=5.0,
                    help="seconds between status lines on stderr (default 5)")
    return ap


def _stream_info(args, source_id: str, chunk: int, spike_uv: float) -> pylsl.StreamInfo:
    info = pylsl.StreamInfo(args.name, args.type, args.channels, args.rate, FORMATS[args.format][0], source_id)
    desc = info.desc()
    desc.append_child_value("manufacturer", "spikewire rig-sim")
    channels = desc.append_child("channels")
    for i in range(args.channels):
        ch = channels.append_child("channel")
        ch.append_child_value("label", f"ch{i}")
        ch.append_child_value("unit", "microvolts")
        ch.append_child_value("type", args.type)
    acq = desc.append_child("acquisition")
    acq.append_child_value("manufacturer", "spikewire rig-sim")
    acq.append_child_value("model", "rig-sim")
    acq.append_child_value("version", __version__)
    sim = desc.append_child("rig_sim")
    for key, value in (("chunk_samples", str(chunk)), ("noise_uv", repr(args.noise_uv)),
                       ("spike_uv", repr(spike_uv)), ("spike_rate", repr(args.spike_rate)),
                       ("seed", str(args.seed)), ("truth_format", TRUTH_FORMAT)):
        sim.append_child_value(key, value)
    stim = desc.append_child("stimulation")
    stim.append_child_value("stream", args.stim_stream)
    stim.append_child_value("layout", ",".join(STIM_LAYOUT))
    stim.append_child_value("evoked_latency_s", repr(args.evoked_latency_ms * 1e-3))
    return info


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chunk = round(args.rate * args.chunk_ms * 1e-3)
    if chunk < 1:
        build_parser().error(f"--chunk-ms {args.chunk_ms} is less than one sample at {args.rate} Hz")
    if args.truth and args.truth.endswith(".npy"):
        build_parser().error("--truth writes JSON lines (.jsonl), not .npy")
    if args.seed is None:
        args.seed = int(np.random.SeedSequence().generate_state(1)[0])
    log = lambda text: print(f"rig-sim: {text}", file=sys.stderr, flush=True)  # noqa: E731
    spike_uv = args.snr * args.noise_uv
    try:
        rec = SyntheticRecording(args.channels, args.rate, chunk, spike_rate=args.spike_rate, spike_uv=spike_uv,
                                 noise_uv=args.noise_uv, lfp_uv=args.lfp_uv, refractory_s=args.refractory_ms * 1e-3,
                                 seed=args.seed)
    except ValueError as e:
        build_parser().error(str(e))

    _shrink_liblsl_reserve(args.lsl_reserve_ms, log)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))

    source_id = f"spikewire-rig-sim:{args.name}:{args.seed}"
    rate, latency = args.rate, args.evoked_latency_ms * 1e-3
    try:
        truth = TruthWriter(args.truth)
    except OSError as e:
        log(f"--truth {args.truth}: {e.strerror}")
        return 2
    # Building the outlet takes a while (0.2 s at 1,024 channels with liblsl's default reserve): the
    # clock starts after it, so no chunk starts late.
    outlet = pylsl.StreamOutlet(_stream_info(args, source_id, chunk, spike_uv), max_buffered=args.max_buffered)
    t0 = pylsl.local_clock() + 0.01
    truth.add({"kind": "header", "format": TRUTH_FORMAT, "stream": args.name, "type": args.type,
               "source_id": source_id, "t0": t0, "rate": rate, "channels": args.channels,
               "channel_format": args.format, "chunk_samples": chunk,
               "noise_uv": args.noise_uv, "spike_uv": spike_uv, "snr": args.snr, "lfp_uv": args.lfp_uv,
               "spike_rate": args.spike_rate, "refractory_s": args.refractory_ms * 1e-3, "seed": args.seed,
               "trough_offset": rec.pre, "template_samples": len(rec.template), "stim_stream": args.stim_stream,
               "evoked_latency_s": latency, "evoked_prob": args.evoked_prob,
               "evoked_threshold": args.evoked_threshold})
    truth.flush()
    stim = StimListener(args.stim_stream, args.stim_retry, log)
    stim.next_look = t0 + args.stim_after
    evoke_rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(4)[3])
    total = math.ceil(args.duration * rate / chunk) * chunk if args.duration else None
    as_format = _converter(args.format, chunk, args.channels)
    log(f"streaming {args.name!r} ({args.type}, {args.channels} ch {args.format} µV @ {rate:g} Hz, chunks of {chunk} "
        f"samples = {chunk / rate * 1e3:.3g} ms), source_id {source_id!r}; "
        f"truth -> {args.truth or '(none)'}; listening for {args.stim_stream!r}")

    n_spikes = n_evoked = n_commands = n_late_chunks = 0
    refused: dict[str, int] = {}
    max_lag = 0.0
    status_at = t0 + args.status_every
    cpu0, wall0 = time.process_time(), pylsl.local_clock()
    try:
        while not stop and (total is None or rec.start < total):
            end = rec.start + chunk
            due = t0 + (end - 1) / rate  # a chunk is delivered once its last sample is acquired
            now = pylsl.local_clock()
            if now < due:
                time.sleep(due - now)
                continue
            lag = now - due
            max_lag = max(max_lag, lag)
            n_late_chunks += lag > chunk / rate

            for cmd in stim.poll(now):
                n_commands += 1
                reason = _evoke(cmd, rec, evoke_rng, args, t0, latency)
                if reason in REFUSALS:
                    refused[reason] = refused.get(reason, 0) + 1
                truth.add({"kind": "stim", "t": cmd.t, "channel": cmd.channel, "amplitude": cmd.amplitude,
                           "width_s": cmd.width_s, "evoked": reason == "evoked", "reason": reason})

            start = rec.start
            data, spikes = rec.next_chunk()
            for sample, channel, extras in spikes:
                t = t0 + sample / rate
                if extras is None:
                    truth.spike(t, sample, channel)
                else:
                    n_evoked += 1
                    truth.add({"kind": "spike", "t": t, "sample": sample, "channel": channel, "evoked": True, **extras})
            n_spikes += len(spikes)
            truth.flush()
            outlet.push_chunk(as_format(data), timestamp=(t0 + np.arange(start, start + chunk) / rate).tolist())

            if now >= status_at:
                cpu1, wall1 = time.process_time(), pylsl.local_clock()
                log(f"t={rec.start / rate:.1f}s samples={rec.start} spikes={n_spikes} (evoked {n_evoked}) "
                    f"stim: {stim.state}, {n_commands} commands{_refusals(refused)}; max lag {max_lag * 1e3:.2f} ms, "
                    f"{n_late_chunks} late chunks; cpu {100 * (cpu1 - cpu0) / (wall1 - wall0):.1f}%")
                cpu0, wall0, max_lag = cpu1, wall1, 0.0
                status_at = now + args.status_every
    finally:
        truth.close()  # the record first: whatever liblsl does below, the truth file is complete
        log(f"stopped after {rec.start / rate:.3f} s of data: {n_spikes} spikes ({n_evoked} evoked), "
            f"{n_commands} commands{_refusals(refused)}, {n_late_chunks} late chunks")
        # liblsl's destructors wait for their connections and resolver threads; once in a while (a loaded
        # machine, an inlet mid-handshake) that took more than 5 s. Bound it: past SHUTDOWN_S, exit anyway.
        watchdog = threading.Timer(SHUTDOWN_S, os._exit, (0,))
        watchdog.daemon = True
        watchdog.start()
        del outlet  # destroys the liblsl outlet now: inlets see the stream end
        stim.close()
    return 0


def _converter(fmt: str, chunk: int, channels: int):
    """A function turning a float32 chunk into the stream's format, in buffers allocated once: whole
    microvolts, saturated at the type's range, for integer formats."""
    dtype = FORMATS[fmt][1]
    if dtype is np.float32:
        return lambda data: data
    out = np.empty((chunk, channels), dtype)
    if np.issubdtype(dtype, np.floating):
        def to_float(data: np.ndarray) -> np.ndarray:
            np.copyto(out, data)
            return out

        return to_float
    scratch = np.empty((chunk, channels), np.float32)
    # Saturate at the type's range, or at +-2**24 (float32's exact integers) for int32 and int64: nothing
    # a voltage in microvolts reaches, and the float32 -> int cast stays exact.
    lo, hi = max(np.iinfo(dtype).min, -(1 << 24)), min(np.iinfo(dtype).max, 1 << 24)

    def to_int(data: np.ndarray) -> np.ndarray:
        np.rint(data, out=scratch)
        np.clip(scratch, lo, hi, out=scratch)
        np.copyto(out, scratch, casting="unsafe")
        return out

    return to_int


def _evoke(cmd: StimCommand, rec: SyntheticRecording, rng: np.random.Generator, args, t0: float,
           latency: float) -> str:
    """Schedule the spike a command evokes; returns the truth record's reason."""
    if not (math.isfinite(cmd.channel) and cmd.channel == int(cmd.channel) and 0 <= cmd.channel < args.channels):
        return "bad channel"
    cmd.channel = int(cmd.channel)
    if abs(cmd.amplitude) < args.evoked_threshold:
        return "below threshold"
    if rng.random() >= args.evoked_prob:
        return "chance"
    sample = round((cmd.t + latency - t0) * args.rate)
    if (sample - rec.start) / args.rate > MAX_AHEAD_S:
        return "too far ahead"
    if not rec.schedule_evoked(sample, cmd.channel, {"command_t": cmd.t}):
        return "queue full"
    return "evoked"


def _refusals(refused: dict[str, int]) -> str:
    return "".join(f", {n} refused ({why})" for why, n in refused.items())


if __name__ == "__main__":
    sys.exit(main())
