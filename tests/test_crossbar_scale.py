"""Crossbars beyond toy size: connectivity by rule, and the memristor node's array event path.

The array path (a packet's events and the rows they touch gathered, decided, pulsed and read at once) must
answer exactly as the per-row path does: same outputs in the same order, same pulses, same resistances,
same read-noise draws. The rules' batched forms must decide as their per-row hooks do.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from spikewire.config.network import NetworkError, build_network, load_network
from spikewire.core.settings import SettingsError, parse
from spikewire.nodes import memristor as mem
from spikewire.nodes.memristor import MemristorNode, MemristorSettings
from spikewire.nodes.plasticity import Rule
from spikewire.streams.wire import EVENT_DTYPE, Kind

from conftest import ROOT

NET_100x10 = ROOT / "launch" / "networks" / "crossbar_100x10.toml"


def crossbar(rule: str, pre: int = 100, post: int = 10, **extra) -> dict:
    return {"kind": "memristor", "rows": pre, "cols": post, "read_noise": 0.02, "spread": 0.1, "seed": 4,
            "synapses": {"s": {"connect": "all_to_all", "pre": pre, "post": post, "out_min": 0.0, "out_max": 1e-9,
                               "plasticity": {"rule": rule, "window": 0.05, "ltp_above": 1, "ltd_below": 1}}},
            **extra}


def node(table: dict) -> MemristorNode:
    n = MemristorNode("xb", parse(MemristorSettings, table, "nodes.xb"))
    n.warm_up()
    n.start(0.0)
    return n


def packet(ids) -> np.ndarray:
    e = np.zeros(len(ids), EVENT_DTYPE)
    e["id"] = ids
    e["value"] = 1.0
    return e


def drive(n: MemristorNode, seed: int = 1, steps: int = 400) -> list:
    """Random packets into pre and post (distinct and repeated ids, unknown ids); what came out."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(steps):
        now = 0.002 * k
        if rng.random() < 0.25:
            n.on_events("s.post", Kind.SPIKE, packet(rng.integers(0, 11, rng.integers(1, 3))), now)
        else:
            size = int(rng.integers(1, 6))
            ids = rng.integers(0, 101, size) if rng.random() < 0.3 else rng.choice(100, size, replace=False)
            n.on_events("s.pre", Kind.SPIKE, packet(ids), now)
        for port, events in n.outbox.pending():
            out += [(port, float(e["t"]), int(e["id"]), float(e["value"])) for e in events]
        n.outbox.clear()
    return out


def state(n: MemristorNode) -> tuple:
    g = n.groups["s"]
    return n.r.copy(), g.ltp.copy(), g.ltd.copy(), dict(n.rejected), n.take_log()


def per_row(n: MemristorNode) -> MemristorNode:
    """The node answering every packet event by event through the per-row hooks (the scalar path and the
    rules' per-row defaults), the reference the array path must equal."""
    group = n.groups["s"]
    rule = group.rule
    for name in ("pre_many", "decide_pre", "decide_post"):
        setattr(rule, name, functools.partial(getattr(Rule, name), rule))
    table = group.cfg.rows.tolist()
    by_pre: dict = {}
    for i, (pre, post, wl, bl) in enumerate(table):
        by_pre.setdefault(pre, []).append((i, post, wl, bl))
    group.by_pre = {k: tuple(v) for k, v in by_pre.items()}
    on_pre = n._on_pre

    def one_by_one(group, events, now):
        for e in events:
            rows = group.by_pre.get(int(e["id"]))
            if rows is None:
                on_pre(group, np.array([e]), now)  # counts the unknown id
            else:
                n._on_pre_scalar(group, int(e["id"]), rows, now)
    n._on_pre = one_by_one
    return n


@pytest.mark.parametrize("rule", ["stdp", "srdp", "none"])
def test_the_array_path_answers_as_row_by_row_does(rule):
    fast, slow = node(crossbar(rule)), per_row(node(crossbar(rule)))
    fast.groups["s"].by_pre = {}  # every packet through the array path, a lone spike's too
    out_fast, out_slow = drive(fast), drive(slow)
    assert len(out_fast) > 1000 and out_fast == out_slow
    for a, b in zip(state(fast), state(slow)):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b
    if rule != "none":
        assert fast.groups["s"].ltp.sum() + fast.groups["s"].ltd.sum() > 50


def test_a_small_fanout_keeps_the_plain_python_path_and_it_agrees_too():
    table = crossbar("stdp", pre=20, post=4)
    small = node(table)
    assert small.groups["s"].by_pre and max(map(len, small.groups["s"].by_pre.values())) <= mem.SCALAR_ROWS
    big = node(table)
    big.groups["s"].by_pre = {}  # every packet through the array path
    assert drive(small, steps=200) == drive(big, steps=200)
    np.testing.assert_array_equal(small.r, big.r)


