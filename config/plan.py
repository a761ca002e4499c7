"""What one node of a network binds, connects to and waits for, computed from the network alone.

``node_plan(network, node)`` is the one place that turns the network's links into a node's wiring: its
output ports (source ids, where each binds, its send queue, whether it is a CURVE server, which
subscribers it waits for and which it may answer), and its input links (where each connects, with what
options). The node process builds its runtime from it; the supervisor uses the same plan to tell each
node where its inputs are. It is pure (no sockets, no files, no keys), so it is tested on networks alone.

The catch: an upstream inside the same run binds a wildcard port (``tcp://127.0.0.1:*``), so its
endpoint is known only once it has bound. The plan says so (``Source.endpoint == ""``, with the
``upstream`` port to ask), and the supervisor fills it in from the nodes' ``bound`` messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from spikewire.config.network import Network
from spikewire.streams.link_rx import InputPlan, LinkOptions
from spikewire.streams.zmq_link import DEFAULT_HWM


@dataclass(frozen=True)
class Source:
    """One link into the node, as the supervisor resolves it."""

    port: str  # the node's input port
    source_id: int  # what the upstream stamps on its packets
    label: str  # the link's label ("src.port -> dst.port")
    endpoint: str  # where to connect, when the network file says (an external publisher, a `via`, another
    # site's fixed port); "": the bound endpoint of ``upstream``, an output port of a node in this run
    upstream: tuple[str, str] | None = None  # (node, output port) whose bound endpoint this is


@dataclass(frozen=True)
class NodePlan:
    """One node's wiring (see ``node_plan``)."""

    node: str
    site: str
    source_ids: dict[str, int]  # output port -> the source id its packets carry
    binds: dict[str, str]  # output port -> endpoint it binds (a site's fixed port, else a wildcard port)
    remote_ports: frozenset[str]  # output ports with subscribers at other sites (never block on them)
    curve_ports: frozenset[str]  # output ports that are CURVE servers
    needs_curve: bool  # the node needs its site's keys (to serve CURVE ports or to subscribe to one)
    expected: dict[str, frozenset[str]]  # output port -> nodes of this site the node waits for before ready
    subscribers: dict[str, frozenset[str]]  # output port -> every node the file names (the pong budget)
    port_queues: dict[str, tuple[int, int]]  # output port -> (send hwm, kernel sockbuf) from its links
    inputs: dict[str, InputPlan] = field(default_factory=dict)  # input port -> its links, as the file knows them
    sources: tuple[Source, ...] = ()  # every link into the node, in the file's order

    def input_plans(self, connect: dict[str, list]) -> list[InputPlan]:
        """The supervisor's ``connect`` message (input port -> [[source id, endpoint, label], ...]) as the
        runtime's input plans, with this plan's per-link options; ports the plan does not know are left out."""
        plans = []
        for port, sources in connect.items():
            plan = self.inputs.get(port)
            if plan is not None:
                plans.append(replace(plan, sources=tuple((int(s), str(e), str(label)) for s, e, label in sources)))
        return plans


def node_plan(network: Network, node: str, site: str | None = None, replayed: frozenset[str] = frozenset()) -> NodePlan:
    """The wiring of ``node``. ``site``: the run starts only that site's nodes (None: every node), so an
    upstream at another site is reached at its fixed port. ``replayed``: nodes that republish a recording
    and subscribe to nothing, so nobody waits for them."""
    spec = network.nodes[node]
    out_links = network.links_from(node)
    in_links = network.links_into(node)
    binds, queues = {}, {}
    for port in spec.outputs:
        binds[port] = network.fixed_endpoint(node, port, bind=True) or f"tcp://{spec.settings.bind}:*"
        links = [ln for ln in out_links if ln.src_port == port]
        if links:  # the send queue: the largest hwm of its links; the kernel buffer: the smallest sockbuf set
            bufs = [ln.sockbuf for ln in links if ln.sockbuf]
            queues[port] = (max(ln.hwm for ln in links), min(bufs) if bufs else 0)
    expected: dict[str, set[str]] = {}
    subscribers: dict[str, set[str]] = {}
    for ln in out_links:
        subscribers.setdefault(ln.src_port, set()).add(ln.dst_node)
        # A downstream node opens one connection per upstream port, however many of its inputs it feeds.
        # Only links inside the site are waited for: other sites come and go on their own.
        if not ln.inter_site and ln.dst_node not in replayed:
            expected.setdefault(ln.src_port, set()).add(ln.dst_node)
    curve_ports = frozenset(port for port in spec.outputs if network.curve_port(node, port))

    def curve_link(ln) -> bool:  # the upstream port is a CURVE server: one socket, one security setting
        return bool(ln.src_node) and network.curve_port(ln.src_node, ln.src_port)

    sources, inputs = [], {}
    for ln in in_links:
        if ln.endpoint or ln.via:
            source = Source(ln.dst_port, ln.source_id, ln.label, ln.endpoint or ln.via)
        elif site is None or network.site_of(ln.src_node) == site:
            source = Source(ln.dst_port, ln.source_id, ln.label, "", (ln.src_node, ln.src_port))
        else:  # another site's node: its fixed port
            source = Source(ln.dst_port, ln.source_id, ln.label,
                            network.fixed_endpoint(ln.src_node, ln.src_port, bind=False) or "")
        sources.append(source)
    for port in dict.fromkeys(ln.dst_port for ln in in_links):
        links = [ln for ln in in_links if ln.dst_port == port]
        bufs = [ln.sockbuf for ln in links if ln.sockbuf]
        options = {ln.label: LinkOptions(ln.delay, ln.late, ln.inter_site, ln.src_site, curve_link(ln), ln.auto_delay,
                                         ln.clock) for ln in links}
        inputs[port] = InputPlan(port, tuple((s.source_id, s.endpoint, s.label) for s in sources if s.port == port),
                                 max(ln.hwm for ln in links) or DEFAULT_HWM, options, min(bufs) if bufs else 0)
    # Keys are needed to serve CURVE ports, to reach other sites, and to subscribe (even from inside the site)
    # to a port that also feeds other sites.
    needs_curve = bool(curve_ports) or any(ln.inter_site or curve_link(ln) for ln in in_links)
    return NodePlan(node, spec.settings.site, {port: network.source_ids[(node, port)] for port in spec.outputs},
                    binds, frozenset(port for port in spec.outputs if network.fixed_endpoint(node, port, bind=True)),
                    curve_ports, needs_curve, {p: frozenset(n) for p, n in expected.items()},
                    {p: frozenset(n) for p, n in subscribers.items()}, queues, inputs, tuple(sources))
