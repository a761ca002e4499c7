"""The run summary: joins every node's final figures with the network's links, as JSON and as tables."""

from __future__ import annotations

import math

from spikewire.config.network import Network
from spikewire.nodes.element import Declaration
from spikewire.nodes.figures import AGGREGATE_ABOVE, Figures, Spread

STATUS_WIDTH = 120
"""Characters of one node's live status line at most (one terminal row), whatever the node's size."""
SPARK = " ▁▂▃▄▅▆▇█"


def _us(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * 1e6:,.0f}"


def sparkline(counts) -> str:
    """A histogram's counts as block characters, tallest = the largest count (a blank: none), in brackets."""
    top = max(counts, default=0) or 1
    return "[" + "".join(SPARK[0] if not c else SPARK[max(1, round(c / top * (len(SPARK) - 1)))]
                         for c in counts) + "]"


def rate_text(pop: str, size: int, per_s: float | None) -> str:
    """A population's rate, the one way every live view writes it: spikes per second per neuron (Hz) and,
    for more than one neuron, of the whole population."""
    if per_s is None:
        return f"{pop} - Hz"
    if size <= 1:
        return f"{pop} {per_s:.1f} Hz"
    return f"{pop} {per_s / size:.1f} Hz/neuron ({per_s:,.0f} Hz all {size})"


def phase_text(network: Network, elapsed: float | None) -> str | None:
    """Which protocol phase runs at session time ``elapsed`` and how far it is ("phase ltp 2/4 0.7/1.5s");
    None without a protocol."""
    phases = network.phases
    if not phases or elapsed is None:
        return None
    if elapsed <= 0:
        return f"not started (phase 1/{len(phases)} {phases[0][0]} next)"
    for i, (name, start, end) in enumerate(phases, 1):
        if start <= elapsed < end:
            return f"phase {name} {i}/{len(phases)} {elapsed - start:.1f}/{end - start:g}s"
    return f"done ({len(phases)} phases, {phases[-1][2]:g} s)"


def device_sets(f: Figures, declaration: Declaration) -> dict[str, list[str]]:
    """A node's devices by the set (synapse group) its kind declares them in; undeclared ones apart."""
    sets: dict[str, list[str]] = {}
    for name in f.devices:
        dev = declaration.device(name)
        sets.setdefault(dev.group if dev is not None else "(undeclared)", []).append(name)
    return sets


def aggregated(f: Figures) -> bool:
    """Whether a node's devices are shown in aggregate (``AGGREGATE_ABOVE``)."""
    return len(f.devices) > AGGREGATE_ABOVE


def device_set_text(group: str, f: Figures, names: list[str]) -> str:
    """One device set in a few words: how many, mean [min..max] value, a histogram, pulses applied."""
    sp = Spread.of([f.devices[n].r for n in names])
    ltp = sum(f.devices[n].ltp for n in names)
    ltd = sum(f.devices[n].ltd for n in names)
    return (f"{group} {sp.n} dev {sp.mean / 1e3:.1f} kOhm [{sp.min / 1e3:.1f}..{sp.max / 1e3:.1f}]"
            f"{sparkline(sp.counts)} LTP/LTD {ltp}/{ltd}")


def fit_line(head: str, parts: list[str], width: int = STATUS_WIDTH) -> str:
    """``head`` and as many of ``parts`` (most important first) as fit in ``width`` characters; the rest
    counted ("+2 more"), so a line never wraps whatever the node's size."""
    shown = []
    for part in parts:
        if len("  ".join([head, *shown, part])) > width:
            break
        shown.append(part)
    while len(shown) < len(parts):
        line = "  ".join([head, *shown, f"+{len(parts) - len(shown)} more"])
        if len(line) <= width:
            return line
        if not shown:
            return line[: width - 1] + "…"
        shown.pop()
    line = "  ".join([head, *shown])
    return line if len(line) <= width else line[: width - 1] + "…"


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
            "memristors": memristors, "device_sets": device_set_rows(network, finals, names), "links": links,
            "nodes": nodes, "phases": phase_table(network, finals),
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
            if aggregated(mark):  # a device set's mean, range and pulses, not a column per device
                for group, names in device_sets(mark, network.nodes[node].declaration).items():
                    sp = Spread.of([mark.devices[n].r for n in names])
                    row[f"{group} kOhm mean"], row[f"{group} kOhm min"], row[f"{group} kOhm max"] = \
                        sp.mean / 1e3, sp.min / 1e3, sp.max / 1e3
                    row[f"{group} LTP"] = sum(mark.devices[n].ltp - (prev.devices[n].ltp if n in prev.devices else 0)
                                              for n in names)
                    row[f"{group} LTD"] = sum(mark.devices[n].ltd - (prev.devices[n].ltd if n in prev.devices else 0)
                                              for n in names)
                continue
            for dev, d in mark.devices.items():
                before = prev.devices.get(dev)
                row[f"{dev} kOhm"] = d.r / 1e3
                row[f"{dev} LTP"] = d.ltp - (before.ltp if before else 0)
                row[f"{dev} LTD"] = d.ltd - (before.ltd if before else 0)
    return [r for r in rows if len(r) > 3]


