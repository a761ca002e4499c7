"""A run's session folder: its one writer (``Session``) and its one reader (``read_session``).

    sessions/<UTC timestamp>/          (or --session-dir)
        network.toml                   the network file exactly as run
        provenance.json                format, versions, git commit, command line, the clock (t0 on the
                                       local_clock and in UTC, UTC minus local_clock), node ready/stop
                                       times, per-link clock offsets, outcome
        summary.json                   the run summary (as --json writes it)
        status.jsonl                   every node's status message (1 Hz: its figures, nodes/figures.py) with the
                                       model events since the previous one ("log": plasticity pulses with
                                       their exact times and resistance before/after), and its final report
                                       (type "final", its figures under "summary"), one JSON per line; and
                                       every operator action accepted while it ran (type "control", no
                                       node: action hold / release / mark, source, text, t)
        journal/<node>.swj             every packet each node sent and received (streams/journal.py)

Everything that reads a session (plot, NWB export, both replays, merge) reads it here, so there is one
story for what is missing: ``SessionError`` for a folder that is no session, one ``DamagedSessionWarning``
per damaged or missing part (readers go on with the rest), one rule for t0 and one reconstruction of each
device's value over time. The catch: a session recorded before ``FORMAT`` 2 lacks what the writer now
records (the UTC of t0, device start values in every status line), and a killed run lacks what is written at
its end (t0 if it died before starting, summary.json); for those the reader recovers what it can and says
how, in a warning.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from spikewire.config.network import Network, NetworkError, load_network
from spikewire.nodes.element import Declaration, Device
from spikewire.nodes.figures import Figures
from spikewire.streams.clock import local_clock
from spikewire.streams.journal import RECEIVED, SENT, ReadResult, read_journal
from spikewire.streams.wire import DATA_KINDS, Kind, empty_events

START_MARGIN = 0.2
"""Seconds from the last node's ready to t0 in a one-site run (the supervisor's start time)."""

FORMAT = 2
"""The session layout, recorded as provenance ``format``. 1 (no ``format``): recorded before the element
contract: status lines' ``model`` is each kind's own dict, and provenance has t0 on the local_clock only
(from the start on, or only at the end in older sessions). 2: ``model`` and finals' ``summary.model`` are
``Figures`` JSON (devices carry ``r_start`` in every line); provenance has ``utc_minus_local_clock`` from
the start and ``t0_utc`` once t0 is set."""

PACKAGES = ("spikewire", "numpy", "numba", "llvmlite", "pyzmq", "pylsl", "prometheus-client", "psutil")


def default_session_dir() -> Path:
    return Path("sessions") / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _versions() -> dict[str, str | None]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


PLUGIN_GROUPS = ("spikewire.elements", "spikewire.crossbars")


def _plugins() -> dict[str, dict[str, dict]]:
    """Every installed plugin (entry point of spikewire's groups) with its package and version, so that an
    archived session says what it needs to be read again."""
    out: dict[str, dict[str, dict]] = {}
    for group in PLUGIN_GROUPS:
        for ep in metadata.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            out.setdefault(group, {})[ep.name] = {"entry_point": ep.value,
                                                  "package": dist.metadata["Name"] if dist else None,
                                                  "version": dist.version if dist else None}
    return out


def _git_commit(where: Path) -> dict:
    """The spikewire source's git commit and whether its tree had uncommitted changes (None outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=where, capture_output=True, text=True,
                               timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None}
    if head.returncode != 0:
        return {"commit": None}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def utc_minus_local_clock() -> float:
    """UTC epoch seconds minus local_clock() now: the local_clock time of any UTC instant (the closest of
    three readings, so a preemption between the two clocks does not skew it)."""
    best = None
    for _ in range(3):
        a = local_clock()
        utc = time.time()
        b = local_clock()
        if best is None or b - a < best[0]:
            best = (b - a, utc - (a + b) / 2)
    return best[1]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")


