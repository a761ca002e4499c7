"""The biological node's neuron against the Izhikevich (2003) model's published behaviour.

The node stands in for a cultured hippocampal pyramidal cell, so what matters is that it fires like
one. Checked with a constant current (``neuron.i_bias``) and no noise: the rheobase, the f-I curve, the
rate at I = 10 against an independent high-resolution integration written here (RK4 at 0.005 ms with
the crossing time interpolated, sharing no code with the kernel), and the four firing patterns of
Izhikevich (2003), "Simple model of spiking neurons", IEEE Trans. Neural Netw. 14:1569, Fig. 2. Then
the stimulus amplitude-to-current mapping, and spontaneous firing with the default noise.

Units are the model's: v in mV, time in ms, current in its own units. The node steps forward Euler at
dt = 0.1 ms, so its spikes lag the reference by about 0.3 ms per interspike interval (measured below);
every tolerance here is sized from that.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikewire.core.settings import parse
from spikewire.nodes.biological import BiologicalNode, BiologicalSettings
from spikewire.streams.wire import EVENT_DTYPE, BioEvent, Kind

# (a, b, c, d) of Izhikevich (2003), Fig. 2.
RS = (0.02, 0.2, -65.0, 8.0)  # regular spiking: cortical / hippocampal pyramidal cell
FS = (0.1, 0.2, -65.0, 2.0)  # fast spiking interneuron
IB = (0.02, 0.2, -55.0, 4.0)  # intrinsically bursting
CH = (0.02, 0.2, -50.0, 2.0)  # chattering

# Rest state of the RS cell (see test_rs_is_silent_below_rheobase for the derivation).
B = RS[1]
I_SADDLE_NODE = (5.0 - B) ** 2 / 0.16 - 140.0  # 4.0: the rest state disappears
I_HOPF = ((5.0 - B) ** 2 - (B - RS[0]) ** 2) / 0.16 - 140.0  # 3.7975: rest turns unstable first, as a < b

V_REST_AT_ZERO = -70.0  # rest at I = 0 for b = 0.2: 0.04 v^2 + 4.8 v + 140 = 0


def make_node(i_bias: float, abcd=RS, v_init: float = -65.0, **extra) -> BiologicalNode:
    a, b, c, d = abcd
    table = {"size": 1, "noise_sigma": 0.0, **extra,
             "neuron": {"a": a, "b": b, "c": c, "d": d, "v_init": v_init, "i_bias": i_bias}}
    node = BiologicalNode("padova", parse(BiologicalSettings, table, "nodes.padova"))
    node.warm_up()
    node.start(0.0)
    return node


def run(node: BiologicalNode, seconds: float) -> np.ndarray:
    """Tick ``node`` from t = 0 for ``seconds``; every event it emitted, in order."""
    tick = node.settings.tick
    out = []
    for k in range(round(seconds / tick)):
        node.tick(k * tick, (k + 1) * tick)
        out += [events.copy() for _, events in node.outbox.pending()]
        node.outbox.clear()
    return np.concatenate(out) if out else np.zeros(0, EVENT_DTYPE)


def spike_times_ms(i_bias: float, seconds: float, abcd=RS, v_init: float = -65.0) -> np.ndarray:
    """Spike times [ms] of a noiseless, unstimulated neuron; all of them must be spontaneous APs."""
    events = run(make_node(i_bias, abcd, v_init), seconds)
    assert set(events["value"].tolist()) <= {float(BioEvent.SPONTANEOUS_AP)}
    assert (events["id"] == 0).all()
    return events["t"] * 1e3


def rest_potential(i_bias: float, b: float) -> float:
    """The stable-branch root of 0.04 v^2 + (5 - b) v + 140 + I = 0 (where u = b v)."""
    return (-(5.0 - b) - math.sqrt((5.0 - b) ** 2 - 0.16 * (140.0 + i_bias))) / 0.08


def steady_isi(times_ms: np.ndarray, skip: int = 5) -> float:
    """Mean interspike interval after the first ``skip`` spikes (past the adaptation transient)."""
    assert len(times_ms) > skip + 2, f"only {len(times_ms)} spikes"
    return (times_ms[-1] - times_ms[skip]) / (len(times_ms) - 1 - skip)


def reference_spike_times(i_bias: float, t_ms: float, abcd=RS, v: float = -65.0, h: float = 0.005) -> list[float]:
    """Izhikevich (2003) by classical RK4 at step ``h`` [ms], on Python floats.

    A crossing of 30 mV is located by linear interpolation inside the step; the reset (v <- c,
    u <- u + d) happens at that instant and the rest of the step is integrated from the reset state,
    so the spike time carries no step-length error. At I = 10 the steady ISI is 44.81210, 44.81233,
    44.81239, 44.81241 ms for h = 0.02, 0.01, 0.005, 0.0025 ms: converged to 1e-6 at h = 0.005.
    """
    a, b, c, d = abcd
    u = b * v

    def step(v, u, h):
        def rhs(v, u):
            return 0.04 * v * v + 5.0 * v + 140.0 - u + i_bias, a * (b * v - u)

        k1v, k1u = rhs(v, u)
        k2v, k2u = rhs(v + 0.5 * h * k1v, u + 0.5 * h * k1u)
        k3v, k3u = rhs(v + 0.5 * h * k2v, u + 0.5 * h * k2u)
        k4v, k4u = rhs(v + h * k3v, u + h * k3u)
        return v + h / 6.0 * (k1v + 2.0 * k2v + 2.0 * k3v + k4v), u + h / 6.0 * (k1u + 2.0 * k2u + 2.0 * k3u + k4u)

    spikes = []
    for k in range(round(t_ms / h)):
        v_next, u_next = step(v, u, h)
        if v_next >= 30.0:
            frac = (30.0 - v) / (v_next - v)
            spikes.append((k + frac) * h)
            v, u = step(c, u + frac * (u_next - u) + d, (1.0 - frac) * h)
        else:
            v, u = v_next, u_next
    return spikes


# --------------------------------------------------------------------------------------------------
# Rheobase
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("i_bias", [3.5, 3.7])
def test_rs_is_silent_below_rheobase(i_bias):
    """Below rheobase an RS cell rests: no spike in 2 s once the onset transient is over.

    Rest states: u = b v and dv/dt = 0 give 0.04 v^2 + (5 - b) v + 140 + I = 0, real roots while
    (5 - b)^2 >= 0.16 (140 + I), i.e. I <= (5 - b)^2 / 0.16 - 140 = 4.8^2 / 0.16 - 140 = 144 - 140 = 4.0
    for b = 0.2: the rest state (v = -60 mV there) disappears in a saddle-node at I = 4.0.

    But it loses stability earlier. On the lower root, with s = sqrt((5 - b)^2 - 0.16 (140 + I)),
    0.08 v + 5 = b - s. The Jacobian at rest, [[0.08 v + 5, -1], [a b, -a]], has determinant a s > 0
    and trace b - s - a, which turns positive when s < b - a, i.e. for
    I > ((5 - b)^2 - (b - a)^2) / 0.16 - 140 = (23.04 - 0.0324) / 0.16 - 140 = 3.7975 (a = 0.02):
    an Andronov-Hopf bifurcation before the saddle-node, as always when a < b (Izhikevich 2007,
    "Dynamical Systems in Neuroscience", ch. 8). The Hopf is subcritical: tonic firing coexists with
    rest slightly below it, and from the default start (v = -65 mV, u = -13) the node fires tonically from I = 3.775 on
    (silent at 3.77; the RK4 reference gives the same bracket). So "silent" is checked at 3.5 and 3.7,
    not at 3.8, which already fires (see the next test).

    From the default start a current step this size may give one onset spike (u starts at -13, and
    with u frozen the v equation has a rest point only for u >= I - 16.25, -12.75 at I = 3.5); it must
    come in the first 100 ms. From the rest state itself there is no transient at all.
    """
    assert I_SADDLE_NODE == pytest.approx(4.0)
    assert I_HOPF == pytest.approx(3.7975)
    onset = spike_times_ms(i_bias, 2.0)
    assert len(onset) <= 1 and (onset < 100.0).all(), onset
    at_rest = spike_times_ms(i_bias, 2.0, v_init=rest_potential(i_bias, B))
    assert len(at_rest) == 0, at_rest


@pytest.mark.parametrize("i_bias", [3.8, 3.9, 4.5, 10.0])
def test_rs_fires_tonically_above_rheobase(i_bias):
    """Above rheobase an RS cell fires periodically for as long as the current lasts.

    3.8 and 3.9 lie between the Hopf (3.7975), where rest turns unstable, and the saddle-node (4.0),
    where it vanishes: the cell already fires. 4.5 and 10 are above both. Checked over 2 s: the last
    four ISIs agree within 0.2 ms (two 0.1 ms steps of quantisation), and the cell is still firing at
    the end (last spike within 1.5 steady ISIs of it). Steady ISIs measured: 178, 153, 110, 45.1 ms.
    """
    t = spike_times_ms(i_bias, 2.0)
    assert len(t) >= 8
    last = np.diff(t)[-4:]
    assert last.max() - last.min() <= 0.2 + 1e-9, last
    assert t[-1] > 2000.0 - 1.5 * last.mean()


# --------------------------------------------------------------------------------------------------
# f-I curve
# --------------------------------------------------------------------------------------------------

F_I_CURRENTS = [5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0]


def test_rs_rate_rises_monotonically_with_current():
    """The steady rate of the RS cell rises strictly with I over 5..40 (Izhikevich 2003, Fig. 2 text on
    RS cells: a stronger dc current gives a higher frequency), the rate taken from the ISIs after the
    first five spikes of 1 s. Measured: 10.6, 16.7, 22.2, 32.8, 43.3, 53.8, 64.5, 75.2, 86.2 Hz."""
    rates = [1000.0 / steady_isi(spike_times_ms(i, 1.0)) for i in F_I_CURRENTS]
    assert (np.diff(rates) > 0).all(), rates


def test_rs_steady_rate_at_i10_matches_high_resolution_reference():
    """Steady RS rate at I = 10: node (Euler, dt = 0.1 ms) against the RK4 reference (h = 0.005 ms).

    Measured: reference ISI 44.812 ms (22.315 Hz), node 45.10 ms (22.17 Hz): the node is 0.64 % slow.
    That is forward Euler's first-order error: plain Euler at 0.1, 0.05, 0.025, 0.0125 ms gives 45.10,
    44.95, 44.875, 44.85 ms, halving with dt and extrapolating to 44.80. Tolerance 1.5 % (about twice
    the measured error); it still catches a model off by little: the reference ISI moves by 2.0 % for
    I = 9.8, 2.9 % for d = 7.6, 4.0 % for a = 0.021, 6.1 % for b = 0.21.
    """
    node_isi = steady_isi(spike_times_ms(10.0, 2.0))
    ref_isi = steady_isi(np.array(reference_spike_times(10.0, 1000.0)))
    assert ref_isi == pytest.approx(44.812, abs=0.01)  # the reference is itself converged
    assert 1.0 / node_isi == pytest.approx(1.0 / ref_isi, rel=0.015)


# --------------------------------------------------------------------------------------------------
# Published firing patterns, Izhikevich (2003) Fig. 2, I = 10 stepped on from rest at I = 0
# --------------------------------------------------------------------------------------------------


def pattern_isis(abcd) -> np.ndarray:
    """ISIs [ms] over 1 s at I = 10, starting from the I = 0 rest state (v = -70, u = -14) as the
    figure's current step does."""
    return np.diff(spike_times_ms(10.0, 1.0, abcd, v_init=V_REST_AT_ZERO))


