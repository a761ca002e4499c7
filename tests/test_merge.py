"""`spikewire merge`: the sites' sessions of one run as one session on one clock.

Hand-made sessions (written with the real Session, JournalWriter and wire.encode) of paper_sites, whose
sites' clocks read true time + SHIFT[site]: after the merge a packet's times agree at both of its ends and
equal true time, on the barrier's offsets or on the links' (chained through a site). Then the refusals, and
the three sites run for real, merged, exported to NWB and plotted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import NETWORKS, sites_copy, spikewire_cmd
from spikewire.launch.cli import main
from spikewire.config.network import load_network
from spikewire.config.session import Session
from spikewire.monitor.merge import MergeError, merge_sessions
from spikewire.streams.journal import RECEIVED, SENT, JournalWriter, read_journal
from spikewire.streams.wire import EVENT_DTYPE, BioEvent, Kind, encode

SHIFT = {"zurich": 0.0, "southampton": 100.0, "padova": 30.0}  # each site's clock minus true time
T0 = 9.0  # true time of the (common) start
SPIKE_T, BACK_T, PROBE_T = 10.0, 10.5, 10.2  # true times: zurich's spike, southampton's answer, zurich's probe
PORTS = {"zurich": ["anpre.spikes", "anpost.spikes", "southampton.mr2.out"],
         "southampton": ["mr1.out", "mr2.out", "zurich.anpre.spikes", "padova.events", "zurich.anpost.spikes"],
         "padova": ["events", "southampton.mr1.out"]}
RECEIVED_AT = {  # link -> site whose provenance records it, as in a real run
    "zurich.anpre.spikes -> southampton.mr1.pre": "southampton",
    "padova.events -> southampton.mr1.post": "southampton",
    "southampton.mr1.out -> padova.stim": "padova",
    "southampton.mr2.out -> zurich.anpost.input": "zurich",
}


def _packet(net, node: str, port: str, kind: Kind, send: float, *events) -> bytes:
    ev = np.array(list(events), dtype=EVENT_DTYPE)
    return encode(kind, net.source_ids[(node, port)], 0, send, ev)


def _clock(site: str, t: float) -> float:
    return t + SHIFT[site]


def _write_sites(tmp_path: Path, session_id: str | None = "c0ffee01", site_offsets: dict | None = None,
                 link_offsets: dict | None = None, network: Path | None = None) -> dict[str, Path]:
    """One session folder per site. ``site_offsets``: site -> its provenance["site_offsets"];
    ``link_offsets``: link label -> clock_offset_s its receiving site records (others are left out)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    network = network or shutil.copy(NETWORKS / "paper_sites.toml", tmp_path / "paper_sites.toml")
    net = load_network(network, check_keys=False)
    z, s, p = "zurich", "southampton", "padova"
    spike = _packet(net, z, "anpre.spikes", Kind.SPIKE, _clock(z, SPIKE_T), (_clock(z, SPIKE_T), 0, 1.0))
    back = _packet(net, s, "mr2.out", Kind.SPIKE, _clock(s, BACK_T + 1e-4), (_clock(s, BACK_T), 0, 4e-9))
    stim = _packet(net, s, "mr1.out", Kind.STIMULUS, _clock(s, SPIKE_T + 0.0016), (_clock(s, SPIKE_T + 0.0015), 0, 0.8))
    bio = _packet(net, p, "events", Kind.BIO, _clock(p, SPIKE_T + 0.0031),
                  (_clock(p, SPIKE_T + 0.003), 0, float(BioEvent.STIMULATED_AP)))
    # A loop probe zurich started, forwarded by southampton: it keeps zurich's stamp (origin index 0, 2 hops).
    probe = _packet(net, s, "mr2.out", Kind.PROBE, _clock(s, PROBE_T + 0.002), (_clock(z, PROBE_T), 7, 2.0))
    records = {  # site -> (direction, port, logged at true time, packet)
        z: [(SENT, "anpre.spikes", SPIKE_T, spike), (RECEIVED, "southampton.mr2.out", BACK_T + 0.001, back),
            (RECEIVED, "southampton.mr2.out", PROBE_T + 0.003, probe)],
        s: [(RECEIVED, "zurich.anpre.spikes", SPIKE_T + 0.001, spike), (SENT, "mr1.out", SPIKE_T + 0.0016, stim),
            (SENT, "mr2.out", BACK_T + 1e-4, back), (RECEIVED, "padova.events", SPIKE_T + 0.004, bio),
            (SENT, "mr2.out", PROBE_T + 0.002, probe)],
        p: [(RECEIVED, "southampton.mr1.out", SPIKE_T + 0.002, stim), (SENT, "events", SPIKE_T + 0.0031, bio)],
    }
    out = {}
    for site, recs in records.items():
        folder = tmp_path / "sessions" / site
        session = Session(folder, network, site=site, nodes=[site])
        journal = JournalWriter(folder / "journal" / f"{site}.swj", site, PORTS[site])
        for direction, port, t, packet in recs:
            journal.log(direction, port, _clock(site, t), packet)
        journal.close()
        session.node_event(site, "ready", _clock(site, T0 - 0.5))
        log = [{"event": "pulse", "t": _clock(s, 10.7), "device": "mr2", "direction": "ltd", "r_before": 14000.0,
                "r_after": 14500.0}] if site == s else []
        model = {"resistance": {"mr1": 14000.0, "mr2": 14500.0}} if site == s else {}
        session.record_status(site, {"type": "status", "t": _clock(site, 11.0), "elapsed": 2.0, "model": model,
                                     "log": log})
        links = [{"link": label, "received": 1, "sent": None, "gaps": 0, "inter_site": True,
                  "clock_offset_s": (link_offsets or {}).get(label)}
                 for label, at in RECEIVED_AT.items() if at == site and label in (link_offsets or {})]
        report = {"network": "paper_sites", "outcome": "completed", "duration_s": 3.0, "warnings": [],
                  "neurons": [], "memristors": [], "links": links, "nodes": {site: {"final": True}}, "phases": [],
                  "probes": None, "killed_at_stop": {}}
        if site == z:  # the sender's end of a link reports what it sent
            report["links"].append({"link": "zurich.anpre.spikes -> southampton.mr1.pre", "sent": 5, "received": None,
                                    "send_queue_drops": 0, "inter_site": True})
        if site == s:
            report["memristors"] = [{"node": s, "name": "mr2", "r_start": 14000.0, "r_end": 14500.0}]
        session.finish(report, _clock(site, T0))
        if session_id is not None:
            session.provenance["session_id"] = session_id
        if site_offsets and site in site_offsets:
            session.provenance["site_offsets"] = site_offsets[site]
        session.write()
        out[site] = folder
    return out


