"""Current-based LIF (NIR's CubaLIF), integrated exactly over each step for constant input:

    tau_m dV/dt = (v_rest - V) + R I,   I = i_syn + i_bias,   tau_syn di_syn/dt = -i_syn
    V >= v_th:  spike, V <- v_reset, held for refr_steps steps.

Step k: V and i_syn go from t_k to t_k + dt with the i_syn of t_k; input for step k is added to i_syn
after it (it first drives V in step k + 1, as Brian2 schedules it); a spike is stamped t_k + dt.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def lif_steps(v, i_syn, refr, syn_in, i_bias, decay_m, decay_syn, r_m, v_rest, v_reset, v_th, refr_steps,
              spike_step, spike_id):
    """Advance ``len(syn_in)`` steps in place; write the spikes' step and neuron; return how many."""
    n_spikes = 0
    for k in range(syn_in.shape[0]):
        for i in range(v.shape[0]):
            if refr[i] > 0:
                refr[i] -= 1
            else:
                v_inf = v_rest + r_m * (i_syn[i] + i_bias)
                v[i] = v_inf + (v[i] - v_inf) * decay_m
                if v[i] >= v_th:
                    v[i] = v_reset
                    refr[i] = refr_steps
                    spike_step[n_spikes] = k
                    spike_id[n_spikes] = i
                    n_spikes += 1
            i_syn[i] = i_syn[i] * decay_syn + syn_in[k, i]
    return n_spikes


def warm_up() -> None:
    one = np.zeros(1)
    lif_steps(one.copy(), one.copy(), np.zeros(1, np.int64), np.zeros((1, 1)), 0.0, 0.9, 0.9, 1e8, -0.065,
              -0.065, -0.05, 0, np.zeros(1, np.int64), np.zeros(1, np.int64))
