"""Numba kernels against plain-Python references written here, and node logic without sockets.

The references loop over Python floats and lists on purpose: they share no code with the kernels
(``kernel.py_func`` is checked as well, but never used as the reference).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from spikewire.core.settings import parse
from spikewire.nodes.biological import BiologicalNode, BiologicalSettings
from spikewire.nodes.kernels import adex, izhikevich
from spikewire.nodes.kernels import memristor as mk
from spikewire.nodes.memristor import MemristorNode, MemristorSettings, PlasticitySettings
from spikewire.nodes.silicon import SiliconNode, SiliconSettings
from spikewire.streams.wire import EVENT_DTYPE, BioEvent, Kind

RTOL = 1e-12

# --------------------------------------------------------------------------------------------------
# AdEx
# --------------------------------------------------------------------------------------------------


def adex_reference(v, w, i_syn, refr, p, refr_steps, syn_decay, i_bias, syn_in, dt, input_first=False):
    """Forward-Euler AdEx on Python lists. ``p`` maps parameter name -> list per neuron. A step's input
    is added to I_syn after its update and decay (Brian2's order), or before the update if ``input_first``
    (NEST's). Returns (spikes [(step, id)], v, w, i_syn, refr) with new lists."""
    v, w, i_syn, refr = list(v), list(w), list(i_syn), list(refr)
    spikes = []
    for k, row in enumerate(syn_in):
        for i in range(len(v)):
            if input_first:
                i_syn[i] += row[i]
            if refr[i] > 0:  # V held at reset, w keeps evolving
                refr[i] -= 1
                v[i] = p["v_reset"][i]
                w[i] = w[i] + dt * (p["a"][i] * (v[i] - p["e_l"][i]) - w[i]) / p["tau_w"][i]
            else:
                vi = v[i]
                exponent = min((vi - p["v_t"][i]) / p["delta_t"][i], 30.0)
                dv = (-p["g_l"][i] * (vi - p["e_l"][i]) + p["g_l"][i] * p["delta_t"][i] * math.exp(exponent)
                      - w[i] + i_syn[i] + i_bias[i]) / p["c_m"][i]
                dw = (p["a"][i] * (vi - p["e_l"][i]) - w[i]) / p["tau_w"][i]
                v[i] = vi + dt * dv
                w[i] = w[i] + dt * dw
                if v[i] >= p["v_peak"][i]:
                    v[i] = p["v_reset"][i]
                    w[i] += p["b"][i]
                    refr[i] = refr_steps[i]
                    spikes.append((k, i))
            i_syn[i] *= syn_decay[i]
            if not input_first:
                i_syn[i] += row[i]
    return spikes, v, w, i_syn, refr


ADEX_ORDER = ("c_m", "g_l", "e_l", "v_t", "delta_t", "a", "tau_w", "b", "v_reset", "v_peak")


def _adex_case(seed: int, n: int = 6, n_steps: int = 3000):
    rng = random.Random(seed)
    jitter = lambda x: [x * (1.0 + 0.1 * (rng.random() - 0.5)) for _ in range(n)]  # noqa: E731
    p = {
        "c_m": jitter(281e-12), "g_l": jitter(30e-9), "e_l": jitter(-70.6e-3), "v_t": jitter(-50.4e-3),
        "delta_t": jitter(2e-3), "a": jitter(4e-9), "tau_w": jitter(144e-3), "b": jitter(0.0805e-9),
        "v_reset": jitter(-70.6e-3), "v_peak": jitter(-40.4e-3),
    }
    dt = 1e-4
    v = [rng.uniform(-0.072, -0.055) for _ in range(n)]
    w = [rng.uniform(0.0, 0.1e-9) for _ in range(n)]
    i_syn = [rng.uniform(0.0, 0.5e-9) for _ in range(n)]
    refr = [rng.choice([0, 0, 3]) for _ in range(n)]
    refr_steps = [rng.choice([0, 5, 20]) for _ in range(n)]
    syn_decay = [math.exp(-dt / rng.uniform(2e-3, 8e-3)) for _ in range(n)]
    i_bias = [rng.uniform(0.0, 0.9e-9) for _ in range(n)]
    # Sparse kicks, some big enough to fire a spike at once.
    syn_in = [[(rng.choice([1e-9, 4e-9, 8e-9]) if rng.random() < 0.004 else 0.0) for _ in range(n)]
              for _ in range(n_steps)]
    return p, dt, v, w, i_syn, refr, refr_steps, syn_decay, i_bias, syn_in


def _run_adex_kernel(fn, case, cap, input_first=False):
    p, dt, v, w, i_syn, refr, refr_steps, syn_decay, i_bias, syn_in = case
    v_a, w_a, i_a = np.array(v), np.array(w), np.array(i_syn)
    r_a = np.array(refr, np.int32)
    step = np.full(cap, -1, np.int64)
    ident = np.full(cap, -1, np.int64)
    coef = adex.coefficients(*(np.array(p[k]) for k in ADEX_ORDER), np.array(i_bias))
    n = fn(v_a, w_a, i_a, r_a, coef, np.array(refr_steps, np.int32), np.array(syn_decay), np.array(syn_in),
           input_first, dt, step, ident)
    return n, step, ident, v_a, w_a, i_a, r_a


@pytest.mark.parametrize("input_first", [False, True], ids=["brian2", "nest"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_adex_matches_reference(seed, input_first):
    case = _adex_case(seed)
    p, dt, v, w, i_syn, refr, refr_steps, syn_decay, i_bias, syn_in = case
    spikes, v_r, w_r, i_r, refr_r = adex_reference(v, w, i_syn, refr, p, refr_steps, syn_decay, i_bias, syn_in, dt,
                                                   input_first)
    assert len(spikes) > 20, "the case should make the population fire"
    n, step, ident, v_a, w_a, i_a, r_a = _run_adex_kernel(adex.adex_run, case, cap=4096, input_first=input_first)
    assert n == len(spikes)
    assert list(zip(step[:n].tolist(), ident[:n].tolist())) == spikes
    np.testing.assert_allclose(v_a, v_r, rtol=RTOL, atol=0)
    np.testing.assert_allclose(w_a, w_r, rtol=RTOL, atol=1e-30)
    np.testing.assert_allclose(i_a, i_r, rtol=RTOL, atol=1e-30)
    assert r_a.tolist() == refr_r


@pytest.mark.parametrize("input_first", [False, True], ids=["brian2", "nest"])
def test_adex_py_func_agrees_with_compiled(input_first):
    case = _adex_case(7, n_steps=800)
    compiled = _run_adex_kernel(adex.adex_run, case, cap=512, input_first=input_first)
    plain = _run_adex_kernel(adex.adex_run.py_func, case, cap=512, input_first=input_first)
    assert compiled[0] == plain[0]
    for a, b in zip(compiled[1:], plain[1:]):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-30)


def test_adex_counts_spikes_beyond_buffer_but_writes_only_capacity():
    case = _adex_case(2)
    p, dt, v, w, i_syn, refr, refr_steps, syn_decay, i_bias, syn_in = case
    spikes, *_ = adex_reference(v, w, i_syn, refr, p, refr_steps, syn_decay, i_bias, syn_in, dt)
    cap = 5
    n, step, ident, *_ = _run_adex_kernel(adex.adex_run, case, cap=cap)
    assert n == len(spikes) > cap
    assert list(zip(step.tolist(), ident.tolist())) == spikes[:cap]


def test_adex_spikes_in_time_order_across_blocks():
    """The kernel steps neurons block by block through the whole call and sorts the spikes afterwards:
    with several blocks (the last one partial) the spikes must still come out by step, then neuron."""
    n = 2 * adex.BLOCK + 37
    case = _adex_case(4, n=n, n_steps=400)
    p, dt, v, w, i_syn, refr, refr_steps, syn_decay, i_bias, syn_in = case
    spikes, v_r, w_r, i_r, refr_r = adex_reference(v, w, i_syn, refr, p, refr_steps, syn_decay, i_bias, syn_in, dt)
    blocks = {i // adex.BLOCK for _, i in spikes}
    assert len(spikes) > 100 and blocks == {0, 1, 2}, "the case should fire in every block"
    n_k, step, ident, v_a, w_a, i_a, r_a = _run_adex_kernel(adex.adex_run, case, cap=n * 400)
    assert n_k == len(spikes)
    assert list(zip(step[:n_k].tolist(), ident[:n_k].tolist())) == spikes
    assert step[n_k] == -1, "nothing written past the spikes"
    np.testing.assert_allclose(v_a, v_r, rtol=RTOL, atol=0)
    np.testing.assert_allclose(w_a, w_r, rtol=RTOL, atol=1e-30)
    assert r_a.tolist() == refr_r


@pytest.mark.parametrize("cap", [0, 1, 7, 64])
def test_adex_full_buffer_keeps_the_earliest_spikes_across_blocks(cap):
    """More spikes than the buffer holds, from several blocks: the count is complete and the buffer
    holds the earliest ``cap`` spikes in time order (later blocks' early spikes displace earlier blocks'
    late ones)."""
    case = _adex_case(5, n=2 * adex.BLOCK + 5, n_steps=300)
    p, dt, v, w, i_syn, refr, refr_steps, syn_decay, i_bias, syn_in = case
    spikes, *_ = adex_reference(v, w, i_syn, refr, p, refr_steps, syn_decay, i_bias, syn_in, dt)
    assert len(spikes) > cap + 20
    n_k, step, ident, *_ = _run_adex_kernel(adex.adex_run, case, cap=cap)
    assert n_k == len(spikes)
    assert list(zip(step.tolist(), ident.tolist())) == spikes[:cap]


def test_adex_exp_is_libm_exp_within_an_ulp():
    """The kernel's vectorizable exp against math.exp over the clipped range, ends included."""
    from numba import njit

    fast_exp = adex._exp

    @njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = fast_exp(x[i])

    rng = np.random.default_rng(0)
    ends = [adex.ARG_MIN, -1e-300, 0.0, 1e-300, adex.ARG_MAX]
    x = np.concatenate([rng.uniform(-30.0, adex.ARG_MAX, 200_000), rng.uniform(adex.ARG_MIN, -30.0, 20_000),
                        np.arange(adex.ARG_MIN, adex.ARG_MAX + 1.0), ends])
    ours = np.empty_like(x)
    apply(x, ours)
    libm = np.array([math.exp(t) for t in x])
    assert np.all(np.abs(ours - libm) <= np.spacing(libm)), "more than 1 ulp from math.exp"
    assert np.max(np.abs(ours - libm) / libm) < 2.3e-16
    assert ours[-3] == 1.0


@pytest.mark.parametrize("input_first", [False, True], ids=["brian2", "nest"])
def test_adex_refractory_holds_reset_and_a_kick_fires_once(input_first):
    """One 4 nA kick fires one spike (the pacemaker's premise), never in a step before the kick acts."""
    n, n_steps, dt = 1, 400, 1e-4
    f = np.ones(n)
    syn_in = np.zeros((n_steps, n))
    syn_in[10, 0] = 4e-9
    v = np.full(n, -70.6e-3)
    step = np.zeros(8, np.int64)
    ident = np.zeros(8, np.int64)
    refr_steps = np.full(n, 20, np.int32)
    coef = adex.coefficients(f * 281e-12, f * 30e-9, f * -70.6e-3, f * -50.4e-3, f * 2e-3, f * 4e-9, f * 144e-3,
                             f * 0.0805e-9, f * -70.6e-3, f * -40.4e-3, np.zeros(n))
    count = adex.adex_run(v, np.zeros(n), np.zeros(n), np.zeros(n, np.int32), coef, refr_steps,
                          f * math.exp(-dt / 5e-3), syn_in, input_first, dt, step, ident)
    assert count == 1
    assert step[0] >= (10 if input_first else 11)  # brian2: the kick of step 10 acts after its update


# --------------------------------------------------------------------------------------------------
# Izhikevich
# --------------------------------------------------------------------------------------------------


def izhikevich_reference(v, u, i_stim, a, b, c, d, i_bias, stim_decay, stim_in, noise, dt_ms):
    v, u, i_stim = list(v), list(u), list(i_stim)
    spikes = []
    for k in range(len(stim_in)):
        for i in range(len(v)):
            i_stim[i] += stim_in[k][i]
            vi, ui = v[i], u[i]
            current = i_stim[i] + i_bias[i] + noise[k][i]
            v[i] = vi + dt_ms * (0.04 * vi * vi + 5.0 * vi + 140.0 - ui + current)
            u[i] = ui + dt_ms * a[i] * (b[i] * vi - ui)
            if v[i] >= 30.0:
                v[i] = c[i]
                u[i] += d[i]
                spikes.append((k, i))
            i_stim[i] *= stim_decay[i]
    return spikes, v, u, i_stim


def _izh_case(seed: int, n: int = 5, n_steps: int = 4000):
    rng = random.Random(seed)
    a = [rng.choice([0.02, 0.1]) for _ in range(n)]
    b = [rng.choice([0.2, 0.25]) for _ in range(n)]
    c = [rng.choice([-65.0, -55.0, -50.0]) for _ in range(n)]
    d = [rng.choice([8.0, 4.0, 2.0]) for _ in range(n)]
    v = [rng.uniform(-70.0, -60.0) for _ in range(n)]
    u = [bi * vi for bi, vi in zip(b, v)]
    i_stim = [0.0] * n
    i_bias = [rng.uniform(0.0, 5.0) for _ in range(n)]
    stim_decay = [math.exp(-0.1 / rng.uniform(2.0, 5.0)) for _ in range(n)]
    stim_in = [[(rng.uniform(10.0, 60.0) if rng.random() < 0.003 else 0.0) for _ in range(n)] for _ in range(n_steps)]
    noise = [[rng.gauss(0.0, 5.0) for _ in range(n)] for _ in range(n_steps)]
    return v, u, i_stim, a, b, c, d, i_bias, stim_decay, stim_in, noise, 0.1


def _run_izh_kernel(fn, case, cap):
    v, u, i_stim, a, b, c, d, i_bias, stim_decay, stim_in, noise, dt_ms = case
    v_a, u_a, s_a = np.array(v), np.array(u), np.array(i_stim)
    step = np.full(cap, -1, np.int64)
    ident = np.full(cap, -1, np.int64)
    n = fn(v_a, u_a, s_a, np.array(a), np.array(b), np.array(c), np.array(d), np.array(i_bias),
           np.array(stim_decay), np.array(stim_in), np.array(noise), dt_ms, step, ident)
    return n, step, ident, v_a, u_a, s_a


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_izhikevich_matches_reference(seed):
    case = _izh_case(seed)
    spikes, v_r, u_r, s_r = izhikevich_reference(*case)
    assert len(spikes) > 10, "the case should make the population fire"
    n, step, ident, v_a, u_a, s_a = _run_izh_kernel(izhikevich.izhikevich_run, case, cap=4096)
    assert n == len(spikes)
    assert list(zip(step[:n].tolist(), ident[:n].tolist())) == spikes
    np.testing.assert_allclose(v_a, v_r, rtol=RTOL, atol=0)
    np.testing.assert_allclose(u_a, u_r, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(s_a, s_r, rtol=RTOL, atol=1e-300)


def test_izhikevich_py_func_agrees_with_compiled():
    case = _izh_case(17, n_steps=1000)
    compiled = _run_izh_kernel(izhikevich.izhikevich_run, case, cap=512)
    plain = _run_izh_kernel(izhikevich.izhikevich_run.py_func, case, cap=512)
    assert compiled[0] == plain[0]
    for x, y in zip(compiled[1:], plain[1:]):
        np.testing.assert_allclose(x, y, rtol=RTOL, atol=1e-300)


def test_izhikevich_counts_spikes_beyond_buffer():
    case = _izh_case(12)
    spikes, *_ = izhikevich_reference(*case)
    n, step, ident, *_ = _run_izh_kernel(izhikevich.izhikevich_run, case, cap=3)
    assert n == len(spikes) > 3
    assert list(zip(step.tolist(), ident.tolist())) == spikes[:3]


# --------------------------------------------------------------------------------------------------
# Memristor device model
# --------------------------------------------------------------------------------------------------

PUBLISHED = {"a0": 17.16e3, "a1": 0.15e3, "b0": 24.81e3, "b1": 17.91e3, "a_p": -4.86e-5, "t_p": 0.12,
             "a_n": 1.09e-3, "t_n": 0.18, "r_min": 10e3, "r_max": 17e3}


def as_params(d: dict) -> np.ndarray:
    return np.array([d[n] for n in mk.PARAM_NAMES], dtype=np.float64)


P = as_params(PUBLISHED)


def pulse_reference(r: float, v: float, width: float, d: dict = PUBLISHED) -> float:
    """REFERENCE.md's closed form, written from the equations:
    dR/dt = s (r_b - R)^2 (v > 0, while R < r_p) or s (R - r_n)^2 (v <= 0, while R > r_n)."""
    if v > 0:
        s = d["a_p"] * (math.exp(abs(v) / d["t_p"]) - 1.0)
        boundary = d["a0"] + d["a1"] * v
        active = boundary - r > 0
    else:
        s = d["a_n"] * (math.exp(abs(v) / d["t_n"]) - 1.0)
        boundary = d["b0"] + d["b1"] * v
        active = r - boundary > 0
    if not active or s == 0.0 or width <= 0:
        return r
    x = boundary - r
    denom = 1.0 + s * x * width
    if denom <= 0:
        # The solution leaves to infinity within the pulse, in the direction of dR/dt = s * f, f >= 0.
        return d["r_min"] if s < 0 else d["r_max"]
    return min(max((r + s * boundary * x * width) / denom, d["r_min"]), d["r_max"])


def pulse_rk4(r: float, v: float, width: float, d: dict = PUBLISHED, steps: int = 2000) -> float:
    """Integrate the ODE directly (no closed form) to check the closed form itself."""
    def rate(R):
        if v > 0:
            s = d["a_p"] * (math.exp(abs(v) / d["t_p"]) - 1.0)
            gap = d["a0"] + d["a1"] * v - R
            return s * gap * gap if gap > 0 else 0.0
        s = d["a_n"] * (math.exp(abs(v) / d["t_n"]) - 1.0)
        gap = R - (d["b0"] + d["b1"] * v)
        return s * gap * gap if gap > 0 else 0.0

    h = width / steps
    for _ in range(steps):
        k1 = rate(r)
        k2 = rate(r + 0.5 * h * k1)
        k3 = rate(r + 0.5 * h * k2)
        k4 = rate(r + h * k3)
        r += h * (k1 + 2 * k2 + 2 * k3 + k4) / 6.0
    return r


def _moderate_pulses(seed: int, n: int = 400):
    rng = random.Random(seed)
    for _ in range(n):
        yield rng.uniform(10e3, 17e3), rng.choice([-1, 1]) * rng.uniform(0.05, 0.9), rng.choice([1e-6, 1e-5, 1e-4, 1e-3])


def test_apply_pulse_matches_reference_on_random_pulses():
    for r, v, width in _moderate_pulses(21):
        got = mk.apply_pulse(r, v, width, P)
        want = pulse_reference(r, v, width)
        assert got == pytest.approx(want, rel=RTOL), (r, v, width)
        assert mk.apply_pulse.py_func(r, v, width, P) == pytest.approx(want, rel=RTOL)


@pytest.mark.parametrize("r, v, width", [(14e3, 0.8, 1e-4), (12e3, 0.7, 1e-4), (14e3, -0.75, 1e-4),
                                         (16e3, -0.6, 1e-4), (10.5e3, 0.6, 1e-3)])
def test_closed_form_agrees_with_ode_integration(r, v, width):
    ode = pulse_rk4(r, v, width)
    assert ode != r, "pick a pulse that changes the device"
    assert mk.apply_pulse(r, v, width, P) == pytest.approx(ode, rel=1e-9)


@pytest.mark.parametrize("r", [10e3, 12.5e3, 14e3, 17e3])
def test_no_change_at_zero_volts(r):
    assert mk.apply_pulse(r, 0.0, 1e-4, P) == r
    assert mk.apply_pulse(r, 0.0, 10.0, P) == r


def test_no_change_for_zero_width():
    assert mk.apply_pulse(14e3, 0.8, 0.0, P) == 14e3
    assert mk.apply_pulse(14e3, -0.8, 0.0, P) == 14e3


def test_no_change_beyond_the_boundary():
    # Boundaries moved inside the device range so both sides of each can be reached from it.
    d = dict(PUBLISHED, a0=12e3, a1=0.0, b0=15e3, b1=0.0)
    p = as_params(d)
    # v > 0 acts only below r_p = 12 kOhm.
    for r in (12e3, 13e3, 16e3):
        assert mk.apply_pulse(r, 0.8, 1e-3, p) == r
    assert mk.apply_pulse(11e3, 0.8, 1e-3, p) < 11e3
    # v < 0 acts only above r_n = 15 kOhm.
    for r in (15e3, 14e3, 10.5e3):
        assert mk.apply_pulse(r, -0.8, 1e-3, p) == r
    assert mk.apply_pulse(16e3, -0.8, 1e-3, p) > 16e3
    # With the published fit, a weak negative pulse has r_n above the whole device range.
    assert PUBLISHED["b0"] + PUBLISHED["b1"] * -0.3 > PUBLISHED["r_max"]
    assert mk.apply_pulse(14e3, -0.3, 1e-3, P) == 14e3


def test_positive_lowers_and_negative_raises_resistance():
    for r, v, width in _moderate_pulses(22):
        new = mk.apply_pulse(r, v, width, P)
        assert 10e3 <= new <= 17e3
        if v > 0:
            assert new <= r, (r, v, width, new)
        else:
            assert new >= r, (r, v, width, new)
    assert mk.apply_pulse(14e3, 0.8, 1e-4, P) < 14e3
    assert mk.apply_pulse(14e3, -0.75, 1e-4, P) > 14e3


@pytest.mark.parametrize("v, width, end", [
    (1.5, 1e-3, "r_min"), (1.5, 1.0, "r_min"), (4.0, 100e-6, "r_min"),      # hub's LTP default
    (-1.5, 1e-3, "r_max"), (-1.5, 1.0, "r_max"), (-4.0, 100e-6, "r_max"),   # hub's LTD default
])
def test_strong_pulses_clamp_to_the_end_they_drive_towards(v, width, end):
    for r in (10.2e3, 14e3, 16.8e3):
        assert pulse_reference(r, v, width) == PUBLISHED[end]
        got = mk.apply_pulse(r, v, width, P)
        assert math.isfinite(got)
        assert got == PUBLISHED[end], f"{v:+} V for {width} s from {r} Ohm gave {got}, expected {end}"


def test_resistance_stays_in_device_range_for_any_pulse():
    rng = random.Random(23)
    for _ in range(2000):
        r = rng.uniform(10e3, 17e3)
        v = rng.uniform(-5.0, 5.0)
        width = 10 ** rng.uniform(-7, 1)
        got = mk.apply_pulse(r, v, width, P)
        assert 10e3 <= got <= 17e3 and math.isfinite(got), (r, v, width, got)


# --------------------------------------------------------------------------------------------------
# SRDP: spike memory and decision
# --------------------------------------------------------------------------------------------------


def srdp_reference(n: int, ltp_above: int, ltd_below: int) -> int:
    return 1 if n > ltp_above else (-1 if n < ltd_below else 0)


@pytest.mark.parametrize("n, want", [(21, 1), (20, 0), (12, 0), (5, 0), (4, -1), (0, -1), (1000, 1)])
def test_srdp_thresholds_exact(n, want):
    assert mk.srdp_decision(n, 20, 5) == want
    assert srdp_reference(n, 20, 5) == want
    assert mk.srdp_decision.py_func(n, 20, 5) == want


def test_srdp_decision_matches_reference_everywhere():
    for ltp in range(0, 8):
        for ltd in range(0, ltp + 1):
            for n in range(0, 12):
                assert mk.srdp_decision(n, ltp, ltd) == srdp_reference(n, ltp, ltd)


def _ring(n_pre: int, depth: int):
    return np.full((n_pre, depth), -np.inf), np.zeros(n_pre, np.int64)


def test_count_recent_window_edges():
    ring, head = _ring(2, 8)
    for t in (1.0, 1.5, 2.0):
        mk.record_spike(ring, head, 0, t)
    mk.record_spike(ring, head, 1, 1.9)
    # Window (t - window, t] = (1.0, 2.0]: the spike exactly at t - window is out, the one at t is in.
    assert mk.count_recent(ring, 0, 2.0, 1.0) == 2
    assert mk.count_recent(ring, 0, 2.0, 1.0 + 1e-9) == 3
    assert mk.count_recent(ring, 0, 1.5, 0.5) == 1  # 1.0 excluded, 1.5 included, 2.0 is in the future
    assert mk.count_recent(ring, 0, 0.9, 10.0) == 0
    assert mk.count_recent(ring, 1, 2.0, 1.0) == 1  # neurons are kept apart
    assert mk.count_recent.py_func(ring, 0, 2.0, 1.0) == 2


def test_record_spike_fills_ring_in_order_and_wraps():
    ring, head = _ring(1, 3)
    for t in (1.0, 2.0, 3.0, 4.0):
        mk.record_spike(ring, head, 0, t)
    assert sorted(ring[0].tolist()) == [2.0, 3.0, 4.0]
    assert head[0] == 1


@pytest.mark.parametrize("seed", range(5))
def test_count_recent_matches_reference_while_ring_not_full(seed):
    rng = random.Random(seed)
    depth = 64
    ring, head = _ring(3, depth)
    times = {0: [], 1: [], 2: []}
    t = 0.0
    for _ in range(60):
        t += rng.expovariate(20.0)
        pre = rng.randrange(3)
        mk.record_spike(ring, head, pre, t)
        times[pre].append(t)
    for _ in range(200):
        now = rng.uniform(0.0, t + 0.5)
        window = rng.uniform(0.01, 2.0)
        for pre in range(3):
            want = sum(1 for s in times[pre] if now - window < s <= now)
            assert mk.count_recent(ring, pre, now, window) == want


@pytest.mark.parametrize("seed", range(6))
def test_saturated_ring_still_decides_like_the_full_history(seed):
    """Depth max(thresholds) + 1 remembers too little to count, but enough to decide exactly."""
    ltp_above, ltd_below, window = 20, 5, 1.0
    depth = max(ltp_above, ltd_below) + 1
    rng = random.Random(seed)
    ring, head = _ring(1, depth)
    history = []
    t = 0.0
    for _ in range(400):  # far more spikes than the ring holds, at rates around both thresholds
        t += rng.expovariate(rng.choice([3.0, 10.0, 30.0, 60.0]))
        mk.record_spike(ring, head, 0, t)
        history.append(t)
        now = t + rng.uniform(0.0, 0.3)
        true_n = sum(1 for s in history if now - window < s <= now)
        n = mk.count_recent(ring, 0, now, window)
        assert n == min(true_n, depth)
        assert mk.srdp_decision(n, ltp_above, ltd_below) == srdp_reference(true_n, ltp_above, ltd_below)


def test_saturated_ring_with_many_spikes_in_window_gives_ltp():
    ring, head = _ring(1, 21)
    for k in range(100):
        mk.record_spike(ring, head, 0, 5.0 + k * 0.005)
    n = mk.count_recent(ring, 0, 5.5, 1.0)
    assert n == 21
    assert mk.srdp_decision(n, 20, 5) == 1


# --------------------------------------------------------------------------------------------------
# Nodes without sockets
# --------------------------------------------------------------------------------------------------


def events(rows) -> np.ndarray:
    out = np.zeros(len(rows), dtype=EVENT_DTYPE)
    for i, row in enumerate(rows):
        out[i] = row
    return out


def drain(node) -> list[tuple[str, float, int, float]]:
    got = [(port, float(e["t"]), int(e["id"]), float(e["value"])) for port, evs in node.outbox.pending() for e in evs]
    node.outbox.clear()
    return got


# ---- silicon ----


def silicon(populations: dict, **extra) -> SiliconNode:
    table = {"kind": "silicon", "dt": 1e-4, "tick": 1e-3, "populations": populations, **extra}
    return SiliconNode("zurich", parse(SiliconSettings, table, "nodes.zurich"))


@pytest.mark.parametrize("t0", [0.0, 12345.678])
def test_pacemaker_fires_10_hz(t0):
    node = silicon({"anpre": {"size": 3, "drive": {"kind": "pacemaker", "rate": 10.0, "weight": 4e-9}}})
    node.start(t0)
    tick = 1e-3
    spikes = []
    for k in range(1000):
        node.tick(t0 + k * tick, t0 + (k + 1) * tick)
        spikes += drain(node)
    assert {p for p, *_ in spikes} == {"anpre.spikes"}
    for neuron in range(3):
        times = [t for _, t, i, _ in spikes if i == neuron]
        assert 9 <= len(times) <= 11, times
        assert all(t0 <= t <= t0 + 1.0 for t in times)
    assert node.figures(t0 + 1.0).populations["anpre"].spikes == len(spikes)


def test_silicon_input_fires_target_and_rejects_unknown_ids():
    node = silicon({"anpost": {"size": 2}})
    t0 = 50.0
    node.start(t0)
    node.on_events("anpost.input", Kind.SPIKE, events([(t0, 1, 4e-9), (t0, 5, 4e-9)]), t0 + 0.0002)
    assert node.rejected == {"unknown_id": 1}
    spikes = []
    for k in range(50):
        node.tick(t0 + k * 1e-3, t0 + (k + 1) * 1e-3)
        spikes += drain(node)
    assert [(p, i) for p, _, i, _ in spikes] == [("anpost.spikes", 1)]


# ---- memristor ----


def memristor(synapses: dict, **extra) -> MemristorNode:
    table = {"kind": "memristor", "rows": 2, "cols": 2, "r_init": 14e3, "synapses": synapses, **extra}
    return MemristorNode("southampton", parse(MemristorSettings, table, "nodes.southampton"))


def conductance_value(r: float, lo: float, hi: float, r_min: float = 10e3, r_max: float = 17e3) -> float:
    g = (1 / r - 1 / r_max) / (1 / r_min - 1 / r_max)
    return lo + (hi - lo) * g


def test_memristor_answers_each_pre_event_with_one_event_per_row():
    node = memristor({"mr": {"table": [[0, 0, 0, 0], [0, 1, 0, 1], [1, 1, 1, 0]], "out_min": 1e-9, "out_max": 6e-9}})
    node.r[0, 0] = 11e3
    node.r[0, 1] = 16e3
    node.on_events("mr.pre", Kind.SPIKE, events([(1.0, 0, 1.0)]), 2.0)
    got = drain(node)
    assert [(p, t, i) for p, t, i, _ in got] == [("mr.out", 2.0, 0), ("mr.out", 2.0, 1)]
    v_low_r, v_high_r = got[0][3], got[1][3]
    assert v_low_r > v_high_r  # lower R -> higher conductance -> larger value
    assert v_low_r == pytest.approx(conductance_value(11e3, 1e-9, 6e-9), rel=1e-6)
    assert v_high_r == pytest.approx(conductance_value(16e3, 1e-9, 6e-9), rel=1e-6)
    # Two presynaptic events of different neurons in one packet: rows of both.
    node.on_events("mr.pre", Kind.SPIKE, events([(1.0, 1, 1.0), (1.0, 0, 1.0)]), 3.0)
    assert [i for _, _, i, _ in drain(node)] == [1, 0, 1]
    assert node.rejected == {}


def test_memristor_value_spans_out_range_at_device_ends():
    node = memristor({"mr": {"table": [[0, 0, 0, 0]], "out_min": 0.0, "out_max": 1.0}})
    for r, want in ((10e3, 1.0), (17e3, 0.0)):
        node.r[0, 0] = r
        node.on_events("mr.pre", Kind.SPIKE, events([(1.0, 0, 1.0)]), 1.0)
        assert drain(node)[0][3] == pytest.approx(want, abs=1e-6)


def test_memristor_output_follows_resistance_monotonically():
    node = memristor({"mr": {"table": [[0, 0, 0, 0]]}})
    values = []
    for r in np.linspace(10e3, 17e3, 15):
        node.r[0, 0] = r
        node.on_events("mr.pre", Kind.SPIKE, events([(1.0, 0, 1.0)]), 1.0)
        values.append(drain(node)[0][3])
    assert all(a > b for a, b in zip(values, values[1:]))


def _pre_then_post(node, n_pre: int, post_kind=Kind.SPIKE, post_value=1.0, t_post=10.0):
    for k in range(n_pre):  # all inside (t_post - 1 s, t_post]
        node.on_events("mr.pre", Kind.SPIKE, events([(0.0, 0, 1.0)]), t_post - 0.9 + k * 0.9 / n_pre)
    drain(node)
    node.on_events("mr.post", post_kind, events([(t_post, 0, post_value)]), t_post)
    return float(node.r[0, 0])


@pytest.mark.parametrize("n_pre, change", [(21, "ltp"), (30, "ltp"), (20, None), (5, None), (4, "ltd"), (0, "ltd")])
def test_memristor_srdp_on_post_events(n_pre, change):
    node = memristor({"mr": {"table": [[0, 0, 0, 0]]}})
    r = _pre_then_post(node, n_pre)
    g = node.groups["mr"]
    if change == "ltp":
        assert r < 14e3 and (g.ltp, g.ltd) == (1, 0)
        assert r == pytest.approx(pulse_reference(14e3, 0.8, 100e-6), rel=RTOL)
    elif change == "ltd":
        assert r > 14e3 and (g.ltp, g.ltd) == (0, 1)
        assert r == pytest.approx(pulse_reference(14e3, PlasticitySettings().ltd_voltage, 100e-6), rel=RTOL)
    else:
        assert r == 14e3 and (g.ltp, g.ltd) == (0, 0)
    assert drain(node) == []  # a post event is not forwarded


def test_memristor_pre_events_never_change_weight():
    node = memristor({"mr": {"table": [[0, 0, 0, 0]]}})
    for k in range(100):
        node.on_events("mr.pre", Kind.SPIKE, events([(0.0, 0, 1.0)]), 1.0 + k * 0.01)
    assert node.r[0, 0] == 14e3


def test_memristor_old_pre_spikes_fall_out_of_window():
    node = memristor({"mr": {"table": [[0, 0, 0, 0]]}})
    for k in range(30):
        node.on_events("mr.pre", Kind.SPIKE, events([(0.0, 0, 1.0)]), 1.0 + k * 0.01)
    node.on_events("mr.post", Kind.SPIKE, events([(0.0, 0, 1.0)]), 5.0)  # all 30 are > 1 s old
    assert node.groups["mr"].ltd == 1 and node.groups["mr"].ltp == 0


def test_memristor_plasticity_disabled():
    node = memristor({"mr": {"table": [[0, 0, 0, 0]], "plasticity": {"rule": "none"}}})
    assert _pre_then_post(node, 30) == 14e3
    assert _pre_then_post(node, 0) == 14e3


def test_memristor_filters_biological_types_on_pre():
    node = memristor({"mr": {"table": [[0, 0, 0, 0]], "pre_types": [1, 2]}})
    bio = events([(1.0, 0, BioEvent.PSP), (1.1, 0, BioEvent.STIMULATED_AP), (1.2, 0, BioEvent.SPONTANEOUS_AP)])
    node.on_events("mr.pre", Kind.BIO, bio, 2.0)
    assert len(drain(node)) == 2
    assert mk.count_recent(node.groups["mr"].rule.ring, 0, 2.0, 1.0) == 2
    assert node.rejected == {}


def test_memristor_filters_biological_types_on_post():
    node = memristor({"mr": {"table": [[0, 0, 0, 0]], "post_types": [0, 2]}})
    assert _pre_then_post(node, 25, Kind.BIO, float(BioEvent.STIMULATED_AP)) == 14e3  # type 1 ignored
    assert node.groups["mr"].ltp == 0
    assert _pre_then_post(node, 25, Kind.BIO, float(BioEvent.PSP), t_post=20.0) < 14e3
    assert node.groups["mr"].ltp == 1
    r = float(node.r[0, 0])
    assert _pre_then_post(node, 25, Kind.BIO, float(BioEvent.SPONTANEOUS_AP), t_post=30.0) < r
    assert node.groups["mr"].ltp == 2


def test_memristor_counts_unknown_ids():
    node = memristor({"mr": {"table": [[0, 3, 0, 0]]}})
    node.on_events("mr.pre", Kind.SPIKE, events([(1.0, 7, 1.0), (1.0, 0, 1.0), (1.0, 8, 1.0)]), 1.0)
    assert [i for _, _, i, _ in drain(node)] == [3]
    node.on_events("mr.post", Kind.SPIKE, events([(1.0, 0, 1.0)]), 1.5)  # post id 0 is not in the table
    assert node.rejected == {"unknown_id": 3}
    assert node.r[0, 0] == 14e3


def test_memristor_unknown_ids_after_type_filter_are_counted_once():
    node = memristor({"mr": {"table": [[0, 0, 0, 0]], "pre_types": [1, 2]}})
    node.on_events("mr.pre", Kind.BIO, events([(1.0, 9, 0.0), (1.0, 9, 1.0)]), 1.0)  # PSP filtered, AP unknown
    assert node.rejected == {"unknown_id": 1}


# ---- biological ----


def biological(**extra) -> BiologicalNode:
    table = {"kind": "biological", "size": 2, "dt": 1e-4, "tick": 1e-3, "noise_sigma": 0.0, **extra}
    return BiologicalNode("padova", parse(BiologicalSettings, table, "nodes.padova"))


def _stimulate(amplitude: float, neuron: int = 0, ticks: int = 80):
    node = biological()
    t0 = 300.0
    node.start(t0)
    arrival = t0 + 0.01055  # inside tick 10, mid-way through its step 5
    out = []
    for k in range(ticks):
        a, b = t0 + k * 1e-3, t0 + (k + 1) * 1e-3
        if k == 10:
            node.on_events("stim", Kind.STIMULUS, events([(arrival - 1e-4, neuron, amplitude)]), arrival)
        node.tick(a, b)
        out += [(k, *e) for e in drain(node)]
    return node, arrival, out


def test_strong_stimulus_yields_stimulated_ap():
    node, arrival, out = _stimulate(1.5)
    first = out[0]
    k, port, t, ident, value = first
    assert (port, ident, value) == ("events", 0, float(BioEvent.STIMULATED_AP))
    assert arrival - 1e-9 <= t <= arrival + node.settings.stim_window
    assert [e for e in out if e[4] == float(BioEvent.PSP)] == []
    events = node.figures(0.0).populations["padova"].events
    assert events["stimulated_ap"] == 1 and events["psp"] == 0


def test_weak_stimulus_yields_psp_after_the_window():
    node, arrival, out = _stimulate(0.1)
    assert len(out) == 1
    k, port, t, ident, value = out[0]
    assert (port, ident, value) == ("events", 0, float(BioEvent.PSP))
    # Reported with the stimulus's time: the start of the step it was applied in.
    assert arrival - 1e-4 <= t <= arrival
    window_end_tick = int((arrival + node.settings.stim_window - 300.0) / 1e-3)
    assert k >= window_end_tick  # the verdict waits for the window to close
    st = node.figures(0.0).populations["padova"].events
    assert (st["psp"], st["stimulated_ap"], st["spontaneous_ap"]) == (1, 0, 0)


def test_no_stimulus_no_noise_is_silent():
    node, _, out = _stimulate(0.0)
    assert [e for e in out if e[4] != float(BioEvent.PSP)] == []


def test_biological_stimulus_reaches_only_its_target_and_unknown_ids_are_counted():
    node = biological()
    t0 = 0.0
    node.start(t0)
    node.on_events("stim", Kind.STIMULUS, events([(0.0, 1, 1.5), (0.0, 4, 1.5)]), 0.0005)
    assert node.rejected == {"unknown_id": 1}
    out = []
    for k in range(60):
        node.tick(k * 1e-3, (k + 1) * 1e-3)
        out += drain(node)
    assert out and {i for _, _, i, _ in out} == {1}
    assert out[0][3] == float(BioEvent.STIMULATED_AP)
