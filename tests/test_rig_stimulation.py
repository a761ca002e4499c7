"""Stimulation of a rig over LSL is exact (issue 11): a stimulus is counted as sent only when a rig
received it, and nothing beyond the rig's hard limits is ever sent.

Real pylsl throughout: the rig's data stream is a plain pylsl outlet the test pushes, the rig's side of
the stimulation stream a plain pylsl inlet (``StimRig``) that subscribes when the test says, or never.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from conftest import read_json
from rig_helpers import DataRig, StimRig, read_truth, rig_loop_copy, start_rig_sim, stop, tag

import pylsl  # noqa: I001  (after rig_helpers, which sets the machine-scoped LSLAPICFG)

from spikewire.nodes.biological import BiologicalSettings
from spikewire.nodes.rig import LslRigBackend, RigSettings
from spikewire.streams.wire import EVENT_DTYPE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

RATE = 1000.0


class Rig:
    """An LslRigBackend on streams of its own, fed by a plain pylsl data outlet kept streaming by ``step``."""

    def __init__(self, size: int = 2, **settings):
        t = tag()
        self.data_name, self.stim_name = f"rig-data-{t}", f"rig-stim-{t}"
        self.cfg = RigSettings(stream=f"name={self.data_name}", channels=size, stim_stream=self.stim_name,
                               calibration=0.05, **settings)
        self.backend = LslRigBackend("bn", BiologicalSettings(backend="rig", rig=self.cfg, stim_window=0.02, size=size))
        self.data = DataRig(self.data_name, size, RATE, pylsl.cf_float32)
        self.backend.open()
        self.size = size
        self.rng = np.random.default_rng(1)

    def step(self) -> float:
        """Push the samples due by now and run one tick; returns now."""
        now = pylsl.local_clock()
        due = int((now - self.data.t0) * RATE) - self.data.pushed
        if due > 0:
            self.data.push(self.rng.standard_normal((due, self.size)).astype(np.float32))
        self.backend.poll(now, lambda t, neuron, kind: None)
        return now

    def bring_up(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.backend.inlet.up:
            assert time.monotonic() < deadline, f"the rig's data stream was not up within {timeout} s"
            self.step()
            time.sleep(0.002)

    def close(self) -> None:
        self.backend.close()


def stimuli(ids, amplitudes) -> np.ndarray:
    ev = np.zeros(len(ids), EVENT_DTYPE)
    ev["id"] = ids
    ev["value"] = amplitudes
    return ev


def test_only_stimuli_a_rig_received_are_counted_as_sent():
    """500 stimuli while the rig's stimulation inlet subscribes late: every stimulus counted as sent
    (node and neurons) reached the rig, exactly, in order; the rest are counted as held for no consumer."""
    rig = Rig(max_rate=1000.0, max_total_rate=1000.0)  # 250 stimuli/s per channel: above the default limits
    stim = None
    n = 500
    try:
        rig.bring_up()
        stim = StimRig(rig.stim_name, subscribe_after=0.3)
        for i in range(n):
            now = rig.step()
            rig.backend.stimulate(stimuli([i % 2], [i / 1000.0]), now)
            time.sleep(0.002)
        st = rig.backend.status()
        received = stim.wait_for(st["stim_sent"], timeout=5.0)
        time.sleep(0.2)  # anything beyond what was counted would arrive now
        received = stim.received()
        assert stim.subscribed.is_set() and stim.error is None
    finally:
        if stim is not None:
            stim.close()
        rig.close()
    assert st["rig_up"]
    assert received == st["stim_sent"], (received, st)
    assert 0 < st["stim_sent"] < n, st
    assert st["stim_sent"] + st["stim_held_no_consumer"] == n, st
    assert st["stim_held"] == 0 and st["stim_ready"]
    assert int(rig.backend.stimuli.sum()) == st["stim_sent"]  # per neuron, too
    # The rig got the last stim_sent commands, unchanged: channel, amplitude (float32), width.
    first = n - st["stim_sent"]
    got = np.array([c for _, c in stim.commands], np.float32)
    want = np.array([(i % 2, i / 1000.0, rig.cfg.stim_width) for i in range(first, n)], np.float32)
    np.testing.assert_array_equal(got, want)


def test_a_rig_that_never_subscribes_gets_nothing_counted_as_sent():
    rig = Rig()
    n = 40
    try:
        rig.bring_up()
        for i in range(n):
            now = rig.step()
            rig.backend.stimulate(stimuli([0], [0.5]), now)
            time.sleep(0.03)
        st = rig.backend.status()
    finally:
        rig.close()
    assert st["rig_up"]
    assert st["stim_sent"] == 0, st
    assert st["stim_held_no_consumer"] == n and st["stim_held"] == 0 and not st["stim_ready"], st
    assert int(rig.backend.stimuli.sum()) == 0


def test_readiness_waits_for_the_rig_to_subscribe(caplog):
    """The node's readiness waits for the stimulation consumer: returns as soon as a late rig subscribes;
    gives up after its timeout with a loud warning that names the stream."""
    late = Rig()
    stim = StimRig(late.stim_name, subscribe_after=0.5)
    try:
        t = time.monotonic()
        assert late.backend.wait_for_stim_consumer(10.0)
        waited = time.monotonic() - t
        assert late.backend.status()["stim_ready"]
    finally:
        stim.close()
        late.close()
    assert 0.4 < waited < 5.0, waited

    never = Rig()
    try:
        with caplog.at_level(logging.WARNING):
            t = time.monotonic()
            assert not never.backend.wait_for_stim_consumer(0.5)
            waited = time.monotonic() - t
        assert not never.backend.status()["stim_ready"]
    finally:
        never.close()
    assert 0.45 < waited < 2.0, waited
    (warning,) = [r for r in caplog.records if never.stim_name in r.getMessage()]
    assert warning.levelno >= logging.WARNING and "HELD" in warning.getMessage(), warning.getMessage()


def test_a_run_whose_rig_never_subscribes_sends_nothing_and_says_so(cli_run, tmp_path):
    """The issue's run: a rig that streams but never reads the stimulation stream. Readiness gives up after
    rig.stim_wait with a loud warning; no stimulus is counted as sent; all are counted held."""
    name, stim = f"rig-never-{tag()}", f"rig-never-stim-{tag()}"
    rig, truth, log = start_rig_sim(tmp_path, name, f"{stim}-elsewhere", "--duration", "40")
    try:
        out = tmp_path / "s.json"
        net = rig_loop_copy(tmp_path, name, stim, "stim_wait = 1.0\n")
        run = cli_run("run", str(net), "--duration", "4", "--json", str(out))
        code, text = run.finish(timeout=90)
    finally:
        stop(rig)
    assert code == 0, text
    assert "HELD" in text and stim in text, text
    r = read_json(out)["nodes"]["padova"]["model"]["rig"]
    assert r["rig_connects"] >= 1 and r["stim_sent"] == 0 and not r["stim_ready"], r  # data up, stimuli held
    assert r["stim_held_no_consumer"] >= 20, r  # ANpre's 10 Hz through MR1
    assert any("held, never sent" in w for w in read_json(out)["warnings"]), text  # and the summary says so
    bn = next(n for n in read_json(out)["neurons"] if n["node"] == "padova")
    assert bn["stimuli"] == 0, bn
    assert not [e for e in read_truth(truth) if e.get("kind") == "stim"]


# --- hard stimulation limits ------------------------------------------------------------------------------

def test_commands_beyond_the_hard_limits_are_refused_and_never_reach_the_rig():
    """Amplitude (either sign), per-channel rate and overall rate: a command beyond a limit is refused,
    counted by reason and never sent; the rig's inlet sees exactly the commands within the limits."""
    rig = Rig(size=40, max_amplitude=0.5, max_rate=20.0, max_total_rate=30.0)
    stim = StimRig(rig.stim_name)
    try:
        rig.bring_up()
        assert rig.backend.wait_for_stim_consumer(10.0)
        t = pylsl.local_clock()
        want = []  # (channel, amplitude) the rig must get, in order

        def send(neuron, amplitude, at, ok):
            rig.step()
            rig.backend.stimulate(stimuli([neuron], [amplitude]), t + at)
            if ok:
                want.append((neuron, np.float32(amplitude)))

        # amplitude, either sign; the limit itself is allowed; nothing non-finite
        for i, (amp, ok) in enumerate([(0.5, True), (-0.5, True), (0.50001, False), (-0.6, False), (10.0, False),
                                       (-1e30, False), (float("nan"), False), (float("inf"), False)]):
            send(i, amp, 0.0, ok)
        # per channel: 20/s means 50 ms apart; a refused command does not count towards the rate
        send(20, 0.1, 0.00, True)
        send(20, 0.1, 0.01, False)
        send(20, 0.1, 0.049, False)
        send(20, 0.1, 0.051, True)
        send(20, 0.1, 0.060, False)
        # overall: 30 within any second; 4 were sent above, so 26 of 31 fresh channels go, 5 do not
        for k, neuron in enumerate([*range(8, 20), *range(21, 40)]):
            send(neuron, 0.2, 0.1 + 0.001 * k, k < 26)
        st = rig.backend.status()
        got = stim.wait_for(len(want), timeout=5.0)
        time.sleep(0.2)  # anything refused that leaked would arrive now
        commands = list(stim.commands)
    finally:
        stim.close()
        rig.close()
    assert st["stim_refused"] == {"amplitude": 6, "width": 0, "rate": 8}, st
    assert st["stim_sent"] == len(want) == got == len(commands), (st, len(want), got)
    assert [(int(c[0]), np.float32(c[1])) for _, c in commands] == want
    assert all(abs(c[1]) <= 0.5 for _, c in commands)


