"""NWB export: a real recorded session exported and read back against its own summary, checked by NWB
Inspector; and, without processes, a session whose journal tail was cut, and the export's refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import NETWORKS, read_json, short_fig2, spikewire_cmd
from nwbinspector import Importance, inspect_nwbfile
from pynwb import NWBHDF5IO
from spikewire.monitor.nwb_export import DamagedSessionWarning, MetadataWarning, SessionError, export_nwb
from spikewire.streams.journal import RECEIVED, SENT, JournalWriter
from spikewire.streams.wire import BioEvent, Kind, empty_events, encode

SEVERE = {Importance.ERROR, Importance.PYNWB_VALIDATION, Importance.CRITICAL}


def _short_fig2(tmp_path: Path) -> Path:
    """paper_fig2 with 2 s phases, so 8 s reach all four (and both pulse directions). The last phase runs
    at 2.2 Hz rather than 2: its last spike then comes 0.18 s before the end instead of on it, where a run
    that stops may or may not send it (and Padova may or may not apply its stimulus)."""
    return short_fig2(tmp_path, 2.0, last_rate=2.2)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(session folder, its summary, the exported file): one 8 s run shared by the tests below."""
    where = tmp_path_factory.mktemp("fig2")
    session = where / "session"
    cmd = spikewire_cmd("run", str(_short_fig2(where)), "--duration", "8", "--session-dir", str(session),
                        "--reset-weights")
    try:
        done = subprocess.run(cmd, check=False, cwd=where, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"spikewire run did not finish within 60 s:\n{e.stdout}\n{e.stderr}")
    assert done.returncode == 0, done.stdout + done.stderr
    out = export_nwb(session, where / "fig2.nwb")
    return session, read_json(session / "summary.json"), out


def _units(nwb) -> dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]]:
    """(node, population, neuron) -> (spike times, each spike's BioEvent type from events/action_potentials;
    empty for a neuron whose spikes are untyped)."""
    df = nwb.units.to_dataframe()
    assert "bio_event_type" not in df.columns  # a silicon neuron's spikes have no type: no stand-in column
    aps = nwb.events["action_potentials"].to_dataframe() if "action_potentials" in nwb.events else None
    out = {}
    for r in df.itertuples():
        times, types = np.asarray(r.spike_times), np.zeros(0, int)
        mine = aps[(aps.node == r.node) & (aps.neuron_id == r.neuron_id)] if aps is not None else ()
        if len(mine):
            assert mine["timestamp"].to_numpy() == pytest.approx(times)  # the same action potentials
            types = mine["type"].map({"stimulated": BioEvent.STIMULATED_AP, "spontaneous": BioEvent.SPONTANEOUS_AP})
            types = types.to_numpy(dtype=int)
        out[(r.node, r.population, int(r.neuron_id))] = (times, types)
    return out


@pytest.mark.integration
def test_units_are_every_spike_each_node_sent(recorded):
    _, summary, path = recorded
    links = {ln["link"]: ln for ln in summary["links"]}
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        units = _units(nwb)
        psps = len(nwb.events["psps"])
        assert set(units) == {("zurich", "anpre", 0), ("zurich", "anpost", 0), ("padova", "padova", 0)}
        for n in summary["neurons"]:
            times, types = units[(n["node"], n["population"], int(n["neuron"]))]
            assert np.all(np.diff(times) > 0) and 0 <= times[0] and times[-1] <= summary["duration_s"]
            # A node that computes ahead counts spikes it had not sent when the run stopped (up to 20 ms of
            # them): the summary may exceed the record of what was sent by that, and by nothing else.
            assert 0 <= n["spikes"] - len(times) <= 1, n
            if n["node"] == "padova":
                assert Counter(types.tolist()) == {BioEvent.STIMULATED_AP: n["stimulated_ap"],
                                                  BioEvent.SPONTANEOUS_AP: n["spontaneous_ap"]}
        # The pacemaker's last spike is 0.18 s before the end: nothing computed ahead, so exactly equal.
        anpre = next(n for n in summary["neurons"] if n["population"] == "anpre")
        assert len(units[("zurich", "anpre", 0)][0]) == anpre["spikes"]
        # What the receiving nodes counted, independently of any journal.
        assert len(units[("zurich", "anpre", 0)][0]) == links["zurich.anpre.spikes -> southampton.mr1.pre"]["events"]
        assert len(units[("zurich", "anpost", 0)][0]) == links["zurich.anpost.spikes -> southampton.mr2.post"]["events"]
        assert len(units[("padova", "padova", 0)][0]) + psps == links["padova.events -> southampton.mr1.post"]["events"]
        assert nwb.units.resolution == pytest.approx(1e-4)


