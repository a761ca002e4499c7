"""Issue 11, item 17: a handshake that failed at start must not poison a link that healed.

Southampton starts first, so its subscriber to Zurich's spikes (through the fault proxy, which accepts and
then drops it while Zurich is not up) fails its first handshakes. Zurich starts, the link comes up and runs
clean. Then the proxy holds everything for 1.2 s: an outage on a path that drops nothing. The healthy
connection must ride it out: no reconnect, every packet delivered, none discarded by the proxy.
"""

from __future__ import annotations

import time

import pytest

from conftest import anpre_via, inter_site_link, sites_copy
from spikewire.config.network import load_network
from spikewire.launch.ports import free_port_block
from spikewire.tools.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration
LABEL = "zurich.anpre.spikes -> southampton.mr1.pre"


def test_an_outage_after_a_failed_first_handshake_loses_nothing(sites, tmp_path):
    via_port = free_port_block(1)

    net_path = sites_copy(tmp_path, curve=False, keys=False, edit=anpre_via(via_port))
    net = load_network(net_path)
    host, port = net.fixed_endpoint("zurich", "anpre.spikes", bind=False).removeprefix("tcp://").split(":")
    source = str(net.source_ids[("zurich", "anpre.spikes")])
    proxy = FaultProxy(listen=("127.0.0.1", via_port), target=(host, int(port))).start()
    try:
        group = sites(net_path)
        alone = ("--start-wait", "0")  # no Padova: these two sites start on their own
        south = group.start("southampton", 14.0, extra=alone)
        south.wait_for("all nodes ready", timeout=60)
        deadline = time.monotonic() + 20
        while proxy.stats()["connections"]["upstream_failures"] < 3:  # its handshakes fail while Zurich is away
            assert time.monotonic() < deadline, proxy.stats()["connections"]
            time.sleep(0.05)
        group.start("zurich", 10.0, extra=alone).wait_for("all nodes ready", timeout=60)
        deadline = time.monotonic() + 20
        while proxy.stats()["sources"].get(source, {}).get("forwarded", 0) < 20:  # two seconds of spikes
            assert time.monotonic() < deadline, proxy.stats()["sources"]
            time.sleep(0.05)
        accepted = proxy.stats()["connections"]["accepted"]
        proxy.set_faults(delay=1.2)  # an outage: nothing lost, everything late (the link's peer_timeout is 0.6 s)
        time.sleep(1.5)
        proxy.set_faults(delay=0.0)
        resumed = proxy.stats()["sources"][source]["forwarded"] + 20
        deadline = time.monotonic() + 20
        while (now := proxy.stats())["sources"][source]["forwarded"] < resumed:  # flowing again
            assert time.monotonic() < deadline, now["sources"]
            time.sleep(0.05)
        # The healthy connection was kept: no new connection through the proxy since the outage (counted
        # before Zurich stops, after which Southampton's subscriber does reconnect, to nobody).
        assert now["connections"]["accepted"] == accepted, now["connections"]
        out = group.finish(timeout=120)
        stats = proxy.stats()
    finally:
        proxy.stop()
    src = stats["sources"][source]
    row = inter_site_link(out["southampton"], LABEL)
    assert row["outages"] >= 1, row  # the outage happened and was seen
    # ... and nothing the proxy had queued was thrown away: every packet received.
    assert src["discarded"] == 0 and src["dropped"] == 0, src
    assert row["gaps"] == 0 and row["received"] == src["forwarded"] == src["received"], (row, src)
    assert inter_site_link(out["zurich"], LABEL)["sent"] == row["received"], row
