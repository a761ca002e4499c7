"""Runs a network: one OS process per node, a handshake to a common start, a live status, a clean stop.

Startup: spawn every node (own session, so a terminal's Ctrl-C reaches only the supervisor, which then
stops the nodes in order); collect each node's bound output endpoints; send each node where to connect
its inputs; wait until every node is ready (kernels compiled, every downstream link joined); send one
common start time. Running: relay status lines; watch every child so a node that dies is noticed within
0.1 s, named with its exit status, and the rest stopped (exit code 1). Stopping (duration, Ctrl-C,
SIGTERM): ask every node to stop, collect the final summaries, reap every process (SIGTERM then SIGKILL
for any that do not exit in time), print the summary. A node that had to be killed at stop fails the run
(exit code 1), with or without its final report: it is named in the output, in the summary
(``killed_at_stop``) and in the session's provenance, because whatever it does on its way out (closing its
journal, saving a crossbar's state) may be lost.

From outside: once every node is ready the supervisor writes the live file (config/live.py: where each
node publishes and serves its metrics, the session, the protocol, the operator endpoint and its secret) and
serves the operator endpoint (launch/operator.py: hold, release, mark) beside the nodes' control channel;
each accepted action goes to the session. With ``dashboard`` it starts ``spikewire dashboard --live FILE
--listen HOST:PORT`` as a child, passes its output through, and ends it with the run (a dashboard that
dies leaves the run going). The live file is removed at the end, however the run ends.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import zmq

from spikewire.launch.control import ControlServer
from spikewire.launch.operator import OperatorEndpoint, Request
from spikewire.config.live import LiveFileError, live_path, read_live, write_live
from spikewire.config.network import Network
from spikewire.config.plan import node_plan
from spikewire.config.session import START_MARGIN, Session
from spikewire.monitor.report import STATUS_WIDTH, build_report, render_status, render_text
from spikewire.streams.clock import MACHINE_SCOPED_LSL_CONFIG, local_clock

DRAIN_TIME = 0.3
"""Seconds between 'drain' (no more ticks) and 'stop': time for in-flight packets and the event-driven
answers they cause to land, so that every link's sent = received + dropped."""
STOP_GRACE = 5.0
DASHBOARD_GRACE = 5.0
"""Seconds the dashboard has to exit after SIGTERM at the end, before SIGKILL."""
DASHBOARD_COMMAND_ENV = "SPIKEWIRE_DASHBOARD_COMMAND"
"""For tests only: a command line (shell words) run instead of ``python -m spikewire dashboard``; the
supervisor appends ``--live FILE --listen HOST:PORT`` as it does to the real one."""


class RunFailed(RuntimeError):
    pass


