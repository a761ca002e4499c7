"""`plot_session`: a real recorded session drawn as one figure; damaged sessions still draw (and say what
is missing); folders that are not sessions are refused by name.

One short fig2 session is recorded per module, its protocol squeezed into 6 s so every phase shows."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import warnings

import numpy as np
import pytest
from conftest import read_json, short_fig2, spikewire_cmd
from matplotlib.text import Text
from spikewire.monitor.plot import (
    DamagedSessionWarning,
    NotASession,
    build_figure,
    plot_session,
    read_session,
)

PHASES = ["none-1", "ltp", "none-2", "ltd"]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    where = tmp_path_factory.mktemp("plot")
    net = short_fig2(where, 1.5)
    folder = where / "session"
    try:
        run = subprocess.run(spikewire_cmd("run", str(net), "--duration", "6", "--session-dir", str(folder)),
                             cwd=where, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"spikewire run did not finish within 60 s:\n{e.stdout}\n{e.stderr}")
    assert run.returncode == 0, run.stdout + run.stderr
    return folder


def _copy(session, tmp_path):
    return shutil.copytree(session, tmp_path / "session")


def _titles(fig) -> list[str]:
    return [ax.get_title(loc="left") for ax in fig.axes]


def _phases(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_gid() == "phase"]


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.mark.integration
def test_plot_session_writes_a_png(session, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedSessionWarning)  # a clean session draws without complaint
        out = plot_session(session, tmp_path / "fig.png", dpi=80)
    data = out.read_bytes()
    assert out == tmp_path / "fig.png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert 800 <= width <= 2000 and 600 <= height <= 2000, (width, height)
    assert len(data) > 50_000  # drawn panels, not an empty canvas


@pytest.mark.integration
def test_figure_has_a_panel_per_node_and_per_measure(session):
    fig = build_figure(session)
    assert _titles(fig) == ["zurich (silicon)", "padova (biological)", "rates (1 s bins)", "memristor resistance",
                            "link latency"]
    zurich, padova, rates, resistance, latency = fig.axes
    assert [t.get_text() for t in zurich.get_yticklabels()] == ["anpre", "anpost"]
    assert [t.get_text() for t in padova.get_yticklabels()] == ["stimuli", "stimulated AP", "spontaneous AP", "PSP"]
    assert _phases(zurich) == PHASES and _phases(resistance) == PHASES  # the phases are named where asked
    assert resistance.get_xlabel() == "session time (s)" and resistance.get_xlim() == pytest.approx((0, 6), abs=0.01)
    assert rates.get_legend() is not None and "µs" in latency.get_xlabel() and latency.get_xscale() == "log"

    # Counts on the figure agree with what the nodes reported in summary.json.
    summary = read_json(session / "summary.json")
    anpre = next(n for n in summary["neurons"] if n["population"] == "anpre")
    shown = int(re.fullmatch(r"anpre \((\d+) spikes\)", _legend(zurich)[0])[1])
    assert abs(shown - anpre["spikes"]) <= 1  # the node counts a spike it had no time to send at the stop
    links = [ln for ln in summary["links"] if ln["received"]]
    shown = _legend(latency)
    for ln in links:
        src, dst = ln["link"].split(" -> ")
        entry = next(e for e in shown if e.startswith(src + " → " + dst.split(".")[0]))
        assert f"{ln['received']} packets" in entry, (ln["link"], entry)


@pytest.mark.integration
def test_resistance_follows_the_exact_pulse_log(session):
    data = read_session(session)
    summary = read_json(session / "summary.json")
    for mem in summary["memristors"]:
        _, r = data.resistance[mem["name"]]
        assert r[0] == mem["r_start"] and r[-1] == mem["r_end"], mem["name"]
        ltp = data.pulses[mem["name"]][2] if mem["name"] in data.pulses else np.zeros(0, dtype=bool)
        assert (int(ltp.sum()), int((~ltp).sum())) == (mem["ltp_pulses"], mem["ltd_pulses"]), mem["name"]
    assert [p[0] for p in data.phases] == PHASES and data.phases[-1][2] == pytest.approx(6.0)


@pytest.mark.integration
def test_a_damaged_journal_tail_warns_and_still_draws(session, tmp_path):
    folder = _copy(session, tmp_path)
    journal = folder / "journal" / "padova.swj"
    journal.write_bytes(journal.read_bytes()[:-10])  # killed mid-write
    with pytest.warns(DamagedSessionWarning, match=r"padova.swj: damaged tail \(truncated record\)"):
        fig = build_figure(folder)
    assert len(fig.axes) == 5
    # The footer names the part inside the session folder, not the whole path.
    assert any("journal/padova.swj: damaged tail (truncated record)" in t.get_text() for t in fig.findobj(Text))


@pytest.mark.integration
def test_a_crashed_run_draws_from_what_it_left(session, tmp_path):
    folder = _copy(session, tmp_path)
    (folder / "summary.json").unlink()
    prov = read_json(folder / "provenance.json")
    del prov["t0_local_clock"]
    (folder / "provenance.json").write_text(json.dumps(prov))
    with open(folder / "status.jsonl", "a") as f:
        f.write('{"node": "southampton", "type": "sta')  # torn by the crash
    with pytest.warns(DamagedSessionWarning) as caught:
        fig = build_figure(folder)
    said = " | ".join(str(w.message) for w in caught)
    assert "no summary.json" in said and "no t0" in said and "1 unreadable line" in said
    assert len(fig.axes) == 5 and _phases(fig.axes[0]) == PHASES  # phases from the network file instead


@pytest.mark.integration
def test_a_session_without_protocol_or_memristors(session, tmp_path):
    folder = _copy(session, tmp_path)
    summary = read_json(folder / "summary.json")
    del summary["phases"]
    (folder / "summary.json").write_text(json.dumps(summary))
    network = (folder / "network.toml").read_text()
    (folder / "network.toml").write_text(re.sub(r"\[protocol\]\nphases = \[\n(.*\n)*?\]\n", "", network))
    assert "[protocol]" not in (folder / "network.toml").read_text()
    # No device recorded while the run went: the resistance panel is left out.
    lines = (folder / "status.jsonl").read_text().splitlines()
    (folder / "status.jsonl").write_text("".join(ln + "\n" for ln in lines if '"southampton"' not in ln))
    fig = build_figure(folder)
    assert _titles(fig) == ["zurich (silicon)", "padova (biological)", "rates (1 s bins)", "link latency"]
    assert not any(_phases(ax) for ax in fig.axes[:3])  # no phase names
    assert fig.axes[2].get_xlabel() == "session time (s)"


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such session folder"):
        build_figure(tmp_path / "nope")


def test_a_file_is_not_a_session(tmp_path):
    path = tmp_path / "fig2.json"
    path.write_text("{}")
    with pytest.raises(NotASession, match="not a folder"):
        plot_session(path, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_a_folder_without_provenance_is_not_a_session(tmp_path):
    (tmp_path / "network.toml").write_text("[network]\nname = 'x'\n")
    (tmp_path / "journal").mkdir()
    with pytest.raises(NotASession, match=r"is not a spikewire session folder \(no provenance.json\)"):
        build_figure(tmp_path)


def test_unreadable_provenance_is_named(tmp_path):
    (tmp_path / "network.toml").write_text("[network]\nname = 'x'\n")
    (tmp_path / "journal").mkdir()
    (tmp_path / "provenance.json").write_text("{not json")
    with pytest.raises(NotASession, match="provenance.json: unreadable provenance"):
        build_figure(tmp_path)


def test_a_bad_rate_bin_is_refused(tmp_path):
    with pytest.raises(ValueError, match="rate_bin must be > 0 s, got 0"):
        build_figure(tmp_path, rate_bin=0)
