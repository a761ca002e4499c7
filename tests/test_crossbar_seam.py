"""The Crossbar seam (nodes/crossbar.py) and the plasticity rules beside it (nodes/plasticity.py), without
sockets: a second device model through the entry-point group, the TiOx model as one implementation that
builds exactly the crossbar it always did, an instrument-like crossbar that keeps its own state, and the
rules deciding pulses with no device at all."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pytest

from spikewire.core.settings import Settings, SettingsError, parse, positive, setting
from spikewire.nodes import crossbar as cb
from spikewire.nodes.crossbar import Crossbar, CrossbarSpec, ModelCrossbar
from spikewire.nodes.kernels import memristor as mk
from spikewire.nodes.memristor import MemristorNode, MemristorSettings
from spikewire.nodes.plasticity import PlasticitySettings, Pulse, Srdp, Stdp
from spikewire.nodes.tiox import TiOxCrossbar
from spikewire.streams.wire import EVENT_DTYPE, Kind


# --- a second device model, as a package outside spikewire would write it -----------------------------
@dataclass(frozen=True)
class LinearParams(Settings):
    rate: float = setting(2e7, "Ohm per volt-second.", check=positive)


class LinearCrossbar(ModelCrossbar):
    model = "linear"
    Params = LinearParams

    def __init__(self, spec: CrossbarSpec):
        super().__init__(spec)
        self.rate = spec.params.rate

    def pulse(self, wl, bl, voltage, width):
        r = min(max(self.r.item(wl, bl) - self.rate * voltage * width, self.r_min), self.r_max)
        self.r[wl, bl] = r
        return r


class TwinInstrument(Crossbar):
    """A crossbar whose devices keep their own state (an instrument's digital twin)."""

    model = "twin"
    persistent = False
    reads = 0

    def read(self, wl, bl):
        return self.r.item(wl, bl)

    def pulse(self, wl, bl, voltage, width):
        return self.r.item(wl, bl)

    def read_all(self):
        TwinInstrument.reads += 1
        self.r[:] = 12e3
        return self.r.copy()


@pytest.fixture
def installed(monkeypatch):
    """LinearCrossbar and TwinInstrument installed through the spikewire.crossbars entry-point group."""
    eps = [metadata.EntryPoint(name, f"test_crossbar_seam:{cls}", cb.ENTRY_POINT_GROUP)
           for name, cls in (("linear", "LinearCrossbar"), ("twin", "TwinInstrument"))]
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: eps if kw.get("group") == cb.ENTRY_POINT_GROUP else real(**kw))
    cb.REGISTRY.forget()
    yield
    cb.REGISTRY.forget()  # the next test loads the real ones again


def ev(*rows) -> np.ndarray:
    out = np.zeros(len(rows), EVENT_DTYPE)
    for i, (t, ident, value) in enumerate(rows):
        out[i] = (t, ident, value)
    return out


def node(device: dict | None = None, rule: str = "stdp", **extra) -> MemristorNode:
    table = {"kind": "memristor", "rows": 1, "cols": 2, "r_init": 14e3,
             "synapses": {"mr": {"table": [[0, 0, 0, 0], [0, 1, 0, 1]], "out_min": 0.0, "out_max": 1.0,
                                 "plasticity": {"rule": rule}}}, **extra}
    if device is not None:
        table["device"] = device
    return MemristorNode("southampton", parse(MemristorSettings, table, "nodes.southampton"))


def outputs(n: MemristorNode) -> list[tuple[int, float]]:
    out = [(int(e["id"]), float(e["value"])) for _, evs in n.outbox.pending() for e in evs]
    n.outbox.clear()
    return out


def test_the_default_model_is_tiox():
    assert cb.crossbar_class("tiox") is TiOxCrossbar
    assert isinstance(node().crossbar, TiOxCrossbar)


def test_an_unknown_model_is_refused_naming_the_key_and_the_installed_ones():
    with pytest.raises(SettingsError, match=r"^nodes\.southampton\.device\.model: must be one of .*'tiox'.* "
                                            r"\(installed crossbar models\), got 'no-such-model'$"):
        node({"model": "no-such-model"})


def test_a_model_from_an_installed_package_drives_the_node(installed):
    n = node({"model": "linear", "params": {"rate": 2e7}, "r_min": 10e3, "r_max": 17e3})
    assert isinstance(n.crossbar, LinearCrossbar) and n.crossbar.rate == 2e7
    n.start(0.0)
    n.on_events("mr.pre", Kind.SPIKE, ev((1.0, 0, 1.0)), 1.0)
    n.on_events("mr.post", Kind.SPIKE, ev((1.01, 0, 1.0)), 1.01)  # STDP: one LTP pulse, 0.8 V x 100 us
    assert n.r[0, 0] == pytest.approx(14e3 - 2e7 * 0.8 * 100e-6) and n.r[0, 1] == 14e3
    outputs(n)
    n.on_events("mr.pre", Kind.SPIKE, ev((1.02, 0, 1.0)), 1.02)  # pre 10 ms after post: LTD on row 0
    assert n.r[0, 0] == pytest.approx(14e3 - 2e7 * 0.8e-4 + 2e7 * 0.9e-4)
    # the outputs follow the device as the seam reports it
    g = [(1 / r - 1 / 17e3) / (1 / 10e3 - 1 / 17e3) for r in (n.r[0, 0], 14e3)]
    assert outputs(n) == [(0, pytest.approx(g[0], rel=1e-6)), (1, pytest.approx(g[1], rel=1e-6))]
    f = n.figures(2.0)
    assert (f.devices["mr[0->0]"].ltp, f.devices["mr[0->0]"].ltd) == (1, 1)
    assert f.devices["mr[0->0]"].r == n.r[0, 0]
    assert [e["direction"] for e in n.take_log()] == ["ltp", "ltd"]