def test_rs_shows_spike_frequency_adaptation():
    """RS: "fire a few spikes with short interspike period and then the period increases" (2003, Fig. 2).
    Checked: first ISI at most half the steady ISI (measured 17.8 vs 45.1 ms), every later ISI at least
    0.9 of it (the model adapts within one spike: 45.2, 45.1, ...), and the train settles to a tonic
    rhythm (last ISIs within 0.2 ms)."""
    isi = pattern_isis(RS)
    steady = isi[-5:].mean()
    assert isi[0] <= 0.5 * steady, isi
    assert (isi[1:] >= 0.9 * steady).all(), isi
    assert isi[-5:].max() - isi[-5:].min() <= 0.2 + 1e-9


def test_fs_fires_faster_than_rs_with_little_adaptation():
    """FS: "periodic trains of action potentials with extremely high frequency practically without any
    adaptation" (2003, Fig. 2). Checked at the same I = 10: steady FS rate at least 4x the RS rate
    (measured 131 vs 22 Hz), and less adaptation than RS by the ratio steady ISI / first ISI
    (measured FS 7.6 / 4.2 = 1.8, RS 45.1 / 17.8 = 2.5; FS below 2, RS above 2). FS is not free of
    adaptation in the model: its ISIs lengthen over the first 3 spikes (the reference agrees, 3.9 to
    7.4 ms), then stay within 0.3 ms (regular to a few 0.1 ms steps)."""
    fs, rs = pattern_isis(FS), pattern_isis(RS)
    fs_steady, rs_steady = fs[-20:].mean(), rs[-5:].mean()
    assert 1000.0 / fs_steady >= 4.0 * 1000.0 / rs_steady
    assert fs_steady / fs[0] < 2.0 < rs_steady / rs[0]
    assert fs[4:].max() - fs[4:].min() <= 0.3 + 1e-9, fs


