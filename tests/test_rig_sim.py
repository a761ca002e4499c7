"""`spikewire rig-sim` in its own process, seen only through LSL, as spikewire's rig backend will see it:
metadata, sample-accurate timestamps, spikes where the truth file says, and a stimulation command that
comes back as an evoked spike."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
LSL_CFG = str(ROOT / "streams" / "lsl_api.cfg")
os.environ.setdefault("LSLAPICFG", LSL_CFG)  # before pylsl's first use (conftest does the same)

import pylsl  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]

RATE = 30000.0
CHANNELS = 8


def start_rig(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str, str, Path, Path]:
    """The rig on unique stream names (tests and demos may run side by side); returns
    (process, data stream name, stim stream name, truth path, stderr log path)."""
    tag = uuid.uuid4().hex[:8]
    name, stim_name = f"rig-sim-test-{tag}", f"rig-sim-test-stim-{tag}"
    truth, log = tmp_path / "truth.jsonl", tmp_path / "rig.log"
    env = dict(os.environ, LSLAPICFG=LSL_CFG)
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "spikewire.tools.rig_sim", "--channels", str(CHANNELS),
                                 "--name", name, "--stim-stream", stim_name, "--truth", str(truth), "--seed", "7",
                                 "--status-every", "1", *args],
                                env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
    return proc, name, stim_name, truth, log


def reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def read_truth(path: Path) -> tuple[dict, list[dict]]:
    """Header and records; a last line without its newline (a write in progress) is skipped."""
    text = path.read_text()
    lines = text.split("\n")[:-1]
    records = [json.loads(line) for line in lines]
    assert records and records[0]["kind"] == "header", f"no header in {path}"
    return records[0], records[1:]


def resolve(name: str) -> pylsl.StreamInfo:
    infos = pylsl.resolve_byprop("name", name, minimum=1, timeout=10.0)
    assert infos, f"stream {name!r} not found within 10 s"
    return infos[0]


def test_rig_sim_stream_truth_and_evoked_spike(tmp_path):
    proc, name, stim_name, truth_path, log = start_rig(tmp_path, "--duration", "7")
    try:
        inlet = pylsl.StreamInlet(resolve(name), max_buflen=10)
        info = inlet.info(timeout=5.0)
        assert (info.channel_count(), info.nominal_srate(), info.type(), info.channel_format()) == \
            (CHANNELS, RATE, "Voltage", pylsl.cf_float32)
        assert info.source_id() == f"spikewire-rig-sim:{name}:7"
        ch = info.desc().child("channels").child("channel")
        labels, units = [], []
        while not ch.empty():
            labels.append(ch.child_value("label"))
            units.append(ch.child_value("unit"))
            ch = ch.next_sibling()
        assert labels == [f"ch{i}" for i in range(CHANNELS)]
        assert set(units) == {"microvolts"}
        assert info.desc().child("acquisition").child_value("manufacturer") == "spikewire rig-sim"
        assert info.desc().child("stimulation").child_value("stream") == stim_name
        inlet.open_stream(timeout=5.0)

        # The rig finds a stim stream that appears after it started; the consumer joining is the handshake.
        stim = pylsl.StreamOutlet(pylsl.StreamInfo(stim_name, "Stimulation", 3, pylsl.IRREGULAR_RATE,
                                                   pylsl.cf_float32, f"test-{stim_name}"))
        assert stim.wait_for_consumers(5.0), "rig-sim never opened the stim stream:\n" + log.read_text()
        t_cmd = pylsl.local_clock()
        stim.push_sample([3.0, 1.5, 1e-4], t_cmd)
        stim.push_sample([99.0, 1.5, 1e-4], t_cmd + 0.01)  # no such channel: refused, no spike

        chunks, stamps = [], []
        deadline = time.monotonic() + 5.0
        while sum(len(s) for s in stamps) < 2 * RATE or pylsl.local_clock() < t_cmd + 0.5:
            assert time.monotonic() < deadline, "2 s of data did not arrive within 5 s"
            data, ts = inlet.pull_chunk(timeout=0.2, max_samples=8192, as_numpy=True)
            if len(ts):
                chunks.append(data.copy())
                stamps.append(ts)
        data, ts = np.concatenate(chunks), np.concatenate(stamps)

        # spikewire restarts: its stim stream goes away and comes back with a new source_id.
        del stim
        stim = pylsl.StreamOutlet(pylsl.StreamInfo(stim_name, "Stimulation", 3, pylsl.IRREGULAR_RATE,
                                                   pylsl.cf_float32, f"test-{stim_name}-again"))
        assert stim.wait_for_consumers(3.0), "rig-sim did not find the restarted stim stream:\n" + log.read_text()
        t_again = pylsl.local_clock()
        stim.push_sample([5.0, 1.0, 1e-4], t_again)

        assert proc.wait(timeout=10) == 0, log.read_text()
    finally:
        reap(proc)

    header, records = read_truth(truth_path)
    t0, spike_uv, noise_uv = header["t0"], header["spike_uv"], header["noise_uv"]
    assert (header["rate"], header["channels"]) == (RATE, CHANNELS)

    # Every sample stamped t0 + index / rate: no gaps, no duplicates, nothing approximated.
    index = np.rint((ts - t0) * RATE).astype(np.int64)
    assert np.all(np.diff(index) == 1), f"gaps or duplicates at {np.flatnonzero(np.diff(index) != 1)[:5]}"
    assert np.max(np.abs(ts - (t0 + index / RATE))) < 1e-9

    # The truth's spikes are in the data: a trough ~snr x noise deep at the listed sample.
    first, last = index[0], index[-1]
    spikes = [r for r in records if r["kind"] == "spike" and first + 100 <= r["sample"] <= last - 100]
    assert len(spikes) >= 40, f"only {len(spikes)} spikes in 2 s of 8 channels at 5 Hz"
    depths, offsets = [], []
    for sp in spikes:
        assert sp["t"] == pytest.approx(t0 + sp["sample"] / RATE, abs=1e-9)
        k, x = sp["sample"] - first, data[:, sp["channel"]]
        baseline = np.median(x[k - 100:k + 100])
        window = x[k - 5:k + 6] - baseline
        depths.append(-window[5])  # at the listed sample: the window's minimum would be biased by the noise
        offsets.append(int(np.argmin(window)) - 5)
        assert window[3:8].min() < -0.5 * spike_uv, f"no trough at {sp}"
    assert np.median(depths) == pytest.approx(spike_uv, rel=0.15)
    assert np.median(np.abs(offsets)) <= 1

    # ... and only those: every 6-SD downward excursion is a listed spike.
    listed = {(r["channel"], r["sample"]) for r in records if r["kind"] == "spike"}
    kernel = np.ones(91) / 91
    for c in range(CHANNELS):
        x = data[:, c].astype(np.float64)
        hp = x - np.convolve(x, kernel, mode="same")
        for k in np.flatnonzero(hp[100:-100] < -6 * noise_uv) + 100:
            assert any((c, first + k + d) in listed for d in range(-4, 5)), f"unlisted spike on ch{c} at {first + k}"

    # The command evoked one spike on channel 3, latency after the command's timestamp.
    evoked = [r for r in records if r["kind"] == "spike" and r["evoked"]]
    assert [(e["channel"], e["command_t"], e["late"]) for e in evoked] == [(3, t_cmd, False), (5, t_again, False)]
    for e in evoked:
        assert abs(e["t"] - (e["command_t"] + header["evoked_latency_s"])) < 1e-3
    assert first <= evoked[0]["sample"] <= last  # and it was in the data checked above
    stims = [r for r in records if r["kind"] == "stim"]
    assert [(s["channel"], s["evoked"], s["reason"]) for s in stims] == \
        [(3, True, "evoked"), (99.0, False, "bad channel"), (5, True, "evoked")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_rig_sim_stops_cleanly_on_signal(tmp_path, sig):
    proc, name, _, truth_path, log = start_rig(tmp_path)
    try:
        inlet = pylsl.StreamInlet(resolve(name))
        _, ts = inlet.pull_chunk(timeout=5.0, max_samples=300, as_numpy=True)
        assert len(ts), "no data within 5 s"
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0, log.read_text()
    finally:
        reap(proc)
    assert "stopped after" in log.read_text()
    assert truth_path.read_text().endswith("\n")
    read_truth(truth_path)
