"""Sites: the paper's loop as three `spikewire run --site` processes on 127.0.0.1, over CURVE.

Each site is started on its own, finds the others from the network file alone, and reports its own
end of every link. Clock offsets are estimated per inter-site link; a site whose clock is shifted
(SPIKEWIRE_CLOCK_SHIFT) shows the shift as the link's offset, and latency and jitter-buffer release
are corrected by it.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import inter_site_link, sites_copy, spikewire_cmd

LINKS_AT = {
    "southampton": ["zurich.anpre.spikes -> southampton.mr1.pre", "padova.events -> southampton.mr1.post",
                    "padova.events -> southampton.mr2.pre", "zurich.anpost.spikes -> southampton.mr2.post"],
    "padova": ["southampton.mr1.out -> padova.stim"],
    "zurich": ["southampton.mr2.out -> zurich.anpost.input"],
}


def _run_three(sites, tmp_path, duration: float, env: dict[str, dict] | None = None, **copy) -> dict[str, dict]:
    net = sites_copy(tmp_path, **copy)
    group = sites(net)
    for site in ("southampton", "padova", "zurich"):  # any order: links join whenever their peer is up
        group.start(site, duration, env=(env or {}).get(site))
    return group.finish(timeout=duration + 90)


def test_three_sites_run_the_loop_over_curve(sites, tmp_path):
    out = _run_three(sites, tmp_path, duration=6.0)
    for site, labels in LINKS_AT.items():
        for label in labels:
            ln = inter_site_link(out[site], label)
            assert ln["inter_site"] and ln["curve"], ln
            assert ln["received"] > 0, ln
            assert ln["malformed"] == 0, ln
            # One machine, one clock: the estimate must find (nearly) no offset, and a loopback round trip.
            assert ln["clock_offset_s"] is not None and abs(ln["clock_offset_s"]) < 2e-3, ln
            assert 0 < ln["rtt_s"] < 0.05, ln
    # The loop closes across all three processes: probes from Zurich come back to Zurich.
    probes = out["zurich"]["probes"]
    assert probes["returned"] >= 20, probes
    # ... and it still does what the paper's loop does: BN answers MR1's stimuli.
    bn = [n for n in out["padova"]["neurons"] if n["node"] == "padova"][0]
    assert bn["stimuli"] >= 20 and bn["stimulated_ap"] > 0, bn
    # Padova's stimulus input goes through a 20 ms jitter buffer: every probe round trip includes it.
    assert probes["latency_s"]["p50"] > 0.02, probes
    jb = inter_site_link(out["padova"], "southampton.mr1.out -> padova.stim")["jitter_buffer"]
    assert jb["delay_s"] == 0.02 and jb["policy"] == "drop", jb
    # Every site's session records the links' clock offsets and round trips.
    prov = json.loads((tmp_path / "sessions" / "southampton" / "provenance.json").read_text())
    row = prov["links"]["zurich.anpre.spikes -> southampton.mr1.pre"]
    assert row["inter_site"] and abs(row["clock_offset_s"]) < 2e-3 and row["rtt_s"] > 0, row
    status = (tmp_path / "sessions" / "southampton" / "status.jsonl").read_text()
    assert '"offset_s"' in status and '"rtt_s"' in status
    assert prov["site"] == "southampton" and prov["nodes_run"] == ["southampton"]
    # A site's session is a record of its own: it exports without the other sites' journals or keys.
    for site in ("padova", "southampton"):
        out = subprocess.run(spikewire_cmd("export", str(tmp_path / "sessions" / site), "--nwb",
                                           str(tmp_path / f"{site}.nwb")), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and (tmp_path / f"{site}.nwb").stat().st_size > 0, out.stdout + out.stderr


def test_clock_offset_is_estimated_and_corrects_latency(sites, tmp_path):
    """Southampton's clock runs 250 ms behind the others. Its peers must measure that, and their latency
    and jitter-buffer figures must come out as if the clocks agreed."""
    shift = -0.25
    out = _run_three(sites, tmp_path, duration=6.0, env={"southampton": {"SPIKEWIRE_CLOCK_SHIFT": str(shift)}})
    # At Southampton, Zurich's and Padova's clocks are 250 ms ahead; at Padova and Zurich, Southampton's is behind.
    for site, labels in LINKS_AT.items():
        expected = -shift if site == "southampton" else shift
        for label in labels:
            ln = inter_site_link(out[site], label)
            assert ln["clock_offset_s"] == pytest.approx(expected, abs=2e-3), ln
            # Uncorrected, these latencies would be about +-250 ms.
            assert 0 < ln["latency_p50_s"] < 0.02, ln
    # Padova's jitter buffer releases at Southampton's send time in Padova's clock + 20 ms. Uncorrected,
    # every stimulus would be 230 ms late and dropped; corrected, none is (the few that arrive before the
    # first clock exchange cannot be timed, and are delivered at once and counted as unsynced).
    jb = inter_site_link(out["padova"], "southampton.mr1.out -> padova.stim")["jitter_buffer"]
    bn = [n for n in out["padova"]["neurons"] if n["node"] == "padova"][0]
    assert jb["late_dropped"] <= 1 and jb["unsynced"] <= 5 and bn["stimuli"] >= 20, (jb, bn)


def test_run_site_errors_name_the_problem(tmp_path):
    net = sites_copy(tmp_path, keys=False)
    # No keys yet: the network file itself is refused, naming the key.
    out = subprocess.run(spikewire_cmd("run", str(net), "--site", "zurich", "--duration", "1"), capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and "sites.padova.public_key" in out.stderr and "no such key file" in out.stderr, out
    subprocess.run(spikewire_cmd("keygen", "--network", str(net)), check=True, capture_output=True, timeout=60)
    out = subprocess.run(spikewire_cmd("run", str(net), "--site", "atlantis", "--duration", "1"), capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and "no site 'atlantis'" in out.stderr and "zurich" in out.stderr, out
    # Zurich's secret key used for Padova: refused before anything starts.
    out = subprocess.run(spikewire_cmd("run", str(net), "--site", "padova", "--duration", "1", "--secret-key",
                                       str(tmp_path / "keys" / "zurich.key_secret")),
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and "sites.padova.secret_key" in out.stderr and "does not belong" in out.stderr, out
    assert "started" not in out.stdout


def test_one_port_feeding_its_own_site_and_two_nodes_of_another(tmp_path, cli_run):
    """A port with subscribers inside its site and at another site is one CURVE socket: the local sink
    connects with its own site's key, and both remote sinks keep their own clock estimate although every
    pong reaches both. All sites run under one `spikewire run` (no --site)."""
    from spikewire.launch.ports import free_port_block

    base = free_port_block(8)
    net = tmp_path / "fanout.toml"
    net.write_text(f"""
