"""Network files: TOML that names every node, its kind and parameters, and every link.

A file is validated completely before anything starts. The first problem raises ``NetworkError`` with
one line naming the key and the reason (``nodes.zurich.dt: must be > 0, got -0.0001``). A valid file
becomes a ``Network``: node specs with typed ports and settings, and links with their source ids.

Layout::

    [network]                  name and description
    [nodes.<name>]             kind = "silicon" | "memristor" | "biological" | ...; then the kind's keys
    [protocol]                 phases = [{name, duration}, ...]: an experiment's phases (optional)
    [monitor]                  metrics ports, loop probes, alert budgets (optional)
    [[links]]                  from = "<node>.<output port>", to = "<node>.<input port>"
                               (or endpoint = "tcp://host:port" and source = <id >= 1000> for a publisher
                                outside this network)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spikewire.launch.settings import Settings, SettingsError, in_range, parse, positive, setting
from spikewire.nodes.base import InPort, Node, OutPort

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
EXTERNAL_SOURCE_MIN = 1000


class NetworkError(SettingsError):
    """A network file that must not start. ``str()`` is the one-line message for the user."""


def node_kinds() -> dict[str, type[Node]]:
    from spikewire.nodes.biological import BiologicalNode
    from spikewire.nodes.hub_bridge import HubBridgeNode
    from spikewire.nodes.memristor import MemristorNode
    from spikewire.nodes.probe import PulseSource, LatencySink
    from spikewire.nodes.silicon import SiliconNode

    return {c.kind: c for c in (SiliconNode, MemristorNode, BiologicalNode, PulseSource, LatencySink, HubBridgeNode)}


@dataclass(frozen=True)
class NetworkInfo(Settings):
    name: str = setting("", "Network name (defaults to the file name).")
    description: str = setting("", "What this network is for.")


@dataclass(frozen=True)
class PhaseSettings(Settings):
    name: str = setting("", "Phase name (shown in the per-phase table).")
    duration: float = setting(0.0, "Phase length [s].", check=positive)

    def validate(self, key: str) -> None:
        if not self.name:
            raise SettingsError(f"{key}.name", "required")


@dataclass(frozen=True)
class ProtocolSettings(Settings):
    """An experiment's phases, back to back from the session start. A run with a protocol lasts its
    total unless --duration says otherwise, and ends with a table of what happened in each phase."""

    phases: tuple[PhaseSettings, ...] = setting((), "The phases in order.")


@dataclass(frozen=True)
class MonitorSettings(Settings):
    """What the network exports for monitoring."""

    metrics: bool = setting(True, "Serve Prometheus metrics from every node.")
    render: Literal["loop", "scrape"] = setting(
        "loop", "Where a node renders its exposition: 'loop' (in its loop, when the next deadline is >= 2 ms "
        "away; the HTTP thread serves those bytes, so a scrape costs the loop nothing) or 'scrape' (on each "
        "request, in the HTTP thread: fresher, but ~0.5-1 ms of GIL the loop may be waiting for).")
    base_port: int = setting(9470, "Node i serves metrics on base_port + i (unless it sets metrics_port).",
                             check=in_range(1024, 65000))
    probe_from: str = setting("", "Output port '<node>.<port>' that emits loop probes ('' for none).")
    probe_every: float = setting(0.1, "Seconds between loop probes.", check=in_range(0.05, 60.0))
    scrape_interval: float = setting(1.0, "Prometheus scrape interval for generated configs [s].", check=positive)
    latency_budget: float = setting(0.005, "Link latency p99 above this fires an alert [s].", check=positive)
    silent_after: float = setting(10.0, "A population silent this long fires an alert [s].", check=positive)


@dataclass(frozen=True)
class LinkSettings(Settings):
    from_: str = setting("", "Output port '<node>.<port>' (leave out for an external publisher).", key="from")
    to: str = setting("", "Input port '<node>.<port>'.")
    endpoint: str = setting("", "External publisher's ZeroMQ endpoint (instead of 'from').")
    source: int = setting(0, "Source id an external publisher stamps on its packets (>= 1000).")
    hwm: int = setting(100_000, "High-water mark (packets queued) at each end.", check=positive)

    def validate(self, key: str) -> None:
        if not self.to:
            raise SettingsError(f"{key}.to", "required: the input port '<node>.<port>' this link feeds")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    kind: str
    cls: type[Node]
    settings: Settings
    inputs: dict[str, InPort]
    outputs: dict[str, OutPort]


@dataclass(frozen=True)
class Link:
    index: int
    src_node: str  # "" for an external publisher
    src_port: str
    dst_node: str
    dst_port: str
    source_id: int
    endpoint: str  # fixed endpoint of an external publisher, else ""
    hwm: int

    @property
    def label(self) -> str:
        src = f"{self.src_node}.{self.src_port}" if self.src_node else self.endpoint
        return f"{src} -> {self.dst_node}.{self.dst_port}"


@dataclass(frozen=True)
class Network:
    name: str
    description: str
    path: Path | None
    nodes: dict[str, NodeSpec]
    links: tuple[Link, ...]
    source_ids: dict[tuple[str, str], int]
    phases: tuple[tuple[str, float, float], ...] = ()  # (name, start, end) in session seconds
    monitor: MonitorSettings = MonitorSettings()

    def node_index(self, node: str) -> int:
        return list(self.nodes).index(node)

    def metrics_port(self, node: str) -> int:
        explicit = self.nodes[node].settings.metrics_port
        return explicit or self.monitor.base_port + self.node_index(node)

    @property
    def phase_ends(self) -> tuple[float, ...]:
        return tuple(end for _, _, end in self.phases)

    def links_from(self, node: str) -> list[Link]:
        return [ln for ln in self.links if ln.src_node == node]

    def links_into(self, node: str) -> list[Link]:
        return [ln for ln in self.links if ln.dst_node == node]


def load_network(path: str | Path) -> Network:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise NetworkError("", f"cannot read the network file: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _toml_error(str(e), text) from None
    return build_network(data, default_name=path.stem, path=path)


def _toml_error(msg: str, text: str) -> NetworkError:
    """tomllib's message, turned into one that names the key where it can."""
    m = re.match(r"Cannot declare \((.*)\) twice \(at (.*)\)", msg)
    if m:  # a table header repeated: [nodes.zurich] twice
        key = ".".join(part.strip().strip("'\"") for part in m.group(1).split(","))
        return NetworkError(key, f"declared twice ({m.group(2)})")
    m = re.match(r"Cannot overwrite a value \(at line (\d+)(.*)\)", msg)
    if m:  # a key repeated inside a table: the key is on that line, its table in the header above
        lines = text.splitlines()
        row = int(m.group(1)) - 1
        name = lines[row].split("=", 1)[0].strip() if row < len(lines) else ""
        table = ""
        for line in reversed(lines[:row]):
            header = re.match(r"\s*\[+\s*([^\]]+?)\s*\]+", line)
            if header:
                table = header.group(1).strip()
                break
        key = f"{table}.{name}" if table and name else name or table
        return NetworkError(key, f"declared twice (line {row + 1})")
    return NetworkError("", f"not valid TOML: {msg}")


