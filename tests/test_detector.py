"""The rig spike detector: kernels against plain-Python references, the filter against an independent
one, and detection quality against synthetic ground truth (known spike times in realistic noise).

The references loop over Python floats and share no code with the kernels. Ground truth: 30 kHz
"extracellular" channels of white + 1/f noise, LFP and drift (which the high-pass must remove) and a
biphasic, negative-first ~1 ms spike waveform at known times, its trough 5 x the noise SD of the spike
band; fed through ``SpikeDetector`` in 1 ms chunks as a rig would deliver them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from spikewire.nodes.kernels import detect
from spikewire.nodes.kernels.detect import (SpikeDetector, collect_calibration, detect_chunk, highpass_coefficients,
                                            lowpass_coefficients, mad_noise_sd)

RATE = 30_000.0
CHUNK = 30  # 1 ms at 30 kHz


@pytest.fixture(scope="module", autouse=True)
def compiled():
    detect.warm_up()


# --------------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------------


def detect_reference(chunks, sos, threshold, dead_samples, peak_samples, first_index=0):
    """The kernel's contract on Python floats, chunk by chunk. Returns (detections [(index, channel)],
    filtered chunks as lists of rows, final state [section][0 or 1][channel], dead_until)."""
    n_ch = len(threshold)
    state = [[[0.0] * n_ch, [0.0] * n_ch] for _ in sos]
    dead_until = [-(2 ** 62)] * n_ch
    found, filtered = [], []
    start = first_index
    for chunk in chunks:
        rows = chunk.tolist()
        for (b0, b1, b2, a1, a2), (z0, z1) in zip(sos.tolist(), state):  # one pass per section
            for row in rows:
                for c, x in enumerate(row):
                    if math.isfinite(x):
                        y = b0 * x + z0[c]
                        z0[c] = b1 * x - a1 * y + z1[c]
                        z1[c] = b2 * x - a2 * y
                        row[c] = float(np.float32(y))  # the chunk is float32 between sections
                    else:
                        row[c] = 0.0
        for r, row in enumerate(rows):
            for c in range(n_ch):
                if row[c] < threshold[c] and start + r >= dead_until[c]:
                    window = [rows[k][c] for k in range(r, min(r + peak_samples + 1, len(rows)))]
                    found.append((start + r + window.index(min(window)), c))
                    dead_until[c] = found[-1][0] + dead_samples
        filtered.append(rows)
        start += len(rows)
    return found, filtered, state, dead_until


def direct_form_1(x, coef):
    """y[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2] - a1 y[n-1] - a2 y[n-2], one channel, float64."""
    b0, b1, b2, a1, a2 = (float(v) for v in coef)
    x1 = x2 = y1 = y2 = 0.0
    out = []
    for xn in x.tolist():
        yn = b0 * xn + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
        out.append(yn)
        x2, x1, y2, y1 = x1, xn, y1, yn
    return np.array(out)


def run_kernel(kernel, chunks, sos, threshold, dead_samples, peak_samples, cap=10_000, first_index=0):
    sos = np.atleast_2d(sos)
    n_ch = len(threshold)
    zi = np.zeros((len(sos), 2, n_ch))
    dead_until = np.full(n_ch, detect.NEVER, np.int64)
    out_index, out_channel = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
    found, filtered = [], []
    start = first_index
    for chunk in chunks:
        y = chunk.copy()
        n = kernel(y, sos, zi, np.asarray(threshold, np.float64), dead_samples, dead_until, start, out_index,
                   out_channel, peak_samples)
        found += list(zip(out_index[:n].tolist(), out_channel[:n].tolist()))
        filtered.append(y)
        start += len(chunk)
    return found, filtered, zi, dead_until


def random_chunks(rng, sizes, n_ch):
    x = rng.standard_normal((sum(sizes), n_ch)).astype(np.float32) * 3.0 + 50.0  # a DC offset to remove
    x[rng.random(x.shape) < 0.002] = np.nan
    x[rng.random(x.shape) < 0.001] = np.inf
    bounds = np.cumsum([0, *sizes])
    return [np.ascontiguousarray(x[a:b]) for a, b in itertools.pairwise(bounds)]


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [detect_chunk, detect_chunk.py_func], ids=["njit", "py_func"])
def test_detect_chunk_matches_reference(kernel):
    rng = np.random.default_rng(11)
    n_ch = 7
    sizes = [30, 1, 0, 17, 64, 30, 5, 30, 200, 30]
    chunks = random_chunks(rng, sizes, n_ch)
    sos = np.stack([highpass_coefficients(300.0, RATE), lowpass_coefficients(3000.0, RATE)])
    threshold = list(-rng.uniform(1.5, 3.0, n_ch))  # ~1.2-2.4 SD of the filtered noise: plenty of crossings
    threshold[3] = -math.inf  # a channel not yet calibrated
    ref, ref_y, state, dead = detect_reference(chunks, sos, threshold, 12, 4, first_index=1000)
    got, got_y, zi, dead_until = run_kernel(kernel, chunks, sos, threshold, 12, 4, first_index=1000)
    assert len(ref) > 50
    assert got == ref
    assert not any(c == 3 for _, c in got)
    for a, b in zip(got_y, ref_y):
        np.testing.assert_array_equal(a, np.array(b, np.float32).reshape(a.shape))
    np.testing.assert_array_equal(zi, state)
    assert dead_until.tolist() == dead


def test_detections_do_not_depend_on_chunking_without_peak_search():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3000, 5)).astype(np.float32)
    sos = np.stack([highpass_coefficients(300.0, RATE), lowpass_coefficients(3000.0, RATE)])
    threshold = [-0.6] * 5
    whole, y_whole, zi_whole, _ = run_kernel(detect_chunk, [x], sos, threshold, 30, 0)
    sizes = rng.integers(0, 90, 200)
    bounds = np.minimum(np.cumsum([0, *sizes]), 3000)
    bounds[-1] = 3000
    parts = [np.ascontiguousarray(x[a:b]) for a, b in itertools.pairwise(bounds)]
    chunked, y_chunked, zi_chunked, _ = run_kernel(detect_chunk, parts, sos, threshold, 30, 0)
    assert len(whole) > 100
    assert sorted(chunked) == sorted(whole)
    np.testing.assert_array_equal(np.concatenate(y_chunked), y_whole[0])
    np.testing.assert_array_equal(zi_chunked, zi_whole)


def test_peak_search_reports_the_trough_and_stays_in_the_chunk():
    identity = np.array([1.0, 0.0, 0.0, 0.0, 0.0])  # y = x: the detection logic alone
    x = np.zeros((30, 2), np.float32)
    x[5:10, 0] = [-2, -3, -5, -4, -1]  # crosses -1.5 at row 5, trough at row 7
    x[27:30, 1] = [-2, -3, -4]  # trough beyond the chunk: the last sample is the best we have
    found, _, _, dead_until = run_kernel(detect_chunk, [x], identity, [-1.5, -1.5], 30, 9, first_index=300)
    assert found == [(307, 0), (329, 1)]
    assert dead_until.tolist() == [337, 359]  # counted from the reported sample


def test_dead_time_blocks_a_second_crossing_within_it():
    identity = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    x = np.zeros((100, 1), np.float32)
    x[[10, 20, 39, 40, 41, 80], 0] = -5.0
    found, _, _, _ = run_kernel(detect_chunk, [x], identity, [-1.0], 30, 0)
    assert [i for i, _ in found] == [10, 40, 80]  # 20 and 39 fall within 30 samples of 10; 41 of 40


def test_capacity_overflow_counts_but_writes_only_capacity():
    identity = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    x = np.full((4, 6), -5.0, np.float32)
    out_index, out_channel = np.full(5, -7, np.int64), np.full(5, -7, np.int64)
    n = detect_chunk(x, identity[None], np.zeros((1, 2, 6)), np.full(6, -1.0), 2,
                     np.full(6, detect.NEVER, np.int64), 0, out_index[:2], out_channel[:2], 0)
    assert n == 12  # rows 0 and 2 on each of 6 channels
    assert out_index.tolist() == [0, 0, -7, -7, -7] and out_channel.tolist() == [0, 1, -7, -7, -7]


@pytest.mark.parametrize("n", [1, 2, 7, 100, 3750, 4096])
def test_mad_noise_sd_matches_numpy_median(n):
    rng = np.random.default_rng(n)
    store = np.abs(rng.standard_normal((6, n))).astype(np.float32)
    store[1] = np.round(store[1] * 2) / 2  # many ties
    store[2] = 0.0
    expect = np.median(store.astype(np.float64), axis=1) / detect.MAD_TO_SD
    sigma = np.full(6, -1.0)
    mad_noise_sd(store.copy(), 1, 5, sigma)
    np.testing.assert_allclose(sigma[1:5], expect[1:5], rtol=1e-7)
    assert sigma[0] == -1.0 and sigma[5] == -1.0  # outside [first, last): untouched
    sigma2 = np.full(6, -1.0)
    mad_noise_sd.py_func(store.copy(), 0, 6, sigma2)
    np.testing.assert_allclose(sigma2, expect, rtol=1e-7)


def test_collect_calibration_keeps_every_stride_th_sample_across_chunks():
    y = np.arange(-50, 0, dtype=np.float32).reshape(25, 2)
    store = np.zeros((2, 7), np.float32)  # total 20, stride 3: samples 0, 3, ..., 18
    seen = 0
    for a, b in [(0, 4), (4, 5), (5, 13), (13, 25)]:
        seen += collect_calibration(np.ascontiguousarray(y[a:b]), seen, 3, 20, store)
    assert seen == 20
    np.testing.assert_array_equal(store, np.abs(y[0:20:3]).T)


# --------------------------------------------------------------------------------------------------
# The filter
# --------------------------------------------------------------------------------------------------


def test_filters_match_direct_form_1_reference():
    rng = np.random.default_rng(3)
    t = np.arange(6000) / RATE
    x = (rng.standard_normal((6000, 3)) + 40.0 * np.sin(2 * np.pi * 5.0 * t)[:, None] + 100.0).astype(np.float32)
    for sos in ([highpass_coefficients(150.0, RATE)], [highpass_coefficients(1000.0, RATE)],
                [lowpass_coefficients(6000.0, RATE)],
                [highpass_coefficients(300.0, RATE), lowpass_coefficients(3000.0, RATE)]):
        _, y, _, _ = run_kernel(detect_chunk, [x[i:i + 30] for i in range(0, 6000, 30)], np.stack(sos),
                                [-np.inf] * 3, 1, 0)
        y = np.concatenate(y)
        for c in range(3):
            ref = x[:, c].astype(np.float64)
            for coef in sos:
                ref = direct_form_1(ref, coef)
            np.testing.assert_allclose(y[:, c], ref, rtol=1e-6, atol=2e-6 * np.abs(ref).max())


@pytest.mark.parametrize("kind", ["highpass", "lowpass"])
def test_filters_are_butterworth_with_the_cutoff_at_minus_3_db(kind):
    fs, fc = RATE, (300.0 if kind == "highpass" else 3000.0)
    b0, b1, b2, a1, a2 = (highpass_coefficients if kind == "highpass" else lowpass_coefficients)(fc, fs)
    f = np.array([1.0, 10.0, 100.0, 300.0, 1000.0, 3000.0, 6000.0, 10_000.0, 14_999.0])
    z = np.exp(-2j * np.pi * f / fs)
    gain = np.abs((b0 + b1 * z + b2 * z * z) / (1.0 + a1 * z + a2 * z * z))
    # The analog Butterworth |H|^2 = 1 / (1 + (w / wc)^(+-4)), through the bilinear map w = tan(pi f / fs).
    ratio = np.tan(np.pi * f / fs) / math.tan(math.pi * fc / fs)
    expect = 1.0 / np.sqrt(1.0 + ratio ** (-4.0 if kind == "highpass" else 4.0))
    np.testing.assert_allclose(gain, expect, rtol=1e-9, atol=1e-12)
    assert gain[f == fc][0] == pytest.approx(1.0 / math.sqrt(2.0), rel=1e-9)
    dc = b0 + b1 + b2
    assert dc == pytest.approx(0.0, abs=1e-15) if kind == "highpass" else dc / (1 + a1 + a2) == pytest.approx(1.0)


@pytest.mark.parametrize("cutoff", [0.0, -5.0, 15_000.0, 20_000.0])
def test_filters_reject_cutoffs_outside_the_band(cutoff):
    for coefficients in (highpass_coefficients, lowpass_coefficients):
        with pytest.raises(ValueError, match="cutoff_hz"):
            coefficients(cutoff, RATE)


def test_detector_filter_is_the_300_to_3000_hz_band_and_low_pass_is_optional():
    assert len(SpikeDetector(2, RATE).sos) == 2
    assert len(SpikeDetector(2, RATE, lowpass_hz=None).sos) == 1
    assert SpikeDetector(2, 5000.0).lowpass_hz is None  # at or past Nyquist: the rig has band-limited already
    with pytest.raises(ValueError, match="lowpass_hz"):
        SpikeDetector(2, RATE, cutoff_hz=500.0, lowpass_hz=400.0)


# --------------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------------


def _unit_spike():
    """A negative-first biphasic extracellular spike: a sharp trough (~0.24 ms wide at half depth) and a
    slower positive rebound peaking ~0.4 ms later; ~1 ms in all. Returns f(t) with its trough at t = 0,
    depth -1, and its support (t_before, t_after) in s."""
    def raw(t):
        return -np.exp(-0.5 * (t / 0.1e-3) ** 2) + 0.35 * np.exp(-0.5 * ((t - 0.4e-3) / 0.25e-3) ** 2)
    grid = np.linspace(-0.3e-3, 0.3e-3, 60_001)
    t0 = grid[np.argmin(raw(grid))]
    depth = -raw(t0)
    return (lambda t: raw(t + t0) / depth), (-0.5e-3, 1.2e-3)


SPIKE, SUPPORT = _unit_spike()


def filtered(x, sos):
    """``x`` through the biquads ``sos`` with the detector's kernel (checked against the references above)."""
    y = np.array(x, dtype=np.float32, order="C")
    sos = np.atleast_2d(sos)
    detect_chunk(y, sos, np.zeros((len(sos), 2, y.shape[1])), np.full(y.shape[1], -np.inf), 1,
                 np.zeros(y.shape[1], np.int64), 0, np.zeros(1, np.int64), np.zeros(1, np.int64), 0)
    return y


