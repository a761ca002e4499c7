"""Adaptive exponential integrate-and-fire (Brette & Gerstner 2005) population, forward Euler.

    C dV/dt     = -g_L (V - E_L) + g_L D_T exp((V - V_T) / D_T) - w + I_syn + I_bias
    tau_w dw/dt = a (V - E_L) - w
    V >= V_peak:  V <- V_reset,  w <- w + b,  then refractory for t_ref: V held at V_reset while w
                  keeps evolving (the usual convention, as in Brian2's and NEST's AdEx)
    I_syn decays exponentially (first-order, DPI-like synapse) with tau_syn; input events add to it.

SI units throughout (V, A, S, F, s). Per-neuron constants are precomputed once into one coefficient
block (``coefficients``): the step then has no division, which is what bounds a 10,000-neuron tick.
Checked against Brian2 (tests/test_adex_vs_brian2.py): identical spike times.
"""

import math

import numpy as np
from numba import njit

# Rows of the coefficient block.
INV_CM, GL, EL, VT, INV_DT, GL_DT, A, INV_TAUW, B, VRESET, VPEAK, IBIAS = range(12)


def coefficients(c_m, g_l, e_l, v_t, delta_t, a, tau_w, b, v_reset, v_peak, i_bias) -> np.ndarray:
    """The (12, n) coefficient block ``adex_run`` takes, from per-neuron parameter arrays (SI units)."""
    c_m, g_l, delta_t, tau_w = (np.asarray(x, dtype=np.float64) for x in (c_m, g_l, delta_t, tau_w))
    rows = [1.0 / c_m, g_l, e_l, v_t, 1.0 / delta_t, g_l * delta_t, a, 1.0 / tau_w, b, v_reset, v_peak, i_bias]
    n = len(c_m)
    return np.ascontiguousarray(np.stack([np.broadcast_to(np.asarray(r, dtype=np.float64), n) for r in rows]))


@njit(cache=True)
def adex_run(v, w, i_syn, refr, coef, refr_steps, syn_decay, syn_in, dt, spike_step, spike_id):
    """Advance the population ``syn_in.shape[0]`` steps of ``dt``.

    State (updated in place): ``v`` [V], ``w`` [A], ``i_syn`` [A], ``refr`` (int32 steps left).
    ``coef`` is the block from ``coefficients``; ``syn_decay`` is exp(-dt / tau_syn) per neuron and
    ``refr_steps`` the refractory length in steps. ``syn_in[k, i]`` [A] is added to neuron i's synaptic
    current at the start of step k. Spikes are written to ``spike_step`` / ``spike_id`` in time order;
    returns how many occurred (more than the buffers hold are counted but not written).
    """
    n = v.shape[0]
    n_steps = syn_in.shape[0]
    cap = spike_step.shape[0]
    inv_cm = coef[INV_CM]
    g_l = coef[GL]
    e_l = coef[EL]
    v_t = coef[VT]
    inv_dt = coef[INV_DT]
    gl_dt = coef[GL_DT]
    a = coef[A]
    inv_tw = coef[INV_TAUW]
    b = coef[B]
    v_reset = coef[VRESET]
    v_peak = coef[VPEAK]
    i_bias = coef[IBIAS]
    n_spikes = 0
    for k in range(n_steps):
        for i in range(n):
            si = i_syn[i] + syn_in[k, i]
            wi = w[i]
            if refr[i] > 0:
                refr[i] -= 1
                vr = v_reset[i]
                v[i] = vr
                w[i] = wi + dt * (a[i] * (vr - e_l[i]) - wi) * inv_tw[i]
            else:
                vi = v[i]
                arg = (vi - v_t[i]) * inv_dt[i]
                if arg > 30.0:  # far past threshold: the exponential only says "spike now"
                    arg = 30.0
                dv = (-g_l[i] * (vi - e_l[i]) + gl_dt[i] * math.exp(arg) - wi + si + i_bias[i]) * inv_cm[i]
                vn = vi + dt * dv
                wn = wi + dt * (a[i] * (vi - e_l[i]) - wi) * inv_tw[i]
                if vn >= v_peak[i]:
                    vn = v_reset[i]
                    wn += b[i]
                    refr[i] = refr_steps[i]
                    if n_spikes < cap:
                        spike_step[n_spikes] = k
                        spike_id[n_spikes] = i
                    n_spikes += 1
                v[i] = vn
                w[i] = wn
            i_syn[i] = si * syn_decay[i]
    return n_spikes


def warm_up() -> None:
    """Compile (or load from cache) and run once, so the first live tick pays no JIT."""
    n = 2
    f = np.ones(n)
    coef = coefficients(f * 281e-12, f * 30e-9, f * -0.0706, f * -0.0504, f * 0.002, f * 4e-9, f * 0.144,
                        f * 0.0805e-9, f * -0.0706, f * -0.0404, f * 0.0)
    adex_run(np.full(n, -0.07), np.zeros(n), np.zeros(n), np.zeros(n, np.int32), coef, np.zeros(n, np.int32),
             f * 0.98, np.zeros((3, n)), 1e-4, np.zeros(4, np.int64), np.zeros(4, np.int64))
