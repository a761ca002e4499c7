"""A node's plan (config.plan.node_plan) from networks alone: what each node binds, waits for, connects to
and with which options, for one machine, for three sites run together or each on its own, and with an
external publisher, a relay, queue sizes and a replayed node. No sockets, no files beyond the networks."""

from __future__ import annotations

import builtins
import tomllib
from pathlib import Path

import pytest
import zmq

from spikewire.config.network import build_network, load_network
from spikewire.config.plan import Source, node_plan
from spikewire.streams.link_rx import InputPlan, LinkOptions

NETWORKS = Path(__file__).resolve().parent.parent / "launch" / "networks"
PRE = "zurich.anpre.spikes -> southampton.mr1.pre"
MR2 = "southampton.mr2.out -> zurich.anpost.input"


def network(name: str, edit=lambda t: t):
    text = edit((NETWORKS / name).read_text())
    return build_network(tomllib.loads(text), path=NETWORKS / name, check_keys=False)


def test_one_machine_binds_wildcard_ports_and_waits_for_every_downstream_node():
    plan = node_plan(load_network(NETWORKS / "paper_loop.toml"), "zurich")
    assert plan.site == "zurich"
    assert plan.source_ids == {"anpost.spikes": 4, "anpre.spikes": 5}  # numbered over sorted (node, port)
    assert plan.binds == {"anpost.spikes": "tcp://127.0.0.1:*", "anpre.spikes": "tcp://127.0.0.1:*"}
    assert plan.expected == plan.subscribers == {"anpost.spikes": {"southampton"}, "anpre.spikes": {"southampton"}}
    assert (plan.remote_ports, plan.curve_ports, plan.needs_curve) == (frozenset(), frozenset(), False)
    assert plan.port_queues == {"anpost.spikes": (100_000, 0), "anpre.spikes": (100_000, 0)}
    assert plan.sources == (Source("anpost.input", 3, MR2, "", ("southampton", "mr2.out")),)
    assert plan.inputs == {"anpost.input": InputPlan("anpost.input", ((3, "", MR2),), 100_000, {MR2: LinkOptions()}, 0)}


def test_a_port_fed_by_one_upstream_twice_names_both_links():
    plan = node_plan(load_network(NETWORKS / "paper_loop.toml"), "southampton")
    assert [(s.port, s.source_id, s.upstream) for s in plan.sources] == [
        ("mr1.pre", 5, ("zurich", "anpre.spikes")), ("mr1.post", 1, ("padova", "events")),
        ("mr2.pre", 1, ("padova", "events")), ("mr2.post", 4, ("zurich", "anpost.spikes"))]
    assert list(plan.inputs) == ["mr1.pre", "mr1.post", "mr2.pre", "mr2.post"]
    assert plan.expected == {"mr1.out": {"padova"}, "mr2.out": {"zurich"}}


def test_sites_bind_fixed_ports_serve_curve_and_wait_for_nobody_elsewhere():
    net = load_network(NETWORKS / "paper_sites.toml", check_keys=False)
    plan = node_plan(net, "padova")
    assert plan.binds == {"events": "tcp://127.0.0.1:9520"}
    assert plan.remote_ports == plan.curve_ports == frozenset({"events"})
    assert plan.needs_curve is True
    assert plan.expected == {}  # southampton is another site: it comes and goes on its own
    assert plan.subscribers == {"events": {"southampton"}}  # but it may ping (the pong budget)
    label = "southampton.mr1.out -> padova.stim"
    assert plan.inputs["stim"].options == {label: LinkOptions(0.02, "drop", True, "southampton", True, False, "sync")}