def test_overall_rate_limit_over_a_sliding_second():
    rig = Rig(size=8, max_rate=1000.0, max_total_rate=10.0)
    stim = StimRig(rig.stim_name)
    try:
        rig.bring_up()
        assert rig.backend.wait_for_stim_consumer(10.0)
        t = pylsl.local_clock()
        for k in range(25):  # 0.11 s apart over 8 channels: at most 9 others in any second, so all go
            rig.step()
            rig.backend.stimulate(stimuli([k % 8], [0.1]), t + 0.11 * k)
        sent_spread = rig.backend.status()["stim_sent"]
        for k in range(15):  # then 15 within 15 ms, 50 ms later: the second before holds 9, so one more goes
            rig.backend.stimulate(stimuli([k % 8], [0.1]), t + 0.11 * 24 + 0.05 + 0.001 * k)
        st = rig.backend.status()
        got = stim.wait_for(st["stim_sent"], timeout=5.0)
        time.sleep(0.2)
        got = stim.received()
    finally:
        stim.close()
        rig.close()
    assert sent_spread == 25
    assert st["stim_sent"] == 26 and st["stim_refused"]["rate"] == 14, st
    assert got == st["stim_sent"]


def test_a_pulse_wider_than_the_limit_is_never_sent():
    """stim_width beyond max_width is refused when the file loads; and were the settings built by hand,
    every command would still be refused (reason width), none sent."""
    from spikewire.config.network import NetworkError, build_network

    with pytest.raises(NetworkError, match=r"nodes\.bn\.rig\.stim_width: .*max_width"):
        build_network({"nodes": {"bn": {"kind": "biological", "backend": "rig",
                                        "rig": {"stream": "name=x", "stim_width": 1e-3, "max_width": 0.5e-3}}}})
    rig = Rig(stim_width=1e-3, max_width=0.5e-3)
    stim = StimRig(rig.stim_name)
    try:
        rig.bring_up()
        assert rig.backend.wait_for_stim_consumer(10.0)
        for k in range(5):
            rig.backend.stimulate(stimuli([0], [0.1]), rig.step() + 0.1 * k)
        st = rig.backend.status()
        time.sleep(0.3)
        got = stim.received()
    finally:
        stim.close()
        rig.close()
    assert st["stim_refused"] == {"amplitude": 0, "width": 5, "rate": 0} and st["stim_sent"] == 0 and got == 0, st