def highpassed(x):
    """The spike band of a recording: above 300 Hz."""
    return filtered(x, highpass_coefficients(300.0, RATE))


def filtered_depth():
    """Depth of the unit spike's trough after a causal 300 Hz high-pass: the filter's memory of the sharp
    negative phase lifts the trough by about a quarter (a known cost of causal filtering)."""
    return -float(highpassed(SPIKE(np.arange(-300, 300)[:, None] / RATE)).min())


def synthesize(rng, channels, duration, pink=True, snr=5.0, rate_hz=15.0, refractory=2e-3):
    """(data float32 (samples, channels), spike times per channel [s], noise alone, band noise SD, raw
    amplitude).

    Noise: white (SD 1), plus with ``pink`` 1/f noise of equal total power (~40% of it above 300 Hz),
    plus LFP (7 and 40 Hz, 20 and 8 SD), a random-walk drift and a DC offset per channel. Spikes: Poisson
    at ``rate_hz`` with a ``refractory`` dead period, at continuous times (not on the sample grid). SNR as
    spike sorting benchmarks define it (SpikeInterface, MEArec): in the spike band (300 Hz high-pass) the
    trough of a spike is ``snr`` times the SD of the noise. The raw waveform is deeper (``filtered_depth``).
    The detector's own 3 kHz low-pass is not counted in the SNR: it is the detector's doing.
    """
    n = round(duration * RATE)
    t = np.arange(n) / RATE
    noise = rng.standard_normal((n, channels))
    if pink:
        spectrum = np.fft.rfft(rng.standard_normal((n, channels)), axis=0)
        spectrum *= 1.0 / np.sqrt(np.maximum(np.fft.rfftfreq(n, 1.0 / RATE), 1.0))[:, None]
        one_over_f = np.fft.irfft(spectrum, n, axis=0)
        noise += one_over_f / one_over_f.std(axis=0)
    for freq, amp in ((7.0, 20.0), (40.0, 8.0)):
        noise += amp * np.sin(2 * np.pi * freq * t[:, None] + rng.uniform(0, 2 * np.pi, channels))
    noise += np.cumsum(rng.standard_normal((n, channels)) * 0.05, axis=0) + rng.uniform(-300, 300, channels)
    band_sd = float(highpassed(noise)[int(0.1 * RATE):].std())  # past the filter's start-up transient
    amplitude = snr * band_sd / filtered_depth()
    data = noise.copy()
    times = []
    for c in range(channels):
        isi = refractory + rng.exponential(1.0 / rate_hz - refractory, int(duration * rate_hz * 2) + 10)
        ts = 5e-3 + np.cumsum(isi)
        ts = ts[ts < duration - 5e-3]
        times.append(ts)
        for ti in ts:
            j = np.arange(math.ceil((ti + SUPPORT[0]) * RATE), math.floor((ti + SUPPORT[1]) * RATE) + 1)
            data[j, c] += amplitude * SPIKE(j / RATE - ti)
    return data.astype(np.float32), times, noise, band_sd, amplitude