@pytest.mark.integration
def test_stimuli_pulses_resistance_and_epochs_match_the_summary(recorded):
    session, summary, path = recorded
    padova = next(n for n in summary["neurons"] if n["node"] == "padova")
    mems = {m["name"]: m for m in summary["memristors"]}
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        stimuli = nwb.events["stimuli"].to_dataframe()
        assert len(stimuli) == padova["stimuli"] > 0
        assert set(stimuli["port"]) == {"mr1.out"} and stimuli["amplitude"].between(0.0, 1.0).all()
        assert len(nwb.events["psps"]) == padova["psp"]

        pulses = nwb.events["plasticity_pulses"].to_dataframe()
        counted = Counter(zip(pulses["device"], pulses["direction"]))
        for name, m in mems.items():
            assert counted[(name, "ltp")] == m["ltp_pulses"] and counted[(name, "ltd")] == m["ltd_pulses"]
        assert mems["mr1"]["ltp_pulses"] > 0 and mems["mr1"]["ltd_pulses"] > 0  # both phases did their work
        assert np.all(np.diff(pulses["timestamp"]) >= 0) and (pulses["duration"] == 100e-6).all()

        for name, m in mems.items():
            series = nwb.acquisition[f"resistance_{name}"]
            t, r = series.timestamps[:], series.data[:]
            assert series.unit == "ohm" and np.all(np.diff(t) > 0) and t[0] == 0.0
            assert np.all((10e3 <= r) & (r <= 17e3))
            assert r[0] == m["r_start"] and r[-1] == pytest.approx(m["r_end"])
            mine = pulses[pulses["device"] == name]
            assert set(mine["r_after"]) <= set(r)  # every pulse's exact value is a sample

        reached = summary["phases"]
        epochs = nwb.epochs.to_dataframe()
        assert [tags[0] for tags in epochs["tags"]] == [p["phase"] for p in reached]
        assert [p["phase"] for p in reached] == ["none-1", "ltp", "none-2", "ltd"]
        assert list(epochs["start_time"]) == [p["start_s"] for p in reached]
        assert list(epochs["stop_time"]) == [p["end_s"] for p in reached]
        assert epochs["completed"].all()

        provenance = read_json(session / "provenance.json")
        assert (provenance["source"]["commit"] or "unknown (not a git checkout)") in nwb.notes
        assert " ".join(provenance["command_line"]) in nwb.notes
        assert nwb.session_start_time.tzinfo is not None and nwb.session_description.startswith("Serb et al. 2020")


@pytest.mark.integration
def test_nwb_inspector_finds_nothing_critical(recorded):
    _, _, path = recorded
    messages = list(inspect_nwbfile(nwbfile_path=path))
    severe = [m for m in messages if m.importance in SEVERE]
    assert not severe, "\n".join(f"{m.importance.name} {m.check_function_name}: {m.message}" for m in severe)
    for m in messages:  # what remains is metadata spikewire cannot know (run with -s to see it)
        print(f"{m.importance.name} {m.check_function_name} {m.object_name}: {m.message}")


# --- a session made by hand: exact contents, no processes ----------------------------------------------------
T0 = 1000.0
SPIKES = [0.1, 0.2, 0.3, 0.4, 0.5]
BIO = [(0.12, BioEvent.STIMULATED_AP), (0.21, BioEvent.PSP), (0.33, BioEvent.SPONTANEOUS_AP),
       (0.41, BioEvent.PSP), (0.52, BioEvent.STIMULATED_AP)]


