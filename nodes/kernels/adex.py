"""Adaptive exponential integrate-and-fire (Brette & Gerstner 2005) population, forward Euler.

    C dV/dt     = -g_L (V - E_L) + g_L D_T exp((V - V_T) / D_T) - w + I_syn + I_bias
    tau_w dw/dt = a (V - E_L) - w
    V >= V_peak:  V <- V_reset,  w <- w + b,  then refractory: V held at V_reset (not integrated, no spike)
                  while w keeps evolving
    I_syn decays exponentially (first-order, DPI-like synapse) with tau_syn; input events add to it.

SI units throughout (V, A, S, F, s). Per-neuron constants are precomputed once into one coefficient
block (``coefficients``): the step then has no division.

Timing conventions. Step k covers [t_k, t_k + dt); its update takes V and w from t_k to t_k + dt with
the I_syn of t_k. ``input_first`` picks one of two conventions; the caller (``nodes/silicon.py``) turns
the convention into spike times and ``refr_steps``:

  brian2 (``input_first=False``, spikewire's default; Brian2's schedule: groups, thresholds, synapses,
  resets). ``syn_in[k]`` is added to I_syn AFTER step k's update (and decay), so it first drives V in
  step k + 1. A spike found after step k's update is stamped t_k, the start of that step (Brian2's
  ``t``, ``lastspike``). Refractoriness counts from that stamp: steps k + 1 .. k + T - 1 are held, with
  T = timestep(t_ref) = int(t_ref / dt + 1e-3) (Brian2's ``timestep(t - lastspike, dt) >=
  timestep(refractory, dt)``), i.e. ``refr_steps`` = max(T - 1, 0); the shortest interval between two
  spikes is T steps (t_ref; one step if t_ref < 2 dt).

  nest (``input_first=True``, spikewire's convention before issue 11; NEST's grid convention, as in its
  aeif models: input delivered at t_k is read from the step starting at t_k, a spike carries the end of
  its step, ``t_ref`` counts held steps after it). ``syn_in[k]`` is added BEFORE step k's update. A
  spike found after step k's update is stamped t_k + dt. ``refr_steps`` = round(t_ref / dt): steps
  k + 1 .. k + refr_steps are held; the shortest interval between two spikes is t_ref + dt.

An input at t that fires a cell at once gives a spike stamped at the end of the step containing t in
both conventions; they differ in what a spike's stamp and t_ref mean relative to the state, which
shows as one step more of refractoriness under nest.

Speed (what bounds a 10,000-neuron tick): the step is branch-free so that LLVM vectorizes it (8 neurons
per instruction with AVX-512, as on the 2-vCPU EPYC VM; 4 with AVX2): refractoriness, spike, reset and
the convention are selects, and the exponential is ``_exp`` below, a polynomial LLVM can vectorize where
``math.exp`` (a libm call; the PyPI llvmlite has no SVML) cannot. Neurons go in blocks of ``BLOCK``
through all the steps of a call, so a block's state, coefficients and input (~30 kB) stay in cache for
the whole tick instead of the population streaming through it once per step; the spikes are then
sorted back into time order. About 2-2.5 ns per neuron-step, against 8.5-9.5 ns for the scalar loop
with ``math.exp``.

Checked against Brian2 2.9 (tests/test_adex_vs_brian2.py) with every parameter and input time passed
as documented: identical spike times and counts, V and w within float rounding at every tick. The
arithmetic of the step is the plain scalar loop's (tests/test_kernels.py), operation for operation; only
``_exp`` differs from libm's exp, by at most 1 ulp (relative error < 1.6e-16).
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Rows of the coefficient block.
INV_CM, GL, EL, VT, INV_DT, GL_DT, A, INV_TAUW, B, VRESET, VPEAK, IBIAS = range(12)

BLOCK = 128  # neurons stepped together through a whole call: their ~30 kB of state, coefficients, input
ARG_MAX = 30.0  # far past threshold the exponential only says "spike now": its argument is clipped here
ARG_MIN = -700.0  # and here (exp(-700) ~ 1e-304: as good as 0 next to any current; keeps 2**k a normal number)
_SPIKED = np.int32(-(2**31))  # refr marker for "spiked in this step" until the block's spikes are collected
_NOT_SPIKED = np.int32(-(2**31) + 1)
_STEP_SHIFT = np.int64(32)  # spike sort key: step << 32 | neuron


def coefficients(c_m, g_l, e_l, v_t, delta_t, a, tau_w, b, v_reset, v_peak, i_bias) -> np.ndarray:
    """The (12, n) coefficient block ``adex_run`` takes, from per-neuron parameter arrays (SI units)."""
    c_m, g_l, delta_t, tau_w = (np.asarray(x, dtype=np.float64) for x in (c_m, g_l, delta_t, tau_w))
    rows = [1.0 / c_m, g_l, e_l, v_t, 1.0 / delta_t, g_l * delta_t, a, 1.0 / tau_w, b, v_reset, v_peak, i_bias]
    n = len(c_m)
    return np.ascontiguousarray(np.stack([np.broadcast_to(np.asarray(r, dtype=np.float64), n) for r in rows]))


# --------------------------------------------------------------------------------------------------
# A vectorizable exp
# --------------------------------------------------------------------------------------------------


@intrinsic
def _muladd(typingctx, x, y, z):
    """x * y + z: one (vectorizable) FMA instruction, one rounding, on any CPU that has FMA, as all x86
    since 2013 do (llvm.fmuladd; llvm.fma would become a slow libm call on a CPU without it)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(d, [d, d, d]), "llvm.fmuladd.f64")
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _as_float64(typingctx, bits):
    """The float64 whose IEEE-754 bit pattern is the int64 ``bits`` (a bitcast: no instruction)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split as in fdlibm: _LN2_HI * k is exact for |k| < 2**11
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5 * 2**52: (y + _ROUND) - _ROUND rounds y to an integer (|y| < 2**51)


@njit(inline="always")
def _exp(x):
    """exp(x) for ARG_MIN <= x <= ARG_MAX, branch-free, within 1 ulp: 0.97 ulp at most against a 200-bit
    reference (relative error < 1.6e-16), correctly rounded 90 % of the time (libm: 99.9 %).

    exp(x) = 2**k exp(r), k = round(x / ln 2), r = x - k ln 2 (Cody-Waite, |r| <= ln 2 / 2); exp(r) - 1
    by its Taylor series to r**13 (truncation < 4e-18), evaluated by Estrin's scheme (short dependency
    chains), and 2**k built from its bits. Rounding by the magic number instead of floor(), and 2**k by
    integer arithmetic on an int64 bit pattern, keep it all in vector instructions (no call, no branch);
    the 2**k stays a normal number because ARG_MIN > -708."""
    kd = _muladd(x, _LOG2E, _ROUND) - _ROUND
    r = _muladd(kd, -_LN2_HI, x)
    r = _muladd(kd, -_LN2_LO, r)
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    # exp(r) - 1 = r + r**2 (1/2! + r/3! + ... + r**11/13!)
    a0 = _muladd(1.0 / 6.0, r, 0.5)
    a1 = _muladd(1.0 / 120.0, r, 1.0 / 24.0)
    a2 = _muladd(1.0 / 5040.0, r, 1.0 / 720.0)
    a3 = _muladd(1.0 / 362880.0, r, 1.0 / 40320.0)
    a4 = _muladd(1.0 / 39916800.0, r, 1.0 / 3628800.0)
    a5 = _muladd(1.0 / 6227020800.0, r, 1.0 / 479001600.0)
    q = _muladd(_muladd(a5, r2, a4), r8, _muladd(_muladd(a3, r2, a2), r4, _muladd(a1, r2, a0)))
    em1 = _muladd(r2, q, r)
    scale = _as_float64((np.int64(kd) + 1023) << 52)
    return _muladd(scale, em1, scale)


# --------------------------------------------------------------------------------------------------
# Spike order: keys step << 32 | neuron, heap-sorted in place in the caller's spike_step buffer
# --------------------------------------------------------------------------------------------------


@njit(cache=True)
def _sift_down(h, root, end):
    """Restore the max-heap property of h[:end] below ``root``."""
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and h[child + 1] > h[child]:
            child += 1
        if h[root] >= h[child]:
            return
        h[root], h[child] = h[child], h[root]
        root = child


@njit(cache=True)
def _heapify(h, m):
    for root in range(m // 2 - 1, -1, -1):
        _sift_down(h, root, m)


@njit(cache=True)
def _sort_heap(h, m):
    """Sort the max-heap h[:m] ascending, in place."""
    for end in range(m - 1, 0, -1):
        h[0], h[end] = h[end], h[0]
        _sift_down(h, 0, end)


# --------------------------------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------------------------------


@njit(cache=True)
def adex_run(v, w, i_syn, refr, coef, refr_steps, syn_decay, syn_in, input_first, dt, spike_step, spike_id):
    """Advance the population ``syn_in.shape[0]`` steps of ``dt``.

    State (updated in place): ``v`` [V], ``w`` [A], ``i_syn`` [A], ``refr`` (int32 held steps left,
    >= 0). ``coef`` is the block from ``coefficients``; ``syn_decay`` is exp(-dt / tau_syn) per neuron
    and ``refr_steps`` the held steps after a spike. ``syn_in[k, i]`` [A] is added to neuron i's synaptic
    current after step k's update (``input_first`` False: Brian2's convention) or before it (True: NEST's);
    see the module docstring. Spikes are written to ``spike_step`` / ``spike_id`` (the step whose update
    crossed v_peak) in time order (by step, then neuron); returns how many occurred (more than the
    buffers hold are counted, and the earliest that fit are written). No allocation.
    """
    n = v.shape[0]
    n_steps = syn_in.shape[0]
    cap = min(spike_step.shape[0], spike_id.shape[0])
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
    kept = 0  # sort keys in spike_step[:kept]; once the buffer is full, a max-heap of the earliest spikes
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        for k in range(n_steps):
            row = syn_in[k]
            fired = 0
            # The vectorized loop. Unsigned index: numba then emits no negative-index wraparound, whose
            # select would keep LLVM from vectorizing. Every neuron takes the same path: what the
            # scalar step would branch on is computed both ways and selected.
            for j in range(lo, hi):
                i = np.uint64(j)
                x = row[i]
                si = i_syn[i] + x if input_first else i_syn[i]
                wi = w[i]
                vi = v[i]
                ri = refr[i]
                held = ri > 0
                arg = min(max((vi - v_t[i]) * inv_dt[i], ARG_MIN), ARG_MAX)
                dv = (-g_l[i] * (vi - e_l[i]) + gl_dt[i] * _exp(arg) - wi + si + i_bias[i]) * inv_cm[i]
                vn = vi + dt * dv
                vr = v_reset[i]
                vu = vr if held else vi  # held: V is V_reset, whatever v[i] held on entry
                wn = wi + dt * (a[i] * (vu - e_l[i]) - wi) * inv_tw[i]
                spike = (~held) & (vn >= v_peak[i])
                v[i] = vr if held | spike else vn
                w[i] = wn + b[i] if spike else wn
                # not refractory and no spike: refr unchanged, but never equal to the marker
                refr[i] = ri - 1 if held else (_SPIKED if spike else max(ri, _NOT_SPIKED))
                i_syn[i] = si * syn_decay[i] if input_first else si * syn_decay[i] + x
                fired += spike
            if fired == 0:
                continue
            for j in range(lo, hi):
                if refr[j] != _SPIKED:
                    continue
                refr[j] = refr_steps[j]
                key = (np.int64(k) << _STEP_SHIFT) | j
                n_spikes += 1
                if kept < cap:
                    spike_step[kept] = key
                    kept += 1
                    if kept == cap:
                        _heapify(spike_step, kept)
                elif cap > 0 and key < spike_step[0]:  # earlier than the latest kept: replace that
                    spike_step[0] = key
                    _sift_down(spike_step, 0, cap)
    if kept < cap:
        _heapify(spike_step, kept)
    _sort_heap(spike_step, kept)
    for j in range(kept):
        key = spike_step[j]
        spike_step[j] = key >> _STEP_SHIFT
        spike_id[j] = key & 0xFFFFFFFF
    return n_spikes


def warm_up() -> None:
    """Compile (or load from cache) and run once, so the first live tick pays no JIT."""
    n = 2
    f = np.ones(n)
    coef = coefficients(f * 281e-12, f * 30e-9, f * -0.0706, f * -0.0504, f * 0.002, f * 4e-9, f * 0.144,
                        f * 0.0805e-9, f * -0.0706, f * -0.0404, f * 0.0)
    for input_first in (False, True):
        adex_run(np.full(n, -0.07), np.zeros(n), np.zeros(n), np.zeros(n, np.int32), coef, np.zeros(n, np.int32),
                 f * 0.98, np.zeros((3, n)), input_first, 1e-4, np.zeros(4, np.int64), np.zeros(4, np.int64))
