"""Acceptance: our AdEx and Brian2 2.9 give the same spikes, with parameters passed exactly as documented.

Brian2 (numpy target, nothing compiles) runs in the reference venv as a subprocess
(tests/reference/brian2_adex.py, JSON in and out). Both sides get the same numbers: every parameter, every
kick time and every refractory period as spikewire documents them. Nothing is shifted on either side, and
spike times are compared as each simulator reports them. This works because spikewire's default
convention is Brian2's (nodes/kernels/adex.py): a spike is stamped with the start of the step whose update
crossed v_peak; an input at time t acts after the update of the step containing t; the refractory period
counts from the spike's stamp.

Two cases, each run through ``SiliconNode.on_events``/``tick`` as the runtime drives it:
* input-driven neurons (``test_input_driven_neurons_match_brian2``): silent default cells (v_init left at
  its default, e_l) driven only by kicks at given times. The times fall on and off the dt grid and on tick
  boundaries; some kicks are strong enough to fire again as soon as the refractory period allows. The
  refractory periods run from 0 to 5 ms, some not multiples of dt. A second population gets a pacemaker
  drive. Spike times must agree to float rounding and spike counts exactly;
* a heterogeneous population (tonic, adapting, initial-burst and regular-bursting cells after Naud et al.
  2008, every parameter jittered per neuron, mixed refractory periods and synaptic time constants) with
  2 s of seeded Poisson kicks, excitatory and inhibitory: the same spike times, and V and w at every tick
  boundary.

If ``.venv-ref`` is missing these tests FAIL (run ``make ref``): a silently skipped reference is no test.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from spikewire.core.settings import parse
from spikewire.nodes.silicon import Population, SiliconNode, SiliconSettings
from spikewire.streams.wire import EVENT_DTYPE, Kind

ROOT = Path(__file__).resolve().parent.parent
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
REF_SCRIPT = Path(__file__).resolve().parent / "reference" / "brian2_adex.py"
BRIAN2_TIMEOUT = 50.0

DT = 1e-4
TICK = 1e-3
STEPS_PER_TICK = 10
DURATION = 2.0
N_TICKS = int(round(DURATION / TICK))
N_STEPS = N_TICKS * STEPS_PER_TICK
TOLERANCE = 1e-9  # float rounding of t_start + k dt against Brian2's k * dt; a step off is 1e-4
SEED = 2017

# Naud, Marcille, Clopath & Gerstner (2008), Table 1: (C, g_L, E_L, V_T, Delta_T, a, tau_w, b, V_reset, I)
REGIMES = {
    "tonic":            (200e-12, 10e-9, -70e-3, -50e-3, 2e-3, 2e-9, 30e-3, 0.0, -58e-3, 500e-12),
    "adapting":         (200e-12, 12e-9, -70e-3, -50e-3, 2e-3, 2e-9, 300e-3, 60e-12, -58e-3, 500e-12),
    "initial_burst":    (130e-12, 18e-9, -58e-3, -50e-3, 2e-3, 4e-9, 150e-3, 120e-12, -50e-3, 400e-12),
    "regular_bursting": (200e-12, 10e-9, -58e-3, -50e-3, 2e-3, 2e-9, 120e-3, 100e-12, -46e-3, 210e-12),
}
PER_REGIME = 10
N = PER_REGIME * len(REGIMES)


def population_params(seed: int) -> dict[str, list[float]]:
    """Per-neuron AdEx parameters (SI): PER_REGIME neurons of each regime, every value jittered."""
    rng = np.random.default_rng(seed)
    names = ("c_m", "g_l", "e_l", "v_t", "delta_t", "a", "tau_w", "b", "v_reset", "i_bias")
    cols = {k: [] for k in names}
    for values in REGIMES.values():
        for k, base in zip(names, values):
            if k in ("e_l", "v_t", "v_reset"):
                cols[k] += list(base + rng.uniform(-1e-3, 1e-3, PER_REGIME))
            else:
                cols[k] += list(base * rng.uniform(0.9, 1.1, PER_REGIME))
    p = {k: np.array(v) for k, v in cols.items()}
    p["v_peak"] = p["v_t"] + rng.choice([5.0, 10.0], N) * p["delta_t"]  # keeps exp()'s argument below 30
    p["t_ref"] = rng.choice([0.0, 0.5e-3, 2e-3], N)
    p["tau_syn"] = rng.uniform(2e-3, 8e-3, N)
    p["v_init"] = p["e_l"] + rng.uniform(-5e-3, 3e-3, N)
    return {k: v.tolist() for k, v in p.items()}


def make_kicks(seed: int, rate: float = 40.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, neuron, amplitude A) of Poisson kicks, excitatory and inhibitory, time-ordered: the kick
    acts at time step * DT in both simulators.

    Amplitudes are float32 values: the wire's event ``value`` is f4, and both simulators must get the
    identical numbers."""
    rng = np.random.default_rng(seed)
    count = rng.poisson(rate * DURATION * N)
    steps = rng.integers(0, N_STEPS, count)
    ids = rng.integers(0, N, count)
    amps = rng.uniform(-0.2e-9, 0.4e-9, count)
    amps[rng.random(count) < 0.05] = 2e-9  # a few kicks that fire a spike almost by themselves
    order = np.argsort(steps, kind="stable")
    return steps[order], ids[order], amps[order].astype(np.float32).astype(np.float64)