def test_held_pulses_are_counted_not_applied_on_the_array_path():
    n = node(crossbar("stdp"))
    n.held = True
    n.on_events("s.pre", Kind.SPIKE, packet(np.arange(100)), 1.0)
    n.on_events("s.post", Kind.SPIKE, packet([3]), 1.01)  # all 100 rows of post 3 would potentiate
    assert n.held_pulses == 100 and n.groups["s"].ltp.sum() == 0 and not n.take_log()


# --- connectivity by rule -------------------------------------------------------------------------
def synapses(**s) -> dict:
    return {"kind": "memristor", "rows": 8, "cols": 8, "synapses": {"s": s}}


def rows_of(**s) -> np.ndarray:
    return parse(MemristorSettings, synapses(**s), "nodes.xb").synapses["s"].rows


def test_rules_expand_to_the_devices_they_say():
    np.testing.assert_array_equal(rows_of(connect="one_to_one", pre=3, wordline=2, bitline=1),
                                  [[0, 0, 2, 1], [1, 1, 3, 2], [2, 2, 4, 3]])
    a2a = rows_of(connect="all_to_all", pre=3, post=2)
    assert a2a.tolist() == [[0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0], [1, 1, 1, 1], [2, 0, 2, 0], [2, 1, 2, 1]]
    r1 = rows_of(connect="random", pre=8, post=8, p=0.3, seed=5)
    assert r1.tolist() == rows_of(connect="random", pre=8, post=8, p=0.3, seed=5).tolist()  # seeded
    assert r1.tolist() != rows_of(connect="random", pre=8, post=8, p=0.3, seed=6).tolist()
    assert 5 < len(r1) < 35
    s = parse(MemristorSettings, synapses(connect="all_to_all", pre=5, post=3), "nodes.xb")
    ins, outs = MemristorNode.ports(s)
    assert ins["s.pre"].size == 5 and ins["s.post"].size == 3 and outs["s.out"].size == 3


def test_a_random_rule_declares_its_full_sizes_even_where_an_id_drew_no_device():
    s = parse(MemristorSettings, synapses(connect="random", pre=8, post=8, p=0.05, seed=1), "nodes.xb")
    ins, outs = MemristorNode.ports(s)
    assert ins["s.pre"].size == 8 and outs["s.out"].size == 8
    n = MemristorNode("xb", s)
    missing = sorted(set(range(8)) - set(s.synapses["s"].rows[:, 0].tolist()))
    n.on_events("s.pre", Kind.SPIKE, packet([missing[0]]), 0.0)
    assert n.rejected == {"unknown_id": 1}


@pytest.mark.parametrize("s, key, words", [
    (dict(connect="all_to_all", pre=3, post=2, table=[[0, 0, 0, 0], [1, 1, 1, 1]]), "nodes.xb.synapses.s.table",
     "either"),
    (dict(connect="all_to_all", post=2), "nodes.xb.synapses.s.pre", "must be >= 1"),
    (dict(connect="all_to_all", pre=2), "nodes.xb.synapses.s.post", "must be >= 1"),
    (dict(connect="one_to_one", pre=3, post=2), "nodes.xb.synapses.s.post", "equal pre"),
    (dict(connect="random", pre=3, post=3, p=0.0), "nodes.xb.synapses.s.p", "> 0"),
    (dict(connect="file"), "nodes.xb.synapses.s.file", "required"),
    (dict(pre=4), "nodes.xb.synapses.s.pre", "connect rule"),
    (dict(connect="all_to_all", pre=3, post=2, file="m.npy"), "nodes.xb.synapses.s.file", "only with"),
    (dict(connect="all_to_all", pre=9, post=2), "nodes.xb.synapses.s.wordline", "outside the 8x8 crossbar"),
    (dict(connect="all_to_all", pre=300, post=300), "nodes.xb.synapses.s.pre", "at most 65,536"),
    (dict(connect="banana", pre=2, post=2), "nodes.xb.synapses.s.connect", "one_to_one"),
])
def test_a_bad_rule_is_refused_naming_its_key(s, key, words):
    with pytest.raises(SettingsError) as e:
        parse(MemristorSettings, synapses(**s), "nodes.xb")
    assert e.value.key == key and words in e.value.reason, (e.value.key, e.value.reason)


def test_two_groups_on_one_device_are_refused_naming_the_rule():
    table = {"kind": "memristor", "rows": 4, "cols": 4,
             "synapses": {"a": {"connect": "one_to_one", "pre": 4},
                          "b": {"connect": "all_to_all", "pre": 1, "post": 1, "wordline": 2, "bitline": 2}}}
    with pytest.raises(SettingsError) as e:
        parse(MemristorSettings, table, "nodes.xb")
    assert e.value.key == "nodes.xb.synapses.b.wordline" and "already used by synapse 'a'" in e.value.reason


