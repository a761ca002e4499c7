"""The run summary: joins every node's final figures with the network's links, as JSON and as tables."""

from __future__ import annotations

import math

from spikewire.config.network import Network
from spikewire.nodes.element import Declaration
from spikewire.nodes.figures import Figures


def _us(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * 1e6:,.0f}"


def _model_section(f: Figures) -> dict:
    """What the report keeps of a node's figures besides its neurons and devices rows."""
    out = {"rejected": dict(f.rejected), **{f"held_{what}": n for what, n in f.held.items()}, **f.info}
    if f.rig is not None:
        out["rig"] = f.rig
    if f.warnings:
        out["warnings"] = list(f.warnings)
    return out


def neuron_rows(node: str, f: Figures) -> list[dict]:
    """One row per neuron of a population of at most LISTED neurons, one row per larger population."""
    elapsed = max(f.elapsed, 1e-9)
    rows = []
    for pop, p in f.populations.items():
        if p.neuron_spikes is not None:
            for i, c in enumerate(p.neuron_spikes):
                row = {"node": node, "population": pop, "neuron": str(i), "spikes": c, "rate_hz": c / elapsed}
                if p.neuron_stimuli is not None:
                    row["stimuli"] = p.neuron_stimuli[i]
                for k, v in (p.neuron_events or {}).items():
                    row[k] = v[i]
                rows.append(row)
        else:
            row = {"node": node, "population": pop, "neuron": f"all {p.size}", "spikes": p.spikes,
                   "rate_hz": p.spikes / elapsed / max(p.size, 1)}
            if p.stimuli is not None:
                row["stimuli"] = p.stimuli
            row.update(p.events)
            rows.append(row)
    return rows


def device_rows(node: str, f: Figures, declaration: Declaration) -> list[dict]:
    rows = []
    for name, d in f.devices.items():
        dev = declaration.device(name)
        rows.append({"node": node, "name": name, **(dev.address if dev else {}), "r_start": d.r_start,
                     "r_end": d.r, "ltp_pulses": d.ltp, "ltd_pulses": d.ltd})
    return rows


def undeclared(declaration: Declaration, f: Figures) -> list[str]:
    """Populations and devices a node's figures report that its kind does not declare: a plugin's mistake
    that would make the summary and the NWB export disagree, said once in the report's warnings."""
    pops = {p.name for p in declaration.populations}
    devs = {d.name for d in declaration.devices}
    out = [f"its figures report population {p!r}, which its kind does not declare (declared: "
           f"{', '.join(sorted(pops)) or 'none'})" for p in f.populations if p not in pops]
    out += [f"its figures report device {d!r}, which its kind does not declare" for d in f.devices if d not in devs]
    return out


