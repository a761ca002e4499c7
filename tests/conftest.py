"""Shared test fixtures: machine-scoped LSL, and running the real CLI as a subprocess that cannot hang."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spikewire.launch.ports import free_port_block

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "launch" / "networks"
os.environ.setdefault("LSLAPICFG", str(ROOT / "streams" / "lsl_api.cfg"))


def spikewire_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "spikewire", *args]


class CliRun:
    """A `spikewire` subprocess whose stdout is read line by line with timeouts."""

    def __init__(self, *args: str, cwd: Path | None = None, env: dict | None = None):
        self.proc = subprocess.Popen(spikewire_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, cwd=cwd or ROOT,
                                     env={**os.environ, **env} if env else None)
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float, new_only: bool = False) -> str:
        """The first output line containing ``text`` (with ``new_only``, among lines not read yet); fails
        the test after ``timeout`` s."""
        for line in [] if new_only else self.lines:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if text in line:
                return line
        pytest.fail(f"no line containing {text!r} within {timeout} s; output so far:\n" + "\n".join(self.lines))

    def finish(self, timeout: float) -> tuple[int, str]:
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"spikewire did not exit within {timeout} s; output:\n" + "\n".join(self.lines))
        self.lines += rest.splitlines()
        return self.proc.returncode, "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


@pytest.fixture
def cli_run(tmp_path):
    """Start `spikewire ...`; runs in the test's own directory, so saved state (memristor crossbars
    under .spikewire/) never leaks between tests."""
    runs: list[CliRun] = []

    def start(*args: str, cwd: Path | None = None) -> CliRun:
        run = CliRun(*args, cwd=cwd or tmp_path)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


def network_copy(name: str, tmp_path: Path) -> Path:
    """A shipped network file copied into tmp_path with its metrics on free ports, so a test never
    collides with a demo (or another test) using the shipped ports."""
    import re

    text = (NETWORKS / name).read_text()
    text, n = re.subn(r"base_port = \d+", f"base_port = {free_port_block(8)}", text)
    if not n:
        raise ValueError(f"{name} has no [monitor] base_port to move")
    path = tmp_path / name
    path.write_text(text)
    return path


def short_fig2(directory: Path, phase: float, last_rate: float = 2.0) -> Path:
    """paper_fig2 on free ports with its four protocol phases squeezed to ``phase`` seconds each (the
    pacemaker's schedule follows), so a short run reaches all four."""
    import re

    path = network_copy("paper_fig2.toml", directory)
    text, n = re.subn(r"duration = 10\.0", f"duration = {phase}", path.read_text())
    text, m = re.subn(r"schedule = \[\[0, 10\.0\], \[10, 30\.0\], \[20, 10\.0\], \[30, 2\.0\]\]",
                      f"schedule = [[0, 10.0], [{phase}, 30.0], [{2 * phase}, 10.0], [{3 * phase}, {last_rate}]]",
                      text)
    if (n, m) != (4, 1):
        raise ValueError("paper_fig2.toml's protocol changed: update short_fig2 in tests/conftest.py")
    path.write_text(text)
    return path


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def anpre_via(port: int, options: str = ""):
    """An ``edit`` for sites_copy: Zurich's anpre -> Southampton's mr1.pre link goes via 127.0.0.1:``port``
    (the fault proxy), with more link ``options`` (TOML lines) if given."""
    def edit(text: str) -> str:
        old = 'from = "zurich.anpre.spikes"\nto = "southampton.mr1.pre"\n'
        if old not in text:
            raise ValueError("paper_sites.toml's anpre -> mr1.pre link changed: update anpre_via")
        return text.replace(old, old + f'via = "tcp://127.0.0.1:{port}"\n' + options)
    return edit


def sites_copy(tmp_path: Path, curve: bool = True, keys: bool = True, name: str = "paper_sites.toml",
               edit=None) -> Path:
    """paper_sites.toml in tmp_path with its metrics and every site's ports moved to free ports, and (if
    ``keys``) a fresh key pair per site in tmp_path/keys. ``curve=False`` turns CURVE off. ``edit``:
    an optional function(text) -> text applied last (to add a link option, say)."""
    import re

    text = (NETWORKS / name).read_text()
    # One free block for both, so the metrics ports (8) and the sites' ports (3 x 4) can never overlap.
    metrics = free_port_block(20)
    text = re.sub(r"base_port = \d+", f"base_port = {metrics}", text)
    block = metrics + 8
    for i, site in enumerate(("zurich", "southampton", "padova")):
        text, n = re.subn(rf"(\[sites\.{site}\]\naddress = \"127\.0\.0\.1\"\nport = )\d+", rf"\g<1>{block + 4 * i}",
                          text)
        if n != 1:
            raise ValueError(f"{name}: [sites.{site}] is not 'address' then 'port' any more: update sites_copy")
    text = text.replace('"~/.spikewire/keys/', '"keys/')  # a test's keys in its tmp_path, never in the home
    if not curve:
        text = text.replace('curve = "required"', 'curve = "off"')
    if edit is not None:
        text = edit(text)
    path = tmp_path / name
    path.write_text(text)
    if keys:
        out = subprocess.run(spikewire_cmd("keygen", "--network", str(path)), capture_output=True, text=True,
                             timeout=60)
        if out.returncode:
            raise RuntimeError(f"keygen failed: {out.stdout}{out.stderr}")
    return path


def site_ports(path: Path) -> dict[str, int]:
    """Each site's first inter-site port in a network file."""
    import tomllib

    return {name: s["port"] for name, s in tomllib.loads(path.read_text())["sites"].items()}


class Sites:
    """Several `spikewire run NETWORK --site NAME` processes, each with its own JSON summary and session."""

    def __init__(self, network: Path, tmp_path: Path):
        self.network = network
        self.tmp = tmp_path
        self.runs: dict[str, CliRun] = {}

    def start(self, site: str, duration: float, env: dict | None = None, tag: str = "",
              extra: tuple[str, ...] = ()) -> CliRun:
        """``extra``: more `run` arguments (``("--start-wait", "0")`` for a site that must not wait for the
        others to start together)."""
        name = site + tag
        args = ["run", str(self.network), "--site", site, "--duration", str(duration), "--json",
                str(self.tmp / f"{name}.json"), "--session-dir", str(self.tmp / "sessions" / name),
                "--status-every", "0.5", *extra]
        run = CliRun(*args, cwd=self.tmp, env=env)
        self.runs[name] = run
        return run

    def finish(self, timeout: float) -> dict[str, dict]:
        out = {}
        for name, run in self.runs.items():
            code, text = run.finish(timeout)
            assert code == 0, f"site {name} exited {code}:\n{text}"
            out[name] = read_json(self.tmp / f"{name}.json")
        return out

    def kill_all(self) -> None:
        for run in self.runs.values():
            run.kill()


@pytest.fixture
def sites(tmp_path):
    made: list[Sites] = []

    def make(network: Path) -> Sites:
        s = Sites(network, tmp_path)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill_all()


def inter_site_link(summary: dict, label: str) -> dict:
    """The report row of the link called ``label`` in a site's JSON summary."""
    for ln in summary["links"]:
        if ln["link"] == label:
            return ln
    raise KeyError(f"no link {label!r}; links: {[ln['link'] for ln in summary['links']]}")
