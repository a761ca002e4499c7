"""Network files: TOML that names every node, its kind and parameters, and every link.

A file is validated completely before anything starts. The first problem raises ``NetworkError`` with
one line naming the key and the reason (``nodes.zurich.dt: must be > 0, got -0.0001``). A valid file
becomes a ``Network``: node specs with typed ports and settings, and links with their source ids.

Layout::

    [network]                  name and description
    [nodes.<name>]             kind = an element kind (spikewire's or an installed package's); then its keys
    [protocol]                 phases = [{name, duration}, ...]: an experiment's phases (optional)
    [monitor]                  metrics ports, loop probes, alert budgets (optional)
    [sites.<name>]             where a site's outgoing links listen and its CURVE keys (optional: without
                               it, sites are labels and every link is local to one machine)
    [security]                 curve = "off" | "required" for links between sites; extra allowed keys
    [transport]                heartbeats, peer timeout, clock synchronisation
    [safety]                   the interlock that holds stimulation and programming on stale/lossy input
    [[links]]                  from = "<node>.<output port>", to = "<node>.<input port>"
                               (or endpoint = "tcp://host:port" and source = <id >= 1000> for a publisher
                                outside this network); delay = D for a jitter buffer, late = its policy,
                               via = an endpoint to connect through (a relay, NAT or fault proxy)

Limits, so that a file is refused by ``check`` rather than failing (or writing somewhere) once running:
names that become file names or labels (the network, nodes, sites, populations, synapse groups) are
letters, digits, '_' and '-', at most 64 characters; a file a node writes (``state_file``) stays below the
network file's folder; sizes are bounded by the memory they need (``NODE_MEMORY_BUDGET`` per node, at most
``MAX_NODES`` processes); integers fit 64 bits, or the wire's and ZeroMQ's own ranges; addresses are
checked for syntax (a bind address is an IPv4 address; a host to connect to, an IPv4 address or an RFC 1123
host name; names are not resolved: a site's host need not be reachable from where ``check`` runs).

Sites: a link between nodes of different sites is an *inter-site* link. Its publisher listens on a fixed
port of its site (``[sites.<site>] port`` + k, k counting the site's output ports that have inter-site
links, in name order), every site can work out every address from the file alone, and
``spikewire run FILE --site NAME`` starts only that site's nodes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import posixpath
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spikewire.core.settings import (NODE_MEMORY_BUDGET, Settings, SettingsError, format_bytes, in_range,
                                       non_negative, parse, positive, setting, stated)
from spikewire.nodes.interlock import SafetySettings
from spikewire.streams.transport import TransportSettings
from spikewire.nodes.element import Declaration, broken_kinds, kinds
from spikewire.nodes import placement
from spikewire.nodes.base import ClockedSettings, InPort, Node, OutPort
from spikewire.nodes.runtime import AUTO_DELAY_MARGIN, AUTO_DELAY_WINDOW

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")  # fullmatch: '$' would let a trailing newline through
MAX_NAME = 64
NAME_RULE = f"letters, digits, '_' or '-', starting with a letter or '_', at most {MAX_NAME} characters"
EXTERNAL_SOURCE_MIN = 1000
SOURCE_ID_MAX = (1 << 32) - 1  # the wire's u32 source field
MAX_HWM = 10_000_000
"""ZeroMQ takes an int32; ten million packets is minutes of any link's traffic, and memory to match."""
MAX_FILE_BYTES = 16 << 20
"""A network file larger than this is refused unread (a 65,536-row crossbar table is ~1.5 MB)."""
MAX_NODES = 64
PROCESS_BYTES = 150 << 20
"""Every node is an OS process (Python, numpy, numba, ZeroMQ): ~150 MB resident before its model (measured:
each paper_loop node)."""
BYTES_PER_ID = 256
"""Model state per neuron of a clock-driven node (parameters, state, counts): the kinds' size checks use it."""
BYTES_PER_ID_STEP = 32
"""Per neuron and integration step of a tick (tick / dt steps): input matrix, noise and spike buffers."""
WRITTEN_FILES = ("state_file",)
"""Node settings that name a file the node writes, relative to the network file's folder."""
FILE_PART = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9\-]{1,63}(?<!-)")
FLOAT32_MAX = 3.4028234663852886e38  # the wire carries an event's value as float32
TOP_LEVEL = ("network", "nodes", "links", "protocol", "monitor", "sites", "security", "transport", "safety")


class NetworkError(SettingsError):
    """A network file that must not start. ``str()`` is the one-line message for the user."""


def check_name(key: str, name: object, what: str) -> None:
    """Names become file names (state files, journals), labels and LSL stream names: nothing else passes."""
    if not (isinstance(name, str) and len(name) <= MAX_NAME and NAME.fullmatch(name)):
        raise NetworkError(key, f"{what} is {NAME_RULE}; got {name!r}")


def safe_name(text: str) -> str:
    """``text`` (a file's stem) made a valid name: the default network name of an oddly named file."""
    name = re.sub(r"[^A-Za-z0-9_\-]", "_", text)[:MAX_NAME] or "network"
    return name if NAME.fullmatch(name) else ("_" + name)[:MAX_NAME]


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _host_port(text: str) -> bool:
    """'host:port' (one colon, digits after it): a port written into an address field."""
    host, sep, port = text.rpartition(":")
    return bool(sep) and ":" not in host and port.isdigit() and bool(host)