def feed(detector, data, chunk=CHUNK):
    """Feed ``data`` in chunks; returns (index, neuron) arrays and the first sample of the first chunk
    processed after calibration completed."""
    idx, ids = [], []
    calibrated_from = None
    for start in range(0, len(data), chunk):
        if detector.calibrated and calibrated_from is None:
            calibrated_from = start
        i, n = detector.process(data[start:start + chunk], start)
        idx.append(i.copy())
        ids.append(n.copy())
    return np.concatenate(idx), np.concatenate(ids), calibrated_from


def score(times, idx, ids, start, end, tolerance=1e-3):
    """One-to-one matching, per channel, of true spikes to the nearest detection within ``tolerance``
    (closest pairs first), over true spikes and detections in [start, end) s. Returns a dict of figures."""
    n_true = n_det = matched = 0
    errors = []
    for c, true in enumerate(times):
        true = true[(true >= start) & (true < end)]
        det = np.sort(idx[ids == c]) / RATE
        det = det[(det >= start) & (det < end)]
        n_true += len(true)
        n_det += len(det)
        pairs = []
        for i, ti in enumerate(true):
            lo, hi = np.searchsorted(det, [ti - tolerance, ti + tolerance])
            pairs += [(abs(det[j] - ti), i, j) for j in range(lo, hi)]
        used_t, used_d = set(), set()
        for _, i, j in sorted(pairs):
            if i not in used_t and j not in used_d:
                used_t.add(i)
                used_d.add(j)
                errors.append(det[j] - true[i])
        matched += len(used_t)
    err = np.abs(np.array(errors))
    return {"true": n_true, "detected": n_det, "matched": matched, "recall": matched / n_true,
            "precision": matched / max(n_det, 1), "mean_abs_ms": err.mean() * 1e3,
            "p99_abs_ms": np.percentile(err, 99) * 1e3, "max_abs_ms": err.max() * 1e3,
            "bias_ms": float(np.mean(errors)) * 1e3}


