"""spikewire dashboard in a real headless Chromium (Debian's, driven by Playwright's bundled driver).

The main test watches a live paper_loop run from outside: the page's raster counts ANpre's 10 Hz spikes,
its resistances at the end are the run summary's, its hold button engages every interlock (held stimuli in
the summary) and releases it, a mark lands in the session and its NWB export, and control requests
without the token get 403 and are counted. Then the same page opens the recorded session.

Every wait has a deadline; every process started here is stopped and reaped (``_stop``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spikewire.config.network import load_network
from spikewire.monitor.dashboard.layout import layout
from conftest import free_port_block, network_copy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "launch" / "networks" / "paper_loop.toml"
CROSSBAR = ROOT / "launch" / "networks" / "crossbar_100x10.toml"
TOKEN = "test-token-0123456789"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ANPRE = "zurich.anpre.spikes"
RUN_S = 22.0


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs Debian's chromium for the dashboard tests (.ci/run, make test)")
        pytest.skip("chromium is not installed: sudo apt-get install chromium (make test does)")
    return path


def _wait(what: str, check, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Dashboard:
    """A ``spikewire dashboard`` process and the URL it printed."""

    def __init__(self, args: list[str], cwd: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "spikewire", "dashboard", *args, "--listen",
                                      "127.0.0.1:0", "--token", TOKEN], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True).start()
        first = _wait("the dashboard's address line", lambda: self.lines or self.proc.poll() is not None, 60)
        assert first is True or self.lines, f"dashboard exited: {''.join(self.err)}"
        assert self.lines[0].startswith("dashboard: http://127.0.0.1:"), self.lines
        self.url = self.lines[0].split(" ", 1)[1].strip()
        self.base = self.url.split("/?")[0]

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.base}/api/state", timeout=5) as r:
            return json.loads(r.read())

    def post(self, action: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(f"{self.base}/api/control/{action}", data=json.dumps(body or {}).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             **({"X-Spikewire-Token": token} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def close(self) -> None:
        _stop(self.proc)


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    exe = chromium()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "chromium-profile"), executable_path=exe,
                                                       headless=True, args=CHROMIUM_ARGS,
                                                       viewport={"width": 1500, "height": 1000})
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            context.close()


def js(page, expr: str):
    return page.evaluate(f"() => {expr}")


def js_wait(page, what: str, expr: str, timeout: float):
    return _wait(what, lambda: js(page, expr), timeout, every=0.2)


@pytest.mark.timeout(300)
def test_live_paper_loop_in_chromium(tmp_path, browser):
    session = tmp_path / "session"
    net = network_copy("paper_loop.toml", tmp_path)  # metrics on free ports
    run = subprocess.Popen([sys.executable, "-m", "spikewire", "run", str(net), "--duration", str(RUN_S), "--json",
                            str(tmp_path / "summary.json"), "--session-dir", str(session)], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_out: list[str] = []
    threading.Thread(target=Dashboard._read, args=(run.stdout, run_out), daemon=True).start()
    dash = None
    try:
        live = tmp_path / ".spikewire" / "live" / "paper_loop.json"
        _wait("the run's live file", lambda: live.is_file() or run.poll() is not None, 90)
        assert run.poll() is None, "".join(run_out)
        dash = Dashboard(["paper_loop"], cwd=tmp_path)  # NETWORK mode: finds the live file here
        page = browser.new_page()
        page.goto(dash.url)
        js_wait(page, "the page's first frames", "window.spikewire.frames > 3", 30)
        js_wait(page, "ANpre's spikes in the raster", f"window.spikewire.spikes[{ANPRE!r}] >= 30", 20)

        # Without the token: refused and counted, in the state JSON and on the page.
        assert dash.post("hold")[0] == 403
        assert dash.post("mark", {"text": "nope"}, token="wrong-token-xyz")[0] == 403
        assert dash.state()["control"]["forbidden"] == 2
        js_wait(page, "the refused count on the page", "window.spikewire.forbidden === 2", 10)

        page.click("#hold")
        js_wait(page, "the hold's answer", "window.spikewire.lastControl && window.spikewire.lastControl.action === 'hold'", 15)
        assert js(page, "window.spikewire.lastControl.ok"), js(page, "window.spikewire.lastControl")
        js_wait(page, "every interlock held", "Object.keys(window.spikewire.interlock).length > 0 && "
                "Object.values(window.spikewire.interlock).every(l => l.held)", 10)
        # the reason arrives with the nodes' next status (once a second), after the held state in their metrics
        js_wait(page, "the operator's reason", "Object.values(window.spikewire.interlock)"
                ".some(l => (l.reason || '').includes('operator'))", 10)
        assert page.inner_text("#hold") == "Release"
        time.sleep(2.0)  # ANpre's 10 Hz spikes keep coming; MR1's stimuli are held meanwhile
        page.click("#hold")
        js_wait(page, "the release's answer", "window.spikewire.lastControl.action === 'release'", 15)
        assert js(page, "window.spikewire.lastControl.ok")
        js_wait(page, "every interlock clear", "Object.values(window.spikewire.interlock).every(l => !l.held)", 10)

        page.fill("#mark-text", "dashboard test mark")
        page.click("#mark")
        js_wait(page, "the mark's answer", "window.spikewire.lastControl.action === 'mark'", 15)
        assert js(page, "window.spikewire.lastControl.ok")
        js_wait(page, "the mark drawn", "window.spikewire.marks.some(m => m.text === 'dashboard test mark')", 10)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        assert run.wait(timeout=RUN_S + 60) == 0, "".join(run_out)
        summary = json.loads((tmp_path / "summary.json").read_text())
        js_wait(page, "the run's end on the page", "window.spikewire.ended", 15)
        want = {f"{m['node']}/{m['name']}": m["r_end"] for m in summary["memristors"]}
        shown = js_wait(page, "the final resistances", "Object.keys(window.spikewire.resistances).length && "
                        f"['southampton/mr1','southampton/mr2'].every(k => window.spikewire.resistances[k] === "
                        f"{json.dumps(want)}[k]) && window.spikewire.resistances", 15)
        assert {k: shown[k] for k in want} == want

        # ANpre's spikes the page counted against the summary's rate over the same window.
        n, first, last = js(page, f"[window.spikewire.spikes[{ANPRE!r}], window.spikewire.firstT[{ANPRE!r}], "
                                  f"window.spikewire.lastT[{ANPRE!r}]]")
        rate = next(r["rate_hz"] for r in summary["neurons"] if r["population"] == "anpre")
        expected = rate * (last - first) + 1
        assert last - first > 10, (first, last)
        assert abs(n - expected) <= 0.2 * expected, (n, expected)

        held = summary["nodes"]["southampton"]["interlock"]
        assert held["holds"] >= 1 and held["held_stimulus_events"] > 0, held
        assert not held["holding"]

        from spikewire.config.session import read_session
        from spikewire.monitor.nwb_export import export_nwb

        marks = read_session(session).marks()
        assert [m.text for m in marks] == ["dashboard test mark"]
        nwb = tmp_path / "session.nwb"
        export_nwb(session, nwb)
        from pynwb import NWBHDF5IO

        with NWBHDF5IO(str(nwb), "r") as io:
            f = io.read()
            table = f.events["marks"]
            assert list(table["annotation"].data[:]) == ["dashboard test mark"]
        assert "dashboard: control mark 'dashboard test mark'" in "".join(dash.err)
        dash.close()

        # The recorded session, scrubbed: 10 s of ANpre at 10 Hz in the window ending at 15 s.
        rec = Dashboard([str(session)], cwd=tmp_path)
        try:
            page = browser.new_page()
            page.goto(rec.url)
            js_wait(page, "the recorded session's page", "window.spikewire.frames > 0 && window.spikewire.mode === 'recorded'", 30)
            assert page.is_disabled("#hold") and page.is_disabled("#mark")
            got = js(page, "window.spikewire.resistances")
            assert {k: got[k] for k in want} == want
            js(page, "window.spikewire.seek(15)")
            js_wait(page, "the window at 15 s", "window.spikewire.now === 15", 15)
            n = js(page, f"window.spikewire.spikes[{ANPRE!r}]")
            assert 80 <= n <= 120, n
            assert js(page, "window.spikewire.marks.length") == 1
            status, reply = rec.post("hold", token=TOKEN)
            assert status == 409 and "no running supervisor" in reply["error"]
        finally:
            rec.close()
    finally:
        if dash is not None:
            dash.close()
        _stop(run, timeout=RUN_S + 30)


def test_run_starts_the_dashboard(tmp_path):
    """spikewire run --dashboard: the address line comes through the run's output and the page's state is live."""
    net = network_copy("paper_loop.toml", tmp_path)
    run = subprocess.Popen([sys.executable, "-m", "spikewire", "run", str(net), "--duration", "8", "--no-record",
                            "--dashboard", f"127.0.0.1:{free_port_block(1)}"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    threading.Thread(target=Dashboard._read, args=(run.stdout, out), daemon=True).start()
    try:
        line = _wait("the dashboard's address", lambda: next((ln for ln in out if ln.startswith("dashboard: http")),
                                                             None) or (run.poll() is not None and "exited"), 60)
        assert line != "exited", "".join(out)
        base = line.split()[1].split("/?")[0]

        def live_counts():
            with urllib.request.urlopen(f"{base}/api/state", timeout=5) as r:
                state = json.loads(r.read())
            return state["mode"] == "live" and state["counts"].get(ANPRE, 0) >= 10 and state

        state = _wait("ANpre's spikes in the dashboard's state", live_counts, 20, every=0.3)
        assert state["nodes"]["zurich"]["up"]
        assert run.wait(timeout=60) == 0, "".join(out)
    finally:
        _stop(run, timeout=30)


def test_network_mode_without_a_run_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "spikewire", "dashboard", str(PAPER)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no running network 'paper_loop'" in out.stderr, out.stderr
    live = tmp_path / ".spikewire" / "live"
    live.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    (live / "paper_loop.json").write_text(json.dumps({"version": 1, "network": "paper_loop", "supervisor_pid": dead.pid,
                                                      "nodes": {}, "network_file": str(PAPER)}))
    out = subprocess.run([sys.executable, "-m", "spikewire", "dashboard", "paper_loop"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "stale" in out.stderr, out.stderr


def test_layout_is_read_from_roles_and_declarations():
    paper = layout(load_network(PAPER))
    assert {p["key"]: (p["name"], p["size"], p["typed"]) for p in paper["populations"]} == {
        "zurich.anpre.spikes": ("anpre", 1, False), "zurich.anpost.spikes": ("anpost", 1, False),
        "padova.events": ("padova", 1, True)}
    assert {m["key"]: m["role"] for m in paper["marks"]} == {"southampton.mr1.out": "stimuli",
                                                            "southampton.mr2.out": "synaptic"}
    assert [d["key"] for d in paper["devices"]] == ["southampton/mr1", "southampton/mr2"] and not paper["sets"]
    big = layout(load_network(CROSSBAR))
    assert big["sets"] == [{"key": "crossbar/s", "node": "crossbar", "group": "s", "n": 1000}]
    assert all(d["set"] == "crossbar/s" for d in big["devices"])