def test_the_stim_port_declares_the_rigs_amplitude_limit():
    from spikewire.config.network import NetworkError, build_network
    from spikewire.nodes.biological import MAX_STIM_AMPLITUDE, BiologicalNode

    def stim_range(node: dict):
        net = build_network({"nodes": {"bn": {"kind": "biological", **node}}})
        return BiologicalNode.declared_ports(net.nodes["bn"].settings)[0]["stim"].values

    assert stim_range({}) == (-MAX_STIM_AMPLITUDE, MAX_STIM_AMPLITUDE)  # the model: plausible values
    assert stim_range({"backend": "rig", "rig": {"stream": "name=x"}}) == (-1.0, 1.0)  # the rig's default
    assert stim_range({"backend": "rig", "rig": {"stream": "name=x", "max_amplitude": 0.3}}) == (-0.3, 0.3)
    assert stim_range({"backend": "rig", "rig": {"stream": "name=x", "max_amplitude": 0.3},
                       "input_ranges": {"stim": [0.0, 0.2]}}) == (0.0, 0.2)  # narrower: fine
    with pytest.raises(NetworkError, match=r"nodes\.bn\.input_ranges\.stim: .*max_amplitude"):
        stim_range({"backend": "rig", "rig": {"stream": "name=x", "max_amplitude": 0.3},
                    "input_ranges": {"stim": [-1.0, 1.0]}})
    for bad, key in [({"max_amplitude": 0.0}, "max_amplitude"), ({"max_rate": -1.0}, "max_rate"),
                     ({"stim_channels": [-1]}, r"stim_channels\[0\]")]:
        with pytest.raises(NetworkError, match=rf"nodes\.bn\.rig\.{key}: "):
            stim_range({"backend": "rig", "rig": {"stream": "name=x", **bad}})
    with pytest.raises(NetworkError, match=r"nodes\.bn\.rig\.stim_channels: .*2 neurons"):
        stim_range({"backend": "rig", "size": 2, "rig": {"stream": "name=x", "stim_channels": [0]}})