class StoppedBeforeStart(RuntimeError):
    """Ctrl-C or SIGTERM while the sites were agreeing their start: a clean stop (exit 0) of a run that
    never ran."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    endpoints: dict[str, str] = field(default_factory=dict)
    bound: bool = False
    ready: bool = False
    final: dict | None = None
    error: str | None = None
    metrics: int | None = None  # the port its /metrics is served on (its ready message)
    hold_ack: dict | None = None  # its answer to the latest operator hold or release


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, network: Network, duration: float | None = None, json_path: str | None = None,
                 out: TextIO = sys.stdout, ready_timeout: float = 60.0, status_every: float | None = None,
                 reset_state: bool = False, session_dir: str | None = None, replay: dict | None = None,
                 site: str | None = None, secret_key: str | None = None, journal_max_mb: int | None = None,
                 start_wait: float = 60.0, dashboard: str | None = None):
        if network.path is None:
            raise ValueError("the supervisor needs a network loaded from a file (nodes read it themselves)")
        self.network = network
        self.secret_key = secret_key
        self.journal_max_mb = journal_max_mb
        if duration is None and network.phases:
            duration = network.phases[-1][2]  # a protocol runs to its end unless told otherwise
        self.duration = duration
        self.json_path = json_path
        self.out = out
        self.ready_timeout = ready_timeout
        self.reset_state = reset_state
        self.site = site  # run only this site's nodes; links from other sites connect to their fixed ports
        self.node_names = network.site_nodes(site) if site else list(network.nodes)
        self.session = Session(Path(session_dir), network.path, site, self.node_names) if session_dir else None
        if self.session is not None and replay:  # which recording this session replayed (its own folder elsewhere)
            self.session.provenance["replay_of"] = {"session": str(Path(replay["session"]).resolve()),
                                                    "replayed": list(replay["replayed"]),
                                                    "speed": replay.get("speed", 1.0)}
        self.replay = replay  # {"session": path, "replayed": [nodes], "speed": x} for `spikewire replay`
        self.tty = out.isatty()
        self.status_every = status_every if status_every is not None else (1.0 if self.tty else 5.0)
        self.children: dict[str, Child] = {}
        self.statuses: dict[str, dict] = {}
        self.prev_statuses: dict[str, dict] = {}
        self.stop_reason: str | None = None
        self.killed_at_stop: dict[str, dict] = {}  # node -> {"final_report": bool}: it had to be killed
        self._drawn = 0
        self.start_wait = start_wait
        self.barrier = None  # launch.barrier.SiteBarrier: a site of a multi-site run agrees its start
        self.decision = None  # launch.barrier.Decision, once agreed
        self._poller = None
        self.report: dict | None = None
        self.dashboard_listen = dashboard  # HOST:PORT: start `spikewire dashboard` once the live file is written
        self.dashboard: subprocess.Popen | None = None
        self._dashboard_buf = b""
        self._dashboard_warned = False
        self.live_file: Path | None = None
        self.operator: OperatorEndpoint | None = None
        self.operator_holding: str | None = None  # who holds stimulation by hand, None if nobody

    @property
    def finals(self) -> dict[str, dict]:
        """Each node's final summary (after ``run``)."""
        return {n: c.final for n, c in self.children.items() if c.final is not None}

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # --- lifecycle -----------------------------------------------------------------------------
    def run(self) -> int:
        ctx = zmq.Context()
        self.control = ControlServer(ctx)
        self.operator = OperatorEndpoint(ctx, self._on_operator)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        code, outcome, t_start = 1, "failed", local_clock()
        self.t_end: float | None = None
        self.t0: float | None = None
        try:
            if self.site and len(self.network.start_sites) > 1:
                from spikewire.launch.barrier import SiteBarrier
                from spikewire.config.network import curve_config

                curve = curve_config(self.network, self.site, self.secret_key)
                try:
                    self.barrier = SiteBarrier(ctx, self.network, self.site, curve)
                except OSError as e:
                    raise RunFailed(str(e)) from None
            self._spawn()
            self._setup()
            self._write_live()
            if self.dashboard_listen:
                self._start_dashboard()
            t_start = self._start()
            outcome = self._supervise(t_start)
            code = 0
        except StoppedBeforeStart as e:
            code, outcome = 0, str(e)
            self.say(f"spikewire: {e}")
        except RunFailed as e:
            outcome = f"failed: {e}"
            self.say(f"spikewire: {e}")
        finally:
            self._stop_all()
            self._stop_dashboard()
            self._remove_live()
            for s, h in old.items():
                signal.signal(s, h)
            self.control.close()
            self.operator.close()
            offsets = self.barrier.offsets() if self.barrier is not None else {}
            if self.barrier is not None:
                self.barrier.close()
            ctx.term()
        if self.killed_at_stop:
            code = 1
            killed = self._killed_text()
            outcome = (f"{outcome}; {killed}" if outcome.startswith("failed")
                       else f"failed: {killed} (before that: {outcome})")
            self.say(f"spikewire: {killed}: the run failed")
        elapsed = max(0.0, (self.t_end or local_clock()) - t_start)
        report = build_report(self.network, self.finals, elapsed, outcome, self.node_names)
        report["killed_at_stop"] = self.killed_at_stop
        report["controls"] = self.operator.summary()
        self.report = report  # the run summary, for callers from Python (spikewire.run)
        if self.decision is not None:
            record = self._start_record(offsets)
            report["session_id"], report["start"] = record["session_id"], record["start"]
            if self.session is not None:
                self.session.provenance.update(record)
        for name in self.killed_at_stop:
            report["nodes"].get(name, {})["killed_at_stop"] = True
        if self.session is not None:
            for name, child in self.children.items():
                if name in self.killed_at_stop:
                    self.session.node_event(name, "killed", local_clock(), at="stop",
                                            exit=describe_exit(child.proc.returncode),
                                            **self.killed_at_stop[name])
                elif child.final is None and child.proc.returncode is not None:
                    self.session.node_event(name, "died", local_clock(), exit=describe_exit(child.proc.returncode))
            self.session.finish(report, self.t0)
        if self.json_path:  # first: the record must survive a closed stdout
            Path(self.json_path).write_text(json.dumps(report, indent=2, default=float))
        self.say("")
        self.say(render_text(report))
        if self.json_path:
            self.say(f"\nsummary written to {self.json_path}")
        if self.session is not None:
            self.say(f"session recorded in {self.session.folder}/")
        return code

    def _killed_text(self) -> str:
        return "; ".join(f"node {name!r} had to be killed at stop, "
                         + ("after its final report" if k["final_report"] else "with no final report (its figures are "
                                                                              "missing)")
                         for name, k in self.killed_at_stop.items())

    def _on_signal(self, signum, _frame) -> None:
        if self.stop_reason is None:
            self.stop_reason = f"stopped by {signal.Signals(signum).name}"

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.setdefault("LSLAPICFG", MACHINE_SCOPED_LSL_CONFIG)
        for name in self.node_names:
            cmd = [sys.executable, "-m", "spikewire.launch.node_main", "--network", str(self.network.path),
                   "--node", name, "--control", self.control.endpoint, "--timeout", str(self.ready_timeout),
                   "--metrics-base-port", str(self.network.monitor.base_port)]  # spikewire run --base-port
            if self.secret_key:
                cmd += ["--secret-key", self.secret_key]
            if self.reset_state:
                cmd.append("--reset-state")
            if self.session is not None:
                cmd += ["--session", str(self.session.folder)]
                if self.journal_max_mb is not None:
                    cmd += ["--journal-max-mb", str(self.journal_max_mb)]
            if self.replay:
                cmd += ["--replay-from", str(self.replay["session"]), "--replayed", ",".join(self.replay["replayed"]),
                        "--speed", str(self.replay.get("speed", 1.0))]
                if self.replay.get("t0") is not None:  # as the session reader found it (recorded or recovered)
                    cmd += ["--replay-t0", repr(float(self.replay["t0"]))]
            proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
            self.children[name] = Child(name, proc)
        self.say(f"spikewire: started {len(self.children)} nodes{f' of site {self.site}' if self.site else ''}: "
                 + ", ".join(f"{n} (pid {c.proc.pid})" for n, c in self.children.items()))

    def _pump(self, timeout: float, strict: bool = True) -> None:
        """Handle control messages for up to ``timeout`` s; if ``strict``, raise RunFailed when a node
        died or reported an error. Serves the session channel too (clock pings, announcements), the
        operator endpoint and the dashboard's output."""
        if self.barrier is not None:
            self._serve_barrier(timeout)
        elif timeout > 0:
            self._poll().poll(max(1, int(timeout * 1000)))
        self.operator.serve()
        if self.dashboard is not None:
            self._pass_dashboard_output()
        got = self.control.recv(0)
        while got is not None:
            name, msg = got
            child = self.children.get(name)
            if child is not None:
                self._on_message(child, msg)
            got = self.control.recv(0)
        if not strict:
            return
        for child in self.children.values():
            if child.error:
                raise RunFailed(f"node {child.name!r} failed: {child.error}")
            code = child.proc.poll()
            if code is not None and child.final is None:
                raise RunFailed(f"node {child.name!r} died ({describe_exit(code)}); stopped the others")

    def _serve_barrier(self, timeout: float) -> None:
        """Serve the session channel the moment anything arrives on it, until a control message is waiting
        or ``timeout`` s have passed (an answer kept waiting would skew the other sites' clock estimates)."""
        poller = self._poll()
        deadline = time.monotonic() + timeout
        while True:
            self.barrier.step(local_clock())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            ready = dict(poller.poll(max(1, int(remaining * 1000))))
            if ready.keys() - set(self.barrier.sockets()):  # the nodes, the operator or the dashboard
                self.barrier.step(local_clock())
                return

    def _poll(self) -> zmq.Poller:
        """One poller for everything the loop waits on: the nodes' control channel, the operator endpoint,
        the session channel's sockets (a site of a multi-site run), the dashboard's output."""
        if self._poller is None:
            self._poller = zmq.Poller()
            for sock in [self.control.socket, self.operator.socket,
                         *(self.barrier.sockets() if self.barrier is not None else [])]:
                self._poller.register(sock, zmq.POLLIN)
        return self._poller

    def _on_message(self, child: Child, msg: dict) -> None:
        kind = msg["type"]
        if kind == "bound":
            child.endpoints = dict(msg.get("outputs", {}))
            child.bound = True
        elif kind == "ready":
            child.ready = True
            child.metrics = msg.get("metrics") if isinstance(msg.get("metrics"), int) else None
            if self.session is not None:
                self.session.node_event(child.name, "ready", local_clock(), pid=child.proc.pid)
        elif kind == "status":  # rates are taken between a node's last two status messages
            if self.session is not None:
                self.session.record_status(child.name, msg)
            self.prev_statuses[child.name] = self.statuses.get(child.name, msg)
            self.statuses[child.name] = msg
        elif kind == "final":
            child.final = msg.get("summary", {})
            if self.session is not None:  # the node's final figures too, so a reader can rebuild the report
                self.session.record_status(child.name, {"type": "final", "t": local_clock(), "log": msg.get("log", []),
                                                        "summary": child.final})
            if self.session is not None:
                self.session.node_event(child.name, "stopped", local_clock())
        elif kind == "error":
            child.error = str(msg.get("message", "unknown error"))
        elif kind == "operator_hold_ack":
            child.hold_ack = msg

    def _wait_all(self, what: str, done) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not all(done(c) for c in self.children.values()):
            if self.stop_reason:
                raise RunFailed(f"{self.stop_reason} during startup")
            if time.monotonic() > deadline:
                late = [c.name for c in self.children.values() if not done(c)]
                raise RunFailed(f"node(s) {', '.join(late)} not {what} within {self.ready_timeout} s")
            self._pump(0.1)

    def _setup(self) -> None:
        self._wait_all("bound", lambda c: c.bound)
        for name in self.children:
            inputs: dict[str, list] = {}
            for src in node_plan(self.network, name, self.site).sources:
                # Known from the file (an external publisher, a relay, another site's fixed port), or where
                # a node of this run bound.
                endpoint = src.endpoint or self.children[src.upstream[0]].endpoints[src.upstream[1]]
                inputs.setdefault(src.port, []).append([src.source_id, endpoint, src.label])
            self.control.send(name, {"type": "connect", "inputs": inputs})
        self._wait_all("ready", lambda c: c.ready)

    def _start_record(self, offsets: dict[str, float]) -> dict:
        """The sites' session this run belongs to, for the summary and provenance (and merge)."""
        d = self.decision
        start = {"mode": d.mode, "site": self.site, "missing_sites": list(d.missing), "site_offsets_s": offsets}
        return {"session_id": d.session_id, "start": start, "site_offsets": offsets}

    def _agree_start(self) -> float:
        """With the other sites: one start (on our clock), one length, one session id (launch/barrier.py)."""
        b = self.barrier
        b.propose(local_clock(), self.duration)
        others = [s for s in self.network.start_sites if s != self.site]
        self.say(f"spikewire: site {self.site} ready; agreeing the start with {', '.join(others)} "
                 f"(waiting up to {self.start_wait:g} s)")
        deadline = time.monotonic() + self.start_wait
        while True:
            now = local_clock()
            b.step(now)
            d = b.decide(now)
            if d is not None:
                break
            if self.stop_reason:
                raise StoppedBeforeStart(f"{self.stop_reason} while waiting for the other sites; nothing ran")
            if time.monotonic() >= deadline:
                d = b.alone(now)
                self.say(f"spikewire: WARNING: site(s) {', '.join(d.missing)} not ready within {self.start_wait:g} s: "
                         f"site {self.site} starts ALONE (session {d.session_id}); the sites' records will not "
                         "share a start")
                break
            self._pump(0.02)
        late = local_clock() - d.t0
        present = [s for s in self.network.start_sites if s not in d.missing]
        if d.mode == "joined" and late > -0.05:
            self.say(f"spikewire: WARNING: sites {', '.join(s for s in present if s != self.site)} already run session "
                     f"{d.session_id}: site {self.site} joins it now, late (its protocol phases are not theirs)")
        elif d.mode == "joined":
            self.say(f"spikewire: WARNING: site {self.site} starts with {', '.join(s for s in present if s != self.site)} "
                     f"(session {d.session_id}), which gave up waiting for {', '.join(d.missing)}")
        if late > 0:
            self.say(f"spikewire: WARNING: the agreed start was {late * 1e3:.0f} ms ago when it reached this site "
                     "(a slow path between sites): its first ticks catch up")
        b.mark_started(d)
        self.decision = d
        if d.duration is not None:
            self.duration = d.duration
        if d.mode == "agreed":
            self.say(f"spikewire: sites {', '.join(present)} start together in "
                     f"{max(0.0, -late):.2f} s (session {d.session_id}"
                     + (f", {d.duration:g} s" if d.duration is not None else "") + ")")
        return d.t0

    def _start(self) -> float:
        t0 = self._agree_start() if self.barrier is not None else local_clock() + START_MARGIN
        self.t0 = t0
        for name in self.children:
            self.control.send(name, {"type": "start", "t0": t0, "duration": None})
        if self.session is not None:
            # On disk now, with the nodes' ready times (UTC and local_clock): if this process is killed, the
            # session still says when it started (and in which session of the sites), and export and merge
            # place every time exactly.
            self.session.provenance["t0_local_clock"] = t0
            if self.decision is not None:
                self.session.provenance.update(self._start_record(self.barrier.offsets()))
            self.session.write()
        self._write_live()
        if self.network.phases:
            self.say("spikewire: protocol " + ", then ".join(f"{n} {e - s:g} s" for n, s, e in self.network.phases))
        self.say("spikewire: all nodes ready; running" + (f" for {self.duration:g} s" if self.duration else
                                                             " until Ctrl-C"))
        return t0

    # --- from outside: the live file, the operator, the dashboard ------------------------------------
    def _live_content(self) -> dict:
        net = self.network
        nodes = {}
        for name, child in self.children.items():
            bind = str(getattr(net.nodes[name].settings, "bind", "127.0.0.1"))
            host = "127.0.0.1" if bind in ("0.0.0.0", "::", "*", "localhost") else bind
            nodes[name] = {"kind": net.nodes[name].kind, "pid": child.proc.pid,
                           "metrics": f"http://{host}:{child.metrics}/metrics" if child.metrics else None,
                           "outputs": dict(child.endpoints)}
        return {"version": 1, "network": net.name, "network_file": str(Path(net.path).resolve()), "site": self.site,
                "supervisor_pid": os.getpid(),
                "session": str(self.session.folder.resolve()) if self.session is not None else None,
                "t0": self.t0, "duration": self.duration, "phases": [[n, s, e] for n, s, e in net.phases],
                "nodes": nodes, "control": {"endpoint": self.operator.endpoint, "secret": self.operator.secret}}

    def _write_live(self) -> None:
        """Write (or rewrite) the live file; a run of the same network alive in this folder is warned of."""
        if self.live_file is None:
            self.live_file = live_path(self.network.name, self.site)
            try:
                other = read_live(self.live_file)
            except LiveFileError:
                other = None  # none, unreadable, or stale: ours to write
            if other is not None and other["supervisor_pid"] != os.getpid():
                self.say(f"spikewire: WARNING: {self.live_file} names a run still going (pid {other['supervisor_pid']});"
                         " overwritten: its dashboard now watches this run")
        try:
            write_live(self.live_file, self._live_content())
        except OSError as e:
            raise RunFailed(f"could not write the live file {self.live_file}: {e}") from None

    def _remove_live(self) -> None:
        """Remove the live file if it is still ours (another run may have taken it over)."""
        if self.live_file is None:
            return
        try:
            if read_live(self.live_file, alive=False)["supervisor_pid"] == os.getpid():
                self.live_file.unlink()
        except (LiveFileError, FileNotFoundError):
            return

    def _on_operator(self, req: Request, t: float) -> dict:
        """An accepted operator request (launch/operator.py): act, say, journal."""
        if req.action == "ping":
            return {}
        extra: dict = {}
        if req.action in ("hold", "release"):
            on = req.action == "hold"
            told = [n for n, c in self.children.items() if c.bound and c.final is None and c.proc.poll() is None]
            for name in told:
                self.control.send(name, {"type": "operator_hold", "on": on, "source": req.source})
            self.operator_holding = req.source if on else None
            extra["nodes"] = told
            self.say(f"spikewire: WARNING: operator {'HOLD' if on else 'release'} by {req.source}: "
                     + ("stimulation and programming held on every node" if on else "the interlocks release as "
                        "their inputs allow") + f" ({len(told)} nodes told)")
        else:
            self.say(f"spikewire: mark by {req.source}: {req.text}")
        self._drawn = 0  # below the status lines: the next redraw starts under this one
        if self.session is not None:
            self.session.record_control(t, req.action, req.source, req.text)
        return extra

    def _start_dashboard(self) -> None:
        test_cmd = os.environ.get(DASHBOARD_COMMAND_ENV)
        cmd = shlex.split(test_cmd) if test_cmd else [sys.executable, "-m", "spikewire", "dashboard"]
        cmd += ["--live", str(self.live_file), "--listen", self.dashboard_listen]
        try:
            self.dashboard = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            self.say(f"spikewire: WARNING: the dashboard did not start ({e}); the run goes on without it")
            return
        os.set_blocking(self.dashboard.stdout.fileno(), False)
        self._poll().register(self.dashboard.stdout, zmq.POLLIN)
        self.say(f"spikewire: dashboard starting (pid {self.dashboard.pid}) on {self.dashboard_listen}")

    def _pass_dashboard_output(self, final: bool = False) -> None:
        """Print what the dashboard wrote, whole lines (all of it when ``final``: it has been reaped); warn
        once if it died while the run goes on. Never blocks."""
        proc = self.dashboard
        if proc.stdout is not None:
            while True:
                try:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                except BlockingIOError:
                    break
                if not chunk:  # its end of the pipe closed
                    self._poll().unregister(proc.stdout)
                    proc.stdout.close()
                    proc.stdout = None
                    break
                self._dashboard_buf += chunk
            *lines, self._dashboard_buf = self._dashboard_buf.split(b"\n")
            if (final or proc.stdout is None) and self._dashboard_buf:
                lines.append(self._dashboard_buf)
                self._dashboard_buf = b""
            for line in lines:
                self.say(line.decode(errors="replace").rstrip())
                self._drawn = 0
        if final:
            if proc.stdout is not None:  # a grandchild keeps the pipe open: not ours to wait for
                self._poll().unregister(proc.stdout)
                proc.stdout.close()
                proc.stdout = None
            return
        code = proc.poll()
        if code is not None and not self._dashboard_warned:
            self._dashboard_warned = True
            self.say(f"spikewire: WARNING: the dashboard {describe_exit(code)}; the run goes on without it")

    def _stop_dashboard(self) -> None:
        """SIGTERM, then SIGKILL after DASHBOARD_GRACE; reap it and pass on the rest of its output."""
        proc = self.dashboard
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(DASHBOARD_GRACE)
            except subprocess.TimeoutExpired:
                self.say(f"spikewire: the dashboard did not stop within {DASHBOARD_GRACE:g} s; killed")
                proc.kill()
                proc.wait()
        elif not self._dashboard_warned:
            self._dashboard_warned = True
            self.say(f"spikewire: WARNING: the dashboard {describe_exit(proc.returncode)} before the run ended")
        self._pass_dashboard_output(final=True)

    def _supervise(self, t0: float) -> str:
        end = t0 + self.duration if self.duration else float("inf")
        next_draw = t0 + self.status_every
        while True:
            if self.stop_reason:
                return self.stop_reason
            now = local_clock()
            if now >= end:
                return "completed"
            self._pump(min(0.1, max(0.0, end - now)))
            if now >= next_draw and self.statuses:
                next_draw = now + self.status_every
                self._draw()

    def _draw(self) -> None:
        # One row per node (each fitted by render_status, whatever the node's size), so that a redraw on a
        # terminal moves up exactly that many rows.
        width = max(40, min(STATUS_WIDTH, shutil.get_terminal_size().columns - 1)) if self.tty else STATUS_WIDTH
        lines = render_status(self.network, self.statuses, self.prev_statuses, self.node_names, width=width)
        if self.tty:
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def _stop_all(self) -> None:
        self.t_end = local_clock()
        running = [n for n, c in self.children.items() if c.proc.poll() is None and c.ready]
        for name in running:
            self.control.send(name, {"type": "drain"})
        if running:
            deadline = time.monotonic() + DRAIN_TIME
            while time.monotonic() < deadline:
                self._pump(0.05, strict=False)
        for name, child in self.children.items():
            if child.proc.poll() is None:
                try:
                    self.control.send(name, {"type": "stop"})
                except zmq.ZMQError as e:
                    self.say(f"spikewire: could not ask {name} to stop ({e}); terminating it")
                    child.proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and any(c.proc.poll() is None for c in self.children.values()):
            self._pump(0.05, strict=False)
        self._pump(0.0, strict=False)  # finals that arrived just before their processes exited
        for child in self.children.values():
            if child.proc.poll() is None:
                self.killed_at_stop[child.name] = {"final_report": child.final is not None}
                self.say(f"spikewire: node {child.name!r} did not stop within {STOP_GRACE:g} s; its threads' "
                         "stacks go to its stderr, then it is terminated")
                child.proc.send_signal(signal.SIGUSR1)
                time.sleep(0.2)
                child.proc.terminate()
                try:
                    child.proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait(2.0)