@pytest.mark.parametrize("pink", [False, True], ids=["white", "white+1/f"])
def test_ground_truth_quality_at_5_sd(pink):
    rng = np.random.default_rng(2026)
    channels, duration = 24, 6.0
    data, times, noise, band_sd, amplitude = synthesize(rng, channels, duration, pink=pink)
    detector = SpikeDetector(channels, RATE)  # the defaults: 300-3000 Hz, 4.5 SD, 1 ms dead time, 0.5 s
    idx, ids, calibrated_from = feed(detector, data)
    assert calibrated_from is not None
    start = calibrated_from / RATE + 2e-3
    s = score(times, idx, ids, start, duration)
    noise_sd = filtered(noise, detector.sos)[int(0.1 * RATE):].std(axis=0)  # what calibration should find
    figures = (f"recall {s['recall']:.4f}, precision {s['precision']:.4f} ({s['matched']} matched of "
               f"{s['true']} true, {s['detected']} detected); timing error mean {s['mean_abs_ms']:.3f} ms, "
               f"p99 {s['p99_abs_ms']:.3f} ms, max {s['max_abs_ms']:.3f} ms, bias {s['bias_ms']:+.3f} ms; "
               f"trough {amplitude * filtered_depth() / band_sd:.2f} SD in the 300 Hz high-passed band "
               f"({amplitude / band_sd:.2f} SD raw); noise SD estimated / true: median "
               f"{np.median(detector.noise_sd / noise_sd):.3f}, range {np.min(detector.noise_sd / noise_sd):.3f}"
               f"-{np.max(detector.noise_sd / noise_sd):.3f}; {channels} ch x {duration - start:.2f} s scored")
    print(f"\ndetection quality ({'white+1/f' if pink else 'white'}): {figures}")
    assert detector.noise_sd == pytest.approx(noise_sd, rel=0.1), figures
    assert np.median(detector.noise_sd / noise_sd) == pytest.approx(1.0, abs=0.04), figures
    assert s["recall"] >= 0.95, figures
    assert s["precision"] >= 0.95, figures
    assert s["mean_abs_ms"] <= 0.5 and s["p99_abs_ms"] <= 0.5, figures