def bind_problem(address: str, star: bool = False) -> str | None:
    """Why ``address`` cannot be bound (None if it can). An IPv4 address is what ZeroMQ and the metrics
    server both take (ZeroMQ would also take an interface name, the HTTP server a host name); ``star``: '*'
    too (ZeroMQ's every interface, for a site's publishers)."""
    if (star and address == "*") or _is_ipv4(address):
        return None
    if _host_port(address):
        return f"an address without a port (the port is a setting of its own), got {address!r}"
    if ":" in address:
        return f"IPv6 is not supported (spikewire's sockets are IPv4), got {address!r}"
    return (f"must be an IPv4 address of this machine ('127.0.0.1'; '0.0.0.0' for every interface"
            f"{', or *' if star else ''}), got {address!r}")


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be connected to (None if it can): an IPv4 address or an RFC 1123 host name."""
    if host in ("*", "0.0.0.0"):
        return f"{host!r} is a wildcard for binding, not a host to connect to"
    if _is_ipv4(host):
        return None
    if _host_port(host):
        return f"a host without a port (the port is a setting of its own), got {host!r}"
    if ":" in host or host.startswith("["):
        return f"IPv6 is not supported (spikewire's sockets are IPv4), got {host!r}"
    labels = host.split(".")
    if not host or len(host) > 253 or not all(HOST_LABEL.fullmatch(label) for label in labels) \
            or labels[-1].isdigit():  # all digits: a mistyped IPv4 address (256.1.1.1), not a name
        return (f"must be an IPv4 address or a host name (RFC 1123: letters, digits and '-' in dot-separated "
                f"labels of 1-63 characters), got {host!r}")
    return None


def endpoint_problem(endpoint: str, ipc: bool) -> str | None:
    """Why a ZeroMQ endpoint to connect to is unusable (None if fine): tcp://host:port, or (``ipc``)
    ipc://path. ZeroMQ itself accepts port 0, a missing host or an unresolvable name and then waits forever."""
    scheme, sep, rest = endpoint.partition("://")
    if scheme == "tcp" and sep:
        host, colon, port = rest.rpartition(":")
        if not colon:
            return f"must be tcp://host:port (the port is missing), got {endpoint!r}"
        if not host:
            return f"must be tcp://host:port (the host is missing), got {endpoint!r}"
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            return f"the port must be 1-65535, got {port!r} in {endpoint!r}"
        problem = host_problem(host)
        return f"{problem} (in {endpoint!r})" if problem else None
    if scheme == "ipc" and sep and ipc:
        if not rest or not rest.isprintable() or len(rest.encode()) > 107:  # 107: a Unix socket path's limit
            return f"an ipc:// path must be 1-107 printable bytes, got {endpoint!r}"
        return None
    if scheme == "inproc" and sep:
        return f"inproc endpoints reach only sockets of the same process, and every node is a process: {endpoint!r}"
    return f"must be a ZeroMQ endpoint like tcp://127.0.0.1:5555{' or ipc:///path' if ipc else ''}, got {endpoint!r}"


def relative_file_problem(ref: str) -> str | None:
    """Why a node may not write ``ref`` (None if it may): a relative path below the network file's folder,
    of plain names, ending in .json (so it is never the network file or a key)."""
    if ref.startswith(("/", "\\")) or "\\" in ref or re.match(r"[A-Za-z]:", ref):
        return f"must be a path relative to the network file's folder, got {ref!r}"
    parts = ref.split("/")
    if ".." in parts:
        return f"must not contain '..': it would leave the network file's folder, got {ref!r}"
    if len(ref) > 1024 or not all(part == "." or FILE_PART.fullmatch(part) for part in parts):
        return f"must be '/'-separated names of letters, digits, '_', '-' or '.', got {ref!r}"
    if not parts[-1].endswith(".json") or parts[-1] == ".json":
        return f"must name a .json file, got {ref!r}"
    return None


def _plugin_hint(kind: object) -> str:
    return ("; a kind from another package needs that package installed here (entry-point group "
            "'spikewire.elements'; a session's provenance.json lists the packages it ran with)"
            if isinstance(kind, str) and NAME.fullmatch(kind) else "")


def node_kinds() -> dict[str, type[Node]]:
    """Every usable element kind: spikewire's own and those installed packages add (nodes/element.py); a
    broken plugin is left out (``broken_kinds``), so it stops only a network that uses it."""
    return kinds()


@dataclass(frozen=True)
class NetworkInfo(Settings):
    """What the network is called and what it is for."""

    name: str = setting("", "Network name (defaults to the file name).")
    description: str = setting("", "What this network is for.")


@dataclass(frozen=True)
class PhaseSettings(Settings):
    """One phase of a protocol."""

    name: str = setting("", "Phase name (shown in the per-phase table).")
    duration: float = setting(0.0, "Phase length [s].", check=positive, unit="s")

    def validate(self, key: str) -> None:
        if not self.name:
            raise SettingsError(f"{key}.name", "required")


@dataclass(frozen=True)
class ProtocolSettings(Settings):
    """An experiment's phases, back to back from the session start. A run with a protocol lasts its
    total unless --duration says otherwise, and ends with a table of what happened in each phase."""

    phases: tuple[PhaseSettings, ...] = setting((), "The phases in order.")
    reset_weights: bool = setting(False, "Start every memristor crossbar from r_init, not from the weights a "
                                  "previous run saved (as --reset-weights does): for a protocol that must begin "
                                  "from the same state each time it is repeated.")


@dataclass(frozen=True)
class MonitorSettings(Settings):
    """What the network exports for monitoring."""

    metrics: bool = setting(True, "Serve Prometheus metrics from every node.")
    render: Literal["loop", "scrape"] = setting(
        "loop", "Where a node renders its exposition: 'loop' (in its loop, when the next deadline is >= 2 ms "
        "away; the HTTP thread serves those bytes, so a scrape costs the loop nothing) or 'scrape' (on each "
        "request, in the HTTP thread: fresher, but ~0.5-1 ms of GIL the loop may be waiting for).")
    base_port: int = setting(9470, "Node i serves metrics on base_port + i (unless it sets metrics_port).",
                             check=in_range(1024, 65000), unit="id")
    probe_from: str = setting("", "Output port '<node>.<port>' that emits loop probes ('' for none).")
    probe_every: float = setting(0.1, "Seconds between loop probes (1 ms to 60 s).", check=in_range(0.001, 60.0), unit="s")
    scrape_interval: float = setting(1.0, "Prometheus scrape interval for generated configs [s].", check=positive, unit="s")
    latency_budget: float = setting(0.005, "Link latency p99 above this fires an alert [s].", check=positive, unit="s")
    silent_after: float = setting(10.0, "A population silent this long fires an alert [s].", check=positive, unit="s")