def device_set_rows(network: Network, finals: dict[str, dict], names: list[str]) -> list[dict]:
    """Per device set of every node shown in aggregate: how many devices, the spread of their values at
    the start and at the end, the pulses applied (the JSON keeps every device besides, in ``memristors``)."""
    out = []
    for name in names:
        final = finals.get(name)
        if final is None:
            continue
        f = Figures.from_dict(final.get("model"))
        if not aggregated(f):
            continue
        declaration = network.nodes[name].declaration
        for group, devs in device_sets(f, declaration).items():
            starts = [f.devices[d].r_start for d in devs if f.devices[d].r_start is not None]
            first = declaration.device(devs[0])
            out.append({"node": name, "set": group, "devices": len(devs),
                        "quantity": first.quantity if first else "resistance", "unit": first.unit if first else "ohm",
                        "r_start": Spread.of(starts).to_dict() if starts else None,
                        "r_end": Spread.of([f.devices[d].r for d in devs]).to_dict(),
                        "ltp_pulses": sum(f.devices[d].ltp for d in devs),
                        "ltd_pulses": sum(f.devices[d].ltd for d in devs)})
    return out


def _kohm(ohms: float | None) -> str:
    return "-" if ohms is None else f"{ohms / 1e3:.3f}"


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
    sets = report.get("device_sets") or []
    big = {d["node"] for d in sets}
    listed = [m for m in report["memristors"] if m["node"] not in big]
    if listed:
        out += ["Memristors"] + _table(
            ["node", "device", "R start kOhm", "R end kOhm", "LTP", "LTD"],
            [[m["node"], m["name"], _kohm(m["r_start"]), _kohm(m["r_end"]), m["ltp_pulses"],
              m["ltd_pulses"]] for m in listed], {2, 3, 4, 5}) + [""]
    if sets:
        out += [f"Memristor sets (nodes with more than {AGGREGATE_ABOVE} devices; every device is in the JSON "
                "summary)"] + _table(
            ["node", "set", "devices", "R start mean kOhm", "R end mean kOhm", "min", "max", "sd",
             "R end histogram (min..max)", "LTP", "LTD"],
            [[d["node"], d["set"], d["devices"], _kohm(d["r_start"]["mean"]) if d["r_start"] else "-",
              _kohm(d["r_end"]["mean"]), _kohm(d["r_end"]["min"]), _kohm(d["r_end"]["max"]), _kohm(d["r_end"]["sd"]),
              sparkline(d["r_end"]["counts"]), d["ltp_pulses"], d["ltd_pulses"]] for d in sets],
            {2, 3, 4, 5, 6, 7, 9, 10}) + [""]
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
    ctl = report.get("controls") or {}
    if ctl.get("accepted") or ctl.get("refused"):  # the operator's control endpoint (launch/operator.py)
        out += ["Operator controls: accepted " + (", ".join(f"{k} {v}" for k, v in sorted(ctl["accepted"].items()))
                                                  or "none")
                + ("; refused " + ", ".join(f"{k} {v}" for k, v in sorted(ctl["refused"].items()))
                   if ctl.get("refused") else ""), ""]
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
            if il.get("operator_holds"):
                notes += f" ({il['operator_holds']} by the operator)"
        rows.append([name, loop["ticks"], _us(tc.get("p50")), _us(tc.get("p99")), loop["overruns"],
                     f"{proc['max_rss_mb']:.0f}", notes])
    out += ["Nodes"] + _table(["node", "ticks", "tick p50 us", "tick p99 us", "overruns", "peak MB", "notes"],
                              rows, {1, 2, 3, 4, 5})
    return "\n".join(out)


def rig_text(rig: dict) -> tuple[str, bool]:
    """A rig's state in a few words, and whether it needs attention (down, not calibrated, no stimulation
    consumer). "held 4+2 no consumer": stimuli held while the rig was down, and while nothing subscribed."""
    up, cal = bool(rig.get("rig_up")), bool(rig.get("calibrated"))
    held, orphan = int(rig.get("stim_held", 0)), int(rig.get("stim_held_no_consumer", 0))
    words = ["rig up" if up else "RIG DOWN"]
    if "calibrated" in rig:
        words.append("calibrated" if cal else "UNCALIBRATED")
    words.append("stim ok" if rig.get("stim_ready") else "NO STIM CONSUMER")
    words.append(f"held {held}" + (f"+{orphan} no consumer" if orphan else ""))
    return " ".join(words), not up or ("calibrated" in rig and not cal) or not rig.get("stim_ready")


