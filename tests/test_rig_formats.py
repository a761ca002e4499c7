"""A rig may publish any numeric LSL channel format (issue 11: a double64 rig, such as mne-lsl's PlayerLSL,
killed the run on its first pull). Each format from a plain pylsl outlet through the real ``RigInlet``;
a stream spikewire cannot use is refused with a clear message and counted once, and the node keeps
looking; and a whole `spikewire run` of rig_loop.toml reading a double64 rig.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from conftest import read_json
from rig_helpers import DataRig, rig_loop_copy, start_rig_sim, stop, tag

import pylsl  # noqa: I001  (after rig_helpers, which sets the machine-scoped LSLAPICFG)

from spikewire.streams.lsl_link import RigInlet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RATE = 1000.0
CHANNELS = 3
FORMATS = [(pylsl.cf_float32, np.float32), (pylsl.cf_double64, np.float64), (pylsl.cf_int8, np.int8),
           (pylsl.cf_int16, np.int16), (pylsl.cf_int32, np.int32), (pylsl.cf_int64, np.int64)]


def _values(dtype, n: int) -> np.ndarray:
    """n samples that only survive unchanged if read in ``dtype`` itself: extremes of integer formats,
    and for doubles values that float32 would round."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        ramp = np.arange(n * CHANNELS, dtype=np.int64) % 200 - 100
        x = ramp.reshape(n, CHANNELS).astype(dtype)
        x[0] = (info.min, info.max, 0)
        return x
    x = (np.arange(n * CHANNELS).reshape(n, CHANNELS) * 0.1 + 1e-9).astype(dtype)
    x[0] = (np.finfo(dtype).max, -np.finfo(dtype).tiny, 0.0)
    return x


def _pull_all(inlet: RigInlet, rig: DataRig | None, want: int, timeout: float) -> tuple[np.ndarray, np.ndarray]:
    chunks, stamps = [], []
    deadline = time.monotonic() + timeout
    while sum(len(s) for s in stamps) < want:
        assert time.monotonic() < deadline, f"{sum(len(s) for s in stamps)} of {want} samples within {timeout} s"
        got = inlet.poll(pylsl.local_clock())
        if got is None:
            time.sleep(0.005)
            continue
        data, ts = got
        chunks.append(data.copy())
        stamps.append(ts.copy())
    return np.concatenate(chunks), np.concatenate(stamps)


@pytest.mark.parametrize("fmt, dtype", FORMATS, ids=[np.dtype(d).name for _, d in FORMATS])
def test_rig_inlet_reads_every_numeric_format_exactly(fmt, dtype):
    name = f"rig-format-{tag()}"
    rig = DataRig(name, CHANNELS, RATE, fmt)
    inlet = RigInlet(f"name={name}", CHANNELS, max_chunk=64, stale_after=2.0)
    try:
        sent = _values(dtype, 300)
        deadline = time.monotonic() + 10.0
        while inlet.inlet is None:  # resolved and opened (no data pushed yet: none can be missed)
            assert time.monotonic() < deadline, "RigInlet did not find the stream within 10 s"
            assert inlet.poll(pylsl.local_clock()) is None
            time.sleep(0.01)
        inlet.inlet.open_stream(timeout=5.0)
        rig.push(sent)
        data, ts = _pull_all(inlet, rig, len(sent), timeout=10.0)
        assert inlet.up and inlet.connects == 1 and inlet.samples == len(sent)
    finally:
        inlet.close()
    assert data.dtype == dtype
    np.testing.assert_array_equal(data, sent)  # every value exact, in the rig's own format
    assert not inlet.refused and not inlet.errors
    # proc_dejitter smooths timestamps; on exact t0 + i / rate stamps it stays within a sample period.
    np.testing.assert_allclose(ts, rig.t0 + np.arange(len(sent)) / RATE, rtol=0, atol=1.0 / RATE)


def test_a_string_stream_is_refused_once_with_a_clear_message_and_a_usable_one_is_taken(caplog):
    """An unusable stream (strings) never crashes the node: refused, counted once however long it stays,
    named in one log line; the rig stays down until a usable stream of the same name appears."""
    name = f"rig-format-{tag()}"
    bad = pylsl.StreamOutlet(pylsl.StreamInfo(name, "Voltage", CHANNELS, RATE, pylsl.cf_string, f"bad-{name}"))
    inlet = RigInlet(f"name={name}", CHANNELS, max_chunk=64, stale_after=2.0)
    try:
        with caplog.at_level(logging.WARNING, logger="spikewire.lsl"):
            deadline = time.monotonic() + 10.0
            while not inlet.refused:
                assert time.monotonic() < deadline, "the string stream was never seen within 10 s"
                assert inlet.poll(pylsl.local_clock()) is None
                time.sleep(0.001)
            t_end = time.monotonic() + 1.0  # a second of 1 ms ticks with the bad stream still there
            while time.monotonic() < t_end:
                bad.push_sample(["x"] * CHANNELS)
                assert inlet.poll(pylsl.local_clock()) is None
                time.sleep(0.001)
        assert inlet.refused == {"format": 1}, inlet.refused  # one stream, counted once
        assert not inlet.up and inlet.inlet is None
        lines = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert len(lines) == 1, lines
        assert "string" in lines[0] and "numeric" in lines[0], lines[0]

        good = DataRig(name, CHANNELS, RATE, pylsl.cf_double64)  # the rig app restarted, publishing doubles
        deadline = time.monotonic() + 10.0
        while inlet.inlet is None:
            assert time.monotonic() < deadline, "the usable stream was not taken within 10 s"
            inlet.poll(pylsl.local_clock())
            time.sleep(0.01)
        inlet.inlet.open_stream(timeout=5.0)
        sent = _values(np.float64, 50)
        good.push(sent)
        data, _ = _pull_all(inlet, good, len(sent), timeout=10.0)
        np.testing.assert_array_equal(data, sent)
        assert inlet.refused == {"format": 1}
    finally:
        inlet.close()


@pytest.mark.parametrize("fmt", ["double64", "int16"])
def test_rig_loop_runs_on_a_rig_publishing(fmt, cli_run, tmp_path):
    """The whole loop (rig_loop.toml) with rig-sim publishing ``fmt``: the run completes, the node
    detects spikes and the rig answers its stimuli."""
    name, stim = f"rig-fmt-{tag()}", f"rig-fmt-stim-{tag()}"
    rig, truth, log = start_rig_sim(tmp_path, name, stim, "--format", fmt, "--duration", "40")
    try:
        out = tmp_path / "s.json"
        run = cli_run("run", str(rig_loop_copy(tmp_path, name, stim)), "--duration", "5", "--json", str(out))
        code, text = run.finish(timeout=90)
    finally:
        stop(rig)
    assert code == 0, text + "\n" + log.read_text()
    r = read_json(out)["nodes"]["padova"]["model"]["rig"]
    assert r["rig_connects"] == 1 and r["rig_disconnects"] == 0 and r["calibrated"], r
    assert r["rig_samples"] > 4 * 30000, r
    bn = next(n for n in read_json(out)["neurons"] if n["node"] == "padova")
    assert bn["stimulated_ap"] >= 20 and bn["spontaneous_ap"] >= 5, bn