def _packet(kind: Kind, seq: int, t: float, ident: int, value: float) -> bytes:
    ev = empty_events(1)
    ev["t"], ev["id"], ev["value"] = T0 + t, ident, value
    return encode(kind, 1, seq, T0 + t + 1e-4, ev)


def _journal(folder: Path, node: str, ports: list[str], packets: list[tuple[int, str, bytes]]) -> None:
    w = JournalWriter(folder / "journal" / f"{node}.swj", node, ports)
    for direction, port, data in packets:
        w.log(direction, port, T0 + 0.6, data)
    w.close()


def _handmade_session(folder: Path) -> Path:
    folder.mkdir()
    shutil.copyfile(NETWORKS / "paper_loop.toml", folder / "network.toml")
    (folder / "provenance.json").write_text(json.dumps({
        "created": "2025-01-02T03:04:04.000+00:00", "command_line": ["spikewire", "run", "paper_loop.toml"],
        "versions": {"spikewire": "0.1.0"}, "source": {"path": "/src", "commit": "abc123", "dirty": False},
        "host": "lab", "cwd": "/tmp", "t0_local_clock": T0, "outcome": "completed",
        "nodes": {"zurich": {"ready": {"utc": "2025-01-02T03:04:05.000+00:00", "local_clock": T0 - 0.2}}}}))
    (folder / "summary.json").write_text(json.dumps({
        "duration_s": 0.6, "phases": [], "links": [],
        "memristors": [{"node": "southampton", "name": "mr1", "r_start": 14000.0, "r_end": 13900.0,
                        "ltp_pulses": 1, "ltd_pulses": 0}]}))
    pulse = {"event": "pulse", "t": T0 + 0.25, "device": "mr1", "direction": "ltp", "r_before": 14000.0,
             "r_after": 13900.0}
    (folder / "status.jsonl").write_text(
        json.dumps({"node": "southampton", "type": "status", "t": T0 + 0.5,
                    "model": {"resistance": {"mr1": 13900.0, "mr2": 14000.0}}, "log": [pulse]}) + "\n")
    _journal(folder, "zurich", ["anpre.spikes", "anpost.spikes", "southampton.mr2.out"],
             [(SENT, "anpre.spikes", _packet(Kind.SPIKE, i, t, 0, 1.0)) for i, t in enumerate(SPIKES)])
    _journal(folder, "southampton", ["mr1.out", "mr2.out", "zurich.anpre.spikes"],
             [(SENT, "mr1.out", _packet(Kind.STIMULUS, i, t + 0.001, 0, 0.5)) for i, t in enumerate(SPIKES)]
             + [(RECEIVED, "zurich.anpre.spikes", _packet(Kind.SPIKE, 0, 0.1, 0, 1.0))])
    _journal(folder, "padova", ["events", "southampton.mr1.out"],
             [(SENT, "events", _packet(Kind.BIO, i, t, 0, float(kind))) for i, (t, kind) in enumerate(BIO)])
    return folder


def test_a_damaged_journal_tail_exports_what_survived(tmp_path):
    session = _handmade_session(tmp_path / "session")
    journal = session / "journal" / "padova.swj"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-5])  # padova killed mid-write: its last record (an AP at 0.52 s) is lost
    record = 8 + 12 + 32 + 16  # record header + body header + packet header + one event
    with pytest.warns(DamagedSessionWarning, match=rf"padova.swj: damaged tail \(truncated record\); "
                                                   rf"skipped its last {record - 5} bytes"):
        path = export_nwb(session, tmp_path / "out.nwb")
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        units = _units(nwb)
        assert units[("zurich", "anpre", 0)][0] == pytest.approx(SPIKES)
        times, types = units[("padova", "padova", 0)]
        assert times == pytest.approx([0.12, 0.33]) and list(types) == [1, 2]
        assert list(units[("zurich", "anpost", 0)][0]) == []  # could spike, did not: still a unit
        assert nwb.events["psps"]["timestamp"][:] == pytest.approx([0.21, 0.41])
        assert nwb.events["stimuli"]["timestamp"][:] == pytest.approx([t + 0.001 for t in SPIKES])
        assert "synaptic_events" not in nwb.events  # received packets are not what a node sent
        journals = nwb.processing["misc"]["journals"].to_dataframe().set_index("node")
        assert journals.loc["padova", "skipped_bytes"] == record - 5 and journals.loc["zurich", "skipped_bytes"] == 0
        assert f"skipped its last {record - 5} bytes" in nwb.notes
        assert nwb.session_start_time == datetime(2025, 1, 2, 3, 4, 5, 200000, tzinfo=timezone.utc)
        r = nwb.acquisition["resistance_mr1"]
        assert list(r.timestamps[:]) == pytest.approx([0.0, 0.25, 0.5])
        assert list(r.data[:]) == [14000.0, 13900.0, 13900.0]
        assert nwb.epochs is None  # paper_loop has no protocol