def test_a_site_run_alone_reaches_the_other_sites_at_their_fixed_ports():
    net = load_network(NETWORKS / "paper_sites.toml", check_keys=False)
    together = node_plan(net, "southampton")  # every site in one run: where each upstream bound
    alone = node_plan(net, "southampton", site="southampton")
    assert [s.endpoint for s in together.sources] == [""] * 4
    assert [(s.endpoint, s.upstream) for s in alone.sources] == [
        ("tcp://127.0.0.1:9501", None), ("tcp://127.0.0.1:9520", None), ("tcp://127.0.0.1:9520", None),
        ("tcp://127.0.0.1:9500", None)]
    assert alone.inputs["mr1.pre"].sources == ((5, "tcp://127.0.0.1:9501", PRE),)


def test_a_relay_and_an_external_publisher_are_reached_where_the_file_says():
    def edit(text: str) -> str:
        text = text.replace('to = "southampton.mr1.pre"\n', 'to = "southampton.mr1.pre"\nvia = "tcp://10.1.2.3:7000"\n')
        return text + '\n[[links]]\nendpoint = "tcp://10.9.9.9:6000"\nsource = 1000\nto = "southampton.mr1.pre"\n'

    net = network("paper_sites.toml", edit)
    external = "tcp://10.9.9.9:6000 -> southampton.mr1.pre"
    for site in (None, "southampton"):
        plan = node_plan(net, "southampton", site=site)
        assert plan.inputs["mr1.pre"].sources == ((5, "tcp://10.1.2.3:7000", PRE),
                                                  (1000, "tcp://10.9.9.9:6000", external))
    assert plan.inputs["mr1.pre"].options[external] == LinkOptions(clock="sync")  # an external clock is pinged


def test_queues_take_the_largest_hwm_and_the_smallest_sockbuf_of_a_ports_links():
    def edit(text: str) -> str:
        text = text.replace('from = "padova.events"\nto = "southampton.mr1.post"\n',
                            'from = "padova.events"\nto = "southampton.mr1.post"\nhwm = 500\nsockbuf = 65536\n')
        return text.replace('from = "padova.events"\nto = "southampton.mr2.pre"\n',
                            'from = "padova.events"\nto = "southampton.mr2.pre"\nhwm = 2000\nsockbuf = 0\n')

    net = network("paper_loop.toml", edit)
    assert node_plan(net, "padova").port_queues == {"events": (2000, 65536)}
    inputs = node_plan(net, "southampton").inputs
    assert (inputs["mr1.post"].hwm, inputs["mr1.post"].sockbuf) == (500, 65536)
    assert (inputs["mr2.pre"].hwm, inputs["mr2.pre"].sockbuf) == (2000, 0)


def test_nobody_waits_for_a_replayed_node():
    net = load_network(NETWORKS / "paper_loop.toml")
    plan = node_plan(net, "zurich", replayed=frozenset({"southampton"}))
    assert plan.expected == {}
    assert plan.subscribers == {"anpost.spikes": {"southampton"}, "anpre.spikes": {"southampton"}}


def test_the_supervisors_endpoints_meet_the_plans_options():
    net = load_network(NETWORKS / "paper_sites.toml", check_keys=False)
    plan = node_plan(net, "zurich")
    connect = {"anpost.input": [[3, "tcp://127.0.0.1:4242", MR2]], "no.such": [[9, "tcp://127.0.0.1:1", "x -> y"]]}
    (got,) = plan.input_plans(connect)
    assert got == InputPlan("anpost.input", ((3, "tcp://127.0.0.1:4242", MR2),), 100_000,
                            {MR2: LinkOptions(0.0, "drop", True, "southampton", True, False, "sync")}, 0)


def test_planning_opens_no_socket_and_no_file(monkeypatch):
    net = load_network(NETWORKS / "paper_sites.toml", check_keys=False)

    def refuse(*args, **kwargs):
        raise AssertionError("node_plan touched a file or a socket")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(zmq.Context, "socket", refuse)
    for name in net.nodes:
        for site in (None, net.site_of(name)):
            assert node_plan(net, name, site).node == name


def test_an_unknown_node_is_a_key_error():
    with pytest.raises(KeyError):
        node_plan(load_network(NETWORKS / "paper_loop.toml"), "nowhere")