@dataclass(frozen=True)
class SiteSettings(Settings):
    """One lab: where its outgoing (inter-site) links listen, and its CURVE key pair."""

    address: str = setting("127.0.0.1", "Host name or address other sites connect to for this site's links.")
    bind: str = setting("127.0.0.1", "Address this site's inter-site publishers bind to ('0.0.0.0' to be "
                        "reachable from other machines).")
    port: int = setting(0, "First TCP port of this site's inter-site publishers: its k-th output port with links "
                        "to other sites (in name order) listens on port + k, then the site's session channel. "
                        "Required if any link leaves the site, or other sites run nodes.",
                        check=stated("0, or in [1024, 65000]", lambda v: None if v == 0 or 1024 <= v <= 65000 else
                                     f"must be between 1024 and 65000 (0: none), got {v!r}"), unit="id")
    public_key: str = setting("", "This site's CURVE public key file (`spikewire keygen`): ~/... in the user's "
                              "home, or relative to the network file. Required when [security] curve = \"required\".")
    secret_key: str = setting("", "This site's CURVE secret key file (~/... or relative to the network file); read "
                              "only when this site runs (--secret-key overrides it). Keep it out of a folder you "
                              "share or commit.")

    def validate(self, key: str) -> None:
        problem = host_problem(self.address)
        if problem:
            raise SettingsError(f"{key}.address", problem)
        problem = bind_problem(self.bind, star=True)
        if problem:
            raise SettingsError(f"{key}.bind", problem)


@dataclass(frozen=True)
class SecuritySettings(Settings):
    """Encryption and authentication of inter-site links (links inside a site stay on loopback)."""

    curve: Literal["off", "required"] = setting(
        "off", "'required': every inter-site link is CurveZMQ-encrypted and a site admits only the public keys "
        "of the sites in this file (plus 'allow'); plaintext peers are refused. 'off': plaintext.")
    allow: tuple[str, ...] = setting((), "Further public key files admitted (an observer's tap, a dashboard).")


def _delay_check(v) -> str | None:
    return None if v == "auto" else in_range(0.0, 10.0)(v)


stated('"auto", or in [0, 10]', _delay_check)


@dataclass(frozen=True)
class LinkSettings(Settings):
    """One link: an output port feeding an input port, with its queue, jitter buffer and clock."""

    from_: str = setting("", "Output port '<node>.<port>' (leave out for an external publisher).", key="from")
    to: str = setting("", "Input port '<node>.<port>'.")
    endpoint: str = setting("", "External publisher's ZeroMQ endpoint (instead of 'from').")
    source: int = setting(0, "Source id an external publisher stamps on its packets (>= 1000).",
                          check=in_range(0, SOURCE_ID_MAX), unit="id")
    hwm: int = setting(100_000, "High-water mark (packets queued) at each end.", check=in_range(1, MAX_HWM), unit="count")
    sockbuf: int = setting(0, "Kernel socket buffer at each end [bytes]; 0: the OS default (several MB on Linux "
                           "loopback: under overload, a hidden queue of seconds). Set it with hwm to bound a "
                           "link's queue in time.", check=in_range(0, 1 << 30), unit="bytes")
    delay: float | Literal["auto"] = setting(
        0.0, "Jitter buffer: deliver each packet at its send time (in this node's clock) plus this delay, so that "
        "network jitter becomes a constant synaptic delay [s]. 0: deliver on arrival. \"auto\": measure the link's "
        f"one-way latency over its first {AUTO_DELAY_WINDOW:g} s (packets meanwhile delivered on arrival), then fix "
        f"the delay at {AUTO_DELAY_MARGIN:g} x its p99 for the rest of the session (it does not follow later "
        "changes of the path: a synaptic delay must stay constant).", check=_delay_check, unit="s")
    late: Literal["drop", "deliver"] = setting("drop", "A packet arriving after its delivery time: 'drop' it or "
                                               "'deliver' it at once, marked late. Counted either way.")
    via: str = setting("", "Connect to this endpoint instead of the publisher's own (a relay, NAT or fault proxy).")
    clock: Literal["auto", "sync", "local", "none"] = setting(
        "auto", "An external publisher's clock (endpoint links only): 'sync' (the default for them): estimate its "
        "offset NTP-style by pinging it over the link (it must answer CLOCK pings, see streams/wire.py); "
        "'local': it runs on this machine on pylsl's local_clock; 'none': its clock is unrelated and it answers "
        "no pings, so the link has no latency figures, no time checks and cannot have a delay. Links between "
        "this network's nodes: inter-site ones always sync, the others share the clock.")

    def validate(self, key: str) -> None:
        if not self.to:
            raise SettingsError(f"{key}.to", "required: the input port '<node>.<port>' this link feeds")
        for name, value, ipc in (("via", self.via, False), ("endpoint", self.endpoint, True)):
            problem = endpoint_problem(value, ipc) if value else None
            if problem:
                raise SettingsError(f"{key}.{name}", problem)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    kind: str
    cls: type[Node]
    settings: Settings
    inputs: dict[str, InPort]
    outputs: dict[str, OutPort]
    declaration: Declaration = Declaration()
    """What the node owns (its populations and devices), as its kind declares it."""


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
    delay: float = 0.0
    late: str = "drop"
    sockbuf: int = 0
    via: str = ""
    src_site: str = ""
    dst_site: str = ""
    clock: str = "local"  # sync (inter-site and, by default, external), local or none: see LinkSettings.clock
    auto_delay: bool = False  # delay = "auto": ``delay`` is 0 until the runtime has measured the link

    @property
    def inter_site(self) -> bool:
        """Between two sites of a network with [sites]: fixed ports, CURVE if required, clock sync."""
        return bool(self.src_site) and self.src_site != self.dst_site

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
    sites: dict[str, SiteSettings] | None = None  # None: no [sites] table, every link is local
    security: SecuritySettings = SecuritySettings()
    transport: TransportSettings = TransportSettings()
    safety: SafetySettings = SafetySettings()
    reset_weights: bool = False  # [protocol] reset_weights
    warnings: tuple[str, ...] = ()
    """One-line notices naming keys (unconnected ports, events a table will refuse): printed by ``check``
    and at the start of ``run``, never failing either."""

    def site_of(self, node: str) -> str:
        return self.nodes[node].settings.site

    def site_nodes(self, site: str) -> list[str]:
        return [n for n, spec in self.nodes.items() if spec.settings.site == site]

    def site_ports(self, site: str) -> list[tuple[str, str]]:
        """The site's output ports with inter-site links, in the order that numbers their TCP ports."""
        return sorted({(ln.src_node, ln.src_port) for ln in self.links if ln.inter_site and ln.src_site == site})

    def node_context(self, reset_state: bool, session: str = "") -> dict:
        """What a node process tells its node about the run (``Node.context``)."""
        return {"network": self.name, "network_dir": str(self.path.parent if self.path else Path.cwd()),
                "reset_state": reset_state or self.reset_weights, "session": session}

    @property
    def start_sites(self) -> list[str]:
        """The declared sites that run nodes, in file order. With two or more, a site run on its own
        (``--site``) agrees its start with the others over its session channel (launch/barrier.py)."""
        if self.sites is None:
            return []
        used = {spec.settings.site for spec in self.nodes.values()}
        return [s for s in self.sites if s in used]

    def session_endpoint(self, site: str, bind: bool) -> str:
        """Where a site's session channel listens (``bind``) or is reached: the port after its inter-site
        data ports (``[sites.<site>] port`` + their number)."""
        s = self.sites[site]
        return f"tcp://{s.bind if bind else s.address}:{s.port + len(self.site_ports(site))}"

    def fixed_endpoint(self, node: str, port: str, bind: bool) -> str | None:
        """Where an output port with inter-site links listens (``bind``) or is reached; None if it has none."""
        if self.sites is None:
            return None
        site = self.site_of(node)
        ports = self.site_ports(site)
        if (node, port) not in ports:
            return None
        s = self.sites[site]
        return f"tcp://{s.bind if bind else s.address}:{s.port + ports.index((node, port))}"

    def curve_port(self, node: str, port: str) -> bool:
        """True if this output port is a CURVE server (it has inter-site links and CURVE is required)."""
        return self.security.curve == "required" and self.fixed_endpoint(node, port, True) is not None

    def key_path(self, ref: str) -> Path:
        """A key file the network names: ``~/...`` in the user's home, a relative path beside the network file."""
        p = Path(ref).expanduser()
        return p if p.is_absolute() or self.path is None else self.path.parent / p

    def node_index(self, node: str) -> int:
        return list(self.nodes).index(node)

    def with_base_port(self, port: int) -> Network:
        """This network with ``[monitor] base_port = port`` (``spikewire run --base-port``), checked as the
        file's value is: in range, and no two nodes on one metrics port."""
        problem = in_range(1024, 65000)(port)
        if problem:
            raise NetworkError("monitor.base_port", problem)
        net = dataclasses.replace(self, monitor=dataclasses.replace(self.monitor, base_port=port))
        seen: dict[int, str] = {}
        for name in net.nodes if net.monitor.metrics else ():
            p = net.metrics_port(name)
            if p in seen:
                raise NetworkError(f"nodes.{name}.metrics_port", f"port {p} is also node {seen[p]!r}'s metrics port "
                                   f"with base_port {port}")
            seen[p] = name
        return net

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


