"""The AdEx population's timing conventions and defaults, as documented in nodes/silicon.py.

The comparison with Brian2 itself is tests/test_adex_vs_brian2.py; these pin the rules that comparison
rests on, with plain numbers, so that a change of convention shows here by name.
"""

from __future__ import annotations

import numpy as np
import pytest

from spikewire.core.settings import SettingsError, parse
from spikewire.nodes.silicon import Population, PopulationSettings, SiliconNode, SiliconSettings
from spikewire.streams.wire import EVENT_DTYPE, Kind

DT = 1e-4
TICK = 1e-3


def node(convention: str | None = None, **pop) -> SiliconNode:
    table = {"dt": DT, "tick": TICK, "populations": {"pop": {"size": 1, "drive": {"kind": "none"}, **pop}}}
    if convention is not None:
        table["convention"] = convention
    return SiliconNode("zurich", parse(SiliconSettings, table, "nodes.zurich"))


def run(n: SiliconNode, ticks: int, inputs=()) -> list[float]:
    """Spike times of neuron 0 over ``ticks`` ticks; ``inputs`` are (t, A) kicks delivered at t."""
    n.start(0.0)
    inputs = sorted(inputs)
    times = []
    for k in range(ticks):
        while inputs and inputs[0][0] < (k + 1) * TICK:
            t, amp = inputs.pop(0)
            ev = np.zeros(1, EVENT_DTYPE)
            ev["t"], ev["id"], ev["value"] = t, 0, amp
            n.on_events("pop.input", Kind.SPIKE, ev, t)
        n.tick(k * TICK, (k + 1) * TICK)
        times += [float(t) for _, ev in n.outbox.pending() for t in ev["t"]]
        n.outbox.clear()
    return times


def test_default_convention_is_brian2():
    assert SiliconSettings().convention == "brian2"
    assert node().pops["pop"].input_first is False


def test_unknown_convention_is_refused_naming_the_key():
    with pytest.raises(SettingsError, match=r"^nodes\.zurich\.convention: must be one of 'brian2', 'nest'"):
        node("neuron")


@pytest.mark.parametrize("convention, held", [
    # t_ref [ms]:   0  0.05 0.1 0.15 0.2 0.25 0.3 0.5 1  2   2.05
    ("brian2",     (0, 0,   0,  0,   1,  1,   2,  4,  9, 19, 19)),  # timestep(t_ref) - 1: int(t/dt + 1e-3)
    ("nest",       (0, 0,   1,  1,   2,  2,   3,  5, 10, 20, 20)),  # round(t_ref / dt): 0.15e-3 / 1e-4 < 1.5
])
def test_held_steps_after_a_spike(convention, held):
    t_refs = (0.0, 0.05e-3, 0.1e-3, 0.15e-3, 0.2e-3, 0.25e-3, 0.3e-3, 0.5e-3, 1e-3, 2e-3, 2.05e-3)
    cfg = parse(PopulationSettings, {"size": len(t_refs), "neuron": {"t_ref": list(t_refs)}}, "pop")
    pop = Population("pop", cfg, 10, DT, np.random.default_rng(0), convention)
    assert pop.refr_steps.tolist() == list(held)


@pytest.mark.parametrize("convention, isi", [("brian2", 2.0e-3), ("nest", 2.1e-3)])
def test_shortest_interval_between_spikes(convention, isi):
    """A cell driven far above threshold fires as soon as refractoriness lets it: every t_ref (2 ms) in
    Brian2's convention, whose refractory period includes the spike's own step; t_ref + dt in NEST's."""
    times = run(node(convention, neuron={"i_bias": 1e-6}), 30)
    assert len(times) > 10
    np.testing.assert_allclose(np.diff(times), isi, rtol=0, atol=1e-12)


@pytest.mark.parametrize("convention", ["brian2", "nest"])
def test_a_kick_that_fires_at_once_is_stamped_at_the_end_of_its_step(convention):
    """Input-to-spike latency is the same in both conventions: a 200 nA kick at 2.34 ms (step [2.3, 2.4)
    ms) fires at 2.4 ms: brian2 applies it after that step and stamps the next step's start; nest applies
    it in that step and stamps its end."""
    assert run(node(convention), 3, [(2.34e-3, 200e-9)]) == [pytest.approx(2.4e-3, abs=1e-12)]


def test_v_init_defaults_to_each_neurons_e_l():
    e_l = (-0.065, -0.07, -0.0706)
    cfg = parse(PopulationSettings, {"size": 3, "neuron": {"e_l": list(e_l)}}, "pop")
    assert cfg.v_init is None
    assert Population("pop", cfg, 10, DT, np.random.default_rng(0)).v.tolist() == list(e_l)


def test_v_init_given_is_used():
    cfg = parse(PopulationSettings, {"size": 2, "v_init": [-0.06, -0.05]}, "pop")
    assert Population("pop", cfg, 10, DT, np.random.default_rng(0)).v.tolist() == [-0.06, -0.05]
    cfg = parse(PopulationSettings, {"size": 2, "v_init": -0.055}, "pop")
    assert Population("pop", cfg, 10, DT, np.random.default_rng(0)).v.tolist() == [-0.055, -0.055]


def test_input_on_a_tick_end_waits_for_the_next_tick_even_across_a_restore():
    """An arrival a float hair before a tick's end belongs to the next tick's first step (as Brian2 bins
    it). The node holds it over; a snapshot taken between the ticks must keep it, since whoever restores
    the snapshot has already delivered it and will not again."""
    n = node()
    n.start(0.0)
    arrival = 3 * TICK - 1e-12  # 0.003 after float arithmetic, as a wall clock could read it
    ev = np.zeros(1, EVENT_DTYPE)
    ev["t"], ev["id"], ev["value"] = arrival, 0, 200e-9
    n.on_events("pop.input", Kind.SPIKE, ev, arrival)
    for k in range(3):
        n.tick(k * TICK, (k + 1) * TICK)
    assert not list(n.outbox.pending()) and len(n.pending) == 1
    snap = n.snapshot()
    n.tick(3 * TICK, 4 * TICK)
    first = [ev["t"].tolist() for _, ev in n.outbox.pending()]
    n.outbox.clear()
    n.restore(snap)
    n.tick(3 * TICK, 4 * TICK)
    again = [ev["t"].tolist() for _, ev in n.outbox.pending()]
    # acts after step [3.0, 3.1) ms, fires in the next one: stamped 3.1 ms
    assert first == again == [[pytest.approx(3.1e-3, abs=1e-12)]]
