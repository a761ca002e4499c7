"""Issue 15's plumbing in the run: the live file, the operator's control endpoint (hold, release, mark), the
journal of those actions (session reader, NWB export) and `spikewire run --dashboard`'s child process.

Real `spikewire run` processes and real sockets; every receive has a timeout. The dashboard is a stand-in
script here (SPIKEWIRE_DASHBOARD_COMMAND); the real one is tested with a browser in its own tests.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import zmq

from conftest import CliRun, network_copy, read_json
from test_supervisor_exit import _pair  # a source and a sink on free ports
from spikewire.config.live import LiveFileError, live_path, read_live, write_live
from spikewire.streams.clock import local_clock

pytestmark = pytest.mark.integration


def wait_live(path: Path, timeout: float, t0: bool = False) -> dict:
    """The live file once it exists (with ``t0``: once the session has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            live = read_live(path)
        except LiveFileError:
            live = None
        if live is not None and (not t0 or live["t0"] is not None):
            return live
        time.sleep(0.05)
    pytest.fail(f"no live file{' with t0' if t0 else ''} at {path} within {timeout} s")


class Operator:
    """A REQ client of the control endpoint; every reply within a timeout."""

    def __init__(self, live: dict):
        self.ctx = zmq.Context()
        self.endpoint = live["control"]["endpoint"]
        self.secret = live["control"]["secret"]
        self.sock = None

    def raw(self, *frames: bytes) -> dict:
        sock = self.ctx.socket(zmq.REQ)  # a fresh one each time: a REQ that timed out is stuck
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(self.endpoint)
        try:
            sock.send_multipart(list(frames))
            return json.loads(sock.recv())
        except zmq.Again:
            pytest.fail(f"no reply from {self.endpoint} within 5 s")
        finally:
            sock.close()

    def ask(self, action: str, secret: str | None = None, **extra) -> dict:
        msg = {"secret": self.secret if secret is None else secret, "action": action, "source": "test", **extra}
        return self.raw(json.dumps(msg).encode())

    def close(self) -> None:
        self.ctx.term()


def test_live_file_controls_hold_mark_and_their_record(tmp_path):
    net = network_copy("paper_loop.toml", tmp_path)
    session = tmp_path / "session"
    run = CliRun("run", str(net), "--duration", "6", "--json", str(tmp_path / "s.json"), "--session-dir",
                 str(session), "--status-every", "1", cwd=tmp_path)
    op = None
    try:
        path = live_path("paper_loop", cwd=tmp_path)
        live = wait_live(path, 90)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert live["version"] == 1 and live["network"] == "paper_loop" and live["site"] is None
        assert live["network_file"] == str(net.resolve()) and live["session"] == str(session.resolve())
        assert live["supervisor_pid"] == run.proc.pid and live["phases"] == [] and live["duration"] == 6
        assert set(live["nodes"]) == {"zurich", "southampton", "padova"}
        for name, node in live["nodes"].items():
            assert node["kind"] in ("silicon", "memristor", "biological") and isinstance(node["pid"], int)
            assert node["metrics"].startswith("http://127.0.0.1:") and node["metrics"].endswith("/metrics")
            assert node["outputs"] and all(e.startswith("tcp://127.0.0.1:") for e in node["outputs"].values())
        assert set(live["nodes"]["zurich"]["outputs"]) == {"anpre.spikes", "anpost.spikes"}
        assert live["control"]["endpoint"].startswith("tcp://127.0.0.1:") and len(live["control"]["secret"]) == 32
        live = wait_live(path, 10, t0=True)
        assert isinstance(live["t0"], float)
        while local_clock() < live["t0"] + 0.1:  # running: nothing of the loop's is held before its start
            time.sleep(0.02)

        op = Operator(live)
        assert op.ask("ping", secret="0" * 32) == {"ok": False, "error": "forbidden"}
        assert op.raw(json.dumps({"action": "hold", "source": "x"}).encode()) == {"ok": False, "error": "forbidden"}
        for bad in (b"{not json", b"\xff\xfe", b"[1, 2]"):
            reply = op.raw(bad)
            assert reply["ok"] is False and "JSON object" in reply["error"], reply
        reply = op.raw(json.dumps({"secret": op.secret, "action": "mark", "text": "x" * 5000}).encode())
        assert reply["ok"] is False and "at most 4096" in reply["error"], reply
        assert op.raw(b"{}", b"{}")["ok"] is False  # two frames
        assert op.ask("explode")["error"].startswith("'action' must be one of")
        assert "printable" in op.ask("mark", text="a\nb")["error"]
        assert "printable" in op.ask("mark", text="y" * 501)["error"]
        assert op.ask("ping")["ok"] is True

        hold = op.ask("hold")
        assert hold["ok"] is True and sorted(hold["nodes"]) == ["padova", "southampton", "zurich"], hold
        time.sleep(1.5)  # ANpre's 10 Hz spikes meanwhile: MR1's stimuli to BN are held
        mark = op.ask("mark", text="drug applied (2 uM)")
        assert mark["ok"] is True and isinstance(mark["t"], float)
        release = op.ask("release")
        assert release["ok"] is True and len(release["nodes"]) == 3
        code, text = run.finish(timeout=60)
    finally:
        if op is not None:
            op.close()
        run.kill()
    assert code == 0, text
    assert not path.exists(), "the live file outlived its run"
    assert "operator HOLD by test" in text and "mark by test: drug applied (2 uM)" in text, text

    summary = read_json(tmp_path / "s.json")
    controls = summary["controls"]
    assert controls["accepted"] == {"ping": 1, "hold": 1, "mark": 1, "release": 1}, controls
    assert controls["refused"] == {"forbidden": 2, "malformed": 4, "too_large": 1, "invalid": 3}, controls
    assert "Operator controls: accepted hold 1, mark 1, ping 1, release 1; refused forbidden 2" in text
    for name in ("southampton", "padova"):  # every interlocked node held, and released at once
        il = summary["nodes"][name]["interlock"]
        assert il["holds"] == 1 and il["operator_holds"] == 1 and not il["holding"] and il["operator"] is None, il
        assert il["reason"] == "operator hold (test)", il
        assert 1.0 < il["held_s"] < 3.0, il
    assert summary["nodes"]["southampton"]["interlock"]["held_stimulus_events"] >= 8, summary["nodes"]["southampton"]
    assert summary["nodes"]["zurich"].get("interlock") is None  # no interlock: it only acknowledged

    from spikewire.config.session import read_session

    s = read_session(session)
    assert [(c.action, c.source, c.text) for c in s.controls()] == [
        ("hold", "test", ""), ("mark", "test", "drug applied (2 uM)"), ("release", "test", "")]
    assert [m.text for m in s.marks()] == ["drug applied (2 uM)"]
    (held,) = s.operator_holds()
    assert held.source == held.released_by == "test" and 1.4 < held.stop - held.start < 2.5
    assert abs(s.marks()[0].t - (mark["t"] - s.t0)) < 1e-9
    hold_t = hold["t"]
    for name in ("southampton", "padova"):  # each node's hold within one housekeeping period of the request
        events = [ev for ln in s.status.of(name) for ev in ln.get("log") or [] if ev.get("event") == "interlock_hold"]
        assert len(events) == 1 and events[0]["operator"] == "test", events
        assert 0 <= events[0]["t"] - hold_t < 0.15, (name, events[0]["t"] - hold_t)

    from nwbinspector import Importance, inspect_nwbfile
    from pynwb import NWBHDF5IO
    from spikewire.monitor.nwb_export import export_nwb

    out = export_nwb(session, tmp_path / "session.nwb", advice=[])
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        marks = nwb.events["marks"].to_dataframe()
        assert list(marks["annotation"]) == ["drug applied (2 uM)"] and list(marks["source"]) == ["test"]
        assert abs(marks["timestamp"].iloc[0] - s.marks()[0].t) < 1e-9
        holds = nwb.intervals["operator_holds"].to_dataframe()
        assert len(holds) == 1 and holds["source"].iloc[0] == "test" and holds["released_by"].iloc[0] == "test"
        assert abs(holds["start_time"].iloc[0] - held.start) < 1e-9
    bad = {Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION, Importance.ERROR, Importance.PYNWB_VALIDATION}
    messages = list(inspect_nwbfile(nwbfile_path=str(out)))
    for m in messages:
        print(f"{m.importance.name} {m.check_function_name} {m.object_type} {m.object_name} {m.location}: {m.message}")
    # An in-silico subject has no species (as every simulated session's export: tests/test_nwb_export.py);
    # anything else CRITICAL or a violation, and anything at all about the marks and holds, fails.
    messages = [m for m in messages if (m.importance in bad and m.check_function_name != "check_subject_species_exists")
                or (m.object_name in ("marks", "operator_holds") and m.check_function_name != "check_single_row")]
    assert not messages, "\n".join(f"{m.importance.name} {m.check_function_name} {m.object_name}: {m.message}"
                                   for m in messages)


STUB = """
import argparse, json, signal, sys, time
ap = argparse.ArgumentParser()
ap.add_argument("--live")
ap.add_argument("--listen")
args = ap.parse_args()
live = json.load(open(args.live))
print(f"stub dashboard at http://{args.listen}/?token=abc for {live['network']} pid {live['supervisor_pid']}",
      flush=True)
if "--die" in sys.argv[0]:
    sys.exit(3)
open(args.live + ".stub-pid", "w").write(str(__import__("os").getpid()))
while True:
    time.sleep(0.1)
"""


def _stub(tmp_path: Path, env_extra: str = "") -> dict:
    script = tmp_path / "stub_dashboard.py"
    script.write_text(STUB.replace('"--die" in sys.argv[0]', repr(env_extra == "die")))
    return {"SPIKEWIRE_DASHBOARD_COMMAND": f"{sys.executable} {script}"}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigint_removes_the_live_file_and_reaps_the_dashboard(tmp_path):
    net = _pair(tmp_path)
    path = live_path("pair", cwd=tmp_path)
    # A live file of a run that still goes (this test's own pid): overwritten, with a warning.
    write_live(path, {"version": 1, "network": "pair", "supervisor_pid": os.getpid()})
    run = CliRun("run", str(net), "--no-record", "--dashboard", cwd=tmp_path, env=_stub(tmp_path))
    try:
        run.wait_for("names a run still going", timeout=60)
        line = run.wait_for("stub dashboard at", timeout=60)
        assert f"http://127.0.0.1:8765/?token=abc for pair pid {run.proc.pid}" in line, line
        live = wait_live(path, 30, t0=True)
        assert live["supervisor_pid"] == run.proc.pid
        pid_file = Path(str(path) + ".stub-pid")
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        stub_pid = int(pid_file.read_text())
        assert not _gone(stub_pid)
        run.proc.send_signal(signal.SIGINT)
        code, text = run.finish(timeout=60)
    finally:
        run.kill()
    assert code == 0, text
    assert not path.exists(), "the live file outlived its run (SIGINT)"
    assert _gone(stub_pid), "the dashboard outlived its run"
    assert "stopped by SIGINT" in text, text


def test_a_dashboard_that_dies_leaves_the_run_going(tmp_path):
    run = CliRun("run", str(_pair(tmp_path)), "--no-record", "--duration", "2", "--json", str(tmp_path / "s.json"),
                 "--dashboard", "127.0.0.1:18765", cwd=tmp_path, env=_stub(tmp_path, "die"))
    try:
        code, text = run.finish(timeout=60)
    finally:
        run.kill()
    assert code == 0, text
    assert "stub dashboard at http://127.0.0.1:18765/" in text, text
    assert text.count("WARNING: the dashboard exited with code 3") == 1, text
    assert read_json(tmp_path / "s.json")["outcome"] == "completed"
    assert not live_path("pair", cwd=tmp_path).exists()


def test_a_stale_live_file_is_known_by_its_dead_supervisor(tmp_path):
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    path = live_path("net", "lab", cwd=tmp_path)
    assert path.name == "net.lab.json" and path.parent == tmp_path / ".spikewire" / "live"
    write_live(path, {"version": 1, "network": "net", "supervisor_pid": dead.pid})
    with pytest.raises(LiveFileError, match="stale"):
        read_live(path)
    assert read_live(path, alive=False)["supervisor_pid"] == dead.pid
    path.write_text("{")
    with pytest.raises(LiveFileError, match="unreadable"):
        read_live(path)


def test_bad_dashboard_addresses_are_one_line(tmp_path):
    for value, says in (("nohost", "is not HOST:PORT"), ("127.0.0.1:0", "port must be"),
                        ("example.org:80", "IP address or localhost")):
        run = CliRun("run", str(_pair(tmp_path)), "--no-record", "--dashboard", value, cwd=tmp_path)
        code, text = run.finish(timeout=30)
        assert code == 2 and text.strip().count("\n") == 0 and says in text, text
    from spikewire.launch.cli import dashboard_listen

    assert dashboard_listen("0.0.0.0:8000") == ("0.0.0.0:8000", False)
    assert dashboard_listen("[::1]:8000") == ("[::1]:8000", True)


# --- the interlock's operator hold, on a fake clock (no sockets, no sleeps) ------------------------------
def _interlock():
    from spikewire.nodes.interlock import Interlock, SafetySettings
    from spikewire.streams.link_rx import EventLog, LinkIn, Upstream
    from spikewire.streams.wire import Kind

    now = [0.0]
    up = Upstream(1, "tcp://127.0.0.1:1", None, [LinkIn("a.out -> b.in", "in", frozenset({Kind.SPIKE}))])
    il = Interlock(SafetySettings(stale_after=0.5, release_after=0.5), [up], EventLog("b"), lambda: now[0])
    il.start()
    return il, up, now


def test_an_operator_hold_holds_until_released_then_the_inputs_decide():
    il, up, now = _interlock()
    now[0] = up.last_heard = 0.2
    assert il.operator_hold("alice") is True and il.holding and il.reason == "operator hold (alice)"
    for t in (0.4, 1.0, 2.0):  # healthy inputs never lift an operator's hold
        now[0] = up.last_heard = t
        assert il.check() is False and il.holding
    assert il.operator_release("alice") is True and not il.holding  # healthy all along: at once
    assert il.summary(2.0) == {"holds": 1, "holding": False, "held_s": 1.8, "held_stimulus_events": 0,
                               "reason": "operator hold (alice)", "operator_holds": 1, "operator": None}
    events = [e["event"] for e in il.events.take()]
    assert events == ["interlock_hold", "interlock_operator_release", "interlock_release"]


def test_an_operator_release_during_a_fault_leaves_the_fault_hold():
    il, up, now = _interlock()
    now[0] = 1.0  # silent since 0: a fault hold
    assert il.check() is True and il.reason.startswith("a.out silent")
    assert il.operator_hold("bob") is False and il.holds == 1  # the same hold, now also the operator's
    assert il.reason.startswith("operator hold (bob); held before for: a.out silent")
    now[0] = 1.2
    assert il.operator_release("bob") is False and il.holding  # still silent
    now[0] = up.last_heard = 1.3
    assert il.check() is False  # healthy for 0, not release_after
    now[0] = up.last_heard = 1.8
    assert il.check() is True and not il.holding


def test_a_node_the_interlock_does_not_watch_releases_at_once():
    il, up, now = _interlock()
    now[0] = 5.0  # its inputs would say "silent": not judged (judge=False)
    assert il.operator_hold("carol") is True
    assert il.operator_release("carol", judge=False) is True and not il.holding