def test_a_run_refuses_stimuli_beyond_the_rigs_rate_limit(cli_run, tmp_path):
    """rig_loop.toml with max_rate = 4/s on the rig: ANpre's 10 Hz stimuli are refused whenever one came
    less than 0.25 s after the last sent; the rig-sim sees exactly the ones sent, never closer than that."""
    name, stim = f"rig-rate-{tag()}", f"rig-rate-stim-{tag()}"
    rig, truth, log = start_rig_sim(tmp_path, name, stim, "--duration", "40")
    try:
        out = tmp_path / "s.json"
        run = cli_run("run", str(rig_loop_copy(tmp_path, name, stim, "max_rate = 4.0\n")), "--duration", "5",
                      "--json", str(out))
        code, text = run.finish(timeout=90)
    finally:
        stop(rig)
    assert code == 0, text
    r = read_json(out)["nodes"]["padova"]["model"]["rig"]
    stims = [e for e in read_truth(truth) if e.get("kind") == "stim"]
    assert len(stims) == r["stim_sent"] >= 10, (len(stims), r)
    assert r["stim_refused"]["rate"] >= r["stim_sent"], r  # 10 Hz against 4/s: more refused than sent
    assert r["stim_refused"]["amplitude"] == r["stim_refused"]["width"] == 0, r
    gaps = np.diff([e["t"] for e in stims])
    assert gaps.min() >= 0.25 - 1e-9, gaps.min()