def test_refuses_a_folder_that_is_not_a_session(tmp_path):
    with pytest.raises(SessionError, match="is not a spikewire session folder"):
        export_nwb(tmp_path, tmp_path / "out.nwb")
    with pytest.raises(SessionError, match="no such session folder"):
        export_nwb(tmp_path / "nowhere", tmp_path / "out.nwb")


def test_an_existing_file_is_replaced_only_when_asked(tmp_path):
    session = _handmade_session(tmp_path / "session")
    out = tmp_path / "out.nwb"
    out.write_text("an earlier export")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_nwb(session, out)
    assert out.read_text() == "an earlier export"
    export_nwb(session, out, overwrite=True)
    with NWBHDF5IO(str(out), "r") as io:
        assert len(io.read().units) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


# --- a killed run (issue 11, item 16): export what is there and say what is not -------------------------------
def _as_if_killed(session: Path) -> None:
    """What a SIGKILLed supervisor leaves: no summary.json, and provenance.json as written at the start (no t0,
    no node events, no outcome). Each status line carries its node's ``elapsed`` since t0, as the runtime's do."""
    (session / "summary.json").unlink()
    prov = json.loads((session / "provenance.json").read_text())
    for key in ("t0_local_clock", "outcome"):
        del prov[key]
    prov["nodes"] = {}
    (session / "provenance.json").write_text(json.dumps(prov))
    lines = [json.loads(ln) for ln in (session / "status.jsonl").read_text().splitlines()]
    (session / "status.jsonl").write_text("".join(json.dumps({**ln, "elapsed": ln["t"] - T0}) + "\n" for ln in lines))


def test_a_killed_run_exports_with_t0_and_r_start_recovered(tmp_path):
    session = _handmade_session(tmp_path / "session")
    _as_if_killed(session)
    journal = session / "journal" / "padova.swj"
    journal.write_bytes(journal.read_bytes()[:-5])  # and padova was killed mid-write
    with pytest.warns(DamagedSessionWarning) as caught:
        path = export_nwb(session, tmp_path / "out.nwb")
    damage = [str(w.message) for w in caught if issubclass(w.category, DamagedSessionWarning)]
    assert any("no summary.json" in d for d in damage), damage
    assert any("t0 recovered" in d for d in damage), damage
    assert any("padova.swj: damaged tail" in d for d in damage), damage
    assert any("no final report" in d and "southampton" in d for d in damage), damage
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        units = _units(nwb)
        assert units[("zurich", "anpre", 0)][0] == pytest.approx(SPIKES)  # t0 exact: from the status lines
        assert units[("padova", "padova", 0)][0] == pytest.approx([0.12, 0.33])
        assert nwb.events["stimuli"]["timestamp"][:] == pytest.approx([t + 0.001 for t in SPIKES])
        r = nwb.acquisition["resistance_mr1"]  # r_start from the first pulse's r_before (summary.json is gone)
        assert list(r.timestamps[:]) == pytest.approx([0.0, 0.25, 0.5])
        assert list(r.data[:]) == [14000.0, 13900.0, 13900.0]
        for d in damage:
            assert d in nwb.notes
        assert "incomplete record" in nwb.session_description
        links = nwb.processing["misc"]["links"].to_dataframe().set_index("link")  # rebuilt from the journals
        row = links.loc["zurich.anpre.spikes -> southampton.mr1.pre"]
        assert row["sent"] == len(SPIKES) and row["received"] == 1


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10).stdout
    return [int(p) for p in out.split()]


