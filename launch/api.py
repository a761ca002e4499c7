"""Running a network from Python (a script or a Jupyter cell): ``run``, and the ``RunSummary`` it returns.

``run`` does what ``spikewire run`` does, with the supervisor in the calling process: the same checks
before anything starts (a bad network raises ``NetworkError`` naming the key), one process per node, the
same output, the same session folder, and the run summary back as an object.

Catches: the supervisor installs SIGINT and SIGTERM handlers for the length of the run (Ctrl-C, or a
notebook's interrupt, stops it cleanly), which Python allows only in the main thread, so ``run`` called
from another thread refuses at once. Node processes read the network file themselves: a network built or
changed in Python runs from a copy of its TOML (in a temporary folder, with its key files' paths made
absolute; next to the file it was loaded from if a node writes a file named relative to it, such as a
memristor's ``state_file``), removed after the run; the session keeps it as ``network.toml``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from spikewire.config.build import NetworkBuilder
from spikewire.config.network import WRITTEN_FILES, Network, NetworkError, load_network, preflight
from spikewire.config.session import default_session_dir
from spikewire.config.toml_writer import dumps


@dataclass(frozen=True)
class RunSummary:
    """What a run reports: the summary ``spikewire run`` prints (``str()`` gives that text) and ``--json``
    writes (``to_dict()``). Rows are dicts with the JSON's keys, ready for ``pandas.DataFrame(rows)``."""

    network: str
    outcome: str
    """'completed', 'stopped by SIGINT', or 'failed: <why>'."""
    duration: float
    """Seconds the network ran."""
    exit_code: int
    """What ``spikewire run`` would exit with: 0 for a clean stop, 1 if a node died, failed or was killed."""
    neurons: list[dict] = field(default_factory=list)
    """One row per neuron (per population for large ones): node, population, neuron, spikes, rate_hz, ..."""
    memristors: list[dict] = field(default_factory=list)
    """One row per device: node, name, its address, r_start, r_end, ltp_pulses, ltd_pulses."""
    links: list[dict] = field(default_factory=list)
    """One row per link: link (its label), sent, received, dropped, malformed, latency_p50_s, ..."""
    phases: list[dict] = field(default_factory=list)
    """One row per protocol phase reached: phase, start_s, end_s, and each population's and device's figures."""
    warnings: list[str] = field(default_factory=list)
    nodes: dict[str, dict] = field(default_factory=dict)
    """Each node's final figures (loop, process, model, interlock, journal, ...)."""
    probes: dict | None = None
    """The loop probes' round trip, if the network sends them."""
    session: Path | None = None
    """The session folder the run was recorded in (None if not recorded)."""
    report: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_report(cls, report: dict, exit_code: int | None = None, session: Path | None = None) -> RunSummary:
        """From the summary's JSON form (``Supervisor.report``, ``summary.json``). Without ``exit_code``, a
        failed outcome counts as 1."""
        outcome = str(report.get("outcome", ""))
        if exit_code is None:
            exit_code = 1 if outcome.startswith("failed") else 0
        return cls(network=report.get("network", ""), outcome=outcome, duration=float(report.get("duration_s", 0.0)),
                   exit_code=exit_code, neurons=list(report.get("neurons", [])),
                   memristors=list(report.get("memristors", [])), links=list(report.get("links", [])),
                   phases=list(report.get("phases", [])), warnings=list(report.get("warnings", [])),
                   nodes=dict(report.get("nodes", {})), probes=report.get("probes"), session=session,
                   report=report)

    @classmethod
    def read(cls, session: str | Path) -> RunSummary:
        """The summary a recorded session folder keeps (its ``summary.json``)."""
        import json

        folder = Path(session)
        return cls.from_report(json.loads((folder / "summary.json").read_text()), session=folder)

    @property
    def ok(self) -> bool:
        """True for a clean stop (completed, or stopped by Ctrl-C / SIGTERM)."""
        return self.exit_code == 0

    @property
    def spikes(self) -> dict[str, int]:
        """Spikes per population, as '<node>.<population>' -> count."""
        out: dict[str, int] = {}
        for row in self.neurons:
            key = f"{row['node']}.{row['population']}"
            out[key] = out.get(key, 0) + int(row["spikes"])
        return out

    def link(self, src: str, dst: str) -> dict:
        """The row of the link from output ``src`` ('<node>.<port>', or an external endpoint) to input
        ``dst``."""
        label = f"{src} -> {dst}"
        for row in self.links:
            if row["link"] == label:
                return row
        raise KeyError(f"no link {label!r}; links are: {', '.join(r['link'] for r in self.links)}")

    def to_dict(self) -> dict:
        """The summary as ``--json`` writes it (a copy)."""
        return copy.deepcopy(self.report)

    def __str__(self) -> str:
        from spikewire.monitor.report import render_text

        return render_text(self.report)

    def __repr__(self) -> str:
        spikes = sum(self.spikes.values())
        where = f", session {str(self.session)!r}" if self.session is not None else ""
        return (f"<RunSummary {self.network!r}: {self.outcome} after {self.duration:.1f} s; {spikes} spikes, "
                f"{len(self.memristors)} devices, {len(self.links)} links{where}>")

    def _repr_markdown_(self) -> str:
        """A notebook's rendering: the summary's main tables."""
        out = [f"**spikewire run of `{self.network}`**: {_cell(self.outcome)} after {self.duration:.1f} s"
               + (f" (session `{self.session}`)" if self.session is not None else "")]
        out += [f"- warning: {_cell(w)}" for w in self.warnings]
        out += _markdown("Neurons", ["node", "population", "neuron", "spikes", "rate Hz"],
                         [[r["node"], r["population"], r["neuron"], r["spikes"], f"{r['rate_hz']:.2f}"]
                          for r in self.neurons])
        out += _markdown("Memristors", ["node", "device", "R start kOhm", "R end kOhm", "LTP", "LTD"],
                         [[r["node"], r["name"], f"{r['r_start'] / 1e3:.3f}", f"{r['r_end'] / 1e3:.3f}",
                           r["ltp_pulses"], r["ltd_pulses"]] for r in self.memristors])
        out += _markdown("Links", ["link", "sent", "received", "dropped", "malformed", "p50 us", "p99 us"],
                         [[r["link"], r.get("sent"), r.get("received"), r.get("dropped"), r.get("malformed"),
                           _us(r.get("latency_p50_s")), _us(r.get("latency_p99_s"))] for r in self.links])
        if self.phases:
            columns = list(dict.fromkeys(k for row in self.phases for k in row))
            out += _markdown("Phases", columns, [[_number(row.get(c)) for c in columns] for row in self.phases])
        return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.0f}"


