"""Adaptive exponential integrate-and-fire (Brette & Gerstner 2005) population, forward Euler.

    C dV/dt   = -g_L (V - E_L) + g_L D_T exp((V - V_T) / D_T) - w + I_syn + I_bias
    tau_w dw/dt = a (V - E_L) - w
    V >= V_peak:  V <- V_reset,  w <- w + b,  refractory for t_ref (V held at V_reset)
    I_syn decays exponentially (first-order, DPI-like synapse) with tau_syn; input events add to it.

SI units throughout (V, A, S, F, s). Per-neuron parameters are arrays of the population size.
"""

import math

import numpy as np
from numba import njit


@njit(cache=True)
def adex_run(v, w, i_syn, refr, c_m, g_l, e_l, v_t, delta_t, a, tau_w, b, v_reset, v_peak,
             refr_steps, syn_decay, i_bias, syn_in, dt, spike_step, spike_id):
    """Advance the population ``syn_in.shape[0]`` steps of ``dt``.

    State (updated in place): ``v`` [V], ``w`` [A], ``i_syn`` [A], ``refr`` (int32 steps left).
    ``syn_in[k, i]`` [A] is added to neuron i's synaptic current at the start of step k.
    ``syn_decay`` is exp(-dt / tau_syn) per neuron, ``refr_steps`` the refractory length in steps.
    Spikes are written to ``spike_step`` / ``spike_id`` in time order; returns how many occurred
    (more than the buffers hold are counted but not written).
    """
    n = v.shape[0]
    n_steps = syn_in.shape[0]
    cap = spike_step.shape[0]
    n_spikes = 0
    for k in range(n_steps):
        for i in range(n):
            i_syn[i] += syn_in[k, i]
            if refr[i] > 0:
                refr[i] -= 1
                v[i] = v_reset[i]
            else:
                vi = v[i]
                arg = (vi - v_t[i]) / delta_t[i]
                if arg > 30.0:  # far past threshold: the exponential only says "spike now"
                    arg = 30.0
                dv = (-g_l[i] * (vi - e_l[i]) + g_l[i] * delta_t[i] * math.exp(arg) - w[i]
                      + i_syn[i] + i_bias[i]) / c_m[i]
                dw = (a[i] * (vi - e_l[i]) - w[i]) / tau_w[i]
                v[i] = vi + dt * dv
                w[i] += dt * dw
                if v[i] >= v_peak[i]:
                    v[i] = v_reset[i]
                    w[i] += b[i]
                    refr[i] = refr_steps[i]
                    if n_spikes < cap:
                        spike_step[n_spikes] = k
                        spike_id[n_spikes] = i
                    n_spikes += 1
            i_syn[i] *= syn_decay[i]
    return n_spikes


def warm_up() -> None:
    """Compile (or load from cache) and run once, so the first live tick pays no JIT."""
    n = 2
    f = np.ones(n)
    adex_run(np.full(n, -0.07), np.zeros(n), np.zeros(n), np.zeros(n, np.int32), f * 281e-12, f * 30e-9,
             f * -0.0706, f * -0.0504, f * 0.002, f * 4e-9, f * 0.144, f * 0.0805e-9, f * -0.0706,
             f * -0.0404, np.zeros(n, np.int32), f * 0.98, np.zeros(n), np.zeros((3, n)), 1e-4,
             np.zeros(4, np.int64), np.zeros(4, np.int64))
