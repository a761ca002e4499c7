"""Our AdEx population rebuilt in Brian2, for the agreement test and the scaling benchmark.

    .venv-ref/bin/python tests/reference/brian2_adex.py SPEC.json OUT.json

Runs ONLY in the reference venv (Brian2 2.9 needs numpy < 2.4; spikewire's venv has 2.4 and must never
import Brian2). Data goes in and out as JSON (and an optional .npy trace); nothing is pickled.

SPEC keys (SI units):
    dt, duration                  integration step and timed simulated time [s]
    neurons                       {name: number or list of N}: c_m g_l e_l v_t delta_t a tau_w b v_reset
                                  v_peak t_ref tau_syn i_bias, and optionally v_init (default e_l), exactly
                                  as spikewire's AdExParams / PopulationSettings document them
    n                             population size
    kicks                         [[t, neuron, amp], ...]: I_syn[neuron] += amp at time t (any time: it
                                  acts in Brian2's step containing t, after that step's state update)
    poisson                       optional {"rate": Hz, "weight": A}: independent kicks per neuron
                                  (PoissonInput, also applied after the state update)
    seed                          Brian2's random seed (Poisson drive)
    codegen                       "numpy" (default) or "cython"; cache_dir for Cython's build cache
    warmup                        simulated seconds run (and timed) before the timed run: pays the
                                  compile, so the timed run shows the steady cost
    synapse_decay                 "exact" (default: I_syn *= exp(-dt/tau_syn) after each update, as our
                                  kernel) or "euler" (dI_syn/dt = -I_syn/tau_syn integrated by Euler)
    w_in_refractory               "evolves" (default, as our kernel, Brian2's and NEST's convention) or "frozen"
    record                        optional {"ids": [...], "every": s, "file": "x.npy"}: v and w of those
                                  neurons at every multiple of ``every`` (before that step's update),
                                  saved as an array of shape (2, samples, len(ids))

Everything is passed as spikewire documents it: kick times as given, ``refractory`` = t_ref, spike
times as Brian2 reports them. Nothing is shifted. That is a fair test because spikewire's default
convention (``convention = "brian2"``) is Brian2's own, read from Brian2 2.9's source:
  * Schedule (``core.network.default_schedule``): start, groups, thresholds, synapses, resets, end.
    The state updater runs in ``groups``, so the step at t first integrates from the values at t; the
    threshold is checked on the result; a ``SpikeGeneratorGroup`` spike in that step (it bins times by
    int((t + 1e-3 dt) / dt)) and a ``PoissonInput`` act in ``synapses``, after the update; then reset.
  * A spike carries ``t``, the START of the step whose update crossed v_peak (``lastspike = t``).
  * Refractoriness: the state updater sets ``not_refractory = timestep(t - lastspike, dt) >=
    timestep(refractory, dt)`` and the threshold is ``(v >= v_peak) and not_refractory``; V (``unless
    refractory``) is not integrated while refractory, w is.
Our model choice, not a convention: I_syn is a plain variable multiplied by exp(-dt/tau_syn) right after
the state update (``run_regularly`` at ``after_groups``), as our kernel decays it; Brian2's Euler on
dI/dt would multiply by 1 - dt/tau_syn instead (``synapse_decay = "euler"``). The exponential's argument
is clipped at 30 as in the kernel (inactive while v_peak - v_t < 30 delta_t: V starts every step below
v_peak).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

PARAMS = {  # name -> Brian2 unit name
    "c_m": "farad", "g_l": "siemens", "e_l": "volt", "v_t": "volt", "delta_t": "volt", "a": "siemens",
    "tau_w": "second", "b": "amp", "v_reset": "volt", "v_peak": "volt", "i_bias": "amp",
}


def _per_neuron(spec: dict, name: str, n: int) -> np.ndarray:
    value = np.asarray(spec["neurons"][name], dtype=np.float64)
    if value.ndim and value.shape != (n,):
        raise ValueError(f"neurons.{name}: has {value.shape[0]} values for a population of {n}")
    return np.array(np.broadcast_to(value, n))


def run(spec: dict) -> dict:
    t_import = time.perf_counter()
    import brian2 as b2

    import_s = time.perf_counter() - t_import
    t_build = time.perf_counter()
    b2.prefs.logging.file_log = False
    target = spec.get("codegen", "numpy")
    b2.prefs.codegen.target = target
    if target == "cython":
        if not spec.get("cache_dir"):
            raise ValueError("codegen cython needs cache_dir (never ~/.cython)")
        b2.prefs.codegen.runtime.cython.cache_dir = spec["cache_dir"]
    b2.seed(int(spec.get("seed", 0)))
    b2.defaultclock.dt = spec["dt"] * b2.second
    dt = float(spec["dt"])
    n = int(spec["n"])
    decay = spec.get("synapse_decay", "exact")
    w_flag = {"frozen": " (unless refractory)", "evolves": ""}[spec.get("w_in_refractory", "evolves")]

    syn_eq = {"exact": "I_syn : amp", "euler": "dI_syn/dt = -I_syn / tau_syn : amp"}[decay]
    eqs = f"""
    dv/dt = (-g_l*(v - e_l) + g_l*delta_t*exp(clip((v - v_t)/delta_t, -inf, 30)) - w + I_syn + i_bias) / c_m
        : volt (unless refractory)
    dw/dt = (a*(v - e_l) - w) / tau_w : amp{w_flag}
    {syn_eq}
    syn_decay : 1 (constant)
    tau_syn : second (constant)
    ref : second (constant)
    """ + "\n".join(f"    {p} : {u} (constant)" for p, u in PARAMS.items())
    group = b2.NeuronGroup(n, eqs, threshold="v >= v_peak", reset="v = v_reset\nw += b", refractory="ref",
                           method="euler", name="adex")
    for p, unit in PARAMS.items():
        setattr(group, p, _per_neuron(spec, p, n) * getattr(b2, unit))
    tau_syn_s = _per_neuron(spec, "tau_syn", n)
    group.tau_syn = tau_syn_s * b2.second
    group.syn_decay = np.exp(-dt / tau_syn_s)
    group.ref = _per_neuron(spec, "t_ref", n) * b2.second
    v_init = "v_init" if "v_init" in spec["neurons"] else "e_l"  # spikewire's default: v_init = e_l
    group.v = _per_neuron(spec, v_init, n) * b2.volt
    group.w = 0 * b2.amp
    group.I_syn = 0 * b2.amp
    objects = [group]
    if decay == "exact":
        objects.append(group.run_regularly("I_syn = I_syn * syn_decay", when="after_groups", name="syn_decay"))

    kicks = spec.get("kicks") or []
    if kicks:
        k = np.asarray(kicks, dtype=np.float64).reshape(-1, 3)
        if k[:, 0].min() < 0:
            raise ValueError("kicks: times must be >= 0")
        ids = k[:, 1].astype(np.int64)
        if ids.min() < 0 or ids.max() >= n:
            raise ValueError("kicks: neuron index out of range")
        # one generator neuron per kick, so that kicks may carry different amplitudes
        gen = b2.SpikeGeneratorGroup(len(k), np.arange(len(k)), k[:, 0] * b2.second, name="kicks")
        syn = b2.Synapses(gen, group, "amp_k : amp (constant)", on_pre="I_syn_post += amp_k", name="kick_syn")
        syn.connect(i=np.arange(len(k)), j=ids)
        syn.amp_k = k[:, 2] * b2.amp
        objects += [gen, syn]
    if spec.get("poisson"):
        drive = spec["poisson"]
        objects.append(b2.PoissonInput(group, "I_syn", N=1, rate=drive["rate"] * b2.Hz,
                                       weight=drive["weight"] * b2.amp))
    spikes = b2.SpikeMonitor(group, name="spikes")
    objects.append(spikes)
    record = spec.get("record")
    if record:
        every = round(record["every"] / dt) * dt
        trace = b2.StateMonitor(group, ["v", "w"], record=list(record["ids"]), dt=every * b2.second, name="trace")
        objects.append(trace)
    net = b2.Network(*objects)
    build_s = time.perf_counter() - t_build

    warmup = float(spec.get("warmup", 0.0))
    warmup_s = 0.0
    if warmup > 0:
        t0 = time.perf_counter()
        net.run(warmup * b2.second, namespace={})
        warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    net.run(spec["duration"] * b2.second, namespace={})
    run_s = time.perf_counter() - t0
    loop_s = float(b2.device._last_run_time)

    spike_t = np.asarray(spikes.t / b2.second, dtype=np.float64)
    out = {
        "brian2": b2.__version__, "numpy": np.__version__, "codegen": target, "n": n,
        "spike_t": spike_t.tolist(), "spike_i": np.asarray(spikes.i, dtype=np.int64).tolist(),
        "spike_step": np.round(spike_t / dt).astype(np.int64).tolist(),
        "import_s": import_s, "build_s": build_s, "warmup_s": warmup_s, "run_s": run_s, "loop_s": loop_s,
    }
    if record:
        data = np.stack([np.asarray(trace.v / b2.volt).T, np.asarray(trace.w / b2.amp).T])
        np.save(record["file"], data, allow_pickle=False)
        out["trace_t"] = np.asarray(trace.t / b2.second).tolist()
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with open(args[0]) as f:
        spec = json.load(f)
    out = run(spec)
    with open(args[1], "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
