"""Hostile input on a live node's input port: counted, dropped, and valid traffic carries on.

The test is a real external publisher (an XPUB bound on 127.0.0.1, listed in the network file as
`endpoint = ...`) feeding a memristor node's presynaptic port; the node forwards each valid spike to a
sink node. The XPUB sees the node's subscription arrive, so every packet sent after it is delivered and
the counts can be exact.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import zmq

from conftest import read_json
from spikewire.streams.clock import local_clock
from spikewire.streams.wire import HEADER, MAGIC, WIRE_VERSION, Kind, encode, empty_events

pytestmark = pytest.mark.integration
SOURCE = 1000


def _events(n: int, ident: int = 0) -> np.ndarray:
    ev = empty_events(n)
    ev["t"] = local_clock()
    ev["id"] = ident
    ev["value"] = 1.0
    return ev


def test_node_survives_malformed_packets_and_counts_them(cli_run, tmp_path):
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    net = tmp_path / "hostile.toml"
    net.write_text(f"""
[nodes.syn]
kind = "memristor"
[nodes.syn.synapses.mr1]
table = [[0, 0, 0, 0]]
[nodes.sink]
kind = "sink"
[[links]]
endpoint = "{endpoint}"
source = {SOURCE}
to = "syn.mr1.pre"
[[links]]
from = "syn.mr1.out"
to = "sink.in"
""")
    out = tmp_path / "s.json"
    run = cli_run("run", str(net), "--duration", "4", "--json", str(out))
    try:
        assert pub.poll(30_000), "the node never subscribed"
        pub.recv()  # its subscription

        rng = np.random.default_rng(7)
        seq = 0
        valid = 0
        bad: dict[str, int] = {}

        def send_valid():
            nonlocal seq, valid
            pub.send(encode(Kind.SPIKE, SOURCE, seq, local_clock(), _events(1)))
            seq += 1
            valid += 1

        def send_bad(reason: str, data: bytes):
            pub.send(data)
            bad[reason] = bad.get(reason, 0) + 1

        good = encode(Kind.SPIKE, SOURCE, 0, local_clock(), _events(3))
        nan_events = _events(1)
        nan_events["value"] = math.nan
        for _i in range(20):
            send_valid()
            send_bad("truncated", rng.bytes(int(rng.integers(0, 32))))  # random bytes shorter than a header
            send_bad("bad_magic", b"XXXX" + rng.bytes(60))
            send_bad("truncated", good[: len(good) - 5])
            send_bad("oversized", good + rng.bytes(16))
            send_bad("oversized", HEADER.pack(MAGIC, WIRE_VERSION, Kind.SPIKE, 0, SOURCE, 1 << 20, 0, 0.0))
            send_bad("bad_version", HEADER.pack(MAGIC, 99, Kind.SPIKE, 0, SOURCE, 0, 0, 0.0))
            send_bad("bad_kind", HEADER.pack(MAGIC, WIRE_VERSION, 200, 0, SOURCE, 0, 0, 0.0))
            send_bad("non_finite", encode(Kind.SPIKE, SOURCE, 0, local_clock(), nan_events))
            send_bad("unknown_source", encode(Kind.SPIKE, 4242, 0, local_clock(), _events(1)))
            send_bad("wrong_kind", encode(Kind.STIMULUS, SOURCE, 0, local_clock(), _events(1)))
        # 2 MiB behind a header that claims one event
        send_bad("oversized", HEADER.pack(MAGIC, WIRE_VERSION, Kind.SPIKE, 0, SOURCE, 1, 0, 0.0) + os.urandom(2 << 20))
        for _ in range(5):
            send_valid()
        code, text = run.finish(timeout=60)
    finally:
        pub.close()
        ctx.term()

    assert code == 0, text
    report = read_json(out)
    links = {ln["link"].split(" -> ")[1]: ln for ln in report["links"]}
    into_syn, into_sink = links["syn.mr1.pre"], links["sink.in"]
    assert into_syn["received"] == valid
    assert into_syn["gaps"] == 0
    assert into_syn["malformed_by_reason"] == bad
    assert into_syn["malformed"] == sum(bad.values())
    # Valid traffic carried on: one weighted output per valid presynaptic spike, all delivered.
    assert into_sink["received"] == valid and into_sink["events"] == valid
    assert report["outcome"] == "completed"