# --------------------------------------------------------------------------------------------------
# SpikeDetector behaviour
# --------------------------------------------------------------------------------------------------


def quiet_with_spikes(rng, channels, duration, spike_channels, times, shape, amplitude=8.0):
    """White noise (SD 1) with ``amplitude * shape`` added at ``times`` on ``spike_channels``. After the
    detector's 300-3000 Hz band (noise SD ~0.42) a spike of 8 is ~12 SD deep, and its filtered undershoot
    ~1.1 ms later ~2.7 SD: tests that count spikes use a 2 ms dead time to step over it."""
    data = rng.standard_normal((int(duration * RATE), channels)).astype(np.float32)
    for c in spike_channels:
        for ti in times:
            j = np.arange(math.ceil((ti - 1e-3) * RATE), math.floor((ti + 2e-3) * RATE) + 1)
            data[j, c] += amplitude * shape(j / RATE - ti)
    return data


def test_dead_time_prevents_double_counting_a_doublet():
    def doublet(t):  # two sharp troughs 0.6 ms apart (band-passed: ~17 and ~12 SD): crosses twice per event
        return -np.exp(-0.5 * (t / 0.1e-3) ** 2) - np.exp(-0.5 * ((t - 0.6e-3) / 0.1e-3) ** 2)
    times = np.arange(0.7, 2.9, 0.05)
    data = quiet_with_spikes(np.random.default_rng(5), 2, 3.0, [0, 1], times, doublet, amplitude=11.0)
    per_event = {}
    for dead, peak in ((1e-3, 0.3e-3), (0.3e-3, 0.0)):
        detector = SpikeDetector(2, RATE, dead_time_s=dead, peak_window_s=peak, threshold_sd=6.5)
        idx, ids, _ = feed(detector, data)
        per_event[dead] = [int(((idx >= (ti - 0.5e-3) * RATE) & (idx <= (ti + 1.2e-3) * RATE) & (ids == c)).sum())
                           for ti in times for c in (0, 1)]
        assert len(idx) == sum(per_event[dead])  # nothing outside the events
        for c in (0, 1):
            assert np.diff(np.sort(idx[ids == c])).min() >= detector.dead_samples
    assert per_event[1e-3] == [1] * (2 * len(times))
    assert per_event[0.3e-3] == [2] * (2 * len(times))  # the short dead time lets the second trough through