def load_network(path: str | Path, check_keys: bool = True) -> Network:
    """The validated network of a file. ``check_keys=False`` skips reading the CURVE public key files
    (``spikewire keygen --network`` loads a file whose keys do not exist yet)."""
    path = Path(path)
    return build_network(read_network_file(path), default_name=safe_name(path.stem), path=path, check_keys=check_keys)


def read_network_file(path: str | Path) -> dict:
    """A network file's TOML data, not yet validated (``build_network`` does that). Raises NetworkError for
    a file that cannot be read or is not TOML, naming the key where it can."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # bounded: a huge file or a device is refused, not swallowed
    except OSError as e:
        raise NetworkError("", f"cannot read the network file: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise NetworkError("", f"cannot read the network file: larger than {format_bytes(MAX_FILE_BYTES)}, "
                           "far more than any network needs")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise NetworkError("", f"cannot read the network file: not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                           f"offset {e.start}); a network file is TOML") from None
    return parse_network_text(text)


def parse_network_text(text: str) -> dict:
    """A network file's text as TOML data, not yet validated; NetworkError names the key where it can."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _toml_error(str(e), text) from None
    except RecursionError:
        raise NetworkError("", "not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as e:  # tomllib's other limits: an integer of more than 4300 digits
        raise NetworkError("", f"not valid TOML: {e}") from None
    return data


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


def build_network(data: dict, default_name: str = "network", path: Path | None = None,
                  check_keys: bool = True) -> Network:
    for key in data:
        if key not in TOP_LEVEL:
            raise NetworkError(key, f"unknown top-level key; expected {', '.join(TOP_LEVEL)}")
    try:
        info = parse(NetworkInfo, data.get("network", {}), "network")
        protocol = parse(ProtocolSettings, data.get("protocol", {}), "protocol")
        monitor = parse(MonitorSettings, data.get("monitor", {}), "monitor")
        security = parse(SecuritySettings, data.get("security", {}), "security")
        transport = parse(TransportSettings, data.get("transport", {}), "transport")
        safety = parse(SafetySettings, data.get("safety", {}), "safety")
        sites = None
        if "sites" in data:
            if not isinstance(data["sites"], dict) or not data["sites"]:
                raise NetworkError("sites", "must be a table of [sites.<name>] tables")
            for name in data["sites"]:
                check_name(f"sites.{name}", name, "a site name")
            sites = {name: parse(SiteSettings, table, f"sites.{name}") for name, table in data["sites"].items()}
    except SettingsError as e:
        raise NetworkError(e.key, e.reason) from None
    phases, t = [], 0.0
    for i, ph in enumerate(protocol.phases):
        if any(ph.name == p[0] for p in phases):
            raise NetworkError(f"protocol.phases[{i}].name", f"{ph.name!r} is used by an earlier phase")
        phases.append((ph.name, t, t + ph.duration))
        t += ph.duration
    if not math.isfinite(t):
        raise NetworkError("protocol.phases", "the phases' durations add up to more than a float holds")
    check_name("network.name", info.name or default_name, "a network name (it names state files)")
    nodes_table = data.get("nodes")
    if not isinstance(nodes_table, dict) or not nodes_table:
        raise NetworkError("nodes", "at least one node is required ([nodes.<name>] with a kind)")
    if len(nodes_table) > MAX_NODES:
        raise NetworkError("nodes", f"{len(nodes_table):,} nodes are as many processes of ~"
                           f"{format_bytes(PROCESS_BYTES)}: needs ~{format_bytes(len(nodes_table) * PROCESS_BYTES)}; "
                           f"a network has at most {MAX_NODES} nodes (one node can hold many populations)")
    kinds = node_kinds()
    nodes: dict[str, NodeSpec] = {}
    written: dict[str, str] = {}  # file a node writes (normalised) -> that node
    for name, table in nodes_table.items():
        key = f"nodes.{name}"
        check_name(key, name, "a node name")
        if not isinstance(table, dict):
            raise NetworkError(key, "must be a table")
        kind = table.get("kind")
        if kind is None:
            raise NetworkError(f"{key}.kind", f"required; one of: {', '.join(sorted(kinds))}")
        if isinstance(kind, str) and kind in broken_kinds():
            raise NetworkError(f"{key}.kind", f"the plugin of kind {kind!r} cannot be used: {broken_kinds()[kind]}")
        if not isinstance(kind, str) or kind not in kinds:
            raise NetworkError(f"{key}.kind", f"unknown node kind {kind!r}; expected one of: {', '.join(sorted(kinds))}"
                               + _plugin_hint(kind))
        cls = kinds[kind]
        try:
            settings = parse(cls.Settings, table, key)
        except SettingsError as e:
            raise NetworkError(e.key, e.reason) from None
        with_files = getattr(settings, "with_files", None)  # settings that name files to read (a connectivity array)
        if with_files is not None:
            try:
                settings = with_files(path.parent if path is not None else Path.cwd(), key)
            except SettingsError as e:
                raise NetworkError(e.key, e.reason) from None
        check_name(f"{key}.site", settings.site, "a site name")
        problem = bind_problem(settings.bind)
        if problem:
            raise NetworkError(f"{key}.bind", problem)
        _check_written_files(key, name, settings, path, written)
        try:
            inputs, outputs = cls.declared_ports(settings, key)
        except SettingsError as e:
            raise NetworkError(e.key, e.reason) from None
        _check_port_names(key, table, [*inputs, *outputs])
        _check_memory(key, table, settings, inputs, outputs)
        for i, port in enumerate(settings.lsl_export):
            if port not in outputs:
                raise NetworkError(f"{key}.lsl_export[{i}]", f"node {name!r} has no output port {port!r}; its "
                                   f"outputs are: {', '.join(outputs) or '(none)'}")
        try:
            declaration = cls.declare(name, settings)
        except SettingsError as e:
            raise NetworkError(e.key, e.reason) from None
        nodes[name] = NodeSpec(name, kind, cls, settings, inputs, outputs, declaration)

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
            if ls.source < EXTERNAL_SOURCE_MIN:
                raise NetworkError(f"{key}.source", f"an external publisher needs a source id >= {EXTERNAL_SOURCE_MIN}, got {ls.source}")
            src_node, src_port, source_id = "", "", ls.source
            ident = (ls.endpoint, dst_node, dst_port)
        else:
            raise NetworkError(f"{key}.from", "required (or endpoint = ... for an external publisher)")
        if ident in seen:
            raise NetworkError(key, f"duplicates links[{seen[ident]}] ({ls.from_ or ls.endpoint} -> {ls.to})")
        seen[ident] = i
        src_site = nodes[src_node].settings.site if src_node and sites is not None else ""
        dst_site = nodes[dst_node].settings.site if sites is not None else ""
        if ls.via and not (src_site and src_site != dst_site):
            raise NetworkError(f"{key}.via", "only a link between two sites can go via another endpoint")
        if ls.clock != "auto" and not ls.endpoint:
            raise NetworkError(f"{key}.clock", "only for an external publisher (endpoint = ...): inter-site links "
                               "always synchronise their clocks, links inside a site share this machine's clock")
        clock = ("sync" if ls.clock == "auto" else ls.clock) if ls.endpoint else (
            "sync" if src_site and src_site != dst_site else "local")
        auto_delay = ls.delay == "auto"
        delay = 0.0 if auto_delay else ls.delay
        if auto_delay and clock == "local":
            raise NetworkError(f"{key}.delay", "\"auto\" sizes a jitter buffer for a link between machines "
                               "(inter-site, or an external publisher with clock = \"sync\"); this one shares the clock")
        if ls.delay and clock == "none":
            raise NetworkError(f"{key}.delay", f"{ls.endpoint} -> {ls.to} has clock = \"none\": its send times cannot "
                               "be put on this machine's clock, so a jitter buffer cannot time them; remove the delay, "
                               "or let the publisher answer clock pings (clock = \"sync\")")
        links.append(Link(i, src_node, src_port, dst_node, dst_port, source_id, ls.endpoint, ls.hwm, delay,
                          ls.late, ls.sockbuf, ls.via, src_site, dst_site, clock, auto_delay))
    warnings = _check_link_fit(nodes, links) + _unconnected(nodes, links, monitor.probe_from)
    _check_spinning_cores(nodes, sites is None)
    if monitor.probe_from:
        _port(nodes, monitor.probe_from, "monitor.probe_from", "output")
    if monitor.metrics:
        seen_ports: dict[int, str] = {}
        for i, (name, spec) in enumerate(nodes.items()):
            port = spec.settings.metrics_port or monitor.base_port + i
            if port in seen_ports:
                raise NetworkError(f"nodes.{name}.metrics_port", f"port {port} is already used by node {seen_ports[port]!r}")
            seen_ports[port] = name
    net = Network(info.name or default_name, info.description, path, nodes, tuple(links), source_ids, tuple(phases),
                  monitor, sites, security, transport, safety, protocol.reset_weights)
    if sites is not None:
        _check_sites(net, check_keys)
    elif security.curve == "required":
        raise NetworkError("security.curve", "CURVE protects links between sites: declare them in [sites.<name>]")
    return dataclasses.replace(net, warnings=tuple(warnings))


def _group(spec: NodeSpec, port: str, node_key: str) -> tuple[Settings, str] | None:
    """The settings of the group a port '<group>.<role>' belongs to (a population, a synapse group) and
    their key, found as the entry ``group`` of one of the node's table-valued settings."""
    group = port.rpartition(".")[0]
    for f in dataclasses.fields(spec.settings):
        value = getattr(spec.settings, f.name)
        if isinstance(value, dict) and isinstance(value.get(group), Settings):
            return value[group], f"{node_key}.{f.metadata.get('key') or f.name}.{group}"
    return None


def _named_row(spec: NodeSpec, port: str, size: int, first: int) -> tuple[str, int] | None:
    """The key and id of the first configuration row naming an id >= ``first`` on ``port`` of ``size`` ids (a
    crossbar table row), found through the settings' own description: a rows field documented as
    'Rows (pre, post, ...)' and the column named like the port's role, or else the one column whose ids
    make the port's size."""
    found = _group(spec, port, f"nodes.{spec.name}")
    if found is None:
        return None
    settings, key = found
    role = port.rpartition(".")[2]
    for f in dataclasses.fields(settings):
        m = re.match(r"Rows \(([^)]*)\)", f.metadata.get("doc", ""))
        rows = getattr(settings, f.name)
        if not m or not rows:
            continue
        columns = [c.strip() for c in m.group(1).split(",")]
        if role in columns:
            col = columns.index(role)
        else:
            cols = [c for c in range(len(columns)) if max(r[c] for r in rows) + 1 == size]
            if len(cols) != 1:
                continue
            col = cols[0]
        for i, row in enumerate(rows):
            if row[col] >= first:
                return f"{key}.{f.metadata.get('key') or f.name}[{i}]", row[col]
    return None


def _range_key(spec: NodeSpec, port: str, bound: float, side: str) -> str | None:
    """The setting of the port's group that sets ``bound`` (the end of the range it emits), e.g.
    ``nodes.southampton.synapses.mr2.out_max``: the one whose value it is, else one named like ``side``
    ('max'/'min') left to its default (None)."""
    found = _group(spec, port, f"nodes.{spec.name}")
    if found is None:
        return None
    settings, key = found
    fields = sorted(dataclasses.fields(settings), key=lambda f: side not in f.name)
    for f in fields:
        value = getattr(settings, f.name)
        if isinstance(value, float) and value == bound:
            return f"{key}.{f.metadata.get('key') or f.name}"
    for f in fields:
        if side in f.name and getattr(settings, f.name) is None:
            return f"{key}.{f.metadata.get('key') or f.name}"
    return None


def _check_link_fit(nodes: dict[str, NodeSpec], links: list[Link]) -> list[str]:
    """What each link's source emits fits what its destination takes, by the ports' declared sizes and
    value ranges (nodes/base.py). Raises for the first misfit; returns warnings for ids a crossbar table
    will refuse (counted as unknown_id) where that is a choice, not a mistake."""
    warnings = []
    for ln in links:
        if not ln.src_node:
            continue  # an external publisher declares nothing
        key = f"links[{ln.index}]"
        src_spec, dst_spec = nodes[ln.src_node], nodes[ln.dst_node]
        src, dst = src_spec.outputs[ln.src_port], dst_spec.inputs[ln.dst_port]
        src_name, dst_name = f"{ln.src_node}.{ln.src_port}", f"{ln.dst_node}.{ln.dst_port}"
        if src.size is not None and dst.size is not None:
            if src.size > dst.size and dst.named:
                warnings.append(f"{key}: {src_name} emits ids 0..{src.size - 1} but the table of {dst_name} names "
                                f"ids up to {dst.size - 1}: events of the others are refused (counted as unknown_id)")
            elif src.size > dst.size:
                row = _named_row(src_spec, ln.src_port, src.size, dst.size) if src.named else None
                raise NetworkError(key, f"{src_name} emits ids up to {src.size - 1}"
                                        f"{f' ({row[0]} names id {row[1]})' if row else ''} but {dst_name} "
                                        f"has ids 0..{dst.size - 1} only: those events would be dropped")
            elif dst.named and dst.size > src.size:
                row = (_named_row(dst_spec, ln.dst_port, dst.size, src.size)
                       or (f"the table of {dst_name}", dst.size - 1))
                raise NetworkError(key, f"{row[0]} names id {row[1]} but {src_name} emits ids 0..{src.size - 1} only: "
                                        "that row would never be driven")
        if src.values is not None:
            lo, hi = src.values
            if max(abs(lo), abs(hi)) > FLOAT32_MAX:
                raise NetworkError(key, f"{src_name} emits values up to {max(abs(lo), abs(hi)):g}, beyond what the "
                                        f"wire's float32 value holds ({FLOAT32_MAX:.3g})")
            if dst.values is not None:
                dlo, dhi = dst.values
                unit = re.search(r"\(value in ([^)]+)\)", dst.doc)
                unit = f" ({unit.group(1)})" if unit else ""
                if hi > dhi or lo < dlo:
                    above = hi > dhi
                    setting = _range_key(src_spec, ln.src_port, hi if above else lo, "max" if above else "min")
                    raise NetworkError(key, f"{src_name} emits values {'up to' if above else 'down to'} "
                                            f"{hi if above else lo:g} but {dst_name} accepts "
                                            f"{'at most' if above else 'at least'} {dhi if above else dlo:g}{unit}; "
                                            f"set {setting or f'what {src_name} emits'} or "
                                            f"nodes.{ln.dst_node}.input_ranges")
    return warnings


def _unconnected(nodes: dict[str, NodeSpec], links: list[Link], probe_from: str) -> list[str]:
    """Warnings for input ports nothing feeds and output ports that go nowhere (no link, no LSL export, not
    the probe origin). Not errors: a driven population needs no input, a spare output costs nothing."""
    fed = {(ln.dst_node, ln.dst_port) for ln in links}
    used = {(ln.src_node, ln.src_port) for ln in links} | {tuple(probe_from.split(".", 1))}
    warnings = []
    for name, spec in nodes.items():
        for port in spec.inputs:
            if (name, port) not in fed:
                warnings.append(f"nodes.{name}: input {port!r} has no link: nothing feeds it")
        for port in spec.outputs:
            if (name, port) not in used and port not in spec.settings.lsl_export:
                warnings.append(f"nodes.{name}: output {port!r} has no link: what it emits goes nowhere")
    return warnings


def _find_key(table: dict, name: str, key: str, depth: int = 3) -> str | None:
    """The dotted key of the entry called ``name`` nearest the top of ``table``, if any."""
    if name in table:
        return f"{key}.{name}"
    for k, v in table.items():
        found = _find_key(v, name, f"{key}.{k}", depth - 1) if isinstance(v, dict) and depth else None
        if found:
            return found
    return None


def _check_port_names(key: str, table: dict, ports: list[str]) -> None:
    """A port name is '<role>' or '<group>.<role>', each a name: a population or synapse group named
    '../x' or 'a.b' is refused where the file names it."""
    for port in ports:
        parts = port.split(".")
        if len(parts) <= 2 and all(len(p) <= MAX_NAME and NAME.fullmatch(p) for p in parts):
            continue
        group = port.rpartition(".")[0]
        raise NetworkError((_find_key(table, group, key) if group else None) or key,
                           f"a name that makes port names (here {port!r}) is {NAME_RULE}")


def _check_written_files(key: str, node: str, settings: Settings, path: Path | None, written: dict[str, str]) -> None:
    """A file a node writes stays below the network file's folder, and no two nodes write the same one."""
    for field in WRITTEN_FILES:
        ref = getattr(settings, field, "")
        if not ref:
            continue
        problem = relative_file_problem(ref)
        if problem:
            raise NetworkError(f"{key}.{field}", problem)
        norm = posixpath.normpath(ref)
        if norm in written:
            raise NetworkError(f"{key}.{field}", f"{ref!r} is also written by node {written[norm]!r}")
        if path is not None and (path.parent / norm).resolve() == path.resolve():
            raise NetworkError(f"{key}.{field}", f"{ref!r} is the network file itself")
        written[norm] = node


def _check_memory(key: str, table: dict, settings: Settings, inputs: dict[str, InPort],
                  outputs: dict[str, OutPort]) -> None:
    """A clock-driven node keeps state for every neuron it steps (the ids its ports declare) and buffers of
    tick / dt steps for each: bounded together by NODE_MEMORY_BUDGET, before the node allocates them. (Each
    size field bounds itself; this bounds their sum and the per-step buffers.)"""
    if not isinstance(settings, ClockedSettings):
        return
    ids = max(sum(p.size or 0 for p in inputs.values()), sum(p.size or 0 for p in outputs.values()))
    if ids * BYTES_PER_ID > NODE_MEMORY_BUDGET:
        group = next((p.rpartition(".")[0] for p in inputs if "." in p), "")
        where = _find_key(table, group, key) if group else None
        raise NetworkError(where.rpartition(".")[0] if where else key,
                           f"{ids:,} neurons in all: needs ~{format_bytes(ids * BYTES_PER_ID)} (~{BYTES_PER_ID} B "
                           f"each), over the {format_bytes(NODE_MEMORY_BUDGET)} one node may use")
    steps = settings.steps_per_tick
    total = ids * (BYTES_PER_ID + steps * BYTES_PER_ID_STEP)
    if total > NODE_MEMORY_BUDGET:
        count = f"{steps:,}" if steps < 10**9 else f"{steps:.3g}"
        raise NetworkError(f"{key}.tick", f"{count} steps per tick (tick / dt) for {ids:,} neurons needs "
                           f"~{format_bytes(total)} of per-step buffers (~{BYTES_PER_ID_STEP} B per neuron and step), "
                           f"over the {format_bytes(NODE_MEMORY_BUDGET)} one node may use; shorten tick or raise dt")


def _check_sites(net: Network, check_keys: bool) -> None:
    """Every node's site is declared; sites with outgoing links have ports that do not collide; with CURVE
    required, every site involved has a readable public key (secret keys are checked where they are used)."""
    from spikewire.streams.security import KeyError_, load_public

    sites = net.sites
    for name, spec in net.nodes.items():
        if spec.settings.site not in sites:
            raise NetworkError(f"nodes.{name}.site", f"site {spec.settings.site!r} is not declared in [sites]; "
                               f"declared: {', '.join(sites)}")
    used: dict[tuple[str, int], str] = {}
    publishers: dict[tuple[str, int], tuple[str, str]] = {}  # (address, port) -> (site, its output port)
    starting = net.start_sites if len(net.start_sites) > 1 else []  # sites that agree a common start
    for site, s in sites.items():
        ports = net.site_ports(site)
        if ports and not s.port:
            raise NetworkError(f"sites.{site}.port", f"required: {len(ports)} output port(s) of this site have links "
                               "to other sites and need a fixed TCP port")
        if site in starting and not s.port:
            raise NetworkError(f"sites.{site}.port", "required: the sites of this network agree their start over a "
                               "session channel on each site's port (after its inter-site data ports)")
        names = [".".join(p) for p in ports] + (["its session channel"] if site in starting else [])
        for k, what in enumerate(names):
            where = (s.address, s.port + k)
            if s.port + k > 65535:
                raise NetworkError(f"sites.{site}.port", f"{len(names)} ports from {s.port} run past 65535")
            if where in used:
                raise NetworkError(f"sites.{site}.port", f"port {s.port + k} (for {what}) is also "
                                   f"used by {used[where]}")
            used[where] = f"site {site!r}"
            publishers[where] = (site, what)
    for i, name in enumerate(net.nodes if net.monitor.metrics else ()):
        where = (sites[net.site_of(name)].address, net.metrics_port(name))
        if where in publishers:  # the same host: the node runs at a site with that address
            site, port = publishers[where]
            explicit = net.nodes[name].settings.metrics_port
            source = f"nodes.{name}.metrics_port" if explicit else f"[monitor] base_port + {i}"
            raise NetworkError(f"sites.{site}.port", f"port {where[1]} (for {port}) is also the metrics port of node "
                               f"{name!r} ({source})")
    if net.security.curve != "required":
        return
    involved = {ln.src_site for ln in net.links if ln.inter_site} | {ln.dst_site for ln in net.links if ln.inter_site}
    involved |= set(starting)  # session channels are CURVE-protected too
    for site in sorted(involved):
        if not sites[site].public_key:
            raise NetworkError(f"sites.{site}.public_key", "required when [security] curve = \"required\" "
                               "(make a key pair with `spikewire keygen`)")
        if not check_keys:
            continue
        try:
            load_public(net.key_path(sites[site].public_key))
        except KeyError_ as e:
            raise NetworkError(f"sites.{site}.public_key", str(e)) from None
    for i, ref in enumerate(net.security.allow if check_keys else ()):
        try:
            load_public(net.key_path(ref))
        except KeyError_ as e:
            raise NetworkError(f"security.allow[{i}]", str(e)) from None


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


def curve_config(net: Network, site: str, secret_key: str | None = None):
    """The CURVE set-up of a process at ``site`` (None when CURVE is off): its key pair (from
    ``secret_key`` or the file's ``sites.<site>.secret_key``), the keys it admits and each site's server key.
    Raises NetworkError naming the key that is missing, unreadable or does not match."""
    from spikewire.streams.security import CurveConfig, KeyError_, load_public, load_secret

    if net.security.curve != "required" or net.sites is None:
        return None
    key = f"sites.{site}.secret_key"
    ref = secret_key or net.sites[site].secret_key
    if not ref:
        raise NetworkError(key, "required to run this site with CURVE (or pass --secret-key FILE)")
    try:
        public, secret = load_secret(Path(secret_key) if secret_key else net.key_path(ref))
    except KeyError_ as e:
        raise NetworkError(key, str(e)) from None
    servers = {s: load_public(net.key_path(cfg.public_key)) for s, cfg in net.sites.items() if cfg.public_key}
    if site in servers and servers[site] != public:
        raise NetworkError(key, f"does not belong to sites.{site}.public_key (the public halves differ)")
    allowed = {k: s for s, k in servers.items()}
    for i, ref in enumerate(net.security.allow):
        allowed.setdefault(load_public(net.key_path(ref)), f"allow[{i}]")
    return CurveConfig(public, secret, allowed, servers)


def check_local_binds(net: Network, site: str | None = None) -> None:
    """``run``'s pre-flight: every address the nodes (and site publishers) started here bind to is one of
    this machine's, so no node fails after the others have started. ``check`` cannot know this: a site's
    nodes run on its own machine. ``site``: only that site's nodes start (None: all of them)."""
    import socket

    started = [n for n in net.nodes if site is None or net.site_of(n) == site]
    binds = [(f"nodes.{n}.bind", net.nodes[n].settings.bind) for n in started]
    if net.sites is not None:
        binds += [(f"sites.{s}.bind", net.sites[s].bind) for s in sorted({net.site_of(n) for n in started})
                  if net.site_ports(s)]
    for key, address in binds:
        if address in ("*", "0.0.0.0"):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, 0))
            except OSError as e:
                raise NetworkError(key, f"{address} is not an address of this machine ({e.strerror or e})") from None