[network]
name = "fanout"
[nodes.src]
kind = "source"
site = "a"
rate = 200.0
[nodes.loc]
kind = "sink"
site = "a"
[nodes.rem1]
kind = "sink"
site = "b"
[nodes.rem2]
kind = "sink"
site = "b"
[[links]]
from = "src.out"
to = "loc.in"
[[links]]
from = "src.out"
to = "rem1.in"
[[links]]
from = "src.out"
to = "rem2.in"
[sites.a]
port = {base}
public_key = "keys/a.key"
secret_key = "keys/a.key_secret"
[sites.b]
port = {base + 2}
public_key = "keys/b.key"
secret_key = "keys/b.key_secret"
[security]
curve = "required"
[monitor]
base_port = {base + 4}
""")
    subprocess.run(spikewire_cmd("keygen", "--network", str(net)), check=True, capture_output=True, timeout=60)
    code, text = cli_run("run", str(net), "--duration", "3", "--json", str(tmp_path / "f.json"),
                         "--no-record").finish(timeout=120)
    assert code == 0, text
    rep = json.loads((tmp_path / "f.json").read_text())
    rows = {ln["link"]: ln for ln in rep["links"]}
    for sink in ("loc", "rem1", "rem2"):
        row = rows[f"src.out -> {sink}.in"]
        assert row["received"] > 300 and row["curve"], row
    for sink in ("rem1", "rem2"):
        row = rows[f"src.out -> {sink}.in"]
        assert row["inter_site"] and row["clock_offset_s"] is not None and abs(row["clock_offset_s"]) < 2e-3, row
    assert not rows["src.out -> loc.in"]["inter_site"]