def test_ib_starts_with_a_burst_then_fires_tonically():
    """IB: "fire a stereotypical burst of spikes followed by repetitive single spikes" (2003, Fig. 2).
    Checked: the first two ISIs are short (< 5 ms, a 3-spike burst; measured 2.4, 3.7 ms), every later
    ISI is long (> 25 ms), and the tail is tonic (last ISIs within 0.2 ms; measured 31.6 ms)."""
    isi = pattern_isis(IB)
    assert (isi[:2] < 5.0).all(), isi
    assert (isi[2:] > 25.0).all(), isi
    assert isi[-5:].max() - isi[-5:].min() <= 0.2 + 1e-9


def test_ch_fires_repeated_bursts():
    """CH: "fire stereotypical bursts of closely spaced spikes ... the interburst frequency can be as
    high as 40 Hz" (2003, Fig. 2). Checked: the ISIs are bimodal, every one either intra-burst (< 7 ms)
    or inter-burst (> 40 ms), none between; there are at least 10 bursts in the second, and each burst
    after the first has at least 3 spikes (measured: 5 spikes at 2.1, 2.4, 3.0, 5.1 ms ISIs, then 48 ms)."""
    isi = pattern_isis(CH)
    short, long_ = isi < 7.0, isi > 40.0
    assert (short | long_).all(), isi
    assert long_.sum() >= 10
    spikes_per_burst = np.diff(np.flatnonzero(long_))  # bursts between two long ISIs
    assert (spikes_per_burst >= 3).all(), spikes_per_burst