def check_metrics_ports(net: Network, site: str | None = None) -> None:
    """``run``'s pre-flight: every metrics port the nodes started here will serve on is free now (as the
    nodes will bind it: SO_REUSEADDR, so a port a run just left is free), so a clash stops the run before
    anything starts, in one line, instead of failing one node once the others are up."""
    import socket

    if not net.monitor.metrics:
        return
    for i, name in enumerate(net.nodes):
        if site is not None and net.site_of(name) != site:
            continue
        address, port = net.nodes[name].settings.bind, net.metrics_port(name)
        explicit = net.nodes[name].settings.metrics_port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("" if address in ("*", "0.0.0.0") else address, port))
            except OSError as e:
                raise NetworkError(f"nodes.{name}.metrics_port" if explicit else "monitor.base_port",
                                   f"the metrics port of node {name!r}, {address}:{port}"
                                   f"{'' if explicit else f' (base_port + {i})'}, is in use ({e.strerror or e}): "
                                   "another run or program holds it; choose another base port (spikewire run "
                                   "--base-port N, or [monitor] base_port) or this node's metrics_port") from None


def _check_spinning_cores(nodes: dict[str, NodeSpec], one_machine: bool) -> None:
    """A spinning node's CPU must be its own among the nodes on its machine (all of them, or its site's when
    the file has [sites]): anything else pinned there would wait for the spinner's time slice."""
    for name, spec in nodes.items():
        if not spec.settings.spin:
            continue
        for other, o in nodes.items():
            same_machine = other != name and (one_machine or o.settings.site == spec.settings.site)
            shared = set(spec.settings.cpu) & set(o.settings.cpu) if same_machine else set()
            if shared:
                raise NetworkError(f"nodes.{name}.cpu", f"CPU {min(shared)} is also listed by node {other!r}, and "
                                   f"{name!r} spins on it: give a spinning node a core of its own")


