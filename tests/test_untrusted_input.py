"""Well-formed packets with untrusted contents, from a partner's publisher outside the network.

Each test is a real external publisher (an XPUB bound on 127.0.0.1, listed as ``endpoint = ...``) feeding
a live node over loopback, written the way a partner would write it from the wire-format docs. The XPUB
sees the node's subscription arrive, so every packet sent after it is delivered and counts are exact.
"""

from __future__ import annotations

import time
from pathlib import Path
import urllib.request

import numpy as np
import pytest
import zmq

from conftest import read_json
from spikewire.launch.ports import free_port_block
from spikewire.streams.clock import local_clock
from spikewire.streams.wire import EVENT_DTYPE, Kind, decode, encode, empty_events

pytestmark = pytest.mark.integration
SOURCE = 1000


class Partner:
    """A partner's publisher: an XPUB that answers clock pings (as the wire docs say) with its own clock,
    which may be ``skew`` seconds off ours."""

    def __init__(self, skew: float = 0.0, answer_pings: bool = True):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.skew = skew
        self.answer_pings = answer_pings
        self.seq = 0
        self.pongs = 0

    def clock(self) -> float:
        return local_clock() + self.skew

    def wait_subscribed(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(100):
                msg = self.sock.recv()
                if msg[:1] == b"\x01":
                    return
        pytest.fail("the node never subscribed")

    def serve(self, seconds: float) -> None:
        """Answer pings for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.sock.poll(10):
                self._on_upstream(self.sock.recv())

    def _on_upstream(self, msg: bytes) -> None:
        if msg[:1] in (b"\x00", b"\x01") or not self.answer_pings:
            return
        t2 = self.clock()
        ping = decode(msg)
        if ping.kind != Kind.CLOCK:
            return
        pong = np.zeros(2, dtype=EVENT_DTYPE)
        pong[0] = ping.events[0]
        pong[1] = (t2, ping.events[0]["id"], 0.0)
        self.sock.send(encode(Kind.CLOCK, SOURCE, self.seq, self.clock(), pong))
        self.pongs += 1

    def send(self, kind: Kind, values, ident: int = 0, seq: int | None = None, send_time: float | None = None) -> None:
        values = np.atleast_1d(np.asarray(values, dtype=np.float64))
        ev = empty_events(len(values))
        ev["t"] = self.clock()
        ev["id"] = ident
        ev["value"] = values
        seq = self.seq if seq is None else seq
        self.sock.send(encode(kind, SOURCE, seq, self.clock() if send_time is None else send_time, ev))
        self.seq = max(self.seq, seq + 1)
        while self.sock.poll(0):  # keep answering pings between packets
            self._on_upstream(self.sock.recv())

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture
def partner():
    made = []

    def make(**kw) -> Partner:
        p = Partner(**kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _link(report: dict, to: str) -> dict:
    return next(ln for ln in report["links"] if ln["link"].endswith(f"-> {to}"))


BN = '[nodes.bn]\nkind = "biological"\nnoise_sigma = 0.0\n'


def _net(tmp_path, p: Partner, to: str = "bn.stim", nodes: str = BN, extra: str = "") -> Path:
    """One node fed by the partner's publisher on input ``to``; ``extra`` goes into the link's table (and may
    open tables of its own after it)."""
    net = tmp_path / "partner.toml"
    net.write_text(f"""
[monitor]
base_port = {free_port_block(1)}
{nodes}
[[links]]
endpoint = "{p.endpoint}"
source = {SOURCE}
to = "{to}"
{extra}
""")
    return net


def _run(cli_run, tmp_path, p: Partner, net: Path, seconds: float, drive, settle: float = 0.5) -> tuple[dict, str]:
    """Run ``net`` for ``seconds``. Once the node has subscribed and the link's clock had ``settle`` s to
    synchronise, ``drive()`` sends the partner's packets. Returns the JSON summary and the output."""
    out = tmp_path / "s.json"
    run = cli_run("run", str(net), "--duration", str(seconds), "--json", str(out), "--no-record")
    try:
        p.wait_subscribed()
        p.serve(settle)
        drive()
        p.serve(0.3)
        code, text = run.finish(timeout=60)
    finally:
        run.kill()
    assert code == 0, text
    return read_json(out), text


def _wait_for_metric(p: Partner, port: int, name: str, value: float, timeout: float = 10.0) -> None:
    """Until the node's Prometheus endpoint serves ``name`` = ``value`` (answering pings meanwhile)."""
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        line = next((ln for ln in text.splitlines() if ln.startswith(name + "{")), "")
        if line.endswith(f" {value}"):
            return
        p.serve(0.1)
    pytest.fail(f"{name} never reached {value}: {line!r}")


def test_absurd_stimulus_amplitudes_are_refused_and_counted(cli_run, tmp_path, partner):
    """Issue 11.3: one well-formed stimulus of 1e6 V (or -1e30, 3e38) must never reach the neuron."""
    p = partner()
    net = _net(tmp_path, p)
    absurd = [1e6, -1e30, 3e38, 11.0]

    def drive():
        for v in absurd + [0.5] * 5:
            p.send(Kind.STIMULUS, v)
            p.serve(0.05)
        p.send(Kind.STIMULUS, [0.5, 1e6, 0.5])  # one bad event in a packet: the others still count
        port = int(net.read_text().split("base_port = ")[1].split()[0])
        _wait_for_metric(p, port, "spikewire_link_out_of_range_total", float(len(absurd) + 1))  # exported too

    report, _ = _run(cli_run, tmp_path, p, net, 6, drive)
    link = _link(report, "bn.stim")
    assert link.get("out_of_range", 0) == len(absurd) + 1
    assert link["received"] == len(absurd) + 6
    neuron = report["neurons"][0]
    assert neuron["stimuli"] == 7  # only the plausible ones reached the model
    assert neuron["spontaneous_ap"] + neuron["stimulated_ap"] < 20, neuron  # no runaway firing


def test_absurd_synaptic_weight_is_refused(cli_run, tmp_path, partner):
    """Issue 11.3: a weight of 1e30 A into a silicon population is refused; a sane one is delivered."""
    p = partner()
    net = _net(tmp_path, p, "chip.pop.input", '[nodes.chip]\nkind = "silicon"\n[nodes.chip.populations.pop]\nsize = 2\n')

    def drive():
        p.send(Kind.SPIKE, 1e30, ident=0)
        p.send(Kind.SPIKE, -1e30, ident=0)
        p.serve(0.2)
        p.send(Kind.SPIKE, 4e-9, ident=1)  # one default kick: one spike of neuron 1

    report, _ = _run(cli_run, tmp_path, p, net, 3, drive)
    assert _link(report, "chip.pop.input").get("out_of_range", 0) == 2
    spikes = {n["neuron"]: n["spikes"] for n in report["neurons"]}
    assert spikes["0"] == 0 and spikes["1"] == 1, spikes


def test_input_ranges_override_the_model_default(cli_run, tmp_path, partner):
    """A lab may narrow a port's plausible range: 0.9 V is then refused at a 0.5 V limit."""
    p = partner()
    net = _net(tmp_path, p, nodes=BN + "input_ranges = { stim = [0.0, 0.5] }\n")

    def drive():
        for v in (0.9, -0.1, 0.4):
            p.send(Kind.STIMULUS, v)
            p.serve(0.05)

    report, _ = _run(cli_run, tmp_path, p, net, 2, drive)
    assert _link(report, "bn.stim").get("out_of_range", 0) == 2
    assert report["neurons"][0]["stimuli"] == 1


def test_future_and_ancient_send_times_are_refused_on_every_link(cli_run, tmp_path, partner):
    """Issue 11.13: on a link without a jitter buffer, a packet dated 1e6 s ahead (or behind) must not be
    delivered nor reach the latency histogram."""
    p = partner()

    def drive():
        for bad in (1e6, -1e6, 3e38):
            p.send(Kind.STIMULUS, 0.5, send_time=p.clock() + bad)
        for _ in range(5):
            p.send(Kind.STIMULUS, 0.5)
            p.serve(0.05)

    report, _ = _run(cli_run, tmp_path, p, _net(tmp_path, p), 4, drive, settle=1.0)
    link = _link(report, "bn.stim")
    assert link["malformed_by_reason"].get("bad_time") == 3, link
    assert link["gaps"] == 0 and link["dropped"] == 0, link  # refused is not also lost
    assert report["neurons"][0]["stimuli"] == 5
    assert 0 < link["latency_max_s"] < 0.5, link
    assert 0 < link["latency_p99_s"] < 0.5, link


def test_duplicate_and_rewound_sequence_numbers_are_delivered_once(cli_run, tmp_path, partner):
    """Issue 11.14: each (epoch, sequence) reaches the model once; repeats are counted."""
    p = partner()

    def drive():
        # The first packet overtaken by the second (late, not a repeat); then duplicates, a rewind, a new one.
        for seq in (1, 0, 2, 3, 4, 5, 6, 7, 8, 9) + (3, 5, 9, 0, 1, 2, 3, 4) + (10,):
            p.send(Kind.STIMULUS, 0.5, seq=seq)
            p.serve(0.03)

    report, _ = _run(cli_run, tmp_path, p, _net(tmp_path, p), 4, drive)
    link = _link(report, "bn.stim")
    assert report["neurons"][0]["stimuli"] == 11
    assert link["received"] == 11 and link["duplicates"] == 8 and link["gaps"] == 0, link


@pytest.mark.parametrize("skew", [100.0, -100.0])
def test_external_link_synchronises_a_partner_clock(cli_run, tmp_path, partner, skew):
    """Issue 11.4: a partner whose clock is 100 s off loses nothing through a jitter buffer, and its
    latency reads true."""
    p = partner(skew=skew)

    def drive():
        for _ in range(20):
            p.send(Kind.STIMULUS, 0.5)
            p.serve(0.05)

    report, _ = _run(cli_run, tmp_path, p, _net(tmp_path, p, extra="delay = 0.05"), 4, drive, settle=1.0)
    link = _link(report, "bn.stim")
    assert p.pongs > 0
    assert report["neurons"][0]["stimuli"] == 20
    jb = link["jitter_buffer"]
    assert jb["late_dropped"] == 0 and link["malformed"] == 0, link
    assert abs(link["clock_offset_s"] - skew) < 0.01, link
    assert 0 < link["latency_p99_s"] < 0.05, link


def test_delay_without_a_clock_is_refused_naming_the_link(tmp_path):
    from spikewire.config.network import NetworkError, build_network

    data = {"nodes": {"bn": {"kind": "biological"}},
            "links": [{"endpoint": "tcp://127.0.0.1:5555", "source": SOURCE, "to": "bn.stim", "delay": 0.05,
                       "clock": "none"}]}
    with pytest.raises(NetworkError, match=r"^links\[0\]\.delay: .*clock = \"none\""):
        build_network(data)
    data["links"][0]["delay"] = 0.0
    assert build_network(data).links[0].clock == "none"


def test_late_packets_count_as_loss_for_the_interlock(cli_run, tmp_path, partner):
    """Issue 11.5: a jitter buffer that drops most packets as late must hold stimulation, and the summary
    says what delay would have covered the link's latency p99."""
    p = partner()

    def drive():
        for i in range(150):  # 87 % of them 50 ms old on arrival: late for a 20 ms buffer
            p.send(Kind.STIMULUS, 0.5, send_time=p.clock() - (0.05 if i % 8 else 0.0))
            p.serve(0.01)

    net = _net(tmp_path, p, extra="delay = 0.02\n[safety]\nstale_after = 10.0\n")
    report, _ = _run(cli_run, tmp_path, p, net, 5, drive, settle=1.0)
    link = _link(report, "bn.stim")
    assert link["jitter_buffer"]["late_dropped"] > 100, link["jitter_buffer"]
    interlock = report["nodes"]["bn"]["interlock"]
    assert interlock["holds"] >= 1 and "late ones included" in interlock["reason"], interlock
    assert 0.045 < link["delay_for_p99_s"] < 0.07, link


def test_auto_delay_is_fixed_from_the_first_seconds(cli_run, tmp_path, partner):
    """delay = "auto": ~30 ms of one-way latency measured for 5 s gives a buffer that then holds them all."""
    p = partner(skew=50.0)

    def drive():
        t_end = time.monotonic() + 7.0
        while time.monotonic() < t_end:
            p.send(Kind.STIMULUS, 0.5, send_time=p.clock() - 0.03)
            p.serve(0.05)

    report, text = _run(cli_run, tmp_path, p, _net(tmp_path, p, extra='delay = "auto"'), 9, drive, settle=1.0)
    assert 'delay = "auto" fixed at' in text
    jb = _link(report, "bn.stim")["jitter_buffer"]
    assert jb["auto"] and 0.03 < jb["delay_s"] < 0.05, jb
    assert jb["late_dropped"] == 0, jb