# --- the writer --------------------------------------------------------------------------------------------
class Session:
    """Writes a session folder while a run goes (launch/supervisor.py). ``provenance`` is written by
    ``write`` (at once, again at the start and at ``finish``), so a killed run still leaves what it had."""

    def __init__(self, folder: Path, network_path: Path, site: str | None = None, nodes: list[str] | None = None):
        self.folder = Path(folder)
        if self.folder.exists() and any(self.folder.iterdir()):
            raise FileExistsError(f"session folder {self.folder} is not empty; choose another --session-dir")
        (self.folder / "journal").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(network_path, self.folder / "network.toml")
        source = Path(__file__).resolve().parent.parent
        self.provenance = {
            "format": FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "network_file": str(Path(network_path).resolve()),
            "command_line": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "cwd": os.getcwd(),
            "host": socket.gethostname(),
            "versions": _versions(),
            "plugins": _plugins(),
            "source": {"path": str(source), **_git_commit(source)},
            "lsl_config": os.environ.get("LSLAPICFG"),
            # Every time in the session is on this machine's local_clock; this puts any of them in UTC
            # (t0 above all), even when the run is killed before t0 is known.
            "utc_minus_local_clock": utc_minus_local_clock(),
            "nodes": {},
            "links": {},
            # One site of a multi-site network records only its own nodes; readers look here for which.
            "site": site,
            "nodes_run": list(nodes) if nodes is not None else None,
        }
        self._status = None  # status.jsonl, opened at the first status message
        self.write()

    def record_status(self, node: str, msg: dict) -> None:
        if self._status is None:
            self._status = open(self.folder / "status.jsonl", "a", buffering=1)  # line-buffered: crash-safe
        self._status.write(json.dumps({"node": node, **msg}, default=float) + "\n")

    def record_control(self, t_local: float, action: str, source: str, text: str = "") -> None:
        """An operator's action (hold, release, mark) accepted at ``t_local``, in status.jsonl."""
        if self._status is None:
            self._status = open(self.folder / "status.jsonl", "a", buffering=1)
        self._status.write(json.dumps({"type": "control", "t": t_local, "action": action, "source": source,
                                       "text": text}) + "\n")

    def node_event(self, node: str, what: str, t_local: float, **extra) -> None:
        """``what`` happened to ``node`` at ``t_local`` (ready, stopped, died, killed), stamped in UTC too."""
        entry = self.provenance["nodes"].setdefault(node, {})
        entry[what] = {"utc": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "local_clock": t_local,
                       **extra}

    def finish(self, report: dict, t0: float | None) -> None:
        self.provenance["t0_local_clock"] = t0
        self.provenance["outcome"] = report.get("outcome")
        self.provenance["finished"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        # Links inside a site share one clock (offset 0 by construction); an inter-site link's offset and
        # round trip are the receiver's NTP-style estimate at the end (status.jsonl has them over time).
        self.provenance["links"] = {
            ln["link"]: {"clock_offset_s": ln.get("clock_offset_s") if ln.get("inter_site") else 0.0,
                         "rtt_s": ln.get("rtt_s"), "inter_site": bool(ln.get("inter_site")),
                         "outages": ln.get("outages"), "restarts": ln.get("restarts")}
            for ln in report.get("links", []) if ln.get("received") is not None}
        # Where each node's persistent state started from (a memristor's crossbar: r_init, or which file).
        self.provenance["start_state"] = {n: f["model"]["start_state"] for n, f in report.get("nodes", {}).items()
                                          if f.get("final") and "start_state" in f.get("model", {})}
        self.provenance["warnings"] = report.get("warnings", [])
        (self.folder / "summary.json").write_text(json.dumps(report, indent=2, default=float))
        if self._status is not None:
            self._status.close()
            self._status = None
        self.write()

    def write(self) -> None:
        t0, offset = self.provenance.get("t0_local_clock"), self.provenance.get("utc_minus_local_clock")
        if _number(t0) and _number(offset):  # t0: set by the supervisor at the start (or by finish)
            self.provenance["t0_utc"] = _iso(t0 + offset)
        tmp = self.folder / "provenance.json.tmp"
        tmp.write_text(json.dumps(self.provenance, indent=2, default=str))
        os.replace(tmp, self.folder / "provenance.json")


# --- the reader ----------------------------------------------------------------------------------------
class SessionError(ValueError):
    """A folder that is not a session, or a session whose record cannot be read at all (one line)."""


class SessionNotFound(SessionError, FileNotFoundError):
    """No such folder."""


class DamagedSessionWarning(UserWarning):
    """A part of the session is missing or damaged (a journal's tail, a torn status line, no summary, no
    t0): the reader goes on with the rest, and the message names the part and what was done about it."""


PARTS = ("network.toml", "provenance.json", "journal")
"""What every session folder has from its first moment (``Session.__init__`` writes them)."""


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


def check_session_folder(folder: str | Path) -> Path:
    """``folder`` as a Path if it is a session folder; SessionNotFound or SessionError (one line) if not."""
    folder = Path(folder)
    if not folder.exists():
        raise SessionNotFound(f"{folder}: no such session folder")
    if not folder.is_dir():
        raise SessionError(f"{folder}: not a folder; a session is the folder `spikewire run --session-dir` writes")
    missing = [n for n in PARTS if not (folder / n).exists()]
    if missing:
        raise SessionError(f"{folder} is not a spikewire session folder (no {', '.join(missing)}); "
                           "`spikewire run NETWORK --session-dir DIR` writes one")
    return folder


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object file of a session; SessionError naming ``what`` it is if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise SessionError(f"{path}: unreadable {what} (not JSON: {e})") from None
    if not isinstance(data, dict):
        raise SessionError(f"{path}: unreadable {what} (not a JSON object)")
    return data


@dataclass
class StatusLog:
    """status.jsonl, parsed once: every readable line in file order, and the unreadable ones."""

    lines: list[dict] = field(default_factory=list)
    torn: list[tuple[int, str]] = field(default_factory=list)
    """(line number, text) of each line that is not a JSON object (a crash tears the last one)."""

    def of(self, node: str, kind: str | None = None) -> list[dict]:
        """``node``'s lines (of ``type`` ``kind`` if given), in file order."""
        return [ln for ln in self.lines if ln.get("node") == node and (kind is None or ln.get("type") == kind)]

    def final_nodes(self) -> set[str]:
        """Nodes that sent a final report (a line of type ``final``)."""
        return {ln["node"] for ln in self.lines if ln.get("type") == "final" and isinstance(ln.get("node"), str)}

    def finals(self) -> dict[str, dict]:
        """node -> its final report (a final line's ``summary``: ``model`` is its figures' JSON)."""
        return {ln["node"]: ln["summary"] for ln in self.lines if ln.get("type") == "final"
                and isinstance(ln.get("node"), str) and isinstance(ln.get("summary"), dict)}

    def problem(self, path: Path) -> str:
        """The damage the torn lines are, for a DamagedSessionWarning ('' if none)."""
        if not self.torn:
            return ""
        n = len(self.torn)
        where = ", ".join(str(i) for i, _ in self.torn[:5]) + (", ..." if n > 5 else "")
        return f"{path}: {n} unreadable line{'s' if n > 1 else ''} skipped (line{'s' if n > 1 else ''} {where}; " \
               "the run stopped mid-write?)"


def read_status(path: Path) -> StatusLog:
    """status.jsonl (an empty log if there is none)."""
    out = StatusLog()
    if not Path(path).is_file():
        return out
    for i, text in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if isinstance(msg, dict):
            out.lines.append(msg)
        else:
            out.torn.append((i, text))
    return out


def link_source(label: str) -> str:
    """The upstream of a link label ('node.port', or an external endpoint): what a receiving node's
    journal names the packets it got from there."""
    return label.split(" -> ")[0]


@dataclass(frozen=True)
class Pulse:
    """One programming pulse a node applied to a device (its pulse log), in session seconds."""

    node: str
    device: str
    t: float
    direction: str
    """``ltp`` (potentiation: the resistance falls) or ``ltd``."""
    r_before: float
    r_after: float

    @property
    def ltp(self) -> bool:
        return self.direction == "ltp"


@dataclass
class DeviceRecord:
    """One device's value over the session: where it started, every status sample and every pulse."""

    node: str
    name: str
    declared: Device | None
    """As the node's kind declares it (address, pulse parameters); None for one only its figures name."""
    r_start: float | None = None
    r_start_from: str = ""
    """Where ``r_start`` comes from: summary.json, the final report, the status figures, or (a killed run
    recorded before format 2) the earliest known value: exact, since only a pulse changes a device."""
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(session time, value) of each status line's figures, in time order."""
    pulses: list[Pulse] = field(default_factory=list)
    """In time order (pulses at one time in the order applied)."""

    @property
    def observed(self) -> bool:
        """Something was recorded while the run went (a sample or a pulse), not only its start."""
        return bool(self.samples or self.pulses)

    def steps(self) -> tuple[np.ndarray, np.ndarray]:
        """(session times, values) of a step function: ``r_start`` at the start (0, or the first record if
        that came earlier), then each pulse's value after and each sample, one value per time (at one
        time, the last: a sample taken with a pulse includes it)."""
        pts = sorted([(p.t, 0, p.r_after) for p in self.pulses] + [(t, 1, r) for t, r in self.samples],
                     key=lambda p: p[:2])
        if self.r_start is not None:
            pts.insert(0, (min(0.0, pts[0][0]) if pts else 0.0, -1, self.r_start))
        keep = [p for i, p in enumerate(pts) if i + 1 == len(pts) or pts[i + 1][0] != p[0]]
        return (np.array([p[0] for p in keep], dtype=np.float64), np.array([p[2] for p in keep], dtype=np.float64))


CONTROL_ACTIONS = ("hold", "release", "mark")


@dataclass(frozen=True)
class Control:
    """An operator's action during the run (launch/operator.py), in session seconds."""

    t: float
    action: str
    """hold, release or mark."""
    source: str
    """Who asked (the dashboard says which)."""
    text: str = ""
    """A mark's note."""


@dataclass(frozen=True)
class OperatorHold:
    """Stimulation and programming held by hand, from a hold to the next release (or the run's end)."""

    start: float
    stop: float
    source: str
    released_by: str
    """Who released it; '' if the run ended held."""


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    stop: float
    """Its planned end if completed, else when the run stopped."""
    completed: bool


@dataclass
class RecordedSession:
    """A session folder, read once (``read_session``). Times in journals and status lines stay on the
    local_clock; ``t0`` is the run's start on it, and every method returning times returns session
    seconds (time - t0)."""

    folder: Path
    network: Network
    """The network as run, with only the nodes this session recorded (one site's, in a site's session)."""
    provenance: dict
    summary: dict
    """summary.json ({} if the run did not finish)."""
    status: StatusLog
    journals: dict[str, ReadResult]
    """node -> its journal, for every node whose journal could be read (in network order)."""
    t0: float
    t0_from: str
    """'recorded', or how t0 was recovered."""
    start_utc: datetime | None
    """t0 in UTC (None: nothing in the session relates its local_clock to UTC)."""
    end_s: float
    """Session time the run stopped at (summary.json, else its last journal record or status line)."""
    damage: list[str] = field(default_factory=list)
    format: int = 1
    _sent: dict = field(default_factory=dict, repr=False)
    _figures: dict = field(default_factory=dict, repr=False)
    _finals: dict | None = field(default=None, repr=False)
    _devices: list | None = field(default=None, repr=False)

    def warn(self, text: str) -> None:
        """A damaged or missing part: listed in ``damage`` and warned as a DamagedSessionWarning."""
        _warn(self.damage, text)

    @property
    def site(self) -> str | None:
        """The site this session is of (None: a whole network's run, or a merged session)."""
        return self.provenance.get("site") or None

    @property
    def outcome(self) -> str | None:
        return self.summary.get("outcome") or self.provenance.get("outcome")

    def journal_path(self, node: str) -> Path:
        return self.folder / "journal" / f"{node}.swj"

    def declaration(self, node: str) -> Declaration:
        return self.network.nodes[node].declaration

    # --- what nodes sent and received ---------------------------------------------------------------
    def sent(self, node: str) -> dict[str, tuple[Kind, np.ndarray]]:
        """Per output port (in the order first used): its kind and every data event the node sent on it,
        loop probes left out; times on the local_clock."""
        if node not in self._sent:
            parts: dict[str, list[np.ndarray]] = {}
            kinds: dict[str, Kind] = {}
            journal = self.journals.get(node)
            for rec in journal.records if journal else ():
                p = rec.packet
                if rec.direction == SENT and p is not None and p.kind in DATA_KINDS and p.kind != Kind.PROBE:
                    kinds[rec.port] = p.kind
                    parts.setdefault(rec.port, []).append(p.events)
            self._sent[node] = {port: (kinds[port], np.concatenate(evs)) for port, evs in parts.items()}
        return self._sent[node]

    def received(self, node: str, port: str) -> np.ndarray:
        """Every event the node received on input ``port`` (of the kinds it accepts), in arrival order; a
        packet from an upstream that feeds several of the node's ports was journaled once and counts for
        each. Times on the local_clock."""
        spec = self.network.nodes[node]
        accepts = spec.inputs[port].accepts
        sources = {link_source(ln.label) for ln in self.network.links_into(node) if ln.dst_port == port}
        journal = self.journals.get(node)
        chunks = [rec.packet.events for rec in (journal.records if journal else ())
                  if rec.direction == RECEIVED and rec.port in sources and rec.packet is not None
                  and rec.packet.kind in accepts]
        return np.concatenate([empty_events(), *chunks])

    # --- figures ------------------------------------------------------------------------------------
    def figures(self, node: str) -> list[tuple[float, Figures]]:
        """(session time, figures) of each of the node's status lines, in file order."""
        if node not in self._figures:
            out = []
            for ln in self.status.of(node, "status"):
                f = self._read_figures(ln.get("model"), f"a status line of {node!r}")
                if f is not None and _number(ln.get("t")):
                    out.append((ln["t"] - self.t0, f))
            self._figures[node] = out
        return self._figures[node]

    def final(self, node: str) -> Figures | None:
        """The node's final figures (its final report), None if it sent none."""
        if self._finals is None:
            self._finals = {n: self._read_figures(report.get("model"), f"the final report of {n!r}")
                            for n, report in self.status.finals().items()}
        return self._finals.get(node)

    def _read_figures(self, model, what: str) -> Figures | None:
        """A status line's or final report's figures; None (and a warning) if they are not figures."""
        if not isinstance(model, dict):
            return None
        try:
            return Figures.from_dict(model)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self.warn(f"{self.folder / 'status.jsonl'}: {what} holds no readable figures "
                      f"({type(e).__name__}: {e}); skipped")
            return None

    # --- devices ------------------------------------------------------------------------------------
    def devices(self) -> list[DeviceRecord]:
        """Every device of the session's nodes (as declared, then any other their figures or pulse logs
        name), with its value over time: one reconstruction for every reader."""
        if self._devices is None:
            self._devices = _devices(self)
        return self._devices

    def pulses(self) -> list[Pulse]:
        """Every programming pulse of every node, in time order."""
        return sorted((p for d in self.devices() for p in d.pulses), key=lambda p: p.t)

    # --- the operator -------------------------------------------------------------------------------
    def controls(self) -> list[Control]:
        """Every operator action the run accepted, in time order (a line that is not one is skipped)."""
        out = []
        for ln in self.status.lines:
            if ln.get("type") == "control" and ln.get("action") in CONTROL_ACTIONS and _number(ln.get("t")):
                out.append(Control(ln["t"] - self.t0, ln["action"], str(ln.get("source", "")), str(ln.get("text", ""))))
        return sorted(out, key=lambda c: c.t)

    def marks(self) -> list[Control]:
        """The operator's marks (timestamped notes), in time order."""
        return [c for c in self.controls() if c.action == "mark"]

    def operator_holds(self) -> list[OperatorHold]:
        """Each operator hold, from its hold to the next release (the end of the run if none); a hold while
        held is the same hold, a release while not held changes nothing."""
        out, since = [], None
        for c in self.controls():
            if c.action == "hold" and since is None:
                since = c
            elif c.action == "release" and since is not None:
                out.append(OperatorHold(since.t, c.t, since.source, c.source))
                since = None
        if since is not None:
            out.append(OperatorHold(since.t, max(self.end_s, since.t), since.source, ""))
        return out

    # --- the protocol -------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        """The network's protocol phases that started before the run stopped. A phase is completed if the
        run's phase table has it (summary.json), else if the run lasted past its planned end."""
        done = {p.get("phase") for p in self.summary["phases"]} if isinstance(self.summary.get("phases"), list) \
            else None
        out = []
        for name, start, stop in self.network.phases:
            if start >= self.end_s:
                continue
            completed = name in done if done is not None else stop <= self.end_s
            out.append(Phase(name, float(start), float(stop if completed else min(stop, self.end_s)), completed))
        return out


def _warn(damage: list[str], text: str) -> None:
    damage.append(text)
    warnings.warn(text, DamagedSessionWarning, stacklevel=4)


def read_session(folder: str | Path, *, journals: bool = True) -> RecordedSession:
    """Read a session folder. SessionNotFound / SessionError (one line) if it is not one or cannot be read
    at all; one DamagedSessionWarning per part that is missing or damaged. ``journals=False``: leave the
    journals unread (a replay reads its own), so t0 and the end are not recovered from them."""
    folder = check_session_folder(folder)
    provenance = read_json_object(folder / "provenance.json", "provenance")
    try:
        network = load_network(folder / "network.toml", check_keys=False)  # reading a record needs no keys
    except NetworkError as e:
        raise SessionError(f"{folder / 'network.toml'}: {e}") from None
    damage: list[str] = []
    summary: dict = {}
    if not (folder / "summary.json").is_file():
        _warn(damage, f"{folder}: no summary.json (the run did not finish); reading what the journals and status "
                      "lines hold")
    else:
        try:
            summary = read_json_object(folder / "summary.json", "summary")
        except SessionError as e:
            _warn(damage, f"{e}; reading what the journals and status lines hold")
    status = read_status(folder / "status.jsonl")
    if status.torn:
        _warn(damage, status.problem(folder / "status.jsonl"))
    run_here = provenance.get("nodes_run")
    if run_here:  # one site's session: its own nodes are the record (the others' are in their sites' sessions)
        network = dataclasses.replace(network, nodes={n: sp for n, sp in network.nodes.items() if n in run_here})
    read: dict[str, ReadResult] = {}
    for node in network.nodes if journals else ():
        path = folder / "journal" / f"{node}.swj"
        if not path.is_file():
            _warn(damage, f"{path}: missing; node {node!r}'s packets are not in the record")
            continue
        try:
            read[node] = result = read_journal(path)
        except ValueError as e:  # killed before its header was written, or not a journal at all
            _warn(damage, f"{e}; node {node!r}'s packets are not in the record")
            continue
        if result.skipped_bytes:
            _warn(damage, f"{path}: damaged tail ({result.problem}); skipped its last {result.skipped_bytes} "
                          f"bytes, kept {len(result.records)} records")
    t0, how = _t0(provenance, status, read)
    if t0 is None:
        raise SessionError(f"{folder}: the run never started (no t0, no status line, no node became ready"
                           + (" and no journal holds a record)" if journals else ")"))
    if how != "recorded":
        _warn(damage, f"{folder}: no t0 recorded (the run did not finish); t0 recovered {how}")
    _no_final_reports(network, summary, status, t0, damage)
    last = max([rec.logged for j in read.values() for rec in j.records]
               + [ln["t"] for ln in status.lines if _number(ln.get("t"))], default=t0)
    end = summary.get("duration_s")
    fmt = provenance.get("format", 1)
    return RecordedSession(folder, network, provenance, summary, status, read, t0, how, _start_utc(provenance, t0),
                           float(end) if _number(end) else last - t0, damage, fmt if isinstance(fmt, int) else 1)


def _t0(provenance: dict, status: StatusLog, journals: dict[str, ReadResult]) -> tuple[float | None, str]:
    """The one t0 rule: the recorded one; else (a supervisor killed before it wrote t0, in sessions whose
    supervisor wrote it only at the end) the best recovery, and how it was found."""
    if _number(provenance.get("t0_local_clock")):
        return float(provenance["t0_local_clock"]), "recorded"
    exact = [ln["t"] - ln["elapsed"] for ln in status.lines
             if ln.get("type") == "status" and _number(ln.get("t")) and _number(ln.get("elapsed"))]
    if exact:
        return statistics.median(exact), f"from {len(exact)} status lines (t - elapsed: exact)"
    readies = [ev["ready"]["local_clock"] for ev in (provenance.get("nodes") or {}).values() if isinstance(ev, dict)
               and isinstance(ev.get("ready"), dict) and _number(ev["ready"].get("local_clock"))]
    if readies:
        return max(readies) + START_MARGIN, f"as the last node's ready time + {START_MARGIN} s (as a one-site " \
                                            "supervisor picks it)"
    first = [j.records[0].logged for j in journals.values() if j.records]
    if first:
        return min(first), "as the first journal record's time (an upper bound: times may be late by up to a tick)"
    return None, ""


def _start_utc(provenance: dict, t0: float) -> datetime | None:
    """t0 in UTC: from the offset the writer measured (format 2), else from the node events the supervisor
    stamped with both clocks at once (their median)."""
    offset = provenance.get("utc_minus_local_clock")
    if not _number(offset):
        offsets = []
        for events in (provenance.get("nodes") or {}).values():
            for ev in events.values() if isinstance(events, dict) else ():
                if isinstance(ev, dict) and isinstance(ev.get("utc"), str) and _number(ev.get("local_clock")):
                    try:
                        offsets.append(datetime.fromisoformat(ev["utc"]).timestamp() - ev["local_clock"])
                    except ValueError:
                        continue  # a garbled stamp: the others still tell
        if not offsets:
            return None
        offset = statistics.median(offsets)
    return datetime.fromtimestamp(t0 + offset, timezone.utc)


def _no_final_reports(network: Network, summary: dict, status: StatusLog, t0: float, damage: list[str]) -> None:
    """One problem per node that sent no final report: what it did after its last status line is lost."""
    if summary and not isinstance(summary.get("nodes"), dict):
        return  # a summary that does not say (an older one): nothing to judge by
    finals = status.final_nodes()
    for name in network.nodes:
        if summary:
            if (summary["nodes"].get(name) or {}).get("final", True):
                continue
        elif name in finals:
            continue
        last = max((ln["t"] for ln in status.of(name) if _number(ln.get("t"))), default=None)
        after = f"after its last status line (at {last - t0:.1f} s)" if last is not None else "(it has no status line)"
        _warn(damage, f"node {name!r} sent no final report (killed?): its counts and plasticity pulses {after} are "
                      "lost; its journal still has every packet it sent")


def _devices(s: RecordedSession) -> list[DeviceRecord]:
    records: dict[tuple[str, str], DeviceRecord] = {}

    def record(node: str, name: str) -> DeviceRecord:
        if (node, name) not in records:
            records[(node, name)] = DeviceRecord(node, name, s.declaration(node).device(name))
        return records[(node, name)]

    for node, spec in s.network.nodes.items():
        for dev in spec.declaration.devices:
            record(node, dev.name)
    starts: dict[tuple[str, str], tuple[float, str]] = {}
    for row in s.summary.get("memristors") or []:  # the run report's device rows
        if isinstance(row, dict) and row.get("node") in s.network.nodes and isinstance(row.get("name"), str) \
                and _number(row.get("r_start")):
            record(row["node"], row["name"])
            starts.setdefault((row["node"], row["name"]), (float(row["r_start"]), "summary.json"))
    for node in s.network.nodes:
        final = s.final(node)
        for name, d in (final.devices if final else {}).items():
            record(node, name)
            if d.r_start is not None:
                starts.setdefault((node, name), (d.r_start, "the final report"))
        for t, f in s.figures(node):
            for name, d in f.devices.items():
                record(node, name).samples.append((t, d.r))
                if d.r_start is not None:
                    starts.setdefault((node, name), (d.r_start, "the status figures"))
    bad = 0
    for line in s.status.lines:
        node = line.get("node")
        log = line.get("log")
        if node not in s.network.nodes or not isinstance(log, list):
            continue
        for ev in log:
            if not (isinstance(ev, dict) and ev.get("event") == "pulse"):
                continue
            if not (_number(ev.get("t")) and isinstance(ev.get("device"), str) and ev.get("direction") in ("ltp", "ltd")
                    and _number(ev.get("r_before")) and _number(ev.get("r_after"))):
                bad += 1
                continue
            record(node, ev["device"]).pulses.append(Pulse(node, ev["device"], ev["t"] - s.t0, ev["direction"],
                                                           float(ev["r_before"]), float(ev["r_after"])))
    if bad:
        s.warn(f"{s.folder / 'status.jsonl'}: {bad} pulse log entr{'ies' if bad > 1 else 'y'} unreadable, skipped")
    for key, dev in records.items():
        dev.samples.sort(key=lambda p: p[0])
        dev.pulses.sort(key=lambda p: p.t)
        if key in starts:
            dev.r_start, dev.r_start_from = starts[key]
            continue
        # A killed run recorded before format 2: only a pulse changes a device, so the earliest value known
        # (a sample's, or the first pulse's value before it) is where it started.
        first = [(t, 1, r) for t, r in dev.samples[:1]] + [(p.t, 0, p.r_before) for p in dev.pulses[:1]]
        if first:
            dev.r_start, dev.r_start_from = min(first)[2], "the earliest value recorded"
    return list(records.values())