def file_network(tmp_path, name: str, **syn) -> dict:
    return {"network": {"name": "f"},
            "nodes": {"xb": {"kind": "memristor", "rows": 4, "cols": 3,
                             "synapses": {"s": {"connect": "file", "file": name, **syn}}}}}


def test_a_mask_file_connects_its_nonzero_entries(tmp_path):
    mask = np.array([[1, 0, 0], [0, 0.5, 0], [0, 0, 0], [1, 1, 1]])
    np.save(tmp_path / "m.npy", mask)
    (tmp_path / "m.csv").write_text("# pre rows x post columns\n1,0,0\n0,0.5,0\n0,0,0\n1,1,1\n")
    (tmp_path / "m.txt").write_text("1 0 0\n0 0.5 0\n0 0 0\n1 1 1\n")
    for name in ("m.npy", "m.csv", "m.txt"):
        net = build_network(file_network(tmp_path, name), path=tmp_path / "net.toml")
        spec = net.nodes["xb"]
        assert spec.settings.synapses["s"].rows[:, :2].tolist() == [[0, 0], [1, 1], [3, 0], [3, 1], [3, 2]]
        assert spec.inputs["s.pre"].size == 4 and spec.outputs["s.out"].size == 3
        assert len(spec.declaration.devices) == 5


@pytest.mark.parametrize("content, words", [
    (None, "cannot read"),
    ("1,0\n0,nan\n", "non-finite entry at row 1, column 1"),
    ("1,0\n0\n", "cannot read"),
    ("0,0\n0,0\n", "connects no pair"),
    ("1,1,1,1,1\n", "outside the 4x3 crossbar"),
])
def test_a_bad_mask_file_is_refused_before_start_naming_the_key(tmp_path, content, words):
    if content is not None:
        (tmp_path / "m.csv").write_text(content)
    with pytest.raises(NetworkError) as e:
        build_network(file_network(tmp_path, "m.csv"), path=tmp_path / "net.toml")
    assert e.value.key.startswith("nodes.xb.synapses.s.") and words in e.value.reason, (e.value.key, e.value.reason)


def test_a_pickled_npy_is_never_loaded(tmp_path):
    np.save(tmp_path / "m.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NetworkError) as e:
        build_network(file_network(tmp_path, "m.npy"), path=tmp_path / "net.toml")
    assert e.value.key == "nodes.xb.synapses.s.file" and "cannot read" in e.value.reason


def test_a_mask_that_disagrees_with_the_sizes_given_is_refused(tmp_path):
    np.save(tmp_path / "m.npy", np.ones((4, 3)))
    with pytest.raises(NetworkError) as e:
        build_network(file_network(tmp_path, "m.npy", pre=5), path=tmp_path / "net.toml")
    assert e.value.key == "nodes.xb.synapses.s.pre" and "has 4 rows" in e.value.reason


def test_the_100x10_example_is_ten_lines_and_checks(cli_run):
    text = NET_100x10.read_text()
    block = text[text.index("[nodes.crossbar.synapses.s]"):text.index("[[links]]")].strip().splitlines()
    assert len(block) <= 8, block  # the 1,000 devices are a rule, not 1,000 rows
    net = load_network(NET_100x10)
    assert len(net.nodes["crossbar"].declaration.devices) == 1000
    code, text = cli_run("check", str(NET_100x10)).finish(timeout=60)
    assert code == 0 and "crossbar (memristor)" in text, text


def test_the_crossbar_bench_reports_the_in_node_time(cli_run, tmp_path):
    out = tmp_path / "b.json"
    code, text = cli_run("bench", "crossbar", "--duration", "4", "--json", str(out)).finish(timeout=120)
    assert code == 0, text
    r = json.loads(out.read_text())
    assert r["version"] == 1 and r["devices"] == 1000
    node = r["in_node_us"]
    assert node["packets"] > 1000 and 0 < node["p50"] <= node["p99"] <= node["max"]
    assert r["input_link_us"]["p99"] > 0 and r["pulses"] > 0 and r["cpu_pct"]["crossbar"] > 0
    assert "in-node" in text


def test_a_flood_of_pulses_is_logged_up_to_the_cap_and_counted_beyond(monkeypatch):
    monkeypatch.setattr(mem, "PULSE_LOG_MAX", 150)
    n = node(crossbar("stdp"))
    n.on_events("s.pre", Kind.SPIKE, packet(np.arange(100)), 1.0)
    for post in range(3):  # 3 x 100 rows potentiate: 300 pulses
        n.on_events("s.post", Kind.SPIKE, packet([post]), 1.01)
    records = n.take_log()
    pulses = [r for r in records if r["event"] == "pulse"]
    assert len(pulses) == 150 and records[-1] == {"event": "pulses_unlogged", "t": 1.01, "count": 150}
    assert [p["device"] for p in pulses[:2]] == ["s[0->0]", "s[1->0]"]  # in the order they were applied
    assert n.groups["s"].ltp.sum() == 300  # the counts stay exact
    assert n.unlogged == 150 and "pulses_unlogged" in n.warnings[0]
    assert n.figures(2.0, final=True).info["pulses_unlogged"] == 150
    n.on_events("s.post", Kind.SPIKE, packet([4]), 1.02)
    assert len(n.take_log()) == 100 and n.unlogged == 150  # a quiet period logs everything again


# --- found from the outside (issue 14): rule files and rules that misbehaved ------------------------
def _npy_header_only(path, shape):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b""), "cannot read"),
    (lambda p: _npy_header_only(p, (100_000, 100_000)), "100000 x 100000"),
    (lambda p: _npy_header_only(p, (4, 3)), "cannot read"),
])
def test_a_broken_npy_is_one_line_before_anything_is_allocated(tmp_path, make, words):
    make(tmp_path / "m.npy")
    with pytest.raises(NetworkError) as e:
        build_network(file_network(tmp_path, "m.npy"), path=tmp_path / "net.toml")
    assert e.value.key == "nodes.xb.synapses.s.file" and words in e.value.reason, e.value.reason


