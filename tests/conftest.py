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

    def __init__(self, *args: str, cwd: Path | None = None):
        self.proc = subprocess.Popen(spikewire_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, cwd=cwd or ROOT)
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