def silicon_settings(params: dict[str, list[float]]) -> SiliconSettings:
    neuron = {k: v for k, v in params.items() if k != "v_init"}
    return parse(SiliconSettings, {"dt": DT, "tick": TICK, "seed": 1, "populations": {
        "pop": {"size": N, "neuron": neuron, "v_init": params["v_init"], "drive": {"kind": "none"}}}},
        "nodes.zurich")


# --------------------------------------------------------------------------------------------------
# Brian2, once per case and module, in the reference venv
# --------------------------------------------------------------------------------------------------

_brian2: dict[str, dict] = {}


def run_brian2(name: str, spec: dict, tmp_dir: Path) -> dict:
    """Brian2's output for ``spec`` (cached under ``name``); pytest.fail (never skip) on any problem."""
    cached = _brian2.get(name)
    if cached is not None and "failure" in cached:
        pytest.fail(cached["failure"])
    if cached is not None:
        return cached["result"]

    def fail(reason: str):
        _brian2[name] = {"failure": reason}
        pytest.fail(reason)

    if not REF_PYTHON.exists():
        fail(f"the Brian2 reference venv is missing ({REF_PYTHON}): run `make ref` "
             "(the AdEx acceptance test needs it and is never skipped)")
    spec_file, out_file = tmp_dir / "spec.json", tmp_dir / "out.json"
    spec_file.write_text(json.dumps(spec))
    try:
        proc = subprocess.run([str(REF_PYTHON), str(REF_SCRIPT), str(spec_file), str(out_file)],
                              check=False, capture_output=True, text=True, timeout=BRIAN2_TIMEOUT)
    except subprocess.TimeoutExpired:
        fail(f"Brian2 reference run took longer than {BRIAN2_TIMEOUT} s")
    if proc.returncode != 0:
        fail(f"Brian2 reference run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(out_file.read_text())
    if "record" in spec:
        out["trace"] = np.load(spec["record"]["file"], allow_pickle=False)  # (v|w, sample, neuron)
    _brian2[name] = {"result": out}
    return out


def population_spec(tmp_dir: Path) -> dict:
    steps, ids, amps = make_kicks(SEED + 1)
    return {
        "dt": DT, "duration": DURATION, "n": N, "neurons": population_params(SEED), "codegen": "numpy",
        "kicks": [[s * DT, int(i), a] for s, i, a in zip(steps.tolist(), ids.tolist(), amps.tolist())],
        "record": {"ids": list(range(N)), "every": TICK, "file": str(tmp_dir / "trace.npy")},
    }


@pytest.fixture(scope="module")
def brian2(tmp_path_factory):
    def result():
        tmp = tmp_path_factory.mktemp("brian2")
        return run_brian2("population", population_spec(tmp), tmp)
    return result


# --------------------------------------------------------------------------------------------------
# ours
# --------------------------------------------------------------------------------------------------


def our_kicks_by_tick():
    """The same kicks, grouped by tick and step within it: step s acts at time s * DT, as in Brian2."""
    steps, ids, amps = make_kicks(SEED + 1)
    by_tick: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for step in np.unique(steps):
        sel = steps == step
        by_tick.setdefault(int(step) // STEPS_PER_TICK, []).append((int(step), ids[sel], amps[sel]))
    return by_tick


def run_population():
    """Population stepped tick by tick; (spike times, ids, v and w at every tick boundary)."""
    settings = silicon_settings(population_params(SEED))
    pop = Population("pop", settings.populations["pop"], STEPS_PER_TICK, DT, np.random.default_rng(0))
    pop.start(0.0)
    kicks = our_kicks_by_tick()
    times, idents = [], []
    trace = np.zeros((2, N_TICKS + 1, N))
    trace[0, 0], trace[1, 0] = pop.v, pop.w
    for k in range(N_TICKS):
        for step, ids, amps in kicks.get(k, ()):
            pop.add_input(step % STEPS_PER_TICK, ids.astype(np.intp), amps)
        t, i = pop.step(k * TICK, (k + 1) * TICK)
        times.append(t.copy())
        idents.append(i.copy())
        trace[0, k + 1], trace[1, k + 1] = pop.v, pop.w
    return np.concatenate(times), np.concatenate(idents), trace


def run_node_with_kicks(node: SiliconNode, port: str, kicks: list[tuple[float, int, float]], duration: float):
    """Tick ``node`` over [0, duration); each kick (t, neuron, A) reaches ``port`` through on_events at
    its own time t, right before the tick that contains it. {port name: (spike times, ids)}."""
    node.warm_up()
    node.start(0.0)
    kicks = sorted(kicks)
    fed = 0
    out: dict[str, tuple[list, list]] = {}
    for k in range(int(round(duration / TICK))):
        t_end = (k + 1) * TICK
        while fed < len(kicks) and kicks[fed][0] < t_end:
            t, ident, amp = kicks[fed]
            events = np.zeros(1, EVENT_DTYPE)
            events["t"], events["id"], events["value"] = t, ident, amp
            node.on_events(port, Kind.SPIKE, events, t)
            fed += 1
        node.tick(k * TICK, t_end)
        for p, ev in node.outbox.pending():
            times, ids = out.setdefault(p, ([], []))
            times.append(ev["t"].copy())
            ids.append(ev["id"].astype(np.int64))
        node.outbox.clear()
    return {p: (np.concatenate(t), np.concatenate(i)) for p, (t, i) in out.items()}


def run_node():
    """SiliconNode fed through on_events, each kick at its time; (spike times, ids) from its outbox."""
    node = SiliconNode("zurich", silicon_settings(population_params(SEED)))
    steps, ids, amps = make_kicks(SEED + 1)
    kicks = [(s * DT, i, a) for s, i, a in zip(steps.tolist(), ids.tolist(), amps.tolist())]
    return run_node_with_kicks(node, "pop.input", kicks, DURATION)["pop.spikes"]


# --------------------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------------------


def compare_trains(ours_t, ours_i, ref_t, ref_i, n_neurons: int = N) -> tuple[list[str], float, int]:
    """Neuron by neuron: same count and every spike within TOLERANCE. (problems, max |dt| s, spikes)."""
    problems, worst, total = [], 0.0, 0
    for n in range(n_neurons):
        a = np.sort(ours_t[ours_i == n])
        b = np.sort(ref_t[ref_i == n])
        total += len(b)
        if len(a) != len(b):
            first = next((j for j in range(min(len(a), len(b))) if abs(a[j] - b[j]) > TOLERANCE),
                         min(len(a), len(b)))
            problems.append(f"neuron {n}: {len(a)} spikes here, {len(b)} in Brian2; trains part at "
                            f"spike {first}: ours {a[first:first + 3].round(5).tolist()} vs "
                            f"Brian2 {b[first:first + 3].round(5).tolist()}")
            continue
        if len(a):
            dev = np.abs(a - b)
            worst = max(worst, float(dev.max()))
            if dev.max() > TOLERANCE:
                j = int(dev.argmax())
                problems.append(f"neuron {n}: spike {j} at {a[j]:.5f} s here vs {b[j]:.5f} s in Brian2")
    return problems, worst, total


def assert_same_trains(label, ours_t, ours_i, ref, n_neurons: int = N) -> float:
    ref_t, ref_i = np.asarray(ref["spike_t"]), np.asarray(ref["spike_i"])
    problems, worst, total = compare_trains(ours_t, ours_i, ref_t, ref_i, n_neurons)
    print(f"\n{label}: {total} Brian2 spikes, {len(ours_t)} ours, max |deviation| {worst * 1e3:.3g} ms")
    assert not problems, f"{label} differs from Brian2 ({len(problems)} neurons):\n" + "\n".join(problems[:10])
    return worst


# --------------------------------------------------------------------------------------------------
# Input-driven neurons: kicks at given times, refractory periods around dt
# --------------------------------------------------------------------------------------------------

IN_DURATION = 0.5
# 0.05 and 0.15 ms are not multiples of dt; 0.25 ms is where rounding and Brian2's timestep() part
T_REFS = (0.0, 0.05e-3, 0.1e-3, 0.15e-3, 0.2e-3, 0.25e-3, 0.3e-3, 0.5e-3, 1e-3, 2e-3, 5e-3)
PACE_RATE, PACE_START, PACE_WEIGHT = 70.0, 0.0123, 5e-9  # period 14.29 ms: kicks mostly off the grid


def input_driven_kicks(seed: int) -> list[tuple[float, int, float]]:
    """(t s, neuron, A) for the kicked population: isolated kicks of 1-8 nA (4 nA fires a resting cell
    once) at times on the 0.01 ms grid (a tenth of them on a step, some on a tick boundary), and bursts
    of 30 nA kicks every 0.3-0.7 ms, which fire the cell again as soon as its refractory period ends."""
    rng = np.random.default_rng(seed)
    kicks = []
    for n in range(len(T_REFS)):
        for t in np.round(rng.uniform(0.0, IN_DURATION, 25), 5):
            kicks.append((float(t), n, float(rng.choice([1e-9, 2e-9, 4e-9, 8e-9]))))
        kicks += [(round(0.1 * j + 0.05 + 1e-3 * n, 3), n, 4e-9) for j in range(4)]  # tick boundaries
        for start in rng.uniform(0.02, IN_DURATION - 0.03, 3):
            t = round(float(start), 4)  # bursts start on a step
            for _ in range(12):
                kicks.append((t, n, 30e-9))
                t = round(t + float(rng.choice([0.3e-3, 0.45e-3, 0.7e-3])), 5)
    return [(t, n, float(np.float32(a))) for t, n, a in kicks]


def input_driven_settings() -> SiliconSettings:
    """Both populations: documented defaults (v_init too) except t_ref, no bias, nothing shifted."""
    pops = {name: {"size": len(T_REFS), "neuron": {"t_ref": list(T_REFS)}, "drive": drive}
            for name, drive in (("kicked", {"kind": "none"}),
                                ("paced", {"kind": "pacemaker", "rate": PACE_RATE, "start": PACE_START,
                                           "weight": PACE_WEIGHT}))}
    return parse(SiliconSettings, {"dt": DT, "tick": TICK, "populations": pops}, "nodes.zurich")


def input_driven_spec() -> dict:
    """The same network for Brian2: one group, kicked cells 0..m-1, paced cells m..2m-1; every value
    is AdExParams' documented default or the number our settings got, and v_init is left out (e_l)."""
    from spikewire.nodes.silicon import AdExParams

    m = len(T_REFS)
    neuron = {k: v for k, v in dataclasses.asdict(AdExParams()).items()}
    neuron["t_ref"] = list(T_REFS) * 2
    kicks = [[t, n, a] for t, n, a in input_driven_kicks(SEED)]
    j = 0
    while PACE_START + j / PACE_RATE < IN_DURATION:  # the pacemaker's documented times
        kicks += [[PACE_START + j / PACE_RATE, m + n, PACE_WEIGHT] for n in range(m)]
        j += 1
    return {"dt": DT, "duration": IN_DURATION, "n": 2 * m, "neurons": neuron, "codegen": "numpy",
            "kicks": kicks}


def test_input_driven_neurons_match_brian2(tmp_path):
    """Issue 11.10's acceptance: parameters, kick times and refractory periods passed to Brian2 exactly as
    documented; every spike at the same time (to float rounding) and the same count, cell by cell."""
    ref = run_brian2("input_driven", input_driven_spec(), tmp_path)
    m = len(T_REFS)
    node = SiliconNode("zurich", input_driven_settings())
    out = run_node_with_kicks(node, "kicked.input", input_driven_kicks(SEED), IN_DURATION)
    ref_t, ref_i = np.asarray(ref["spike_t"]), np.asarray(ref["spike_i"])
    counts = np.bincount(ref_i, minlength=2 * m)
    assert (counts[:m] > 20).all() and (counts[m:] > 20).all(), f"the case should fire: {counts.tolist()}"
    # refractoriness matters: the bursts fire the cells with t_ref <= dt more often than those with 5 ms
    assert counts[0] > counts[m - 1] + 20, counts.tolist()
    kicked = {"spike_t": ref_t[ref_i < m].tolist(), "spike_i": ref_i[ref_i < m].tolist()}
    paced = {"spike_t": ref_t[ref_i >= m].tolist(), "spike_i": (ref_i[ref_i >= m] - m).tolist()}
    assert_same_trains("kicked", *out["kicked.spikes"], kicked, m)
    assert_same_trains("paced", *out["paced.spikes"], paced, m)


# --------------------------------------------------------------------------------------------------
# The heterogeneous population
# --------------------------------------------------------------------------------------------------


def test_case_covers_the_regimes():
    """Guards the case itself: every regime fires, bursting cells burst, adapting cells adapt."""
    t, i, _ = run_population()
    counts = np.bincount(i, minlength=N)
    assert (counts > 5).all(), f"some neurons barely fire: {counts.tolist()}"
    isi_cv = []
    for n in range(N):
        isi = np.diff(np.sort(t[i == n]))
        isi_cv.append(isi.std() / isi.mean())
    cv = np.array(isi_cv).reshape(len(REGIMES), PER_REGIME).mean(axis=1)
    regimes = dict(zip(REGIMES, cv))
    # bursts make the inter-spike intervals bimodal: a far larger spread than in tonic firing
    assert regimes["regular_bursting"] > 2 * regimes["tonic"], regimes


def test_population_spike_times_match_brian2(brian2):
    """Through Population (the object the node steps) tick by tick."""
    ref = brian2()
    t, i, _ = run_population()
    assert len(ref["spike_t"]) > 20 * N, "the case should make the population fire"
    worst = assert_same_trains("Population", t, i, ref)
    assert worst <= TOLERANCE


def test_silicon_node_tick_matches_brian2(brian2):
    """The same through SiliconNode.on_events + tick + outbox, as the runtime drives it."""
    ref = brian2()
    t, i = run_node()
    assert_same_trains("SiliconNode", t, i, ref)
    pt, pi, _ = run_population()
    assert np.array_equal(t, pt) and np.array_equal(i, pi), "node and Population disagree on identical input"


def test_traces_match_brian2_step_for_step(brian2):
    """V and w at every tick boundary: catches an off-by-one step (kick, refractory, decay) that spike
    times alone could let through."""
    ref = brian2()
    _, _, ours = run_population()
    theirs = ref["trace"]
    assert theirs.shape == (2, N_TICKS, N), theirs.shape  # samples at 0, 1, ..., 1999 ms
    dv = np.abs(ours[0, :N_TICKS] - theirs[0])
    dw = np.abs(ours[1, :N_TICKS] - theirs[1])
    print(f"\ntrace: max |dV| {dv.max():.3g} V, max |dw| {dw.max():.3g} A")
    bad = np.argwhere(dv > 1e-6)
    assert not len(bad), (f"V differs by more than 1 uV at {len(bad)} samples; first at "
                          f"t={bad[0][0] * TICK:.3f} s, neuron {bad[0][1]}: ours {ours[0, bad[0][0], bad[0][1]]:.6g}"
                          f" V, Brian2 {theirs[0, bad[0][0], bad[0][1]]:.6g} V")
    assert dw.max() < 1e-15, f"w differs by up to {dw.max():.3g} A"


# --------------------------------------------------------------------------------------------------
# Events exactly on the dt grid. Brian2 puts an event at time t into the step that starts at t; a plain
# int((t - t_start) / dt) would put many grid times one step early after float rounding, e.g.
# int((0.0013 - 0.001) / 1e-4) == 2. SiliconNode.tick and Drive.fill add a tolerance first, as Brian2's
# timestep() adds 1e-3 * dt.
# --------------------------------------------------------------------------------------------------


def test_pacemaker_kicks_exactly_every_period():
    """A 50 Hz pacemaker from t = 0 kicks at steps 0, 200, 400, ...: every interval is 200 steps."""
    from spikewire.nodes.silicon import Drive, DriveSettings

    drive = Drive(parse(DriveSettings, {"kind": "pacemaker", "rate": 50.0, "weight": 1.0}, "drive"), 1, DT,
                  np.random.default_rng(0))
    drive.start(0.0)
    steps = []
    for k in range(N_TICKS):
        syn_in = np.zeros((STEPS_PER_TICK, 1))
        drive.fill(syn_in, k * TICK, (k + 1) * TICK)
        steps += [k * STEPS_PER_TICK + int(s) for s in np.flatnonzero(syn_in[:, 0])]
    intervals = np.diff(steps)
    early = [s for s, exact in zip(steps, range(0, N_STEPS, 200)) if s != exact]
    assert (intervals == 200).all(), (f"{len(early)} of {len(steps)} kicks are off their step, e.g. at steps "
                                      f"{early[:5]}; intervals seen: {sorted(set(intervals.tolist()))}")


def test_input_arriving_on_a_step_boundary_lands_in_that_step():
    """A kick arriving at exactly 1.3 ms lands in the step [1.3, 1.4) ms and acts after its update; the
    cell crosses v_peak in the next step's update, so its spike is stamped with that step's start, 1.4 ms
    (in the "nest" convention it would act in [1.3, 1.4) and be stamped with that step's end: 1.4 ms too)."""
    node = SiliconNode("zurich", parse(SiliconSettings, {"dt": DT, "tick": TICK, "populations": {
        "pop": {"size": 1, "drive": {"kind": "none"}}}}, "nodes.zurich"))
    node.start(0.0)
    node.tick(0.0, TICK)
    arrival = 0.0013
    events = np.zeros(1, EVENT_DTYPE)
    events["t"], events["id"], events["value"] = arrival, 0, 200e-9  # fires within the step it acts in
    node.on_events("pop.input", Kind.SPIKE, events, arrival)
    node.tick(TICK, 2 * TICK)
    spikes = [ev["t"].tolist() for _, ev in node.outbox.pending()]
    assert spikes == [[pytest.approx(0.0014, abs=1e-9)]], f"spike stamped {spikes} s, expected 0.0014 s"
