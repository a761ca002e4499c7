"""The live file of a running ``spikewire run`` (config/live.py: its format, writer and reader), as the
dashboard needs it: typed, and found from a network's name in this folder.

The catch: a run killed with SIGKILL cannot remove its file, so a file is trusted only while its
supervisor's pid is alive (a reused pid would fool this; the endpoints would then simply not answer).
The file is rewritten while the run goes (t0 once the nodes start), so an observer reads it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spikewire.config.live import LiveFileError, live_path, read_live
from spikewire.config.network import NetworkError, load_network


@dataclass(frozen=True)
class LiveNode:
    kind: str
    pid: int | None
    metrics: str | None
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LiveRun:
    path: Path
    network: str
    network_file: Path
    site: str | None
    supervisor_pid: int
    session: Path | None
    t0: float | None
    duration: float | None
    phases: tuple[tuple[str, float, float], ...]
    nodes: dict[str, LiveNode]
    control_endpoint: str | None
    control_secret: str | None


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def read_live_file(path: str | Path, check_alive: bool = True) -> LiveRun:
    """The run a live file describes; LiveFileError (one line) if it is missing, malformed or stale."""
    path = Path(path)
    data = read_live(path, alive=check_alive)
    try:
        nodes = {}
        for name, n in dict(data["nodes"]).items():
            outputs = {str(k): str(v) for k, v in dict(n.get("outputs") or {}).items()}
            nodes[str(name)] = LiveNode(kind=str(n.get("kind", "")), pid=n.get("pid") if isinstance(n.get("pid"), int)
                                        else None, metrics=n.get("metrics") or None, outputs=outputs)
        control = data.get("control") or {}
        phases = tuple((str(p[0]), float(p[1]), float(p[2])) for p in data.get("phases") or ())
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise LiveFileError(f"{path}: malformed live file ({type(e).__name__}: {e})") from None
    return LiveRun(path=path, network=str(data.get("network", "")), network_file=Path(str(data.get("network_file", ""))),
                   site=data.get("site") or None, supervisor_pid=data["supervisor_pid"],
                   session=Path(data["session"]) if isinstance(data.get("session"), str) else None,
                   t0=float(data["t0"]) if _number(data.get("t0")) else None,
                   duration=float(data["duration"]) if _number(data.get("duration")) else None,
                   phases=phases, nodes=nodes, control_endpoint=control.get("endpoint") or None,
                   control_secret=control.get("secret") or None)


def find_live_file(network: str, site: str | None = None, cwd: Path | None = None) -> Path:
    """The live file of ``network`` (a name, or a network file whose [network] name is used) run from
    ``cwd``; LiveFileError if there is none or it is stale."""
    name = network
    if Path(network).is_file():
        try:
            name = load_network(network, check_keys=False).name
        except NetworkError as e:
            raise LiveFileError(f"{network}: {e}") from None
    path = live_path(name, site, cwd)
    if not path.is_file():
        where = path.parent
        others = sorted(p.name for p in where.glob("*.json")) if where.is_dir() else []
        hint = f"; live here: {', '.join(others)}" if others else ""
        raise LiveFileError(f"no running network {name!r}{f' (site {site})' if site else ''} here: {path} does not "
                            f"exist (start it with spikewire run from this folder){hint}")
    read_live_file(path)  # stale or malformed: say so now
    return path