@pytest.mark.parametrize("device, key, reason", [
    ({"model": "linear", "params": {"rate": -1.0}}, "device.params.rate", "must be > 0"),
    ({"model": "linear", "params": {"speed": 1.0}}, "device.params.speed", "unknown key"),
    ({"model": "linear", "a_p": -1e-4}, "device.a_p", "is a parameter of the tiox model"),
    ({"model": "tiox", "params": {"rate": 1.0}}, "device.params", "device.a0 .. device.t_n"),
    ({"model": "twin", "params": {"rate": 1.0}}, "device.params", "takes no parameters"),
    ({"instrument": "TCPIP::10.0.0.7::INSTR"}, "device.instrument", "the tiox model is simulated"),
])
def test_model_parameters_are_checked_at_load(installed, device, key, reason):
    with pytest.raises(SettingsError, match=rf"^nodes\.southampton\.{key}: .*{reason}"):
        node(device)


def test_a_crossbar_that_keeps_its_own_state_is_read_at_start_never_restored(installed, tmp_path):
    n = node({"model": "twin", "instrument": "TCPIP::10.0.0.7::INSTR"})
    assert n.crossbar.spec.instrument == "TCPIP::10.0.0.7::INSTR"
    n.context = {"network": "net", "network_dir": str(tmp_path)}
    before = TwinInstrument.reads
    n.load_state()
    assert TwinInstrument.reads == before  # not open yet: the node process warms up after loading state
    n.warm_up()
    assert TwinInstrument.reads == before + 1
    assert n.start_state["source"] == "device" and n.state_path is None
    assert (n.r_start == 12e3).all() and n.figures(0.0).devices["mr[0->0]"].r_start == 12e3
    n.close()
    assert not any(tmp_path.iterdir())  # no state file, no lock


def test_tiox_builds_the_crossbar_it_always_did():
    """Spread and seed give the same per-device rates and initial resistances as before the seam: the rates'
    spread (a_p, then a_n) drawn first, the resistances' second, read noise from the same generator."""
    spec = CrossbarSpec(node="n", rows=3, cols=4, r_init=14e3, r_min=10e3, r_max=17e3, spread=0.2,
                        read_noise=0.05, seed=7, params=parse(MemristorSettings, {"kind": "memristor", "synapses": {
                            "mr": {}}}, "n").device)
    x = TiOxCrossbar(spec)
    rng = np.random.default_rng(7)
    base = spec.params.as_array()
    params = np.broadcast_to(base, (3, 4, len(base))).copy()
    for idx in (mk.AP, mk.AN):
        params[:, :, idx] *= np.clip(1 + 0.2 * rng.standard_normal((3, 4)), 0.1, None)
    r = np.clip(np.full((3, 4), 14e3) * (1 + 0.2 * rng.standard_normal((3, 4))), 10e3, 17e3)
    np.testing.assert_array_equal(x.params, params)
    np.testing.assert_array_equal(x.r, r)
    assert x.read(1, 2) == r[1, 2] * (1.0 + 0.05 * rng.standard_normal())
    assert x.pulse(1, 2, 0.8, 1e-4) == mk.apply_pulse(r[1, 2], 0.8, 1e-4, params[1, 2]) == x.r[1, 2]


# --- rules decide, with no device -----------------------------------------------------------------------
def test_srdp_decides_from_counts_and_waits_one_window():
    rule = Srdp(PlasticitySettings(), n_pre=1, n_post=1)
    rule.start(100.0)
    for k in range(25):
        rule.pre(0, 100.2 + k * 0.01)
    assert rule.on_post(0, 0, 100.5) is None and rule.warming == 1  # less than one window of history
    assert rule.on_post(0, 0, 101.1) == Pulse("ltp", 0.8, 100e-6)
    assert rule.on_post(0, 0, 103.0) == Pulse("ltd", -0.9, 100e-6)  # all 25 are > 1 s old


def test_stdp_pairs_nearest_neighbours():
    rule = Stdp(PlasticitySettings(rule="stdp", ltp_voltage=1.0, ltd_width=5e-5), n_pre=1, n_post=2)
    assert Stdp.acts_on_pre and not Srdp.acts_on_pre
    rule.pre(0, 1.0)
    assert rule.on_post(0, 0, 1.05) == Pulse("ltp", 1.0, 100e-6)
    assert rule.on_post(0, 0, 1.2) is None  # beyond ltp_window
    rule.post(1, 2.0)
    assert rule.on_pre(0, 1, 2.03) == Pulse("ltd", -0.9, 5e-5)
    assert rule.on_pre(0, 0, 2.03) is None  # post 0 fired long ago
