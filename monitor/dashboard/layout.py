"""What the page draws, decided from the network's declarations alone (never a kind's name).

Output ports of role ``spikes`` and ``bio_events`` are populations' rasters (their declared populations
give the size); ``stimuli`` and ``synaptic`` outputs are drawn as marks on the same time axis; every
declared device gets a resistance trace, or past ``AGGREGATE_ABOVE`` devices in a node each device set
its mean, min and max. A port of any other role is neither subscribed nor drawn.
"""

from __future__ import annotations

from spikewire.config.network import Network
from spikewire.nodes.element import Role
from spikewire.nodes.figures import AGGREGATE_ABOVE, EVENT_TYPES

DRAWN = {Role.SPIKES: "population", Role.BIO_EVENTS: "population", Role.STIMULI: "stimuli",
         Role.SYNAPTIC: "synaptic"}


def port_key(node: str, port: str) -> str:
    return f"{node}.{port}"


def layout(network: Network, nodes: list[str] | None = None) -> dict:
    """The page's layout as JSON: populations, marked ports, devices (or device sets), nodes, links,
    phases and the loop probe. ``nodes``: only these (one site's), default all."""
    names = [n for n in network.nodes if nodes is None or n in nodes]
    populations, marks, devices, sets = [], [], [], []
    for name in names:
        spec = network.nodes[name]
        decl = spec.declaration
        for port, out in spec.outputs.items():
            what = DRAWN.get(out.role)
            if what == "population":
                pop = next((p for p in decl.populations if p.port == port), None)
                populations.append({"key": port_key(name, port), "node": name, "port": port,
                                    "name": pop.name if pop else (out.group or name), "size": pop.size if pop else
                                    (out.size or 1), "typed": out.role == Role.BIO_EVENTS})
            elif what is not None:
                marks.append({"key": port_key(name, port), "node": name, "port": port, "role": what,
                              "group": out.group or "", "size": out.size or 1})
        aggregate = len(decl.devices) > AGGREGATE_ABOVE
        for dev in decl.devices:
            devices.append({"key": f"{name}/{dev.name}", "node": name, "name": dev.name, "group": dev.group,
                            "unit": dev.unit, "set": f"{name}/{dev.group}" if aggregate else None})
        if aggregate:
            for group in dict.fromkeys(d.group for d in decl.devices):
                n = sum(1 for d in decl.devices if d.group == group)
                sets.append({"key": f"{name}/{group}", "node": name, "group": group, "n": n})
    links = [{"label": ln.label, "src": ln.src_node, "dst": ln.dst_node, "inter_site": ln.inter_site}
             for ln in network.links if ln.dst_node in names or ln.src_node in names]
    return {"network": network.name, "populations": populations, "marks": marks, "devices": devices,
            "sets": sets, "aggregate_above": AGGREGATE_ABOVE, "event_types": list(EVENT_TYPES),
            "nodes": [{"name": n, "kind": network.nodes[n].kind, "site": network.site_of(n)} for n in names],
            "links": links, "phases": [list(p) for p in network.phases],
            "probe": network.monitor.probe_from or None}


def subscribed_ports(network: Network, nodes: list[str] | None = None) -> dict[str, tuple[str, str]]:
    """port key -> (node, port) of every output the page draws."""
    out = {}
    for name, spec in network.nodes.items():
        if nodes is not None and name not in nodes:
            continue
        for port, o in spec.outputs.items():
            if o.role in DRAWN:
                out[port_key(name, port)] = (name, port)
    return out