def test_an_empty_text_mask_is_refused_without_numpys_warning(tmp_path):
    import warnings

    (tmp_path / "m.csv").write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NetworkError) as e:
            build_network(file_network(tmp_path, "m.csv"), path=tmp_path / "net.toml")
    assert e.value.key == "nodes.xb.synapses.s.file" and "no numbers" in e.value.reason, e.value.reason


def test_a_sparse_random_rule_over_huge_id_ranges_draws_without_a_dense_array():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    huge = {"kind": "memristor", "rows": 64, "cols": 64,
            "synapses": {"s": {"connect": "random", "pre": 65_536, "post": 65_536, "p": 1e-6, "seed": 2}}}
    with pytest.raises(SettingsError) as e:  # it cannot fit any crossbar: refused after drawing ~4,300 pairs
        parse(MemristorSettings, huge, "nodes.xb")
    assert "outside the 64x64 crossbar" in e.value.reason
    table = {"kind": "memristor", "rows": 3_000, "cols": 3_000,
             "synapses": {"s": {"connect": "random", "pre": 3_000, "post": 3_000, "p": 5e-3, "seed": 2}}}
    rows = parse(MemristorSettings, table, "nodes.xb").synapses["s"].rows
    assert 40_000 < len(rows) < 50_000 and (rows[:, :2] < 3_000).all()
    assert len({(a, b) for a, b in rows[:, :2].tolist()}) == len(rows)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: no dense pre x post array
    dense = {"kind": "memristor", "rows": 4, "cols": 4,
             "synapses": {"s": {"connect": "random", "pre": 300, "post": 300, "p": 1.0}}}
    with pytest.raises(SettingsError) as e:  # 90,000 devices: refused before they are drawn
        parse(MemristorSettings, dense, "nodes.xb")
    assert e.value.key == "nodes.xb.synapses.s.p" and "65,536" in e.value.reason


@pytest.mark.parametrize("s, key, words", [
    (dict(connect="all_to_all", pre=2, post=2, p=0.5), "nodes.xb.synapses.s.p", "only with connect = \"random\""),
    (dict(connect="one_to_one", pre=2, seed=9), "nodes.xb.synapses.s.seed", "only with connect = \"random\""),
    (dict(table=[[0, 0, 1, 1]], wordline=5), "nodes.xb.synapses.s.wordline", "connect rule"),
    (dict(connect="all_to_all", pre=0, post=2), "nodes.xb.synapses.s.pre", ">= 1"),
    (dict(connect="all_to_all", pre=2, post=9), "nodes.xb.synapses.s.bitline", "outside the 8x8 crossbar"),
    (dict(connect="all_to_all", pre=2, post=2, bitline=7), "nodes.xb.synapses.s.bitline", "outside"),
    (dict(connect="all_to_all", pre=2, post=2, wordline=7), "nodes.xb.synapses.s.wordline", "outside"),
])
def test_keys_a_rule_does_not_read_are_refused_and_errors_name_the_right_key(s, key, words):
    with pytest.raises(SettingsError) as e:
        parse(MemristorSettings, synapses(**s), "nodes.xb")
    assert e.value.key == key and words in e.value.reason, (e.value.key, e.value.reason)
