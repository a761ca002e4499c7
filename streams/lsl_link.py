"""Lab Streaming Layer transport: a rig's raw-voltage inlet, the stimulation outlet, event exports.

Catches this module exists to handle:

* Resolving a stream blocks; a node's tick must not. The rig is found by pylsl's ContinuousResolver,
  which resolves in the background; each tick only asks it for results.
* Opening an inlet and getting its first sample takes ~16-19 ms here, and a rig may come and go. The
  inlet is opened with ``recover=False``: a vanished outlet raises ``LostError`` (or, if the rig app
  freezes, the data simply stop); either way the link is marked down, counted, and the resolver looks
  for the rig again.
* Timestamps: LSL's time correction (``inlet.time_correction``) blocks while it probes the outlet (~0.6 s
  on a first call, measured), and so does ``proc_clocksync``'s first pull: either would stall a tick on
  every (re)connect. A background thread asks for the correction every few seconds; the loop adds the
  latest offset to each chunk's timestamps (``proc_dejitter`` smooths them for regular streams). Until the
  first estimate arrives the offset is 0, which is exact on one machine.
* Irregular-rate streams count their buffers in units of 100 samples and drop the oldest silently when a
  burst overflows; outlets here are sized for the rates they carry.
* liblsl writes a stream's samples in the stream's own channel format straight into the buffer a pull
  is given: a rig publishing double64 (mne-lsl's PlayerLSL, many amplifier apps) needs a float64 buffer,
  int8 an int8 one. The buffer is allocated in the stream's format (every numeric format is accepted);
  the detector converts to float32. A stream that cannot be used (strings, wrong channel count, irregular
  rate) is refused, logged once and counted once; one that fails when opened or pulled is logged,
  counted and marked down. Neither is opened again under the same uid, and the node keeps running.
* Discovery stays on this machine unless LSLAPICFG says otherwise (``streams/lsl_api.cfg``).

Stimulation commands (our documented channel layout, float32, irregular rate, one sample per pulse)::

    channel 0  target_channel   rig channel (electrode) to stimulate
    channel 1  amplitude        pulse amplitude, in the unit of the CME stimulus (V)
    channel 2  width_s          pulse width [s]

and each sample's timestamp is when spikewire asked for the pulse (local_clock()).

What "sent" means. LSL keeps nothing for a consumer that subscribes later: a command pushed while no
inlet is subscribed is lost without a trace. So a command is pushed only while the outlet has a consumer
(``have_consumers()``) and is otherwise held and counted (``StimOutlet.no_consumer``), never counted as
sent. liblsl registers a consumer's queue before ``have_consumers()`` turns true (the outlet creates it
when the inlet's stream feed starts, after the inlet opened the stream, whether by ``open_stream()`` or
implicitly by its first pull), and every later push lands in that queue; measured here, not one command
pushed after ``have_consumers()`` turned true was lost, over thousands, with the rig opening explicitly,
implicitly with timeout-0 pulls, or with blocking pulls. The guarantee is therefore: every command counted
as sent was queued for every consumer subscribed at that moment. What LSL cannot tell us, and so no
count here claims: which program a consumer is (LabRecorder recording this stream is a consumer too),
whether it still reads (a consumer that goes away before pulling loses what was queued for it; a
closed or killed one on this machine leaves at once; one that falls more than 1,000 commands behind
loses the oldest, liblsl's queue bound), and whether the stimulator acted on a command
(LSL has no acknowledgment). And once an outlet is destroyed, liblsl's inlet raises LostError instead of
handing over samples it had already received, so ``StimOutlet.close`` keeps the outlet open for
``STIM_LINGER`` s after the last command.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from spikewire.streams.clock import local_clock

import pylsl  # noqa: E402,I001  (after the clock module, which sets the machine-scoped LSLAPICFG)
from pylsl.util import LostError  # noqa: E402

log = logging.getLogger("spikewire.lsl")
CORRECTION_PERIOD = 5.0
STIM_LINGER = 0.5
"""Seconds the stimulation outlet stays open after its last command, so a rig polling at 10 Hz or more
pulls it before the outlet goes (see the module docstring)."""

NUMERIC_FORMATS: dict[int, type] = {
    pylsl.cf_float32: np.float32, pylsl.cf_double64: np.float64, pylsl.cf_int8: np.int8,
    pylsl.cf_int16: np.int16, pylsl.cf_int32: np.int32, pylsl.cf_int64: np.int64,
}
"""Every numeric LSL channel format, and the numpy type its samples are pulled into."""
FORMAT_NAMES = {pylsl.cf_undefined: "undefined", pylsl.cf_float32: "float32", pylsl.cf_double64: "double64",
                pylsl.cf_string: "string", pylsl.cf_int32: "int32", pylsl.cf_int16: "int16", pylsl.cf_int8: "int8",
                pylsl.cf_int64: "int64"}

STIM_CHANNELS = (("target_channel", "index"), ("amplitude", "V"), ("width_s", "s"))


def parse_query(query: str) -> tuple[str, str]:
    """'name=X', 'type=X' or 'source_id=X' (a bare value means the name) -> (property, value)."""
    prop, eq, value = query.partition("=")
    if not eq:
        return "name", query
    prop = prop.strip()
    if prop not in ("name", "type", "source_id"):
        raise ValueError(f"stream query must be name=..., type=... or source_id=..., got {query!r}")
    return prop, value.strip()


class RigInlet:
    """The rig's raw voltage stream: found in the background, pulled into a preallocated buffer."""

    def __init__(self, query: str, channels: int, max_chunk: int, stale_after: float):
        self.prop, self.value = parse_query(query)
        self.expected_channels = channels
        self.stale_after = stale_after
        self.resolver = pylsl.ContinuousResolver(prop=self.prop, value=self.value, forget_after=1.0)
        self.inlet: pylsl.StreamInlet | None = None
        self.info: pylsl.StreamInfo | None = None
        self.buf: np.ndarray | None = None
        self.max_chunk = max_chunk
        self.up = False
        self.opened_at = 0.0
        self.last_data = 0.0
        self.connects = 0
        self.disconnects = 0
        self.samples = 0
        self.refused: dict[str, int] = {}
        """Streams matching the query that cannot be used, by reason (each stream counted once)."""
        self.errors: dict[str, int] = {}
        """Streams that failed when opened (``open``) or pulled (``pull``): each an outage, counted."""
        self._unusable: set[str] = set()  # uids refused or failed: not opened again (a restarted app has a new one)
        self.last_uid = ""
        self.offset = 0.0  # latest LSL time correction of the open stream [s]
        self._corrector: _TimeCorrection | None = None

    @property
    def rate(self) -> float:
        return self.info.nominal_srate() if self.info is not None else 0.0

    @property
    def channels(self) -> int:
        return self.info.channel_count() if self.info is not None else self.expected_channels

    def _unusable_because(self, info: pylsl.StreamInfo) -> tuple[str, str] | None:
        """(reason, explanation) if the stream cannot feed the detector, else None."""
        if self.expected_channels and info.channel_count() != self.expected_channels:
            return "channel_count", f"{info.channel_count()} channels, rig.channels wants {self.expected_channels}"
        if info.nominal_srate() <= 0:
            return "irregular_rate", "irregular sampling rate; spike detection needs a regular one"
        fmt = info.channel_format()
        if fmt not in NUMERIC_FORMATS:
            return "format", (f"channel format {FORMAT_NAMES.get(fmt, fmt)}; spikewire reads numeric streams only ("
                              + ", ".join(FORMAT_NAMES[f] for f in NUMERIC_FORMATS) + ")")
        return None

    def _open(self, now: float) -> None:
        for info in self.resolver.results():
            uid = info.uid()
            if uid in self._unusable:
                continue
            if uid == self.last_uid and not self.up and now - self.opened_at < self.stale_after * 4:
                continue  # the stream we just dropped, still remembered by the resolver
            why = self._unusable_because(info)
            if why is not None:
                self._unusable.add(uid)
                self.refused[why[0]] = self.refused.get(why[0], 0) + 1
                log.warning("rig stream %s refused: %s; still looking for a usable one", _name(info), why[1])
                continue
            try:
                inlet = pylsl.StreamInlet(info, max_buflen=2, recover=False, processing_flags=pylsl.proc_dejitter)
            except RuntimeError as e:  # pylsl's errors (InvalidArgumentError, InternalError) are RuntimeErrors
                self._fail(info, "open", e)
                continue
            self.info = info
            self.inlet = inlet
            self.offset = 0.0
            self._corrector = _TimeCorrection(self.inlet, self)
            self.buf = np.zeros((self.max_chunk, info.channel_count()), NUMERIC_FORMATS[info.channel_format()])
            self.opened_at = now
            self.last_uid = uid
            return

    def _fail(self, info: pylsl.StreamInfo, step: str, error: Exception) -> None:
        """A stream that looked usable failed: count it, say so, drop it and never open it again."""
        self._unusable.add(info.uid())
        self.errors[step] = self.errors.get(step, 0) + 1
        log.error("rig stream %s failed to %s (%s: %s): marked down and not used again; still looking for a "
                  "usable one", _name(info), step, type(error).__name__, error)
        if self.inlet is not None:
            self._down()

    def _down(self) -> None:
        if self.up:
            self.disconnects += 1
        self.up = False
        if self._corrector is not None:
            self._corrector.stop()
            self._corrector = None
        if self.inlet is not None:
            self.inlet.close_stream()
        self.inlet = None

    def poll(self, now: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Whatever samples arrived since the last poll: (samples view, timestamps), or None."""
        if self.inlet is None:
            self._open(now)
            if self.inlet is None:
                return None
        try:
            data, ts = self.inlet.pull_chunk(timeout=0.0, max_samples=self.max_chunk, dest_obj=self.buf,
                                             as_numpy=True)
        except LostError:
            self._down()
            return None
        except (RuntimeError, ValueError) as e:  # any other pylsl error; ValueError: a buffer pylsl refuses
            self._fail(self.info, "pull", e)
            return None
        if len(ts):
            if self.offset:
                ts += self.offset  # onto this machine's clock (LSL time correction)
            if not self.up:
                self.up = True
                self.connects += 1
            self.last_data = now
            self.samples += len(ts)
            return data, ts
        # Nothing new: a rig that stopped sending (or never started after we opened it) is down.
        if now - max(self.last_data, self.opened_at) > self.stale_after:
            self._down()
        return None

    def close(self) -> None:
        self._down()


class _TimeCorrection:
    """Keeps ``owner.offset`` up to date with the inlet's LSL time correction, off the node's loop."""

    def __init__(self, inlet: pylsl.StreamInlet, owner: RigInlet):
        self.inlet = inlet
        self.owner = owner
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lsl-time-correction", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.owner.offset = self.inlet.time_correction(timeout=2.0)
            except (LostError, pylsl.util.TimeoutError) as e:
                log.debug("time correction unavailable now: %s", e)
            self._stop.wait(CORRECTION_PERIOD)

    def stop(self) -> None:
        self._stop.set()


class StimOutlet:
    """Stimulation commands for a rig's stimulator app (channel layout in the module docstring)."""

    def __init__(self, name: str, source_id: str, node: str, site: str):
        info = pylsl.StreamInfo(name, "Stimulation", len(STIM_CHANNELS), pylsl.IRREGULAR_RATE, pylsl.cf_float32,
                                source_id)
        _describe(info, node, site, STIM_CHANNELS)
        self.name = name
        # max_buffered counts 100 samples when the rate is irregular: 1,000 commands per consumer.
        self.outlet: pylsl.StreamOutlet | None = pylsl.StreamOutlet(info, chunk_size=1, max_buffered=10)
        self.sample = np.zeros(len(STIM_CHANNELS), np.float32)
        self.sent = 0
        """Commands pushed while the stream had a consumer (what that guarantees: the module docstring)."""
        self.no_consumer = 0
        """Commands not pushed because nothing was subscribed: LSL would have dropped them unseen."""
        self.last_push = -np.inf

    def have_consumers(self) -> bool:
        return self.outlet is not None and self.outlet.have_consumers()

    def wait_for_consumers(self, timeout: float) -> bool:
        """Block until a consumer subscribes (True) or ``timeout`` s pass (False)."""
        return self.outlet is not None and self.outlet.wait_for_consumers(timeout)

    def pulse(self, channel: int, amplitude: float, width: float, t: float | None = None) -> bool:
        """Push one command if the stream has a consumer (True); else count it in ``no_consumer`` (False)."""
        if not self.have_consumers():
            self.no_consumer += 1
            return False
        self.sample[:] = (channel, amplitude, width)
        self.outlet.push_sample(self.sample, t if t is not None else local_clock())
        self.sent += 1
        self.last_push = local_clock()
        return True

    def close(self, linger: float = STIM_LINGER) -> None:
        """Destroy the outlet, ``linger`` s after the last command at the earliest (if anyone listens)."""
        if self.outlet is None:
            return
        wait = self.last_push + linger - local_clock()
        if wait > 0 and self.outlet.have_consumers():
            time.sleep(wait)
        self.outlet = None  # pylsl destroys the liblsl outlet: consumers see the stream end


class EventOutlet:
    """An output port's events as an LSL stream, so LabRecorder (or any LSL client) records them next
    to the rig's data: irregular rate, 2 double channels (id, value), each sample stamped with the
    event's time ``t``."""

    def __init__(self, name: str, stream_type: str, source_id: str, node: str, site: str, port: str,
                 value_unit: str):
        info = pylsl.StreamInfo(name, stream_type, 2, pylsl.IRREGULAR_RATE, pylsl.cf_double64, source_id)
        _describe(info, node, site, (("id", "index"), ("value", value_unit)), port=port)
        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=100)
        self.pushed = 0

    def push(self, events: np.ndarray) -> None:
        if not len(events):
            return
        chunk = np.empty((len(events), 2))
        chunk[:, 0] = events["id"]
        chunk[:, 1] = events["value"]
        self.outlet.push_chunk(chunk, events["t"].tolist())
        self.pushed += len(events)


def _name(info: pylsl.StreamInfo) -> str:
    return f"{info.name()!r} (source_id {info.source_id()!r} on {info.hostname()})"


def _describe(info: pylsl.StreamInfo, node: str, site: str, channels, port: str = "") -> None:
    desc = info.desc()
    desc.append_child_value("manufacturer", "spikewire")
    desc.append_child_value("node", node)
    desc.append_child_value("site", site)
    if port:
        desc.append_child_value("port", port)
    chans = desc.append_child("channels")
    for label, unit in channels:
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
