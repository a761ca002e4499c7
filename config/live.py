"""The live file: where a running network can be watched and steered from outside (the dashboard).

The supervisor writes ``<cwd>/.spikewire/live/<network>.json`` (``<network>.<site>.json`` for one site of a
multi-site network) once every node is ready, rewrites it when the session starts, and removes it when the
run ends, whatever the way. It holds, as JSON (``version`` 1)::

    network, network_file (absolute), site (or null), supervisor_pid,
    session (absolute session folder, or null), t0 (local_clock of the start, null until then),
    duration (s, or null: until stopped), phases ([[name, start_s, end_s], ...], the protocol's),
    nodes: {node: {kind, pid, metrics ("http://127.0.0.1:<port>/metrics" or null),
                   outputs: {port: the ZeroMQ endpoint its publisher is bound to}}},
    control: {endpoint ("tcp://127.0.0.1:<port>", launch/operator.py), secret (32 hex digits)}

The catch: the file holds the control secret, so it is written mode 0600 in a folder of mode 0700, and
atomically (a reader never sees half a file). A run killed with SIGKILL cannot remove it: a reader knows a
stale file by its ``supervisor_pid`` no longer running (``read_live`` says so).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

VERSION = 1
LIVE_DIR = Path(".spikewire") / "live"


class LiveFileError(ValueError):
    """A live file that cannot be read, or names a run that is gone (one line)."""


def live_path(network: str, site: str | None = None, cwd: str | Path | None = None) -> Path:
    """Where the live file of ``network`` (one ``site`` of it) run from ``cwd`` (default: here) lives."""
    return Path(cwd or os.getcwd()).resolve() / LIVE_DIR / (f"{network}.{site}.json" if site else f"{network}.json")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (a zombie counts: it is its parent's to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def write_live(path: Path, content: dict) -> None:
    """Write ``content`` to ``path`` atomically, mode 0600 (its folder made 0700 if missing)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=1)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_live(path: str | Path, *, alive: bool = True) -> dict:
    """The live file at ``path``; LiveFileError (one line) if it is unreadable, of another version, or (with
    ``alive``) left by a run that is gone."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LiveFileError(f"{path}: no such live file (is the network running from that folder?)") from None
    except (OSError, ValueError) as e:
        raise LiveFileError(f"{path}: unreadable live file ({e})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise LiveFileError(f"{path}: not a version {VERSION} live file")
    pid = data.get("supervisor_pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise LiveFileError(f"{path}: no supervisor_pid")
    if alive and not pid_alive(pid):
        raise LiveFileError(f"{path}: stale (its run, pid {pid}, is gone)")
    return data