def build_report(network: Network, finals: dict[str, dict], duration: float, outcome: str,
                 only: list[str] | None = None) -> dict:
    """``only``: the nodes this run started (one site's); links are reported from the ends that ran here."""
    names = list(network.nodes) if only is None else only
    neurons, memristors, links, nodes = [], [], [], {}
    said, misdeclared = [], []  # the kinds' own warnings, then figures that disagree with the declarations
    for name in names:
        f = finals.get(name)
        if f is None:
            nodes[name] = {"final": False}
            continue
        figures = Figures.from_dict(f.get("model"))
        said += [f"{name}: {w}" for w in figures.warnings]
        misdeclared += [f"{name}: {w}" for w in undeclared(network.nodes[name].declaration, figures)]
        neurons += neuron_rows(name, figures)
        memristors += device_rows(name, figures, network.nodes[name].declaration)
        nodes[name] = {"final": True, "kind": f.get("kind"), "loop": f.get("loop"), "process": f.get("process"),
                       "metrics": f.get("metrics"), "probes": f.get("probes"),
                       "model": _model_section(figures),
                       "rejected": dict(figures.rejected), "refused": f.get("refused", {}),
                       "interlock": f.get("interlock"), "outputs": f.get("outputs", {}), "journal": f.get("journal"),
                       "malformed": sum(sum(ln["malformed"].values()) for p in f.get("inputs", {}).values()
                                        for ln in p["links"].values())}
        if f.get("probe_forward_s"):  # the loop probe's time inside this node, per input port it came in on
            nodes[name]["probe_forward_s"] = f["probe_forward_s"]
    for link in network.links:
        if link.dst_node not in names and link.src_node not in names:
            continue
        src = finals.get(link.src_node, {}).get("outputs", {}).get(link.src_port, {}) if link.src_node else {}
        port = finals.get(link.dst_node, {}).get("inputs", {}).get(link.dst_port, {})
        rx = port.get("links", {}).get(str(link.source_id), {})
        lat = rx.get("latency_s", {})
        sent = src.get("sent")
        up = rx.get("upstream", {})
        clock = up.get("clock") or {}
        links.append({
            "link": link.label, "sent": sent, "received": rx.get("received"), "events": rx.get("events"),
            "dropped": (src.get("dropped", 0) or 0) + (rx.get("gaps", 0) or 0),
            "send_queue_drops": src.get("dropped", 0), "gaps": rx.get("gaps"),
            # Send-queue drops consume no sequence number, so sent = received + gaps + in flight.
            "in_flight": (sent - (rx.get("received") or 0) - (rx.get("gaps", 0) or 0)) if sent is not None and rx else None,
            "inter_site": link.inter_site, "curve": up.get("curve"), "outages": up.get("outages"),
            "restarts": up.get("restarts"), "downtime_s": up.get("downtime_s"), "state": up.get("state"),
            "clock_offset_s": clock.get("offset_s"), "rtt_s": clock.get("rtt_s"),
            "trailing": rx.get("trailing"), "jitter_buffer": rx.get("jitter_buffer"),
            "out_of_order": rx.get("out_of_order"), "malformed": sum(rx.get("malformed", {}).values()),
            "malformed_by_reason": rx.get("malformed", {}), "out_of_range": rx.get("out_of_range", 0),
            "duplicates": rx.get("duplicates", 0), "unsynced": rx.get("unsynced", 0),
            "latency_p50_s": lat.get("p50"), "latency_p99_s": lat.get("p99"), "latency_p999_s": lat.get("p999"),
            "latency_max_s": lat.get("max"), "delay_for_p99_s": rx.get("delay_for_p99_s"),
        })
        if rx.get("probe_latency_s"):  # the loop probe's transit on this link (its part of the round trip)
            links[-1]["probe_latency_s"] = rx["probe_latency_s"]
    probes = next((dict(f["probes"], node=n) for n, f in finals.items() if f.get("probes")), None)
    warnings = said + misdeclared
    return {"network": network.name, "outcome": outcome, "duration_s": duration, "warnings": warnings,
            "neurons": neurons,
            "memristors": memristors, "links": links, "nodes": nodes, "phases": phase_table(network, finals),
            "probes": probes}


def probe_hops(report: dict) -> list[tuple[str, dict]]:
    """The loop probe's path in the order of the network's links: each link's transit, then the time inside
    the node it reached (when the probe went on from there)."""
    chosen: dict[tuple[str, str], tuple[str, dict, dict | None]] = {}  # (source, node) -> one connection's hop
    for link in report.get("links", []):
        if not link.get("probe_latency_s"):
            continue
        source, _, dest = link["link"].partition(" -> ")
        node, _, port = dest.partition(".")
        inside = (report["nodes"].get(node) or {}).get("probe_forward_s", {}).get(port)
        # One connection feeding two ports carries each probe once: keep the port it went on from.
        if (source, node) not in chosen or (inside and chosen[(source, node)][2] is None):
            chosen[(source, node)] = (link["link"], link["probe_latency_s"], inside and (f"in {node} ({port})", inside))
    hops = []
    for label, transit, inside in chosen.values():
        hops.append((label, transit))
        if inside:
            hops.append(inside)
    return hops