@pytest.mark.parametrize("name, abcd", [("RS", RS), ("FS", FS), ("IB", IB), ("CH", CH)])
def test_patterns_track_the_reference_interval_by_interval(name, abcd):
    """Each of the first 10 ISIs of the node equals the RK4 reference's within [-0.1, +1.0] ms.

    Euler lags at every upstroke: measured 0.15 to 0.71 ms per ISI (mean 0.26 to 0.38) across the four
    patterns; node spike times are quantised to the 0.1 ms step. The window is one-sided because the
    lag is; it is absolute because the lag is per spike, so short burst ISIs get the same allowance.
    """
    node = np.diff(spike_times_ms(10.0, 0.5, abcd, v_init=V_REST_AT_ZERO))[:10]
    ref = np.diff(reference_spike_times(10.0, 500.0, abcd, v=V_REST_AT_ZERO, h=0.01))[:10]
    assert len(node) == len(ref) == 10
    lag = node - ref
    assert (lag >= -0.1).all() and (lag <= 1.0).all(), (node, ref)


# --------------------------------------------------------------------------------------------------
# Stimulus amplitude to current
# --------------------------------------------------------------------------------------------------


def stimulate(node: BiologicalNode, amplitude: float, at_step: int, n_steps: int):
    """Tick ``node`` (tick == dt) for ``n_steps``, with a stimulus of ``amplitude`` V arriving at the
    start of step ``at_step``; returns (i_stim, v) after each step and the events."""
    dt = node.settings.dt
    assert node.settings.steps_per_tick == 1
    i_stim, v, out = np.zeros(n_steps), np.zeros(n_steps), []
    for k in range(n_steps):
        if k == at_step:
            node.on_events("stim", Kind.STIMULUS, np.array([(k * dt, 0, amplitude)], EVENT_DTYPE), k * dt)
        node.tick(k * dt, (k + 1) * dt)
        i_stim[k], v[k] = node.backend.i_stim[0], node.backend.v[0]
        out += [events.copy() for _, events in node.outbox.pending()]
        node.outbox.clear()
    return i_stim, v, (np.concatenate(out) if out else np.zeros(0, EVENT_DTYPE))