def _number(value: Any) -> Any:
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else value


def _markdown(title: str, headers: list[str], rows: list[list]) -> list[str]:
    if not rows:
        return []
    return (["", f"*{title}*", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows])


def run(network: str | os.PathLike | NetworkBuilder | Network, duration: float | None = None, *,
        session_dir: str | os.PathLike | None = None, record: bool = True, out: TextIO | None = None,
        quiet: bool = False, json_path: str | os.PathLike | None = None, reset_weights: bool = False,
        ready_timeout: float = 60.0, status_every: float | None = None, site: str | None = None,
        secret_key: str | None = None, journal_max_mb: int | None = None,
        start_wait: float = 60.0) -> RunSummary:
    """Run ``network`` (a network file's path, a ``NetworkBuilder``, or a ``Network`` loaded from a file)
    as ``spikewire run`` does and return its summary. Blocks until the run ends: after ``duration`` seconds
    (default: the protocol's length, else until Ctrl-C / the notebook's interrupt, a clean stop).

    ``session_dir``: where the session is recorded (default ``sessions/<UTC time>``, as the command line;
    ``record=False``: not recorded). ``out``: the text stream the supervisor writes its progress and the
    summary to (default ``sys.stdout``); ``quiet=True`` writes nothing. Node processes' own logs go to this
    process's stderr file descriptor. The other options are ``spikewire run``'s.

    Raises NetworkError (one line naming the key) for a network that must not start, before any process
    starts; RuntimeError when called from a thread other than the main one. A run that fails once started
    is not an exception: the summary's ``ok`` is False and its ``outcome`` says why."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("spikewire.run() must be called from the main thread: the supervisor installs SIGINT and "
                           "SIGTERM handlers for the run (a clean stop), which Python allows only there. From another "
                           "thread, save the network (net.save(path)) and start `spikewire run PATH` as a subprocess")
    if quiet and out is not None:
        raise ValueError("give out= or quiet=True, not both")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not math.isfinite(duration) or duration <= 0):
        raise ValueError(f"duration: must be a number of seconds > 0 (or None), got {duration!r}")
    if session_dir is not None and not record:
        raise ValueError("session_dir is where a run is recorded: not with record=False")
    from spikewire.launch.supervisor import Supervisor

    stream = io.StringIO() if quiet else out if out is not None else sys.stdout
    with _network_file(network) as net:
        session = None
        if record:
            session = str(session_dir) if session_dir is not None else (
                str(default_session_dir()) + (f"-{site}" if site else ""))
        preflight(net, reset_weights, session or "", site, secret_key)
        for warning in net.warnings:
            print(f"warning: {warning}", file=stream)
        sup = Supervisor(net, duration=duration, json_path=str(json_path) if json_path is not None else None,
                         out=stream, ready_timeout=ready_timeout, status_every=status_every,
                         reset_state=reset_weights, session_dir=session, site=site, secret_key=secret_key,
                         journal_max_mb=journal_max_mb, start_wait=start_wait)
        code = sup.run()
    return RunSummary.from_report(sup.report, code, sup.session.folder if sup.session is not None else None)


@contextlib.contextmanager
def _network_file(network: Any) -> Iterator[Network]:
    """The validated network, loaded from the file its node processes will read (a copy, for a network
    built or changed in Python, removed afterwards)."""
    if isinstance(network, (str, os.PathLike)):
        yield load_network(network)
        return
    if isinstance(network, Network):
        if network.path is None:
            raise TypeError("this Network was built without a file, which node processes need: pass the "
                            "NetworkBuilder it came from, or a network file")
        yield network
        return
    if not isinstance(network, NetworkBuilder):
        raise TypeError(f"run() takes a network file's path, a NetworkBuilder or a Network, not a "
                        f"{type(network).__name__}")
    checked = network.check()
    if network.matches_file():
        yield checked
        return
    path, temp = _write_copy(network, checked)
    try:
        yield load_network(path)
    finally:
        path.unlink(missing_ok=True)
        if temp is not None:
            temp.rmdir()


def _write_copy(builder: NetworkBuilder, checked: Network) -> tuple[Path, Path | None]:
    """The builder's network as a file that means the same: the copy and the temporary folder it is in
    (None when it had to go next to the builder's own file)."""
    data = builder.to_dict()
    data.setdefault("network", {})["name"] = checked.name  # not the copy's file name
    folder = builder.folder
    for site in (data.get("sites") or {}).values():
        for key in ("public_key", "secret_key"):
            if site.get(key):
                site[key] = str(folder / site[key])
    security = data.get("security") or {}
    if security.get("allow"):
        security["allow"] = [str(folder / ref) for ref in security["allow"]]
    written = [(name, f) for name, spec in checked.nodes.items() for f in WRITTEN_FILES
               if getattr(spec.settings, f, "")]
    temp = None if written else Path(tempfile.mkdtemp(prefix="spikewire-run-"))
    try:
        fd, name = tempfile.mkstemp(dir=temp or folder, prefix=f".{checked.name}.", suffix=".toml")
    except OSError as e:
        node, f = written[0] if written else ("", "")
        raise NetworkError(f"nodes.{node}.{f}" if node else "", f"cannot write the network to run it in "
                           f"{temp or folder} ({e.strerror or e}); save it (net.save(path)) and run that file") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(dumps(data))
    return Path(name), temp
