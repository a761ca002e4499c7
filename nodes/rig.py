"""The biological node's LSL rig backend (``backend = "rig"``; nodes/backends.py): a real recording rig
(anything with an LSL app) instead of a model.

Each tick pulls whatever the rig sent (``streams.lsl_link.RigInlet``), runs the per-channel spike
detector over it, and emits every detected spike at its sample's (time-corrected) timestamp: as a typed
biological event on ``events`` (stimulated AP if within ``stim_window`` after a stimulus to that neuron,
else spontaneous; a rig cannot see PSPs extracellularly) and as a plain spike on ``spikes``.

Stimuli arriving on ``stim`` go out as commands on the stimulation outlet, only while the rig is up
and the stimulation stream has a consumer: while the rig is down they are held back and counted
(``stim_held``: no stale stimulation is ever sent; a command is not queued for later), and while nothing
subscribes to the stimulation stream they are held and counted apart (``stim_held_no_consumer``): LSL
would drop them unseen, so they are never counted as sent (``stim_ready`` says whether a consumer is
there; what "sent" guarantees is in ``streams.lsl_link``). Before the node reports ready it waits up to
``stim_wait`` for the rig to subscribe, and starts without it only with a loud warning. When the rig's
stream goes away (outlet closed, app crashed, data stopped for ``stale_after``) the link is marked down
and counted; when it comes back, the node reconnects and re-calibrates the detector, never crashing.

Hard stimulation limits (``max_amplitude``, ``max_width``, ``max_rate``, ``max_total_rate``) stand before
everything else: a command beyond one is refused, never clamped and never sent, and counted by reason
(``stim_refused``: amplitude, width, rate). The stim port declares ``[-max_amplitude, max_amplitude]``,
so the runtime already refuses such events on the link; the check here holds whatever reaches the rig.

What a recording needs to be archived (monitor/nwb_export.py) is in the final report only (``summary``):
``stream`` (name, rate, channel labels and unit from the stream's description, read on a thread at each
connect), ``electrodes`` (each rig channel used and its neuron) and ``waveforms``: per channel, the mean and
SD of every detected spike's band-passed waveform (1 ms before the trough to 2 ms after, in µV when the
stream says its unit) and a uniform sample of at most ``WAVEFORMS_PER_CHANNEL`` of them, with their times;
at most ``WAVEFORM_VALUES`` sampled values in all, so the report stays small at any channel count.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from spikewire.core.histogram import LogHistogram
from spikewire.core.settings import Settings, SettingsError, non_negative, positive, setting, stated
from spikewire.nodes.backends import Backend, Emit, backend
from spikewire.nodes.base import OutPort
from spikewire.nodes.element import Role
from spikewire.nodes.figures import Figures
from spikewire.streams.clock import local_clock
from spikewire.streams.wire import BioEvent, Kind

log = logging.getLogger("spikewire.rig")

WAVEFORMS_PER_CHANNEL = 20
"""Waveform snippets the detector keeps per channel (a uniform sample of all its spikes)."""
WAVEFORM_VALUES = 100_000
"""At most this many snippet samples go into the final report over all channels (~1 MB of JSON)."""
TO_MICROVOLTS = {"microvolts": 1.0, "microvolt": 1.0, "uv": 1.0, "µv": 1.0, "μv": 1.0, "millivolts": 1e3,
                 "millivolt": 1e3, "mv": 1e3, "volts": 1e6, "volt": 1e6, "v": 1e6}
"""A stream's channel unit (XDF meta-data: ``channels/channel/unit``) -> its factor to µV."""