@pytest.mark.parametrize("gain, tau", [(20.0, 3e-3), (35.0, 5e-3)])
def test_stimulus_adds_gain_times_amplitude_to_a_current_decaying_with_tau(gain, tau):
    """Documented mapping (BiologicalSettings.stim_gain, stim_tau): a stimulus of amplitude A adds
    stim_gain * A to the stimulus current, which then decays as exp(-t / stim_tau).

    The kernel adds the step at the start of the stimulus's step and decays at its end, so after m
    steps the current is gain A exp(-m dt / tau), exactly. The charge it delivers, sum of the current
    used in each step times dt, is gain A dt / (1 - exp(-dt / tau)) = gain A tau (1 + dt / 2 tau + ...):
    within 1.7 % of the continuous gain A tau for the default tau = 3 ms (checked to 2 %)."""
    amplitude = 0.7
    node = make_node(0.0, v_init=V_REST_AT_ZERO, tick=1e-4, dt=1e-4, stim_gain=gain, stim_tau=tau)
    i_stim, _, _ = stimulate(node, amplitude, at_step=50, n_steps=50 + 400)
    assert (i_stim[:50] == 0.0).all()
    m = np.arange(1, 401)
    np.testing.assert_allclose(i_stim[50:], gain * amplitude * np.exp(-m * 1e-4 / tau), rtol=1e-9)
    dt_ms, used = 0.1, i_stim[50:] / math.exp(-1e-4 / tau)  # the current during each step
    assert used.sum() * dt_ms == pytest.approx(gain * amplitude * tau * 1e3, rel=0.02)


def test_membrane_response_is_linear_in_amplitude_and_carries_the_delivered_charge():
    """Held far below threshold (I = -30: rest at -89.15 mV), a small stimulus is a linear perturbation
    of rest. Linearised, (dv, du) obey dv' = J dv - du + i, du' = a (b dv - du) with J = 0.08 v_rest + 5,
    whose steady gain is 1 / (b - J); so the time integral of the deflection is Q / (b - J) for any
    current pulse of charge Q (Euler keeps this exactly, as it keeps fixed points). Q is read off the
    node's own stimulus current. Checked for A = 0.05 and 0.1 V (Q = 3.05 and 6.10 units ms): the
    integral within 1.5 % of Q / (b - J) (measured 1.004, 1.008: the quadratic term, ~0.08 A), the peak
    deflection twice as large for twice the amplitude within 1.5 % (measured 2.010), no AP, and each
    stimulus reported as one PSP at its own time."""
    i_bias = -30.0
    v_rest = rest_potential(i_bias, B)
    gain_per_current = 1.0 / (B - (0.08 * v_rest + 5.0))
    peaks = []
    for amplitude in (0.05, 0.1):
        node = make_node(i_bias, v_init=v_rest, tick=1e-4, dt=1e-4)
        i_stim, v, events = stimulate(node, amplitude, at_step=100, n_steps=10_000)
        charge = (i_stim / node.backend.stim_decay[0]).sum() * 0.1
        deflection = v - v_rest
        assert abs(deflection[-1]) < 1e-6  # back at rest: the integral is complete
        assert deflection.sum() * 0.1 == pytest.approx(charge * gain_per_current, rel=0.015)
        assert events.tolist() == [(pytest.approx(0.01), 0, float(BioEvent.PSP))]
        peaks.append(deflection.max())
    assert peaks[1] / peaks[0] == pytest.approx(2.0, rel=0.015)


# --------------------------------------------------------------------------------------------------
# Spontaneous activity
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_noise_gives_sparse_spontaneous_firing(seed):
    """With the default noise_sigma, no input and no bias current, the neuron fires now and then, as a
    cultured neuron does: between 0.05 and 5 Hz over 20 s (measured 0.50, 0.55, 0.85 Hz for seeds 0, 1,
    2), every AP typed spontaneous, at increasing times inside the run."""
    settings = parse(BiologicalSettings, {"size": 1, "seed": seed}, "nodes.padova")
    assert settings.noise_sigma > 0.0
    node = BiologicalNode("padova", settings)
    node.warm_up()
    node.start(0.0)
    events = run(node, 20.0)
    assert 0.05 <= len(events) / 20.0 <= 5.0, len(events)
    assert (events["value"] == float(BioEvent.SPONTANEOUS_AP)).all()
    t = events["t"]
    assert (np.diff(t) > 0).all() and t[0] > 0.0 and t[-1] <= 20.0


# --------------------------------------------------------------------------------------------------
# The node delegates to a backend (nodes/backends.py)
# --------------------------------------------------------------------------------------------------


def test_the_model_is_the_default_backend_and_an_unknown_one_is_refused_naming_the_key():
    from spikewire.core.settings import SettingsError
    from spikewire.nodes.biological import IzhikevichModel

    node = BiologicalNode("padova", parse(BiologicalSettings, {}, "nodes.padova"))
    assert isinstance(node.backend, IzhikevichModel) and node.supports_lookahead
    assert set(node.outputs) == {"events"} and node.inputs["stim"].values == (-10.0, 10.0)
    with pytest.raises(SettingsError, match=r"^nodes\.padova\.backend: must be one of 'model', 'rig', got 'intan'$"):
        parse(BiologicalSettings, {"backend": "intan"}, "nodes.padova")
