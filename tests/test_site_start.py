"""Sites started seconds apart share one start, one length and one session (issue 11.7): three
`spikewire run --site` processes over CURVE on 127.0.0.1, as three labs would start them."""

from __future__ import annotations

import json
import time

import pytest

from conftest import CliRun, sites_copy

pytestmark = pytest.mark.integration

PROTOCOL = '\n[protocol]\nphases = [{ name = "before", duration = 2.0 }, { name = "after", duration = 2.0 }]\n'


def test_sites_started_seconds_apart_share_their_start_and_phase_windows(sites, tmp_path):
    group = sites(sites_copy(tmp_path, edit=lambda text: text + PROTOCOL))
    order = ("zurich", "southampton", "padova")
    for i, site in enumerate(order):
        if i:
            time.sleep(2.0)  # seconds apart, as labs start
        group.start(site, 4.0)
    out = group.finish(timeout=180)
    outputs = {site: "\n".join(group.runs[site].lines) for site in order}

    ids = {site: out[site]["session_id"] for site in order}
    assert len(set(ids.values())) == 1, ids
    assert all(out[site]["start"]["mode"] == "agreed" for site in order), {s: out[s]["start"] for s in order}
    prov = {site: json.loads((tmp_path / "sessions" / site / "provenance.json").read_text()) for site in order}
    # One machine, one clock: the three t0 are one moment (the offsets' error is ~0.1 ms).
    t0 = {site: prov[site]["t0_local_clock"] for site in order}
    assert max(t0.values()) - min(t0.values()) < 0.005, t0
    assert {prov[s]["session_id"] for s in order} == set(ids.values())
    # The same phase windows everywhere, each table filled by its own site's nodes, and the same length.
    for site in order:
        assert [r["phase"] for r in out[site]["phases"]] == ["before", "after"], (site, out[site]["phases"])
        assert abs(out[site]["duration_s"] - 4.0) < 0.5, (site, out[site]["duration_s"])
    # A shared end is a clean end: no link reported down, no interlock hold at the end of the session.
    for site, text in outputs.items():
        assert "link down" not in text, (site, text)
    for site in order:
        for node, n in out[site]["nodes"].items():
            il = n.get("interlock") or {}
            assert not il.get("holding"), (site, node, il)


def test_a_site_whose_partners_never_come_starts_alone_loudly(tmp_path, cli_run):
    net = sites_copy(tmp_path)
    out = tmp_path / "z.json"
    code, text = cli_run("run", str(net), "--site", "zurich", "--start-wait", "1", "--duration", "1",
                         "--json", str(out), "--no-record").finish(timeout=120)
    assert code == 0, text
    assert "starts ALONE" in text and "southampton" in text and "padova" in text, text
    report = json.loads(out.read_text())
    assert report["start"]["mode"] == "alone" and set(report["start"]["missing_sites"]) == {"southampton", "padova"}


def test_a_site_joining_one_that_started_alone_records_who_is_missing(sites, tmp_path):
    """Padova comes after Zurich gave up on Southampton: it starts in Zurich's session, and both records
    say the session lacks Southampton (not a three-site agreement that never happened)."""
    group = sites(sites_copy(tmp_path))
    zurich = group.start("zurich", 8.0, extra=("--start-wait", "1"))
    zurich.wait_for("starts ALONE", timeout=60)
    group.start("padova", 4.0, extra=("--start-wait", "30"))
    out = group.finish(timeout=120)
    assert out["zurich"]["start"]["mode"] == "alone"
    assert out["padova"]["start"]["mode"] == "joined", out["padova"]["start"]
    assert out["padova"]["start"]["missing_sites"] == ["southampton"], out["padova"]["start"]
    assert out["padova"]["session_id"] == out["zurich"]["session_id"]


def test_ctrl_c_while_waiting_for_the_other_sites_is_a_clean_stop(tmp_path):
    import signal

    run = CliRun("run", str(sites_copy(tmp_path)), "--site", "zurich", "--start-wait", "60", "--no-record",
                 cwd=tmp_path)
    try:
        run.wait_for("agreeing the start", timeout=60)
        run.proc.send_signal(signal.SIGINT)
        code, text = run.finish(timeout=60)
    finally:
        run.kill()
    assert code == 0 and "nothing ran" in text and "Traceback" not in text, text


def test_a_taken_session_channel_port_fails_at_once_with_one_line(tmp_path):
    import socket

    from spikewire.config.network import load_network

    net = sites_copy(tmp_path)
    endpoint = load_network(net).session_endpoint("padova", bind=True)
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    squatter = socket.socket()
    squatter.bind((host, int(port)))
    squatter.listen()
    try:
        run = CliRun("run", str(net), "--site", "padova", "--no-record", cwd=tmp_path)
        code, text = run.finish(timeout=60)
    finally:
        squatter.close()
    assert code == 1 and "session channel" in text and "Address already in use" in text, text
    assert "Traceback" not in text, text


def test_a_killed_sites_session_knows_its_session_from_the_start(sites, tmp_path):
    """The session id is on disk with t0, so the session of a site killed mid-run can still be merged."""
    group = sites(sites_copy(tmp_path))
    for site in ("zurich", "southampton", "padova"):
        group.start(site, 20.0)
    for run in group.runs.values():
        run.wait_for("all nodes ready", timeout=60)
    ids = {site: json.loads((tmp_path / "sessions" / site / "provenance.json").read_text()).get("session_id")
           for site in group.runs}
    group.kill_all()
    assert None not in ids.values() and len(set(ids.values())) == 1, ids