def _events(folder: Path, node: str, direction: int, port: str, kind: Kind) -> tuple[np.ndarray, list]:
    """(events, [(logged, send_time)]) of ``node``'s records of ``kind`` on ``port``."""
    recs = [r for r in read_journal(folder / "journal" / f"{node}.swj").records
            if r.direction == direction and r.port == port and r.packet.kind == kind]
    return np.concatenate([r.packet.events for r in recs]), [(r.logged, r.packet.send_time) for r in recs]


def _check_on_true_time(merged: Path) -> None:
    """Every time in the merged session is true time (the reference, zurich, reads true time)."""
    sent, _ = _events(merged, "southampton", SENT, "mr2.out", Kind.SPIKE)
    got, [(logged, send)] = _events(merged, "zurich", RECEIVED, "southampton.mr2.out", Kind.SPIKE)
    # The packet southampton sent and zurich received carries the same event times at both ends ...
    assert got["t"].tolist() == sent["t"].tolist()
    assert got["t"][0] == pytest.approx(BACK_T, abs=1e-9)
    # ... and its latency is the true one (100 s without the merge).
    assert logged - send == pytest.approx(0.001 - 1e-4, abs=1e-9)
    stim, _ = _events(merged, "padova", RECEIVED, "southampton.mr1.out", Kind.STIMULUS)
    spike, _ = _events(merged, "southampton", RECEIVED, "zurich.anpre.spikes", Kind.SPIKE)
    bio, [(bio_logged, _)] = _events(merged, "southampton", RECEIVED, "padova.events", Kind.BIO)
    assert stim["t"][0] - spike["t"][0] == pytest.approx(0.0015, abs=1e-9)  # the stimulus follows its spike
    assert bio["t"][0] - spike["t"][0] == pytest.approx(0.003, abs=1e-9)
    assert bio_logged == pytest.approx(SPIKE_T + 0.004, abs=1e-9)
    # A probe keeps its origin's (zurich's) stamp, whichever site forwarded it.
    probe, [(_, send)] = _events(merged, "zurich", RECEIVED, "southampton.mr2.out", Kind.PROBE)
    assert probe["t"][0] == pytest.approx(PROBE_T, abs=1e-9) and send == pytest.approx(PROBE_T + 0.002, abs=1e-9)
    # Status lines, their logs and node events line up, in time order.
    status = [json.loads(line) for line in (merged / "status.jsonl").read_text().splitlines()]
    assert [m["t"] for m in status] == pytest.approx([11.0] * 3, abs=1e-9)
    assert [ev["t"] for m in status for ev in m["log"]] == pytest.approx([10.7], abs=1e-9)
    prov = json.loads((merged / "provenance.json").read_text())
    assert prov["t0_local_clock"] == pytest.approx(T0)
    assert [prov["nodes"][n]["ready"]["local_clock"] for n in SHIFT] == pytest.approx([T0 - 0.5] * 3, abs=1e-9)
    assert [m["t0_s"] for m in prov["merged_from"]] == pytest.approx([0.0] * 3, abs=1e-9)