def build_network(data: dict, default_name: str = "network", path: Path | None = None) -> Network:
    for key in data:
        if key not in ("network", "nodes", "links", "protocol", "monitor"):
            raise NetworkError(key, "unknown top-level key; expected network, nodes, links, protocol, monitor")
    try:
        info = parse(NetworkInfo, data.get("network", {}), "network")
        protocol = parse(ProtocolSettings, data.get("protocol", {}), "protocol")
        monitor = parse(MonitorSettings, data.get("monitor", {}), "monitor")
    except SettingsError as e:
        raise NetworkError(e.key, e.reason) from None
    phases, t = [], 0.0
    for i, ph in enumerate(protocol.phases):
        if any(ph.name == p[0] for p in phases):
            raise NetworkError(f"protocol.phases[{i}].name", f"{ph.name!r} is used by an earlier phase")
        phases.append((ph.name, t, t + ph.duration))
        t += ph.duration
    nodes_table = data.get("nodes")
    if not isinstance(nodes_table, dict) or not nodes_table:
        raise NetworkError("nodes", "at least one node is required ([nodes.<name>] with a kind)")
    kinds = node_kinds()
    nodes: dict[str, NodeSpec] = {}
    for name, table in nodes_table.items():
        key = f"nodes.{name}"
        if not NAME.match(name):
            raise NetworkError(key, "a node name is letters, digits, '_' or '-', starting with a letter")
        if not isinstance(table, dict):
            raise NetworkError(key, "must be a table")
        kind = table.get("kind")
        if kind is None:
            raise NetworkError(f"{key}.kind", f"required; one of: {', '.join(sorted(kinds))}")
        if kind not in kinds:
            raise NetworkError(f"{key}.kind", f"unknown node kind {kind!r}; expected one of: {', '.join(sorted(kinds))}")
        cls = kinds[kind]
        try:
            settings = parse(cls.Settings, table, key)
        except SettingsError as e:
            raise NetworkError(e.key, e.reason) from None
        inputs, outputs = cls.ports(settings)
        for i, port in enumerate(settings.lsl_export):
            if port not in outputs:
                raise NetworkError(f"{key}.lsl_export[{i}]", f"node {name!r} has no output port {port!r}; its "
                                   f"outputs are: {', '.join(outputs) or '(none)'}")
        nodes[name] = NodeSpec(name, kind, cls, settings, inputs, outputs)

    source_ids = {}
    for node in sorted(nodes):
        for port in sorted(nodes[node].outputs):
            source_ids[(node, port)] = len(source_ids) + 1

    raw_links = data.get("links", [])
    if not isinstance(raw_links, list):
        raise NetworkError("links", "must be an array of tables ([[links]])")
    links: list[Link] = []
    seen: dict[tuple, int] = {}
    for i, raw in enumerate(raw_links):
        key = f"links[{i}]"
        try:
            ls = parse(LinkSettings, raw, key)
        except SettingsError as e:
            raise NetworkError(e.key, e.reason) from None
        dst_node, dst_port = _port(nodes, ls.to, f"{key}.to", "input")
        accepts = nodes[dst_node].inputs[dst_port].accepts
        if ls.from_ and ls.endpoint:
            raise NetworkError(f"{key}.endpoint", "give either 'from' (a node's port) or 'endpoint' (an external publisher), not both")
        if ls.from_:
            src_node, src_port = _port(nodes, ls.from_, f"{key}.from", "output")
            out_kind = nodes[src_node].outputs[src_port].kind
            if out_kind not in accepts:
                raise NetworkError(key, f"{ls.from_} sends {out_kind.name} events but {ls.to} accepts "
                                        f"{', '.join(k.name for k in sorted(accepts))}")
            source_id = source_ids[(src_node, src_port)]
            ident = (src_node, src_port, dst_node, dst_port)
        elif ls.endpoint:
            if not ls.endpoint.startswith(("tcp://", "ipc://", "inproc://")):
                raise NetworkError(f"{key}.endpoint", f"must be a ZeroMQ endpoint like tcp://127.0.0.1:5555, got {ls.endpoint!r}")
            if ls.source < EXTERNAL_SOURCE_MIN:
                raise NetworkError(f"{key}.source", f"an external publisher needs a source id >= {EXTERNAL_SOURCE_MIN}, got {ls.source}")
            src_node, src_port, source_id = "", "", ls.source
            ident = (ls.endpoint, dst_node, dst_port)
        else:
            raise NetworkError(f"{key}.from", "required (or endpoint = ... for an external publisher)")
        if ident in seen:
            raise NetworkError(key, f"duplicates links[{seen[ident]}] ({ls.from_ or ls.endpoint} -> {ls.to})")
        seen[ident] = i
        links.append(Link(i, src_node, src_port, dst_node, dst_port, source_id, ls.endpoint, ls.hwm))
    if monitor.probe_from:
        _port(nodes, monitor.probe_from, "monitor.probe_from", "output")
    if monitor.metrics:
        seen_ports: dict[int, str] = {}
        for i, (name, spec) in enumerate(nodes.items()):
            port = spec.settings.metrics_port or monitor.base_port + i
            if port in seen_ports:
                raise NetworkError(f"nodes.{name}.metrics_port", f"port {port} is already used by node {seen_ports[port]!r}")
            seen_ports[port] = name
    return Network(info.name or default_name, info.description, path, nodes, tuple(links), source_ids, tuple(phases),
                   monitor)


def _port(nodes: dict[str, NodeSpec], ref: str, key: str, direction: str) -> tuple[str, str]:
    node, dot, port = ref.partition(".")
    if not dot or not port:
        raise NetworkError(key, f"must be '<node>.<port>', got {ref!r}")
    if node not in nodes:
        raise NetworkError(key, f"no node named {node!r}; nodes are: {', '.join(nodes)}")
    ports = nodes[node].inputs if direction == "input" else nodes[node].outputs
    if port not in ports:
        listing = ", ".join(ports) or "(none)"
        raise NetworkError(key, f"node {node!r} has no {direction} port {port!r}; its {direction}s are: {listing}")
    return node, port