def preflight(net: Network, reset_state: bool = False, session: str = "", site: str | None = None,
              secret_key: str | None = None) -> None:
    """Everything ``run`` checks on this machine before any process starts: the site to start (None: all of
    them) exists and has nodes, every bind address is this machine's, the CURVE keys of the sites started
    here load, and what each node will read or hold beyond the file is usable (a memristor's saved crossbar
    and its lock). ``reset_state`` and ``session`` are what the nodes will be told. Raises NetworkError with
    one line naming the key."""
    if site is not None:
        if net.sites is None:
            raise NetworkError("sites", "running one site needs a [sites.<name>] table per site in the network file")
        if site not in net.sites:
            raise NetworkError("sites", f"no site {site!r}; sites are: {', '.join(net.sites)}")
        if not net.site_nodes(site):
            raise NetworkError(f"sites.{site}", "has no nodes")
    check_local_binds(net, site)
    check_metrics_ports(net, site)
    if net.sites is not None:
        for started in [site] if site else sorted({net.site_of(n) for n in net.nodes}):
            curve_config(net, started, secret_key)
    context = net.node_context(reset_state, session)
    started = list(net.site_nodes(site) if site else net.nodes)
    for name in started:
        spec = net.nodes[name]
        try:
            placement.check(f"nodes.{name}", spec.settings)
        except SettingsError as e:
            raise NetworkError(e.key, e.reason) from None
        try:
            spec.cls.preflight(name, spec.settings, context)
        except ValueError as e:
            raise NetworkError(f"nodes.{name}", str(e)) from None