def test_barrier_offsets_put_every_time_on_the_reference_clock(tmp_path):
    # Zurich measured southampton; padova measured zurich (used negated). The links' estimates are wrong
    # on purpose: the barrier's measurements come first.
    folders = _write_sites(tmp_path, site_offsets={"zurich": {"southampton": 100.0}, "padova": {"zurich": -30.0}},
                           link_offsets={label: 7.0 for label in RECEIVED_AT})
    merged = tmp_path / "merged"
    result = merge_sessions([folders[s] for s in SHIFT], merged)
    assert result.warnings == []
    _check_on_true_time(merged)
    prov = json.loads((merged / "provenance.json").read_text())
    assert prov["site"] is None and prov["nodes_run"] == list(SHIFT) and "site_offsets" not in prov
    assert prov["session_id"] == "c0ffee01"
    got = {m["site"]: (m["offset_s"], m["offset_source"], m["session_id"]) for m in prov["merged_from"]}
    assert got == {"zurich": (0.0, "reference", "c0ffee01"),
                   "southampton": (100.0, "site_offsets of zurich", "c0ffee01"),
                   "padova": (30.0, "site_offsets of padova, negated", "c0ffee01")}
    # The summary: each link as its receiver saw it, with the sender's count; every site's nodes and outcome.
    summary = json.loads((merged / "summary.json").read_text())
    row = next(ln for ln in summary["links"] if ln["link"] == "zurich.anpre.spikes -> southampton.mr1.pre")
    assert (row["sent"], row["received"], row["in_flight"]) == (5, 1, 4)
    assert set(summary["nodes"]) == set(SHIFT) and summary["outcomes"] == dict.fromkeys(SHIFT, "completed")
    assert summary["duration_s"] == pytest.approx(3.0)
    # Plot and export read every node of the merged session.
    from spikewire.monitor import nwb_export, plot

    assert set(nwb_export.read_session(merged).journals) == set(SHIFT)
    data = plot.read_session(merged)
    assert [n.name for n in data.nodes] == ["zurich", "padova"] and set(data.resistance) == {"mr1", "mr2"}
    assert data.merged_from == list(SHIFT)