def test_channel_map_gives_neuron_ids_and_minus_1_switches_a_channel_off():
    times = np.arange(0.7, 1.9, 0.05)
    data = quiet_with_spikes(np.random.default_rng(6), 4, 2.0, [2], times, SPIKE)
    _, ids, _ = feed(SpikeDetector(4, RATE, threshold_sd=6.0, dead_time_s=2e-3, channel_map=[7, 5, 9, 3]), data)
    assert len(ids) == len(times) and set(ids.tolist()) == {9}
    _, ids, _ = feed(SpikeDetector(4, RATE, threshold_sd=6.0, channel_map=np.array([7, 5, -1, 3])), data)
    assert len(ids) == 0
    with pytest.raises(ValueError, match="channel_map"):
        SpikeDetector(4, RATE, channel_map=[1, 2, 3])
    with pytest.raises(ValueError, match="channel_map"):
        SpikeDetector(4, RATE, channel_map=[1, 2, 3, -2])


def test_calibration_suppresses_early_detections_and_recalibrate_starts_over():
    times = np.arange(0.01, 3.0, 0.02)  # big spikes from the very start
    rng = np.random.default_rng(7)
    data = quiet_with_spikes(rng, 3, 3.0, [0, 1, 2], times, SPIKE)
    data[int(1.5 * RATE):] *= 3.0  # the rig comes back with 3x the gain
    detector = SpikeDetector(3, RATE, calibration_s=0.5, threshold_sd=6.0, dead_time_s=2e-3)
    found, flags = [], []
    for start in range(0, len(data), CHUNK):
        if start == int(1.5 * RATE):
            before = detector.noise_sd.copy()
            detector.recalibrate()
        idx, _ = detector.process(data[start:start + CHUNK], start)
        found += idx.tolist()
        flags.append(detector.calibrated)
    found = np.array(found) / RATE
    assert not flags[int(0.5 * RATE) // CHUNK - 1] and flags[int(0.55 * RATE) // CHUNK]
    assert found.min() >= 0.5
    assert not ((found >= 1.5) & (found < 2.0)).any()  # recalibrating: nothing for calibration_s
    assert ((found >= 0.5) & (found < 1.5)).sum() == 3 * ((times > 0.5) & (times < 1.5)).sum()
    assert ((found >= 2.0) & (found < 3.0)).sum() == 3 * ((times > 2.0) & (times < 3.0)).sum()
    assert detector.noise_sd == pytest.approx(3.0 * before, rel=0.1)  # measured again, at the new gain


def test_non_finite_samples_do_not_poison_a_channel():
    times = np.arange(0.7, 1.9, 0.05)
    data = quiet_with_spikes(np.random.default_rng(8), 2, 2.0, [0, 1], times, SPIKE)
    data[int(0.6 * RATE):int(0.6 * RATE) + 5, 0] = np.nan
    data[int(0.61 * RATE), 1] = np.inf
    detector = SpikeDetector(2, RATE, threshold_sd=6.0, dead_time_s=2e-3)
    _, ids, _ = feed(detector, data)
    assert np.isfinite(detector.zi).all()
    assert (ids == 0).sum() == len(times) and (ids == 1).sum() == len(times)


def test_process_validates_shape_and_returns_views_of_its_own_buffers():
    detector = SpikeDetector(4, RATE, calibration_s=1e-3)
    with pytest.raises(ValueError, match=r"\(samples, 4\)"):
        detector.process(np.zeros((30, 5), np.float32), 0)
    with pytest.raises(ValueError, match=r"\(samples, 4\)"):
        detector.process(np.zeros(30, np.float32), 0)
    first = detector.process(np.zeros((30, 4), np.float32), 0)
    second = detector.process(np.ones((0, 4), np.float32), 30)
    assert len(second[0]) == 0
    third = detector.process(np.zeros((30, 4), np.float64), 30)  # any real dtype
    for a, b in zip(first, third):
        assert a.base is b.base and a.base is not None
    big = detector.process(np.zeros((5000, 4), np.int16), 60)  # larger than the buffers: they grow once
    assert len(big[0]) == 0
    assert detector.samples_missed == 0 and detector.restarts == 0
    detector.process(np.zeros((30, 4), np.float32), 6000)
    detector.process(np.zeros((30, 4), np.float32), 0)
    assert detector.samples_missed == 940 and detector.restarts == 1


@pytest.mark.parametrize("kwargs", [{"channels": 0}, {"rate_hz": 0.0}, {"cutoff_hz": 16_000.0},
                                    {"threshold_sd": 0.0}, {"dead_time_s": -1.0}, {"calibration_s": 0.0}])
def test_settings_are_checked(kwargs):
    args = {"channels": 4, "rate_hz": RATE, **kwargs}
    with pytest.raises(ValueError):
        SpikeDetector(**args)