@pytest.mark.integration
def test_a_site_killed_with_sigkill_exports_and_states_the_damage(tmp_path):
    """Zurich and Southampton run as sites; both are killed with SIGKILL (nodes first, then the supervisor,
    like a power cut), a journal is cut mid-record, and `spikewire export` still writes the file."""
    import os
    import signal
    import time

    from conftest import CliRun, sites_copy

    net = sites_copy(tmp_path, curve=False, keys=False)
    # Padova never comes: the two sites start without waiting for it.
    runs = {site: CliRun("run", str(net), "--site", site, "--start-wait", "0", "--duration", "60",
                         "--status-every", "0.5", "--session-dir", str(tmp_path / "sessions" / site), cwd=tmp_path)
            for site in ("zurich", "southampton")}
    try:
        for run in runs.values():
            run.wait_for("all nodes ready", timeout=60)
        status = tmp_path / "sessions" / "zurich" / "status.jsonl"
        deadline = time.monotonic() + 30
        while not (status.exists() and status.read_text().count("\n") >= 3):  # three 1 Hz status lines
            assert time.monotonic() < deadline, "no status recorded"
            time.sleep(0.1)
        for run in runs.values():
            for pid in _children(run.proc.pid):
                os.kill(pid, signal.SIGKILL)
            run.proc.send_signal(signal.SIGKILL)
            run.proc.wait(timeout=10)
    finally:
        for run in runs.values():
            run.kill()
    session = tmp_path / "sessions" / "zurich"
    journal = session / "journal" / "zurich.swj"
    journal.write_bytes(journal.read_bytes()[:-7])  # the last record cut mid-write
    out = subprocess.run(spikewire_cmd("export", str(session), "--nwb", str(tmp_path / "z.nwb")), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    damage = [ln for ln in out.stderr.splitlines() if ln.startswith("spikewire export: damaged: ")]
    assert len(damage) == len(out.stderr.splitlines()), out.stderr  # one line per problem, nothing else
    text = "\n".join(damage)
    for what in ("no summary.json", "zurich.swj: damaged tail", "no final report"):
        assert what in text, (what, out.stderr)
    # The supervisor wrote t0 and the nodes' ready times when it started them, so nothing about time is guessed.
    assert "t0_local_clock" in read_json(session / "provenance.json")
    assert "t0 recovered" not in text and "session_start_time is the folder's creation" not in text, text
    assert f"wrote {tmp_path / 'z.nwb'}" in out.stdout and f"{len(damage)} problems" in out.stdout, out.stdout
    with NWBHDF5IO(str(tmp_path / "z.nwb"), "r") as io:
        nwb = io.read()
        anpre = _units(nwb)[("zurich", "anpre", 0)][0]
        assert len(anpre) >= 20, anpre  # 10 Hz for three seconds and more
        assert 0.0 <= anpre[0] < 0.2 and 8 < len(anpre) / anpre[-1] < 12, anpre  # t0 right: the pacemaker's rate
        for line in damage:
            assert line.removeprefix("spikewire export: damaged: ") in nwb.notes


# --- generic over declarations: a kind the exporter has never heard of -------------------------------------
def _crossbar_kind():
    """A kind spikewire has never heard of, standing in for a hardware memristor kind from a plugin: it
    declares one device and a SYNAPTIC output."""
    from spikewire.nodes.base import InPort, Node, NodeSettings, OutPort
    from spikewire.nodes.element import Declaration, Device, Role
    from spikewire.nodes.figures import DeviceFigures, Figures

    class TestCrossbar(Node):
        kind = "test_crossbar"
        Settings = NodeSettings

        @classmethod
        def ports(cls, settings):
            return ({"pre": InPort(frozenset({Kind.SPIKE}), "presynaptic spikes", 1, role=Role.PRE, group="g")},
                    {"out": OutPort(Kind.SPIKE, "weighted events", 1, role=Role.SYNAPTIC, group="g")})

        @classmethod
        def declare(cls, name, settings):
            return Declaration(devices=(Device("d0", "g", {"wordline": 3, "bitline": 4},
                                               {"ltp_voltage": 1.2, "ltd_voltage": -1.5, "ltp_width": 5e-5,
                                                "ltd_width": 7e-5}),))

        def figures(self, now, final=False):
            return Figures(devices={"d0": DeviceFigures(1.0, 1.0)})

    return TestCrossbar


@pytest.fixture
def crossbar_kind(monkeypatch):
    from spikewire.nodes.element import kinds

    cls = _crossbar_kind()
    monkeypatch.setitem(kinds(), cls.kind, cls)
    return cls


PLUGIN_NETWORK = """
[network]
name = "plugin_devices"

[nodes.src]
kind = "source"
rate = 10.0

[nodes.xbar]
kind = "test_crossbar"

[[links]]
from = "src.out"
to = "xbar.pre"
"""


def _plugin_session(folder: Path, finished: bool = True) -> Path:
    """A session of a source feeding the plugin crossbar, recorded as format 2 writes it: status lines and
    finals carry Figures JSON (devices with r_start), provenance the clock's UTC offset."""
    folder.mkdir()
    (folder / "network.toml").write_text(PLUGIN_NETWORK)
    (folder / "provenance.json").write_text(json.dumps({
        "format": 2, "created": "2025-01-02T03:04:04.000+00:00", "command_line": ["spikewire", "run", "p.toml"],
        "host": "lab", "t0_local_clock": T0, "utc_minus_local_clock": 1735787045.0 - T0,
        "t0_utc": "2025-01-02T03:04:05.000000+00:00", "outcome": "completed", "nodes": {}}))
    device = {"r": 9000.0, "r_start": 10000.0, "ltp": 1, "ltd": 0}
    pulse = {"event": "pulse", "t": T0 + 0.3, "device": "d0", "direction": "ltp", "r_before": 10000.0,
             "r_after": 9000.0}
    lines = [{"node": "xbar", "type": "status", "t": T0 + 0.5, "elapsed": 0.5,
              "model": {"elapsed": 0.5, "populations": {}, "devices": {"d0": device}, "rejected": {}, "held": {}},
              "log": [pulse]}]
    if finished:
        lines.append({"node": "xbar", "type": "final", "t": T0 + 0.7, "log": [], "summary": {
            "node": "xbar", "kind": "test_crossbar", "model": {"elapsed": 0.6, "populations": {},
                                                              "devices": {"d0": device}}}})
        (folder / "summary.json").write_text(json.dumps({"duration_s": 0.6, "outcome": "completed",
                                                         "nodes": {"src": {"final": True}, "xbar": {"final": True}}}))
    (folder / "status.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    _journal(folder, "src", ["out"], [(SENT, "out", _packet(Kind.SPIKE, i, t, 0, 1.0)) for i, t in enumerate(SPIKES)])
    _journal(folder, "xbar", ["out", "src.out"],
             [(SENT, "out", _packet(Kind.SPIKE, i, t + 0.001, 0, 4e-9)) for i, t in enumerate(SPIKES)])
    return folder


def test_a_plugin_kind_that_declares_devices_is_devices_never_units(crossbar_kind, tmp_path):
    session = _plugin_session(tmp_path / "session")
    path = export_nwb(session, tmp_path / "out.nwb")
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert set(_units(nwb)) == {("src", "out", 0)}  # the source's spikes; the crossbar is no neuron
        synaptic = nwb.events["synaptic_events"].to_dataframe()
        assert set(synaptic["node"]) == {"xbar"} and len(synaptic) == len(SPIKES)
        r = nwb.acquisition["resistance_d0"]
        assert "wordline 3, bitline 4" in r.description and "test_crossbar" not in r.description
        # r_start from the status figures (format 2), the exact pulse, then the sample
        assert list(r.timestamps[:]) == pytest.approx([0.0, 0.3, 0.5]) and list(r.data[:]) == [10000.0, 9000.0, 9000.0]
        pulses = nwb.events["plasticity_pulses"].to_dataframe()
        assert list(pulses["voltage"]) == [1.2] and list(pulses["duration"]) == [5e-5]  # as declared
        # t0's UTC as the writer recorded it; simulated neurons only: an in-silico subject
        assert nwb.session_start_time == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        assert nwb.subject.description.startswith("In silico")

    from spikewire.monitor.plot import read_session as plot_data

    data = plot_data(session)
    assert [n.name for n in data.nodes] == ["src"] and set(data.resistance) == {"d0"}
    assert list(data.resistance["d0"][1]) == [10000.0, 9000.0, 9000.0] and data.pulses["d0"][2].tolist() == [True]


def test_r_start_from_the_status_figures_when_the_run_was_killed(crossbar_kind, tmp_path):
    """Format 2: every status line says where each device started, so a killed run needs no guess (its
    first sample, 9000, came after a pulse its log no longer has)."""
    from spikewire.config.session import read_session

    session = _plugin_session(tmp_path / "session", finished=False)
    lines = [json.loads(ln) for ln in (session / "status.jsonl").read_text().splitlines()]
    lines[0]["log"] = []
    (session / "status.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    with pytest.warns(DamagedSessionWarning) as caught:
        s = read_session(session)
    assert any("no summary.json" in str(w.message) for w in caught)
    (d0,) = s.devices()
    assert (d0.node, d0.name, d0.r_start, d0.r_start_from) == ("xbar", "d0", 10000.0, "the status figures")
    assert d0.declared is not None and d0.declared.address == {"wordline": 3, "bitline": 4}
    assert [list(a) for a in d0.steps()] == [[0.0, 0.5], [10000.0, 9000.0]]


def test_a_rig_is_told_by_its_figures_not_its_kind(tmp_path):
    """A node whose figures come from a rig recorded a preparation: the subject says what is unknown."""
    session = _handmade_session(tmp_path / "session")
    with open(session / "status.jsonl", "a") as f:
        f.write(json.dumps({"node": "padova", "type": "status", "t": T0 + 0.5, "elapsed": 0.5,
                            "model": {"elapsed": 0.5, "populations": {}, "devices": {}, "rig": {"stream": "x"}},
                            "log": []}) + "\n")
    with pytest.warns(MetadataWarning, match="padova recorded a preparation: spikewire does not know its species, "
                                             "sex, age; give --species ... --sex ... --age ..."):
        path = export_nwb(session, tmp_path / "out.nwb")
    with NWBHDF5IO(str(path), "r") as io:
        assert io.read().subject.description == "the preparation recorded by padova; not described by spikewire"


def test_the_writer_records_what_readers_needed_to_guess(tmp_path):
    """Provenance says its format, relates the local_clock to UTC from the start and gives t0 in UTC, so
    the reader guesses neither t0 nor the session's start."""
    from spikewire.config.session import FORMAT, Session, read_session
    from spikewire.streams.clock import local_clock

    folder = tmp_path / "session"
    session = Session(folder, NETWORKS / "paper_loop.toml", nodes=["zurich"])
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["format"] == FORMAT == 2 and "t0_utc" not in prov
    assert abs(prov["utc_minus_local_clock"] + local_clock() - datetime.now(timezone.utc).timestamp()) < 0.05
    session.node_event("zurich", "ready", local_clock())
    t0 = local_clock() + 0.2
    session.provenance["t0_local_clock"] = t0  # as the supervisor does at the start
    session.write()
    prov = json.loads((folder / "provenance.json").read_text())
    t0_utc = datetime.fromisoformat(prov["t0_utc"])
    assert abs(t0_utc.timestamp() - (datetime.now(timezone.utc).timestamp() + 0.2)) < 0.05
    with pytest.warns(DamagedSessionWarning) as caught:  # killed now: no summary, no journal, no status
        s = read_session(folder)
    assert s.t0 == t0 and s.t0_from == "recorded" and s.format == 2
    assert abs((s.start_utc - t0_utc).total_seconds()) < 1e-5
    said = " | ".join(str(w.message) for w in caught)
    assert "no summary.json" in said and "zurich.swj: missing" in said and "t0 recovered" not in said