@dataclass(frozen=True)
class RigSettings(Settings):
    """Where the rig is and how its channels are read."""

    stream: str = setting("", "The rig's raw voltage stream: 'name=X', 'type=X' or 'source_id=X' (bare: name).")
    channels: int = setting(0, "Channels the stream must have (0: accept any).", check=non_negative, unit="count")
    cutoff_hz: float = setting(300.0, "High-pass cutoff of the spike band [Hz].", check=positive, unit="Hz")
    lowpass_hz: float = setting(3000.0, "Low-pass cutoff of the spike band [Hz] (0: high-pass only). With 5-SD "
                                "spikes the 300-3000 Hz band reaches recall ~1.0 where a high-pass alone gets "
                                "0.92-0.95.", check=non_negative, unit="Hz")
    threshold_sd: float = setting(4.5, "Detection threshold in noise SDs (median absolute deviation).",
                                  check=positive, unit="noise SD")
    dead_time: float = setting(1.5e-3, "Per-channel dead time after a detection [s] (1.5 ms skips the filtered "
                               "spike's own undershoot).", check=positive, unit="s")
    calibration: float = setting(0.5, "Seconds of data that set each channel's noise level (no detections "
                                 "before).", check=positive, unit="s")
    channel_map: tuple[int, ...] = setting((), "Neuron id of each rig channel (default: the channel index; -1: "
                                           "the channel is not used).", unit="id")
    stim_stream: str = setting("spikewire-stim", "Name of the stimulation-command outlet the rig's app reads.")
    stim_channels: tuple[int, ...] = setting((), "Rig channel that stimulates each neuron (default: its id).",
                                             unit="id")
    stim_width: float = setting(200e-6, "Width of each stimulation pulse [s] (at most max_width).", check=positive,
                                unit="s")
    max_amplitude: float = setting(1.0, "Hard limit of a stimulus's amplitude [V], either sign: a command with "
                                   "|amplitude| above it is refused, never clamped, never sent (counted: amplitude). "
                                   "The stim port declares [-max_amplitude, max_amplitude]. 1 V is the full range of "
                                   "the 2020 loop's CME stimuli (rig_loop.toml's MR1 maps onto 0-1 V). At most 10 V.",
                                   check=stated("in (0, 10]", lambda v: None if 0 < v <= 10.0 else
                                                f"must be in (0, 10] V, got {v!r}"), unit="V")
    max_width: float = setting(0.5e-3, "Hard limit of a pulse's width [s]: a stim_width above it is refused when the "
                               "file loads, and any wider command is refused (counted: width). 0.5 ms: extracellular "
                               "pulses are 0.1-0.4 ms per phase. At most 10 ms.",
                               check=stated("in (0, 0.01]", lambda v: None if 0 < v <= 0.01 else
                                            f"must be in (0, 0.01] s, got {v!r}"), unit="s")
    max_rate: float = setting(50.0, "Hard limit per rig channel [stimuli/s]: a stimulus sooner than 1/max_rate after "
                              "the last one sent on the same channel is refused (counted: rate). 50/s (20 ms apart) "
                              "is five times the paper loop's 10 Hz. At most 1,000/s.",
                              check=stated("in (0, 1000]", lambda v: None if 0 < v <= 1000.0 else
                                           f"must be in (0, 1000] /s, got {v!r}"), unit="1/s")
    max_total_rate: float = setting(200.0, "Hard limit over all channels [stimuli/s]: a stimulus that would make more "
                                    "than this many sent within the last second is refused (counted: rate). At "
                                    "most 10,000/s.",
                                    check=stated("in (0, 10000]", lambda v: None if 0 < v <= 10000.0 else
                                                 f"must be in (0, 10000] /s, got {v!r}"), unit="1/s")
    stim_wait: float = setting(5.0, "Before reporting ready, wait this long for the rig to subscribe to the "
                               "stimulation stream [s]; after it the run starts anyway with a loud warning, and "
                               "stimuli are held (counted, never sent) until a rig subscribes. rig-sim subscribes "
                               "within ~1.2 s. 0: do not wait (still warn).", check=non_negative, unit="s")
    stale_after: float = setting(0.5, "No data for this long marks the rig down [s].", check=positive, unit="s")
    max_chunk: int = setting(8192, "Samples pulled at most per tick (buffer size).", check=positive, unit="count")

    def validate(self, key: str) -> None:
        width = float(np.float32(self.stim_width))  # what the rig receives (the command is float32)
        if width > self.max_width:
            raise SettingsError(f"{key}.stim_width", f"{self.stim_width!r} s exceeds the hard limit max_width = "
                                f"{self.max_width!r} s")
        for i, channel in enumerate(self.stim_channels):
            if channel < 0:
                raise SettingsError(f"{key}.stim_channels[{i}]", f"must be a rig channel (>= 0), got {channel!r}")
        if not self.stream:
            return  # required only with backend = "rig" (checked there)
        from spikewire.streams.lsl_link import parse_query

        try:
            parse_query(self.stream)
        except ValueError as e:
            raise SettingsError(f"{key}.stream", str(e)) from None
        if self.channels and self.channel_map and len(self.channel_map) != self.channels:
            raise SettingsError(f"{key}.channel_map", f"has {len(self.channel_map)} entries for {self.channels} channels")