def _inputs_text(st: dict, alarms: list[str]) -> tuple[list[str], list[str]]:
    """A node's input connections, each with its latency p50/p99, losses (when there are) and (between sites)
    clock offset; and the same for all of them in one part (the worst p99, the losses, the largest offset),
    for a line that has no room for each. Down ones and malformed packets go to ``alarms``."""
    live, lost, bad = [], 0, 0
    seen = set()
    for port in st.get("inputs", {}).values():
        for ln in port["links"].values():
            bad += sum(ln["malformed"].values())
            source = ln["label"].split(" -> ")[0]
            if source in seen:  # one connection feeding several ports: show it once
                continue
            seen.add(source)
            up = ln.get("upstream", {})
            lost += ln["gaps"]
            if up.get("state") == "down":
                alarms.append(f"<- {source} DOWN")
            elif ln["latency_s"].get("count"):
                offset = (up.get("clock") or {}).get("offset_s") if up.get("inter_site") else None
                live.append((source, ln["latency_s"], ln["gaps"], offset))
    if bad:
        alarms.append(f"malformed {bad}")
    if not live:
        return [], []
    nodes = [src.split(".")[0] for src, *_ in live]
    if len(set(nodes)) == len(nodes):  # each from another node: its name says which
        live = [(node, *rest) for node, (_, *rest) in zip(nodes, live)]
    each = [f"<-{src} p50/p99 {_us(lat['p50'])}/{_us(lat['p99'])}us" + (f" LOST {gaps}" if gaps else "")
            + (f" offset {offset * 1e6:+,.0f}us" if offset is not None else "") for src, lat, gaps, offset in live]
    worst = max(live, key=lambda x: x[1]["p99"] or 0.0)
    offsets = [o for *_, o in live if o is not None]
    text = (f"<-{len(live)} inputs {','.join(sorted(set(nodes)))} p99≤{_us(worst[1]['p99'])}us"
            + (f" LOST {lost}" if lost else ""))
    if offsets:
        text += f" offset≤{max(offsets, key=abs) * 1e6:+,.0f}us"
    return each, [text]


def render_status(network: Network, statuses: dict[str, dict], previous: dict[str, dict],
                  only: list[str] | None = None, width: int = STATUS_WIDTH) -> list[str]:
    """One line per node (of ``only``, if given) for the live view, at most ``width`` characters whatever
    the node's size: session time and protocol phase, then what needs attention (interlock holding, rig
    down, links down), rates (``rate_text``), devices (each set in aggregate past ``AGGREGATE_ABOVE``), rig
    state, input links' latency, drops and clock offset, interlock state; what does not fit is counted."""
    lines = []
    names = list(network.nodes if only is None else only)
    elapsed = [statuses[n]["elapsed"] for n in names if n in statuses]
    phase = phase_text(network, max(elapsed)) if elapsed else None
    if phase:  # one line for the protocol: every node runs the same one
        lines.append(f"{'protocol':<12} t={max(elapsed):5.1f}s {phase}")
    for name in names:
        st = statuses.get(name)
        if st is None:
            lines.append(f"{name:<12} (waiting)")
            continue
        model = Figures.from_dict(st.get("model"))
        head = f"{name:<12} t={st['elapsed']:5.1f}s"
        alarms, parts = [], []
        prev = previous.get(name)
        if prev is None or prev is st or prev.get("t") == st.get("t"):
            before, dt = Figures(), st["elapsed"]  # a node's first message: its rates since the start
        else:
            before, dt = Figures.from_dict(prev.get("model")), st["t"] - prev["t"]
        il = st.get("interlock")
        if il and il.get("holding"):
            alarms.append(f"INTERLOCK HOLD ({il['reason']})")
        for pop, p in model.populations.items():
            was = before.populations.get(pop)
            n = p.spikes - (was.spikes if was else 0)
            parts.append(rate_text(pop, p.size, n / dt if dt > 0 else 0.0))
            if "stimulated_ap" in p.events:
                parts.append(f"AP stim/spont {p.events['stimulated_ap']}/{p.events['spontaneous_ap']} "
                             f"PSP {p.events['psp']}")
        if aggregated(model):
            sets = device_sets(model, network.nodes[name].declaration) if name in network.nodes else \
                {"devices": list(model.devices)}
            parts += [device_set_text(group, model, devs) for group, devs in sets.items()]
        else:
            parts += [f"{dev} {d.r / 1e3:.3f} kOhm" for dev, d in model.devices.items()]
        if model.rig is not None:
            text, bad = rig_text(model.rig)
            (alarms if bad else parts).append(text)
        each, together = _inputs_text(st, alarms)
        tail = ["interlock ok"] if il and not il.get("holding") else []
        detailed = alarms + parts + each + tail
        if len("  ".join([head, *detailed])) > width:
            detailed = alarms + parts + together + tail
        lines.append(fit_line(head, detailed, width))
    return lines