def phase_table(network: Network, finals: dict[str, dict]) -> list[dict]:
    """One row per protocol phase, from the figures each node recorded at every phase end: each
    population's rate per neuron (and typed events: stimulated APs, PSPs), each device's value at the phase's end and
    the programming pulses applied during it. Phases not reached are left out."""
    rows = [{"phase": name, "start_s": start, "end_s": end} for name, start, end in network.phases]
    for node in network.nodes:
        marks = [Figures.from_dict(m) for m in (finals.get(node, {}).get("phases") or [])]
        for i, mark in enumerate(marks[: len(rows)]):
            prev = marks[i - 1] if i else Figures()
            row, length = rows[i], rows[i]["end_s"] - rows[i]["start_s"]
            for pop, p in mark.populations.items():
                before = prev.populations.get(pop)
                # per neuron, as everywhere (summary, top, metrics, plot)
                row[f"{pop} Hz"] = (p.spikes - (before.spikes if before else 0)) / length / max(p.size, 1)
                if "stimulated_ap" in p.events:
                    was = before.events if before else {}
                    row[f"{pop} stim AP"] = p.events["stimulated_ap"] - was.get("stimulated_ap", 0)
                    row[f"{pop} PSP"] = p.events.get("psp", 0) - was.get("psp", 0)
            for dev, d in mark.devices.items():
                before = prev.devices.get(dev)
                row[f"{dev} kOhm"] = d.r / 1e3
                row[f"{dev} LTP"] = d.ltp - (before.ltp if before else 0)
                row[f"{dev} LTD"] = d.ltd - (before.ltd if before else 0)
    return [r for r in rows if len(r) > 3]


def _table(headers: list[str], rows: list[list], right: set[int]) -> list[str]:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in cells)]


def render_text(report: dict) -> str:
    out = [f"spikewire run of {report['network']!r}: {report['outcome']} after {report['duration_s']:.1f} s", ""]
    if report.get("warnings"):
        out += ["Warnings"] + [f"  ! {w}" for w in report["warnings"]] + [""]
    if report["neurons"]:
        out += ["Neurons"] + _table(
            ["node", "population", "neuron", "spikes", "rate Hz", "detail"],
            [[n["node"], n["population"], n["neuron"], n["spikes"], f"{n['rate_hz']:.2f}",
              ", ".join(f"{k}={n[k]}" for k in ("stimuli", "psp", "stimulated_ap", "spontaneous_ap") if k in n)]
             for n in report["neurons"]], {3, 4}) + [""]
    if report["memristors"]:
        out += ["Memristors"] + _table(
            ["node", "device", "R start kOhm", "R end kOhm", "LTP", "LTD"],
            [[m["node"], m["name"], f"{m['r_start'] / 1e3:.3f}", f"{m['r_end'] / 1e3:.3f}", m["ltp_pulses"],
              m["ltd_pulses"]] for m in report["memristors"]], {2, 3, 4, 5}) + [""]
    inter = [ln for ln in report["links"] if ln.get("inter_site") and ln.get("received") is not None]
    if inter:
        out += ["Inter-site links (offset: sender's clock minus ours; latency above is corrected by it)"] + _table(
            ["link", "curve", "offset us", "rtt us", "outages", "restarts", "down s", "one-way p50/p99/p99.9 us",
             "delay for p99 us", "delay us", "late dropped/delivered"],
            [[ln["link"], "yes" if ln["curve"] else "no", _us(ln["clock_offset_s"]), _us(ln["rtt_s"]),
              ln["outages"], ln["restarts"], f"{ln['downtime_s'] or 0:.2f}",
              "/".join(_us(ln[k]) for k in ("latency_p50_s", "latency_p99_s", "latency_p999_s")),
              _us(ln["delay_for_p99_s"]),
              (_us(ln["jitter_buffer"]["delay_s"]) + (" auto" if ln["jitter_buffer"].get("auto") else ""))
              if ln["jitter_buffer"] else "-",
              f"{ln['jitter_buffer']['late_dropped']}/{ln['jitter_buffer']['late_delivered']}" if ln["jitter_buffer"]
              else "-"] for ln in inter], {2, 3, 4, 5, 6, 7, 8, 9}) + [""]
    if report["links"]:
        out += ["Links (latency = receive time - send time, us)"] + _table(
            ["link", "sent", "received", "dropped", "malformed", "p50", "p99", "max"],
            [[ln["link"], ln["sent"] if ln["sent"] is not None else "-", ln["received"] if ln["received"] is not None else "-",
              ln["dropped"], ln["malformed"], _us(ln["latency_p50_s"]), _us(ln["latency_p99_s"]), _us(ln["latency_max_s"])]
             for ln in report["links"]], {1, 2, 3, 4, 5, 6, 7}) + [""]
    pr = report.get("probes")
    if pr:
        lat = pr["latency_s"]
        out += [f"Loop probes from {pr['node']}.{pr['origin']}: sent {pr['sent']}, returned {pr['returned']}, "
                f"lost {pr['lost']}; round trip p50 {_us(lat.get('p50'))} us, p99 {_us(lat.get('p99'))} us, "
                f"max {_us(lat.get('max'))} us"]
        hops = probe_hops(report)
        if hops:
            out.append("  hop by hop, p50 us: " + ", ".join(f"{name} {_us(h.get('p50'))}" for name, h in hops))
        out.append("")
    if report.get("phases"):
        cols = [c for c in report["phases"][0] if c not in ("phase", "start_s", "end_s")]
        fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
        out += ["Protocol phases (rates and counts within each phase; resistance at its end)"] + _table(
            ["phase", "ends s", *cols],
            [[r["phase"], f"{r['end_s']:g}", *(fmt(r.get(c, "-")) for c in cols)] for r in report["phases"]],
            set(range(1, len(cols) + 2))) + [""]
    rows = []
    for name, n in report["nodes"].items():
        if not n.get("final"):
            rows.append([name, "-", "-", "-", "-", "-", "no final report"])
            continue
        loop, proc = n["loop"], n["process"]
        tc = loop["tick_compute_s"]
        notes = f"cpu {proc['cpu_s']:.1f} s"
        if n["rejected"]:
            notes += f", rejected {n['rejected']}"
        if n.get("refused"):
            notes += f", refused connections {n['refused']}"
        jr = n.get("journal")
        if jr and jr.get("dropped"):
            notes += f", journal full: {jr['dropped']} records not written"
        il = n.get("interlock")
        if il and il["holds"]:
            notes += f", interlock held {il['holds']}x for {il['held_s']:.2f} s"
        rows.append([name, loop["ticks"], _us(tc.get("p50")), _us(tc.get("p99")), loop["overruns"],
                     f"{proc['max_rss_mb']:.0f}", notes])
    out += ["Nodes"] + _table(["node", "ticks", "tick p50 us", "tick p99 us", "overruns", "peak MB", "notes"],
                              rows, {1, 2, 3, 4, 5})
    return "\n".join(out)


