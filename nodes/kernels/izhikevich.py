"""Izhikevich (2003) simple-model neurons, forward Euler at ``dt`` milliseconds.

    dv/dt = 0.04 v^2 + 5 v + 140 - u + I        (v in mV, t in ms, I in the model's current units)
    du/dt = a (b v - u)
    v >= 30 mV:  v <- c,  u <- u + d

Regular spiking (a, b, c, d) = (0.02, 0.2, -65, 8) is the cortical/hippocampal pyramidal pattern.
Input current per step is ``i_stim`` (decaying stimulus current) + ``i_bias`` + noise.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def izhikevich_run(v, u, i_stim, a, b, c, d, i_bias, stim_decay, stim_in, noise, dt_ms, spike_step,
                   spike_id):
    """Advance ``stim_in.shape[0]`` steps. ``stim_in[k, i]`` is added to the stimulus current at the
    start of step k; ``noise[k, i]`` is added to the input of that step only. State ``v``, ``u``,
    ``i_stim`` is updated in place. Returns the spike count (written up to the buffers' length)."""
    n = v.shape[0]
    n_steps = stim_in.shape[0]
    cap = spike_step.shape[0]
    n_spikes = 0
    for k in range(n_steps):
        for i in range(n):
            i_stim[i] += stim_in[k, i]
            vi = v[i]
            ui = u[i]
            current = i_stim[i] + i_bias[i] + noise[k, i]
            v[i] = vi + dt_ms * (0.04 * vi * vi + 5.0 * vi + 140.0 - ui + current)
            u[i] = ui + dt_ms * a[i] * (b[i] * vi - ui)
            if v[i] >= 30.0:
                v[i] = c[i]
                u[i] += d[i]
                if n_spikes < cap:
                    spike_step[n_spikes] = k
                    spike_id[n_spikes] = i
                n_spikes += 1
            i_stim[i] *= stim_decay[i]
    return n_spikes


def warm_up() -> None:
    n = 1
    f = np.ones(n)
    izhikevich_run(f * -65.0, f * -13.0, np.zeros(n), f * 0.02, f * 0.2, f * -65.0, f * 8.0, np.zeros(n),
                   f * 0.9, np.zeros((3, n)), np.zeros((3, n)), 0.1, np.zeros(4, np.int64),
                   np.zeros(4, np.int64))
