"""Command-line rough edges a new user met (issue 14): help that names the right program and documents every
option, a closed pipe, an image name without a suffix, a metrics port in use, where replays and keys go."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import urllib.request

import pytest

from conftest import NETWORKS, ROOT, free_port_block, network_copy, read_json, spikewire_cmd
from spikewire.__main__ import main as spikewire_main
from spikewire.bench.cli import PASS_THROUGH as BENCHES


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        spikewire_main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _undocumented(text: str) -> list[str]:
    """Option lines of an argparse help with no description (on their line or the next)."""
    lines = text.split("options:", 1)[1].splitlines()
    bare = []
    for i, line in enumerate(lines):
        m = re.match(r"^  (-[^ ,]+(?:[ ,]+[^ ]+)*?)(\s{2,}\S.*)?$", line)
        if not m or not line.startswith("  -"):
            continue
        follows = i + 1 < len(lines) and re.match(r"^\s{10,}\S", lines[i + 1])
        if not m.group(2) and not follows:
            bare.append(line.strip())
    return bare


@pytest.mark.parametrize("argv", [("bench", name) for name in [*BENCHES, "hop", "demo"]]
                         + [("top",), ("rig-sim",), ("fault-proxy",), ("params",), ("device",), ("dashboard",)])
def test_every_command_names_itself_and_documents_every_option(capsys, argv):
    text = _help(capsys, *argv)
    assert text.startswith(f"usage: spikewire {' '.join(argv)} "), text[:120]
    assert not _undocumented(text), _undocumented(text)
    usage, _, rest = text.partition("\n\n")
    assert not rest.startswith("options:"), "no description line: " + text[:300]


def test_a_reader_that_closes_the_pipe_gets_no_traceback():
    # the reader is gone before the command writes a byte: `spikewire check NET | head -0`, deterministically
    proc = subprocess.Popen(spikewire_cmd("check", str(NETWORKS / "paper_loop.toml")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(60)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert code == 141


@pytest.fixture(scope="module")
def short_session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("short")
    session = tmp / "session"
    out = subprocess.run(spikewire_cmd("run", str(network_copy("paper_loop.toml", tmp)), "--duration", "2",
                                       "--session-dir", str(session), "--reset-weights"),
                         capture_output=True, text=True, timeout=120, cwd=tmp)
    assert out.returncode == 0, out.stdout + out.stderr
    return session


def test_plot_says_the_file_it_wrote_and_refuses_a_format_it_cannot(cli_run, tmp_path, short_session):
    code, text = cli_run("plot", str(short_session), "--out", str(tmp_path / "fig")).finish(timeout=120)
    assert code == 0, text
    assert f"wrote {tmp_path / 'fig.png'}" in text and (tmp_path / "fig.png").stat().st_size > 10_000
    code, text = cli_run("plot", str(short_session), "--out", str(tmp_path / "fig.bmpx")).finish(timeout=120)
    assert code == 2 and "'.bmpx' image" in text and "Traceback" not in text, text
    assert not (tmp_path / "fig.bmpx").exists()


def test_a_replay_is_a_session_of_its_own_and_leaves_the_recording_as_it_was(cli_run, tmp_path, short_session):
    before = sorted(p.relative_to(short_session) for p in short_session.rglob("*"))
    code, text = cli_run("replay", str(short_session), "--nodes", "southampton").finish(timeout=120)
    assert code == 0, text
    assert sorted(p.relative_to(short_session) for p in short_session.rglob("*")) == before
    (replay,) = [p for p in (tmp_path / "sessions").iterdir() if p.name.endswith("-replay")]
    provenance = read_json(replay / "provenance.json")
    assert provenance["replay_of"]["session"] == str(short_session.resolve())
    assert provenance["replay_of"]["replayed"] == ["zurich", "padova"]


def test_a_metrics_port_in_use_is_one_line_before_anything_starts(cli_run, tmp_path):
    net = network_copy("paper_loop.toml", tmp_path)
    base = free_port_block(8)
    net.write_text(re.sub(r"base_port = \d+", f"base_port = {base}", net.read_text()))
    with socket.socket() as held:
        held.bind(("127.0.0.1", base + 1))
        held.listen()
        code, text = cli_run("run", str(net), "--duration", "2", "--no-record").finish(timeout=60)
    assert code == 2 and "Traceback" not in text, text
    assert "monitor.base_port" in text and f"127.0.0.1:{base + 1}" in text and "--base-port" in text
    assert "started" not in text  # refused before any node started


def test_base_port_moves_every_metrics_endpoint(cli_run, tmp_path):
    base = free_port_block(8)
    run = cli_run("run", str(network_copy("paper_loop.toml", tmp_path)), "--duration", "4", "--no-record",
                  "--base-port", str(base))
    run.wait_for("all nodes ready", timeout=60)
    for i in range(3):
        with urllib.request.urlopen(f"http://127.0.0.1:{base + i}/metrics", timeout=5) as r:
            assert b"spikewire_" in r.read()
    code, text = run.finish(timeout=60)
    assert code == 0, text
    code, text = cli_run("run", str(network_copy("paper_loop.toml", tmp_path)), "--base-port", "80").finish(timeout=60)
    assert code == 2 and "--base-port" in text and "between 1024 and 65000" in text, text


def test_site_keys_go_to_the_home_folder_not_beside_the_network_file(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    net = tmp_path / "net" / "paper_sites.toml"
    net.parent.mkdir()
    net.write_text((NETWORKS / "paper_sites.toml").read_text())
    out = subprocess.run(spikewire_cmd("keygen", "--network", str(net)), capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOME": str(home)}, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    keys = home / ".spikewire" / "keys"
    assert sorted(p.name for p in keys.iterdir()) == sorted(f"{s}.key{x}" for s in ("padova", "southampton", "zurich")
                                                            for x in ("", "_secret"))
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys.glob("*_secret"))
    assert sorted(p.name for p in net.parent.iterdir()) == ["paper_sites.toml"]
    check = subprocess.run(spikewire_cmd("check", str(net)), capture_output=True, text=True, timeout=60,
                           env={**os.environ, "HOME": str(home)})
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("argv, words", [
    (("run", str(NETWORKS / "paper_loop.toml"), "--duration", "2", "--json", "/nonexistent_sw/x.json"),
     "no folder '/nonexistent_sw'"),
    (("device", "--sweep", "--out", "/nonexistent_sw/x.png"), "no folder"),
    (("device", "--sweep", "--json", "/nonexistent_sw/x.json"), "no folder"),
    (("bench", "crossbar", "--duration", "3", "--json", "/nonexistent_sw/x.json"), "no folder"),
    (("bench", "loop", "--json", "/nonexistent_sw/x.json"), "no folder"),
    (("export", str(ROOT / "tests" / "fixtures" / "approval_session"), "--nwb", "/nonexistent_sw/x.nwb"), "no folder"),
    (("device", "--group", "s", "--sweep"), "give them too"),
    (("keygen", "../evil", "--dir", "d1"), "NAME must be letters"),
])
def test_what_cannot_be_done_is_refused_before_any_work(tmp_path, argv, words):
    out = subprocess.run(spikewire_cmd(*argv), capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "sessions").exists() and not any(tmp_path.iterdir()), "it did work before refusing"


def test_keygen_for_a_site_the_file_lacks_says_so(tmp_path):
    net = tmp_path / "paper_sites.toml"
    net.write_text((NETWORKS / "paper_sites.toml").read_text().replace('"~/.spikewire/keys/', '"keys/'))
    out = subprocess.run(spikewire_cmd("keygen", "--network", str(net), "--site", "nope"), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "no site 'nope'" in out.stderr and not (tmp_path / "keys").exists()


def test_a_bench_given_a_bad_network_exits_2_as_run_does(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[network]\nname = 'x'\n[nodes.a]\nkind = 'nope'\n")
    out = subprocess.run(spikewire_cmd("bench", "crossbar", "--network", str(bad), "--duration", "3"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "nodes.a.kind" in out.stderr and "Traceback" not in out.stderr, out.stderr
