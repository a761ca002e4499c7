"""Shared pieces of the rig tests: unique LSL stream names, plain pylsl outlets and inlets that never
block, `spikewire rig-sim` as a reaped subprocess, and rig_loop.toml on stream names of its own.

Every stream name carries a fresh tag, so tests (and a demo on the shipped names) can run side by side
on one machine without one test's rig answering another's node.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from conftest import ROOT, network_copy

LSL_CFG = str(ROOT / "streams" / "lsl_api.cfg")
os.environ.setdefault("LSLAPICFG", LSL_CFG)  # before pylsl's first use

import pylsl  # noqa: E402


def tag() -> str:
    return uuid.uuid4().hex[:8]


def rig_loop_copy(tmp_path: Path, data_stream: str, stim_stream: str, extra_rig: str = "") -> Path:
    """rig_loop.toml on free metrics ports, reading ``data_stream`` and commanding ``stim_stream``;
    ``extra_rig`` is appended to its [nodes.padova.rig] table (``"max_rate = 5.0\\n"``)."""
    path = network_copy("rig_loop.toml", tmp_path)
    text, n = re.subn(r'stream = "name=spikewire-rig-sim"', f'stream = "name={data_stream}"', path.read_text())
    text, m = re.subn(r'stim_stream = "spikewire-stim"', f'stim_stream = "{stim_stream}"\n{extra_rig}', text)
    if (n, m) != (1, 1):
        raise ValueError("rig_loop.toml's [nodes.padova.rig] changed: update rig_loop_copy in tests/rig_helpers.py")
    path.write_text(text)
    return path


def start_rig_sim(tmp_path: Path, name: str, stim_name: str, *extra: str) -> tuple[subprocess.Popen, Path, Path]:
    """`spikewire rig-sim` (4 channels, seed 3) on the given stream names; returns (process, truth, log)."""
    truth, log = tmp_path / f"truth-{name}.jsonl", tmp_path / f"rig-{name}.log"
    env = dict(os.environ, LSLAPICFG=LSL_CFG)
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "spikewire", "rig-sim", "--channels", "4", "--seed", "3",
                                 "--name", name, "--stim-stream", stim_name, "--truth", str(truth), *extra],
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    return proc, truth, log


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it does not exit within 10 s; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def read_truth(path: Path) -> list[dict]:
    """rig-sim's truth records; a last line still being written is skipped."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(ln) for ln in lines if ln.endswith("}")]


class StimRig:
    """The rig's side of the stimulation stream, as a rig app would hold it: resolve the stream by name,
    open an inlet explicitly (``open_stream``), and pull every command into ``commands`` from a thread,
    until ``close``. ``subscribe_after`` delays subscribing (a rig app that starts late)."""

    def __init__(self, name: str, subscribe_after: float = 0.0):
        self.name = name
        self.subscribe_after = subscribe_after
        self.commands: list[tuple[float, list[float]]] = []  # (timestamp, [channel, amplitude, width_s])
        self.subscribed = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"stim-rig-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            if self._stop.wait(self.subscribe_after):
                return
            infos = []
            while not infos and not self._stop.is_set():
                infos = pylsl.resolve_byprop("name", self.name, minimum=1, timeout=0.5)
            if not infos:
                return
            inlet = pylsl.StreamInlet(infos[0], max_buflen=360, recover=False)
            inlet.open_stream(timeout=5.0)
            self.subscribed.set()
            while not self._stop.is_set():
                data, stamps = inlet.pull_chunk(timeout=0.02, max_samples=1024)
                with self._lock:
                    self.commands.extend(zip(stamps, data))
            inlet.close_stream()
        except (pylsl.util.LostError, pylsl.util.TimeoutError) as e:
            self.error = e

    def received(self) -> int:
        with self._lock:
            return len(self.commands)

    def wait_for(self, count: int, timeout: float) -> int:
        """Wait until ``count`` commands arrived (or ``timeout`` s); returns how many did."""
        deadline = time.monotonic() + timeout
        while self.received() < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.received()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)


class DataRig:
    """The rig's raw voltage stream as a plain pylsl outlet of any channel format, pushed by the test
    (``push``) at exact timestamps ``t0 + i / rate``."""

    def __init__(self, name: str, channels: int, rate: float, fmt: int):
        info = pylsl.StreamInfo(name, "Voltage", channels, rate, fmt, f"test-{name}")
        self.outlet = pylsl.StreamOutlet(info, max_buffered=10)
        self.rate = rate
        self.t0 = pylsl.local_clock()
        self.pushed = 0

    def push(self, chunk) -> None:
        n = len(chunk)
        self.outlet.push_chunk(chunk, [self.t0 + (self.pushed + i) / self.rate for i in range(n)])
        self.pushed += n