@backend
class LslRigBackend(Backend):
    """A recording rig over LSL: its voltage stream in, stimulation commands out (module docstring)."""

    name = "rig"
    hard_limit = True

    @classmethod
    def validate(cls, settings, key: str) -> None:
        rig = settings.rig
        if not rig.stream:
            raise SettingsError(f"{key}.rig.stream", "required for backend = 'rig' (e.g. 'name=spikewire-rig-sim')")
        for i, neuron in enumerate(rig.channel_map):
            if not -1 <= neuron < settings.size:
                raise SettingsError(f"{key}.rig.channel_map[{i}]", f"names neuron {neuron} but the node has "
                                    f"{settings.size} (ids 0-{settings.size - 1}; -1 leaves the channel unused)")
        if len(rig.stim_channels) not in (0, settings.size):
            raise SettingsError(f"{key}.rig.stim_channels", f"has {len(rig.stim_channels)} entries for "
                                f"{settings.size} neurons: name the rig channel of every neuron, or of none")

    @classmethod
    def stim_limit(cls, settings) -> float:
        return settings.rig.max_amplitude

    @classmethod
    def outputs(cls, settings) -> dict[str, OutPort]:
        # the typed events are the record; these repeat their APs as plain spikes
        return {"spikes": OutPort(Kind.SPIKE, "spikes detected on the rig's channels", settings.size, (1.0, 1.0),
                                  role=Role.COPY)}

    def __init__(self, node: str, settings):
        super().__init__(node, settings)
        cfg, size = settings.rig, settings.size
        self.site = settings.site
        self.cfg = cfg
        self.stim_window = settings.stim_window
        self.size = size
        self.inlet = None
        self.stim = None
        self.detector = None
        self.first_index = 0
        self.last_stim = np.full(size, -np.inf)
        self.counts = np.zeros((size, 3), np.int64)
        self.held = 0
        self.unmapped = 0
        self.stim_was_ready = False
        self.refused = {"amplitude": 0, "width": 0, "rate": 0}  # commands beyond the hard limits, never sent
        self._width32 = float(np.float32(cfg.stim_width))
        self._min_interval = 1.0 / cfg.max_rate
        self._last_on_channel: dict[int, float] = {}  # rig channel -> time of its last command sent
        self._sent_times: deque[float] = deque()  # commands sent within the last second (max_total_rate)
        self.latency = LogHistogram()  # rig sample time -> spike event emitted
        self.past_waveforms = None  # earlier connections' waveforms (kernels.detect.Waveforms), merged
        self.stream_desc: dict | None = None  # the stream's description, read on a thread at each connect
        self._desc_thread: threading.Thread | None = None

    def warm_up(self) -> None:
        from spikewire.nodes.kernels import detect

        detect.warm_up()
        self.open()

    def wait_for_consumers(self, timeout: float) -> None:
        # the rig's stimulation inlet: until it subscribes, stimuli are held
        self.wait_for_stim_consumer(min(timeout, self.cfg.stim_wait))

    def open(self) -> None:
        """Create the LSL endpoints (called in the node process, before ready)."""
        from spikewire.streams.lsl_link import RigInlet, StimOutlet

        self.inlet = RigInlet(self.cfg.stream, self.cfg.channels, self.cfg.max_chunk, self.cfg.stale_after)
        self.stim = StimOutlet(self.cfg.stim_stream, f"spikewire.{self.node}.stim", self.node, self.site)

    def wait_for_stim_consumer(self, timeout: float) -> bool:
        """Block until the rig subscribes to the stimulation stream (True) or ``timeout`` s pass (False,
        with a loud warning: stimuli are held until a rig subscribes)."""
        if self.stim is not None and self.stim.wait_for_consumers(timeout):
            self.stim_was_ready = True
            log.info("%s: the rig subscribed to the stimulation stream %r", self.node, self.cfg.stim_stream)
            return True
        log.warning("%s: NO RIG SUBSCRIBED to the stimulation stream %r within %g s; starting without one: every "
                    "stimulus is HELD (counted as stim_held_no_consumer, never sent) until a rig subscribes",
                    self.node, self.cfg.stim_stream, timeout)
        return False

    def _detector(self):
        from spikewire.nodes.kernels.detect import SpikeDetector

        channels, rate = self.inlet.channels, self.inlet.rate
        cmap = np.array(self.cfg.channel_map or range(channels), dtype=np.int64)
        if self.detector is not None:
            self.past_waveforms = merge_waveforms(self.past_waveforms, self.detector.waveforms())
        self.detector = SpikeDetector(channels, rate, cutoff_hz=self.cfg.cutoff_hz, threshold_sd=self.cfg.threshold_sd,
                                      dead_time_s=self.cfg.dead_time, calibration_s=self.cfg.calibration,
                                      channel_map=cmap, lowpass_hz=self.cfg.lowpass_hz or None,
                                      max_chunk=self.cfg.max_chunk, snippets=WAVEFORMS_PER_CHANNEL)
        self.first_index = 0
        self._read_description()

    def _read_description(self) -> None:
        """Read the connected stream's full description (channel labels and unit) on a thread: pylsl's
        ``info()`` asks the outlet, which must not stall the loop."""
        inlet, brief = self.inlet.inlet, self.inlet.info
        if inlet is None or brief is None:
            return
        self.stream_desc = {"name": brief.name(), "type": brief.type(), "source_id": brief.source_id(),
                            "channels": brief.channel_count(), "rate_hz": brief.nominal_srate(), "labels": None,
                            "unit": None}

        def read(desc: dict) -> None:
            import pylsl

            try:
                full = inlet.info(timeout=2.0)
            except (pylsl.util.TimeoutError, pylsl.util.LostError, RuntimeError) as e:
                log.warning("%s: the rig stream's description could not be read (%s: %s): no channel labels or "
                            "unit; waveforms stay in the stream's own units", self.node, type(e).__name__, e)
                return
            labels, units = [], set()
            ch = full.desc().child("channels").child("channel")
            while not ch.empty() and len(labels) < desc["channels"]:
                labels.append(ch.child_value("label"))
                units.add(ch.child_value("unit").strip())
                ch = ch.next_sibling("channel")
            desc.update(labels=labels if len(labels) == desc["channels"] else None,
                        unit=units.pop() if len(units) == 1 else None)

        self._desc_thread = threading.Thread(target=read, args=(self.stream_desc,), name=f"{self.node}-rig-desc",
                                             daemon=True)
        self._desc_thread.start()

    def tick(self, t_start: float, t_end: float, emit: Emit) -> None:
        # The rig is the model: what it sent by now is this tick's, at the samples' own times.
        self.poll(local_clock(), emit)

    def poll(self, now: float, emit: Emit) -> None:
        """Pull what the rig sent, detect spikes in it and ``emit`` each as a typed event."""
        if self.inlet is None:
            return
        was_up = self.inlet.up
        got = self.inlet.poll(now)
        if got is None:
            return
        if not was_up or self.detector is None:
            self._detector()  # a new (or returning) rig: its channels and noise may have changed
        data, ts = got
        sample_idx, neurons = self.detector.process(data, self.first_index, ts)
        self.first_index += len(ts)
        emitted_at = now
        for idx, neuron in zip(sample_idx.tolist(), neurons.tolist()):
            t = float(ts[idx - (self.first_index - len(ts))])
            if not 0 <= neuron < self.size:
                self.unmapped += 1
                continue
            kind = (BioEvent.STIMULATED_AP if 0.0 <= t - self.last_stim[neuron] <= self.stim_window
                    else BioEvent.SPONTANEOUS_AP)
            self.counts[neuron, kind] += 1
            self.latency.record(emitted_at - t)
            emit(t, neuron, kind)

    def _beyond_limits(self, channel: int, amplitude: float, now: float) -> str | None:
        """The hard limit a command to ``channel`` at ``now`` would break (amplitude, width, rate), or None."""
        cfg = self.cfg
        if not abs(amplitude) <= cfg.max_amplitude:  # NaN fails too
            return "amplitude"
        if self._width32 > cfg.max_width:
            return "width"
        if now - self._last_on_channel.get(channel, -math.inf) < self._min_interval:
            return "rate"
        sent = self._sent_times
        while sent and sent[0] <= now - 1.0:
            sent.popleft()
        if len(sent) >= cfg.max_total_rate:
            return "rate"
        return None

    def _refuse(self, reason: str, channel: int, amplitude: float) -> None:
        self.refused[reason] += 1
        if self.refused[reason] == 1:
            cfg = self.cfg
            limit = {"amplitude": f"|amplitude| <= max_amplitude = {cfg.max_amplitude:g} V",
                     "width": f"stim_width {cfg.stim_width:g} s <= max_width = {cfg.max_width:g} s",
                     "rate": f"at most {cfg.max_rate:g}/s per channel and {cfg.max_total_rate:g}/s in all"}[reason]
            log.warning("%s: REFUSED a stimulus of %g V on rig channel %d: beyond the hard limit %s (never sent; "
                        "counted in stim_refused[%r], further ones silently)", self.node, amplitude, channel, limit,
                        reason)

    def stimulate(self, events: np.ndarray, now: float) -> None:
        """Send each stimulus within the hard limits while the rig is up and subscribed; count the rest."""
        up = self.stim is not None and self.inlet is not None and self.inlet.up
        chans = self.cfg.stim_channels
        for ident, amp in zip(events["id"].tolist(), events["value"].tolist()):
            channel = chans[ident] if ident < len(chans) else ident
            why = self._beyond_limits(channel, amp, now)
            if why is not None:
                self._refuse(why, channel, amp)
                continue
            if not up:
                self.held += 1
                continue
            if not self.stim.pulse(channel, amp, self.cfg.stim_width, now):
                self._consumer_gone()
                continue
            if not self.stim_was_ready:
                self.stim_was_ready = True
                log.info("%s: the rig subscribed to the stimulation stream %r; stimuli are sent", self.node,
                         self.cfg.stim_stream)
            self._last_on_channel[channel] = now
            self._sent_times.append(now)
            self.last_stim[ident] = now  # only a stimulus the rig got opens a stimulated-AP window
            self.stimuli[ident] += 1

    def _consumer_gone(self) -> None:
        if self.stim_was_ready:
            self.stim_was_ready = False
            log.warning("%s: the stimulation stream %r has NO CONSUMER any more: stimuli are HELD until a rig "
                        "subscribes again", self.node, self.cfg.stim_stream)

    def status(self) -> dict:
        inlet = self.inlet
        return {"rig_up": bool(inlet and inlet.up), "rig_connects": inlet.connects if inlet else 0,
                "rig_disconnects": inlet.disconnects if inlet else 0, "rig_samples": inlet.samples if inlet else 0,
                "stim_sent": self.stim.sent if self.stim else 0, "stim_held": self.held,
                "stim_ready": bool(self.stim and self.stim.have_consumers()),
                "stim_held_no_consumer": self.stim.no_consumer if self.stim else 0, "stim_refused": dict(self.refused),
                "rig_unusable": ({**inlet.refused, **{f"{step}_failed": n for step, n in inlet.errors.items()}}
                                 if inlet else {}),
                "calibrated": bool(self.detector is not None and self.detector.calibrated)}

    def summary(self) -> dict:
        inlet = self.inlet
        return {**self.status(), "unmapped_spikes": self.unmapped,
                "refused_streams": dict(inlet.refused) if inlet else {}, "sample_to_event_s": self.latency.summary(),
                "stim_limits": {"max_amplitude_v": self.cfg.max_amplitude, "max_width_s": self.cfg.max_width,
                                "max_rate_hz": self.cfg.max_rate, "max_total_rate_hz": self.cfg.max_total_rate},
                **self._recording()}

    def _recording(self) -> dict:
        """The stream, the channels used (electrodes) and the waveforms, for an archive (module docstring)."""
        desc = dict(self.stream_desc) if self.stream_desc else None
        channels = desc["channels"] if desc else len(self.cfg.channel_map)
        cmap = list(self.cfg.channel_map) or list(range(channels))
        labels = (desc or {}).get("labels")
        electrodes = [{"channel": c, "neuron": n, "label": labels[c] if labels else None}
                      for c, n in enumerate(cmap) if 0 <= n < self.size]
        waves = merge_waveforms(self.past_waveforms, self.detector.waveforms() if self.detector else None)
        return {"stream": desc, "electrodes": electrodes,
                "waveforms": None if waves is None else self._waveforms_json(waves, [e["channel"] for e in electrodes],
                                                                               (desc or {}).get("unit"))}

    def _waveforms_json(self, w, channels: list[int], unit: str | None) -> dict:
        scale = TO_MICROVOLTS.get((unit or "").lower())
        seen = [c for c in channels if c < len(w.count) and w.count[c]]
        length = w.mean.shape[1]
        keep = min(WAVEFORMS_PER_CHANNEL, WAVEFORM_VALUES // max(1, len(seen) * length))
        out = {}
        for c in seen:
            k = len(w.snippets[c])
            pick = np.linspace(0, k - 1, min(k, keep)).round().astype(int) if keep else np.zeros(0, int)
            out[str(c)] = {"count": int(w.count[c]), "mean": _values(w.mean[c], scale), "sd": _values(w.sd[c], scale),
                           "snippets": [_values(s, scale) for s in w.snippets[c][pick]],
                           "times": w.times[c][pick].tolist()}
        cfg = self.cfg
        band = f"{cfg.cutoff_hz:g}-{cfg.lowpass_hz:g} Hz" if cfg.lowpass_hz else f"above {cfg.cutoff_hz:g} Hz"
        return {"unit": "uV" if scale is not None else None, "rate_hz": w.rate_hz, "pre_samples": w.pre,
                "samples": length, "filter": f"{band}, 2nd-order Butterworth sections, causal (the detector's)",
                "channels": out}

    def figures(self, f: Figures, final: bool) -> None:
        f.rig = self.summary() if final else self.status()
        if final and f.rig["stim_held_no_consumer"]:
            f.warnings.append(f"{f.rig['stim_held_no_consumer']} stimuli held, never sent: nothing subscribed to "
                              "the rig's stimulation stream when they came")
        if final and f.rig["unmapped_spikes"]:
            f.warnings.append(f"{f.rig['unmapped_spikes']} detected spikes dropped: their channel maps to no "
                              "neuron of this node")

    def close(self) -> None:
        if self._desc_thread is not None:
            self._desc_thread.join(3.0)  # its pylsl call times out after 2 s
        if self.inlet is not None:
            self.inlet.close()
        if self.stim is not None:
            self.stim.close()


def _values(a: np.ndarray, scale: float | None) -> list:
    """JSON numbers to 0.01 of the unit (µV: far below any rig's noise); NaN as null."""
    v = np.asarray(a, np.float64) * (scale or 1.0)
    return [None if not math.isfinite(x) else round(x, 2) for x in v.tolist()]


def merge_waveforms(a, b):
    """Two connections' waveforms (kernels.detect.Waveforms, either None) as one: counts add, means and SDs
    pool, and the kept snippets are re-sampled so each spike stays as likely to be kept. A rig that came
    back with other channels or another rate: the one with more spikes."""
    if a is None or b is None:
        return a if b is None else b
    if a.mean.shape != b.mean.shape or a.rate_hz != b.rate_hz or a.pre != b.pre:
        return a if a.count.sum() >= b.count.sum() else b
    from spikewire.nodes.kernels.detect import Waveforms

    n = (a.count + b.count).astype(np.float64)[:, None]
    na, nb = a.count[:, None], b.count[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (np.nan_to_num(a.mean) * na + np.nan_to_num(b.mean) * nb) / n
        square = (np.nan_to_num(a.sd ** 2 + a.mean ** 2) * na + np.nan_to_num(b.sd ** 2 + b.mean ** 2) * nb) / n
    rng = np.random.default_rng(0)
    snippets, times = [], []
    for c in range(len(n)):
        s = np.concatenate([a.snippets[c], b.snippets[c]])
        t = np.concatenate([a.times[c], b.times[c]])
        cap = max(len(a.snippets[c]), len(b.snippets[c]), WAVEFORMS_PER_CHANNEL)
        if len(t) > cap:  # each kept snippet stands for count / kept spikes of its connection
            w = np.concatenate([np.full(len(a.times[c]), a.count[c] / max(1, len(a.times[c]))),
                                np.full(len(b.times[c]), b.count[c] / max(1, len(b.times[c])))])
            pick = np.sort(rng.choice(len(t), cap, replace=False, p=w / w.sum()))
            s, t = s[pick], t[pick]
        order = np.argsort(t, kind="stable")
        snippets.append(s[order])
        times.append(t[order])
    return Waveforms(rate_hz=a.rate_hz, pre=a.pre, count=a.count + b.count, mean=mean,
                     sd=np.sqrt(np.maximum(square - mean ** 2, 0.0)), snippets=snippets, times=times)
