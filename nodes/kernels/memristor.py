"""TiOx memristor compact model (Messaris, Serb, Khiat, Nikolaidis, Prodromakis) and the hub's SRDP rule.

Two users, kept apart: ``apply_pulse`` is the device (nodes/tiox.py, the default ``Crossbar``);
``record_spike``, ``count_recent`` and ``srdp_decision`` are the rule (nodes/plasticity.py).

Device model::

    dR/dt = s(v) f(R, v)
    v > 0:  s = A_p (exp(|v|/t_p) - 1),  f = (r_p(v) - R)^2 step(r_p(v) - R),  r_p = a0 + a1 v
    v <= 0: s = A_n (exp(|v|/t_n) - 1),  f = (R - r_n(v))^2 step(R - r_n(v)),  r_n = b0 + b1 v

A rectangular pulse of width t has the closed form R' = (R + s r (r - R) t) / (1 + s (r - R) t) with r
the active boundary (ArC ``ParameterFit.py``). Its denominator reaches zero for strong pulses (the
solution runs off to infinity in finite time); there, and for any result outside the device's range,
R is clamped to ``[r_min, r_max]``.

``params`` is a float64 array laid out as PARAM_NAMES.
"""

import math

import numpy as np
from numba import njit

PARAM_NAMES = ("a0", "a1", "b0", "b1", "a_p", "t_p", "a_n", "t_n", "r_min", "r_max")
A0, A1, B0, B1, AP, TP, AN, TN, RMIN, RMAX = range(len(PARAM_NAMES))


@njit(cache=True)
def apply_pulse(r, v, width, params):
    """Resistance [Ohm] after one pulse of ``v`` volts for ``width`` seconds on a device at ``r``."""
    if v == 0.0 or width <= 0.0:
        return r
    if v > 0.0:
        s = params[AP] * (math.exp(v / params[TP]) - 1.0)
        bound = params[A0] + params[A1] * v
        if not bound > r:
            return r
    else:
        s = params[AN] * (math.exp(-v / params[TN]) - 1.0)
        bound = params[B0] + params[B1] * v
        if not r > bound:
            return r
    gap = bound - r
    denom = 1.0 + s * gap * width
    if denom <= 0.0:
        # Finite-time blow-up within the pulse: the device saturates at the end it was driven to,
        # which is the sign of dR/dt = s * f with f >= 0.
        return params[RMIN] if s < 0.0 else params[RMAX]
    r_new = (r + s * bound * gap * width) / denom
    if r_new < params[RMIN]:
        return params[RMIN]
    if r_new > params[RMAX]:
        return params[RMAX]
    return r_new


@njit(cache=True)
def record_spike(ring, head, pre, t):
    """Remember presynaptic neuron ``pre``'s spike at ``t`` in its ring of recent spike times."""
    slot = head[pre]
    ring[pre, slot] = t
    head[pre] = (slot + 1) % ring.shape[1]


@njit(cache=True)
def count_recent(ring, pre, t, window):
    """How many of ``pre``'s remembered spikes fall in (t - window, t]. Saturates at the ring size,
    which the caller makes larger than any threshold it compares against."""
    n = 0
    lo = t - window
    for j in range(ring.shape[1]):
        tj = ring[pre, j]
        if tj > lo and tj <= t:
            n += 1
    return n


@njit(cache=True)
def srdp_decision(n_recent, ltp_above, ltd_below):
    """The hub's spike-rate-dependent rule, applied on a postsynaptic event:
    +1 (one LTP pulse) if more than ``ltp_above`` presynaptic spikes in the window,
    -1 (one LTD pulse) if fewer than ``ltd_below``, else 0."""
    if n_recent > ltp_above:
        return 1
    if n_recent < ltd_below:
        return -1
    return 0


@njit(cache=True)
def apply_pulses(r, wl, bl, v, width, params, out):
    """``apply_pulse`` to devices (wl[i], bl[i]) of the (rows, cols) array ``r`` in order, each with its own
    voltage and width and its device's ``params[wl, bl]``; writes ``r`` and each new resistance to ``out``."""
    for i in range(len(wl)):
        a, b = wl[i], bl[i]
        r[a, b] = apply_pulse(r[a, b], v[i], width[i], params[a, b])
        out[i] = r[a, b]


@njit(cache=True)
def record_spikes(ring, head, pres, t):
    """``record_spike`` for each presynaptic id of ``pres``, in order."""
    for i in range(len(pres)):
        record_spike(ring, head, pres[i], t)


@njit(cache=True)
def srdp_decisions(ring, pres, t, window, ltp_above, ltd_below):
    """``srdp_decision`` of each presynaptic id's recent count: an int8 array of +1, -1 or 0."""
    out = np.zeros(len(pres), np.int8)
    for i in range(len(pres)):
        out[i] = srdp_decision(count_recent(ring, pres[i], t, window), ltp_above, ltd_below)
    return out


@njit(cache=True)
def gather_rows(ptr, order, ids, out):
    """The rows of each id (``order[ptr[id]:ptr[id + 1]]``), id after id, into ``out``; returns how many."""
    n = 0
    for i in range(len(ids)):
        k = ids[i]
        for j in range(ptr[k], ptr[k + 1]):
            out[n] = order[j]
            n += 1
    return n


def warm_up() -> None:
    p = np.array([17.16e3, 0.15e3, 24.81e3, 17.91e3, -4.86e-5, 0.12, 1.09e-3, 0.18, 10e3, 17e3])
    apply_pulse(14e3, 0.8, 1e-4, p)
    apply_pulse(14e3, -0.8, 1e-4, p)
    ring = np.full((1, 4), -np.inf)
    head = np.zeros(1, np.int64)
    record_spike(ring, head, 0, 1.0)
    count_recent(ring, 0, 1.0, 1.0)
    srdp_decision(1, 20, 5)
    r = np.full((1, 1), 14e3)
    idx = np.zeros(1, np.int64)
    apply_pulses(r, idx, idx, np.array([0.8]), np.array([1e-4]), p.reshape(1, 1, -1), np.zeros(1))
    record_spikes(ring, head, idx, 1.0)
    srdp_decisions(ring, idx, 1.0, 1.0, 20, 5)
    gather_rows(np.array([0, 1], np.int64), idx, idx, np.zeros(1, np.int64))