def render_status(network: Network, statuses: dict[str, dict], previous: dict[str, dict],
                  only: list[str] | None = None) -> list[str]:
    """One line per node (of ``only``, if given) for the live view: rates, resistances, input links'
    latency and drops, links that are down, interlock holds."""
    lines = []
    for name in network.nodes if only is None else only:
        st = statuses.get(name)
        if st is None:
            lines.append(f"{name:<12} (waiting)")
            continue
        model = Figures.from_dict(st.get("model"))
        parts = [f"t={st['elapsed']:6.1f}s"]
        prev = previous.get(name)
        before = Figures.from_dict(prev.get("model")) if prev else model
        dt = st["t"] - prev["t"] if prev else 0.0
        for pop, p in model.populations.items():
            was = before.populations.get(pop)
            n = p.spikes - (was.spikes if was else p.spikes)
            parts.append(f"{pop} {(n / dt / max(p.size, 1)) if dt > 0 else 0.0:5.1f} Hz")  # per neuron
            if "stimulated_ap" in p.events:
                parts.append(f"AP stim/spont {p.events['stimulated_ap']}/{p.events['spontaneous_ap']} "
                             f"PSP {p.events['psp']}")
        parts += [f"{dev} {d.r / 1e3:.3f} kOhm" for dev, d in model.devices.items()]
        seen = set()
        for port in st.get("inputs", {}).values():
            for ln in port["links"].values():
                source = ln["label"].split(" -> ")[0]
                if source in seen:  # one connection feeding several ports: show it once
                    continue
                seen.add(source)
                lat = ln["latency_s"]
                up = ln.get("upstream", {})
                if up.get("state") == "down":
                    parts.append(f"<- {source} DOWN")
                elif lat.get("count"):
                    parts.append(f"<- {source} p50/p99 {_us(lat['p50'])}/{_us(lat['p99'])} us"
                                 f" drops {ln['gaps']}")
                bad = sum(ln["malformed"].values())
                if bad:
                    parts.append(f"malformed {bad}")
        il = st.get("interlock")
        if il and il.get("holding"):
            parts.append(f"INTERLOCK HOLD ({il['reason']})")
        lines.append(f"{name:<12} " + "  ".join(parts))
    return lines