def test_link_offsets_chain_through_a_site_and_need_force_without_session_ids(tmp_path, capsys):
    # Older sessions: no session id, no barrier. Padova's offset is known only through southampton:
    # zurich -> southampton (its link from zurich), southampton -> padova (its link from padova).
    folders = _write_sites(tmp_path, session_id=None, link_offsets={
        "zurich.anpre.spikes -> southampton.mr1.pre": SHIFT["zurich"] - SHIFT["southampton"],
        "padova.events -> southampton.mr1.post": SHIFT["padova"] - SHIFT["southampton"]})
    args = ["merge", *(str(folders[s]) for s in SHIFT), "--out", str(tmp_path / "merged")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "no session id" in err and "--force" in err and "\n" not in err, err
    assert not (tmp_path / "merged").exists()
    assert main(args + ["--force"]) == 0
    out, err = capsys.readouterr()
    assert "warning: no session id" in err and "padova: clock offset +30000.000 ms" in out, out + err
    _check_on_true_time(tmp_path / "merged")
    prov = json.loads((tmp_path / "merged" / "provenance.json").read_text())
    source = next(m["offset_source"] for m in prov["merged_from"] if m["site"] == "padova")
    assert source.startswith("zurich -> southampton (inter-site link zurich.anpre.spikes") and \
        "-> padova (inter-site link padova.events -> southampton.mr1.post)" in source, source
    assert [(u["from"], u["to"]) for u in prov["merge"]["offsets_used"]] == [("zurich", "southampton"),
                                                                            ("southampton", "padova")]


def test_reference_site_keeps_its_clock(tmp_path):
    folders = _write_sites(tmp_path, site_offsets={"zurich": {"southampton": 100.0, "padova": 30.0}})
    merge_sessions([folders[s] for s in SHIFT], tmp_path / "merged", reference="southampton")
    got, _ = _events(tmp_path / "merged", "zurich", RECEIVED, "southampton.mr2.out", Kind.SPIKE)
    assert got["t"][0] == pytest.approx(BACK_T + SHIFT["southampton"], abs=1e-9)
    prov = json.loads((tmp_path / "merged" / "provenance.json").read_text())
    assert prov["merged_from"][0]["site"] == "southampton" and prov["merge"]["reference"] == "southampton"
    assert prov["t0_local_clock"] == pytest.approx(T0 + SHIFT["southampton"])


def _refused(capsys, *args) -> str:
    assert main(["merge", *map(str, args)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikewire merge: ") and "\n" not in err, err
    return err


def test_refusals_name_the_problem(tmp_path, capsys):
    folders = _write_sites(tmp_path, site_offsets={"zurich": {"southampton": 100.0}})
    z, s, p = (folders[site] for site in SHIFT)
    out = tmp_path / "merged"
    assert "site 'zurich' given twice" in _refused(capsys, z, z, "--out", out)
    err = _refused(capsys, z, s, p, "--out", out)
    assert "no clock offset reaches site 'padova' from the reference 'zurich'" in err
    assert "--reference 'mars' is none of the sessions' sites" in _refused(capsys, z, s, "--out", out, "--reference",
                                                                          "mars")
    # Another run: another session id.
    other = _write_sites(tmp_path / "other", session_id="0badcafe", site_offsets={"zurich": {"southampton": 100.0}})
    assert "different runs" in _refused(capsys, z, other["southampton"], "--out", out)
    # Another network: the same nodes, but not the same file.
    text = (NETWORKS / "paper_sites.toml").read_text().replace("r_init = 14000.0", "r_init = 15000.0")
    (tmp_path / "changed").mkdir()
    (tmp_path / "changed" / "paper_sites.toml").write_text(text)
    changed = _write_sites(tmp_path / "changed", network=tmp_path / "changed" / "paper_sites.toml")
    assert "ran a different network" in _refused(capsys, z, changed["southampton"], "--out", out)
    # Not one site's session; an output folder in use.
    merge_sessions([z, s], out)
    assert "not one site's session" in _refused(capsys, out, z, "--out", tmp_path / "again")
    assert "is not an empty folder" in _refused(capsys, z, s, "--out", out)
    with pytest.raises(MergeError, match="not a spikewire session folder"):
        merge_sessions([tmp_path], tmp_path / "x")


def test_a_damaged_journal_tail_is_kept_so_readers_report_it(tmp_path):
    folders = _write_sites(tmp_path, site_offsets={"zurich": {"southampton": 100.0, "padova": 30.0}})
    path = folders["padova"] / "journal" / "padova.swj"
    path.write_bytes(path.read_bytes()[:-5])  # a cut last record
    result = merge_sessions([folders[s] for s in SHIFT], tmp_path / "merged")
    assert any("padova.swj" in w and "truncated record" in w for w in result.warnings), result.warnings
    merged = read_journal(tmp_path / "merged" / "journal" / "padova.swj")
    original = read_journal(path)
    assert (merged.problem, merged.skipped_bytes, len(merged.records)) == \
        (original.problem, original.skipped_bytes, len(original.records))


PROTOCOL = '\n[protocol]\nphases = [{ name = "first", duration = 2.0 }, { name = "second", duration = 2.0 }]\n'


@pytest.mark.integration
def test_three_sites_merged_export_and_plot_every_node(sites, tmp_path):
    """The three sites of paper_sites (with a two-phase protocol) run for real, southampton's clock 250 ms
    behind; merged, they export to one NWB file and one figure with every node."""
    net = sites_copy(tmp_path, edit=lambda text: text + PROTOCOL)
    group = sites(net)
    for site in ("southampton", "padova", "zurich"):
        group.start(site, 4.0, env={"SPIKEWIRE_CLOCK_SHIFT": "-0.25"} if site == "southampton" else None)
    group.finish(timeout=100)
    folders = [tmp_path / "sessions" / site for site in ("zurich", "southampton", "padova")]
    # Until the sites agree a session id (the start barrier), a run's sessions carry none: --force.
    ids = [json.loads((f / "provenance.json").read_text()).get("session_id") for f in folders]
    force = [] if all(ids) else ["--force"]
    merged = tmp_path / "merged"
    done = subprocess.run(spikewire_cmd("merge", *map(str, folders), "--out", str(merged), *force),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    prov = json.loads((merged / "provenance.json").read_text())
    offset = {m["site"]: m["offset_s"] for m in prov["merged_from"]}
    assert offset["southampton"] == pytest.approx(-0.25, abs=2e-3) and abs(offset["padova"]) < 2e-3, offset

    # Uncorrected, southampton's stimuli would come 250 ms before the zurich spikes that caused them.
    spike, _ = _events(merged, "zurich", SENT, "anpre.spikes", Kind.SPIKE)
    stim, _ = _events(merged, "southampton", SENT, "mr1.out", Kind.STIMULUS)
    lag = stim["t"][:, None] - spike["t"][None, :]
    lag = np.where(lag >= -2e-3, lag, np.inf).min(axis=1)  # each stimulus after its nearest earlier spike
    assert len(stim) >= 10 and np.all(lag < 0.02), lag

    nwb_path = tmp_path / "merged.nwb"
    done = subprocess.run(spikewire_cmd("export", str(merged), "--nwb", str(nwb_path)), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(nwb_path), "r") as io:
        nwb = io.read()
        units = nwb.units.to_dataframe()
        pops = {(r.node, r.population): len(r.spike_times) for r in units.itertuples()}
        assert pops[("zurich", "anpre")] >= 30 and ("zurich", "anpost") in pops, pops
        assert pops[("padova", "padova")] > 0, pops  # padova's action potentials
        assert len(nwb.events["stimuli"]) >= 10 and "psps" in nwb.events
        assert {"resistance_mr1", "resistance_mr2"} <= set(nwb.acquisition)
        epochs = nwb.epochs.to_dataframe()
        assert [list(t) for t in epochs["tags"]] == [["first"], ["second"]]
        assert "merged from 3 sites' sessions onto site zurich's clock" in nwb.notes
    summary = json.loads((merged / "summary.json").read_text())
    columns = set().union(*summary["phases"])
    assert {"anpre Hz", "padova stim AP", "mr1 kOhm"} <= columns, columns

    png = tmp_path / "merged.png"
    done = subprocess.run(spikewire_cmd("plot", str(merged), "--out", str(png)), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stdout + done.stderr
    from spikewire.monitor.plot import read_session

    data = read_session(merged)
    assert [n.name for n in data.nodes] == ["zurich", "padova"] and set(data.resistance) == {"mr1", "mr2"}
