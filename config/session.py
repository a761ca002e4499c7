"""A run's session folder: the journal of every node plus the provenance that makes it an experiment.

    sessions/<UTC timestamp>/          (or --session-dir)
        network.toml                   the network file exactly as run
        provenance.json                versions, git commit, command line, node start/stop times,
                                       per-link clock offsets, outcome
        summary.json                   the run summary (as --json writes it)
        status.jsonl                   every node's status message (1 Hz: counts, resistances, ...) with the
                                       model events since the previous one ("log": plasticity pulses with
                                       their exact times and resistance before/after), one JSON per line
        journal/<node>.swj             every packet each node sent and received (streams/journal.py)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

START_MARGIN = 0.2
"""Seconds from the last node's ready to t0 in a one-site run (the supervisor's start time)."""

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


class Session:
    def __init__(self, folder: Path, network_path: Path, site: str | None = None, nodes: list[str] | None = None):
        self.folder = Path(folder)
        if self.folder.exists() and any(self.folder.iterdir()):
            raise FileExistsError(f"session folder {self.folder} is not empty; choose another --session-dir")
        (self.folder / "journal").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(network_path, self.folder / "network.toml")
        source = Path(__file__).resolve().parent.parent
        self.provenance = {
            "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "network_file": str(Path(network_path).resolve()),
            "command_line": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "cwd": os.getcwd(),
            "host": socket.gethostname(),
            "versions": _versions(),
            "source": {"path": str(source), **_git_commit(source)},
            "lsl_config": os.environ.get("LSLAPICFG"),
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

    def node_event(self, node: str, what: str, t_local: float, **extra) -> None:
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
        tmp = self.folder / "provenance.json.tmp"
        tmp.write_text(json.dumps(self.provenance, indent=2, default=str))
        os.replace(tmp, self.folder / "provenance.json")
