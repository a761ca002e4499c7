"""One figure of a recorded session: rasters, rates, memristor resistance across the protocol, link latency.

``plot_session(folder, "fig.png")`` reads a session folder (config/session.py) and draws, against session
time (seconds since the run's t0):

    a  a raster per spiking node: each population's spikes as its node sent them; a biological node's
       events by type (stimulated AP, spontaneous AP, PSP) next to the stimuli it received
    b  rates per neuron of every population (and of the biological node's APs and PSPs), in bins
    c  each memristor's resistance, exact at every plasticity pulse (status.jsonl's pulse log) and sampled
       by every status message in between
    d  each link's latency histogram: the receiver's logged time minus the packet's send_time, for every
       packet it received (spikes, stimuli, typed events and loop probes alike, as the run summary counts)

Protocol phases (summary.json) are shaded on every time axis and named. Panel c is left out when the
session has no memristors. The catch: everything comes from what the nodes journaled, so a node killed
mid-run appears up to its last journal flush; a damaged journal tail or status line is skipped with a
``DamagedSessionWarning`` and a note under the figure. Latencies assume one clock: true on one machine
(provenance.json's link clock offsets are all 0) and in a session ``spikewire merge`` made of the sites'
sessions (every time put on its reference site's clock); a single site's session draws only its own nodes.
"""

from __future__ import annotations

import json
import math
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from spikewire.streams.journal import RECEIVED, SENT, read_journal
from spikewire.streams.wire import DATA_KINDS, BioEvent, Kind, empty_events

__all__ = ["DamagedSessionWarning", "NotASession", "SessionData", "build_figure", "plot_session", "read_session"]


class NotASession(ValueError):
    """The folder is not one that ``spikewire run --session-dir`` wrote."""


class DamagedSessionWarning(UserWarning):
    """Part of a session could not be read (a damaged journal tail, a torn status line, a missing summary);
    the figure shows the rest and says what is missing."""


# --- reading a session ---------------------------------------------------------------------------------

@dataclass
class SpikingNode:
    """One node's spikes, in session seconds. Populations are in network-file order."""

    name: str
    kind: str
    populations: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """population -> (times, neuron ids) of the SPIKE events it sent."""
    sizes: dict[str, int] = field(default_factory=dict)
    """population -> neurons (from the network file, else the highest id seen + 1)."""
    bio: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """(times, neuron ids, BioEvent types) of the typed events a biological node sent."""
    bio_size: int = 0
    stimuli: tuple[np.ndarray, np.ndarray] | None = None
    """(times, target ids) of the STIMULUS events the node received."""


@dataclass
class SessionData:
    """Everything the figure shows, read from a session folder; times are seconds since t0."""

    folder: Path
    network: str
    description: str
    created: str
    outcome: str
    commit: str
    t0: float
    duration: float
    phases: list[tuple[str, float, float]]
    """(name, start, end) of each protocol phase."""
    nodes: list[SpikingNode]
    resistance: dict[str, tuple[np.ndarray, np.ndarray]]
    """device -> (times, ohms), a step function: each value holds until the next time."""
    pulses: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    """device -> (times, resistance after, True for LTP) of every plasticity pulse."""
    latency: dict[str, np.ndarray]
    """link label -> receive - send [s] of every packet received over it."""
    notes: list[str]
    """What could not be read, for the figure's footer."""
    merged_from: list[str] = field(default_factory=list)
    """The sites whose sessions ``spikewire merge`` joined into this one, the reference (clock) first."""


def read_session(session_dir: str | Path) -> SessionData:
    """Read a session folder. Raises ``FileNotFoundError`` if it does not exist and ``NotASession`` if it
    is not a session; warns ``DamagedSessionWarning`` for the parts it has to skip."""
    folder = Path(session_dir)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such session folder")
    if not folder.is_dir():
        raise NotASession(f"{folder}: not a folder; a session is the folder `spikewire run --session-dir` writes")
    missing = [n for n in ("provenance.json", "network.toml") if not (folder / n).is_file()]
    if missing:
        raise NotASession(f"{folder}: not a spikewire session (no {' or '.join(missing)}); "
                          "a session is the folder `spikewire run --session-dir` writes")
    try:
        prov = json.loads((folder / "provenance.json").read_text())
    except ValueError as e:
        raise NotASession(f"{folder / 'provenance.json'}: unreadable provenance ({e})") from None
    try:
        net = tomllib.loads((folder / "network.toml").read_text())
    except tomllib.TOMLDecodeError as e:
        raise NotASession(f"{folder / 'network.toml'}: unreadable network file ({e})") from None

    notes: list[str] = []

    def damaged(msg: str) -> None:
        warnings.warn(f"{folder}: {msg}", DamagedSessionWarning, stacklevel=2)
        notes.append(msg)

    summary = {}
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except FileNotFoundError:
        damaged("no summary.json (the run did not finish)")
    except ValueError as e:
        damaged(f"summary.json unreadable ({e})")

    node_specs = {name: spec for name, spec in net.get("nodes", {}).items() if isinstance(spec, dict)}
    run_here = prov.get("nodes_run")  # a site's session holds its own nodes only
    if run_here:
        node_specs = {name: spec for name, spec in node_specs.items() if name in run_here}
    journals = {}
    for name in node_specs:
        path = folder / "journal" / f"{name}.swj"
        if not path.is_file():
            damaged(f"no journal for node {name}")
            continue
        try:
            journals[name] = read_journal(path)
        except ValueError as e:
            damaged(f"journal of {name} unreadable: {e}")
            continue
        if journals[name].problem:
            damaged(f"journal of {name}: {journals[name].problem}, last {journals[name].skipped_bytes} bytes skipped")

    t0 = prov.get("t0_local_clock")
    if t0 is None:
        logged = [r.records[0].logged for r in journals.values() if r.records]
        if not logged:
            raise NotASession(f"{folder}: the run never started (no t0 in provenance.json and no journal records)")
        t0 = min(logged)
        damaged("no t0 in provenance.json (the run did not finish): time counts from the first journal record")

    nodes = [_spiking_node(name, spec, journals[name], t0) for name, spec in node_specs.items()
             if name in journals and spec.get("kind") != "memristor"]
    nodes = [n for n in nodes if n.populations or n.bio is not None]
    resistance, pulses, torn = _memristors(folder, t0)
    if torn:
        damaged(f"status.jsonl: {torn} unreadable line{'s' if torn > 1 else ''} skipped")
    latency = _latencies(journals, net.get("links", []))

    phases = [(p["phase"], float(p["start_s"]), float(p["end_s"])) for p in summary.get("phases", [])]
    if not phases and not summary:
        start = 0.0
        for p in net.get("protocol", {}).get("phases", []):
            phases.append((p["name"], start, start + float(p["duration"])))
            start += float(p["duration"])

    duration = summary.get("duration_s")
    if duration is None:
        last = [r.records[-1].logged - t0 for r in journals.values() if r.records]
        duration = max(last, default=phases[-1][2] if phases else 1.0)
    phases = [(n, s, min(e, duration)) for n, s, e in phases if s < duration]

    source = prov.get("source", {})
    commit = (source.get("commit") or "")[:10] + ("+dirty" if source.get("dirty") else "")
    meta = net.get("network", {})
    return SessionData(folder=folder, network=summary.get("network") or meta.get("name", folder.name),
                       description=meta.get("description", ""), created=prov.get("created", ""),
                       outcome=summary.get("outcome") or prov.get("outcome") or "unfinished", commit=commit,
                       t0=float(t0), duration=float(duration), phases=phases, nodes=nodes, resistance=resistance,
                       pulses=pulses, latency=latency, notes=notes,
                       merged_from=[str(m.get("site")) for m in prov.get("merged_from") or []])


def _events(records, direction: int, kind: Kind) -> dict[str, np.ndarray]:
    """port -> the events of every ``kind`` packet logged in ``direction`` on it, concatenated."""
    by_port: dict[str, list[np.ndarray]] = {}
    for rec in records:
        if rec.direction == direction and rec.packet is not None and rec.packet.kind == kind:
            by_port.setdefault(rec.port, []).append(rec.packet.events)
    return {port: np.concatenate(chunks) for port, chunks in by_port.items()}


def _spiking_node(name: str, spec: dict, journal, t0: float) -> SpikingNode:
    node = SpikingNode(name, spec.get("kind", "?"))
    declared = {p: s for p, s in spec.get("populations", {}).items() if isinstance(s, dict)}
    sent = {port.removesuffix(".spikes"): ev for port, ev in _events(journal.records, SENT, Kind.SPIKE).items()}
    for pop in dict.fromkeys([*declared, *sent]):  # network-file order, then any other spiking output
        ev = sent.get(pop, empty_events())
        node.populations[pop] = (ev["t"] - t0, ev["id"].astype(np.int64))
        node.sizes[pop] = int(declared.get(pop, {}).get("size") or (ev["id"].max() + 1 if len(ev) else 1))
    bio = _events(journal.records, SENT, Kind.BIO)
    if bio or node.kind == "biological":
        ev = np.concatenate([empty_events(), *bio.values()])
        node.bio = (ev["t"] - t0, ev["id"].astype(np.int64), np.rint(ev["value"]).astype(np.int64))
        node.bio_size = int(spec.get("size") or (ev["id"].max() + 1 if len(ev) else 1))
        stim = np.concatenate([empty_events(), *_events(journal.records, RECEIVED, Kind.STIMULUS).values()])
        node.stimuli = (stim["t"] - t0, stim["id"].astype(np.int64))
    return node


def _memristors(folder: Path, t0: float) -> tuple[dict, dict, int]:
    """Resistance step functions and pulses per device from status.jsonl, and how many of its lines were
    unreadable (a crash can tear the last one)."""
    path = folder / "status.jsonl"
    if not path.is_file():
        return {}, {}, 0
    messages, torn = [], 0
    for line in path.read_text().splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            torn += 1
    owners = {m.get("node") for m in messages if m.get("model", {}).get("resistance")}
    # device -> (t, 0 for a pulse or 1 for a status sample, ohms after, ohms before, LTP?); at one time a
    # pulse sorts first, since a status sample already includes it
    points: dict[str, list[tuple]] = {}
    for msg in messages:
        if msg.get("node") not in owners:
            continue
        prefix = f"{msg['node']}." if len(owners) > 1 else ""
        for ev in msg.get("log", []):
            if ev.get("event") == "pulse":
                points.setdefault(prefix + ev["device"], []).append(
                    (ev["t"] - t0, 0, float(ev["r_after"]), float(ev["r_before"]), ev["direction"] == "ltp"))
        for dev, ohms in msg.get("model", {}).get("resistance", {}).items():
            points.setdefault(prefix + dev, []).append((msg["t"] - t0, 1, float(ohms), float(ohms), False))
    resistance, pulses = {}, {}
    for dev, pts in points.items():
        pts.sort(key=lambda p: p[:2])
        t, order, after, before, ltp = (np.array(col) for col in zip(*pts))
        # Non-volatile: from the node's start to its first record the device held what that record began with.
        resistance[dev] = (np.append(min(0.0, t[0]), t), np.append(before[0], after))
        is_pulse = order == 0
        if is_pulse.any():
            pulses[dev] = (t[is_pulse], after[is_pulse], ltp[is_pulse])
    return resistance, pulses, torn


def _latencies(journals: dict, links: list[dict]) -> dict[str, np.ndarray]:
    """link label -> receive - send [s], in network-file order. A node journals a packet once however many
    of its ports the upstream output feeds, so links from one output to one node share one histogram."""
    lat: dict[tuple[str, str], list[float]] = {}
    for ln in links:  # every link, so one that carried nothing shows as such
        lat.setdefault((ln.get("from", ""), ln.get("to", "").split(".", 1)[0]), [])
    for node, journal in journals.items():
        for rec in journal.records:
            if rec.direction == RECEIVED and rec.packet is not None and rec.packet.kind in DATA_KINDS:
                lat.setdefault((rec.port, node), []).append(rec.logged - rec.packet.send_time)
    out = {}
    for (src, node), values in lat.items():
        targets = [ln.get("to", "") for ln in links
                   if ln.get("from") == src and ln.get("to", "").startswith(node + ".")]
        if len(targets) == 1:
            label = f"{src} → {targets[0]}"
        elif targets:
            label = f"{src} → {node}.{{{', '.join(t.split('.', 1)[1] for t in targets)}}}"
        else:
            label = f"{src} → {node}"
        out[label] = np.array(values, dtype=np.float64)
    return out


# --- drawing ---------------------------------------------------------------------------------------------

POP_COLOURS = ("#1f77b4", "#2ca02c", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
BIO_STYLE = {  # type -> (label, colour); drawn top to bottom in this order
    BioEvent.STIMULATED_AP: ("stimulated AP", "#d95f02"),
    BioEvent.SPONTANEOUS_AP: ("spontaneous AP", "#7b3294"),
    BioEvent.PSP: ("PSP", "#1b9e77"),
}
STIM_COLOUR = "0.4"
DEVICE_COLOURS = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
LINK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
PHASE_SHADES = ("#e8eef7", "#f7ece4")
FONT = 11


def _raster_rows(node: SpikingNode) -> int:
    if node.bio is not None:
        return 4 if node.bio_size == 1 else node.bio_size
    return sum(node.sizes.values())


def _shade_phases(ax, phases, label: str = "") -> None:
    """Shade each phase; ``label`` "above" names them over the axes, "inside" along its top edge."""
    for i, (name, start, end) in enumerate(phases):
        ax.axvspan(start, end, color=PHASE_SHADES[i % 2], zorder=0, lw=0)
        if i:
            ax.axvline(start, color="0.55", lw=0.8, ls="--", zorder=0.5)
        if label:
            ax.annotate(name, xy=((start + end) / 2, 1.0), xycoords=ax.get_xaxis_transform(), ha="center",
                        xytext=(0, 16 if label == "above" else -3), textcoords="offset points",
                        va="bottom" if label == "above" else "top", fontsize=FONT, fontweight="bold",
                        color="0.3", annotation_clip=False, gid="phase")


def _legend(ax, handles=None, **kw) -> None:
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False, fontsize=FONT - 1,
              borderaxespad=0.0, handlelength=1.6, **kw)


def _draw_population_raster(ax, node: SpikingNode, colours: dict) -> None:
    ticks, labels, offset = [], [], 0
    for pop, (t, ids) in node.populations.items():
        size = node.sizes[pop]
        y = offset + ids
        ax.vlines(t, y - 0.4, y + 0.4, color=colours[(node.name, pop)], lw=0.9 if size < 20 else 0.5)
        ticks.append(offset + (size - 1) / 2)
        labels.append(pop if size == 1 else f"{pop}\n({size} neurons)")
        offset += size
        if offset < sum(node.sizes.values()):
            ax.axhline(offset - 0.5, color="0.6", lw=0.6)
    ax.set_yticks(ticks, labels)
    ax.set_ylim(offset - 0.5, -0.5)
    handles = [Line2D([], [], color=colours[(node.name, pop)], lw=2, label=f"{pop} ({len(t)} spikes)")
               for pop, (t, _) in node.populations.items()]
    _legend(ax, handles)


def _draw_bio_raster(ax, node: SpikingNode) -> None:
    t, ids, types = node.bio
    st, sid = node.stimuli
    handles = []
    if node.bio_size == 1:  # one neuron: a row per kind of event, stimuli on top
        rows = [("stimuli", STIM_COLOUR, st)] + [(lab, col, t[types == k]) for k, (lab, col) in BIO_STYLE.items()]
        for y, (lab, col, times) in enumerate(rows):
            ax.vlines(times, y - 0.38, y + 0.38, color=col, lw=0.9)
            handles.append(Line2D([], [], color=col, lw=2, label=f"{lab} ({len(times)})"))
        ax.set_yticks(range(len(rows)), [r[0] for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
    else:  # a row per neuron: events coloured by type, stimuli as short ticks along the row's top edge
        ax.vlines(st, sid - 0.45, sid - 0.3, color=STIM_COLOUR, lw=0.7)
        handles.append(Line2D([], [], color=STIM_COLOUR, lw=2, label=f"stimuli ({len(st)})"))
        for k, (lab, col) in BIO_STYLE.items():
            sel = types == k
            half = 0.12 if k == BioEvent.PSP else 0.25
            ax.vlines(t[sel], ids[sel] + 0.05 - half, ids[sel] + 0.05 + half, color=col, lw=0.8)
            handles.append(Line2D([], [], color=col, lw=2, label=f"{lab} ({int(sel.sum())})"))
        ax.set_ylim(node.bio_size - 0.5, -0.5)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.set_ylabel("neuron", fontsize=FONT)
    _legend(ax, handles)


def _rate(times: np.ndarray, edges: np.ndarray, neurons: int) -> np.ndarray:
    counts, _ = np.histogram(times, edges)
    return counts / np.diff(edges) / max(neurons, 1)


def _draw_rates(ax, data: SessionData, colours: dict, edges: np.ndarray) -> None:
    names = [pop for n in data.nodes for pop in n.populations]
    for node in data.nodes:
        for pop, (t, _) in node.populations.items():
            label = pop if names.count(pop) == 1 else f"{node.name}.{pop}"
            ax.stairs(_rate(t, edges, node.sizes[pop]), edges, color=colours[(node.name, pop)], lw=1.8, label=label,
                      baseline=None)
        if node.bio is not None:
            t, _, types = node.bio
            aps = np.isin(types, (BioEvent.STIMULATED_AP, BioEvent.SPONTANEOUS_AP))
            ax.stairs(_rate(t[aps], edges, node.bio_size), edges, color=BIO_STYLE[BioEvent.STIMULATED_AP][1], lw=1.8,
                      label=f"{node.name} APs", baseline=None)
            ax.stairs(_rate(t[types == BioEvent.PSP], edges, node.bio_size), edges,
                      color=BIO_STYLE[BioEvent.PSP][1], lw=1.4, ls="--", label=f"{node.name} PSPs", baseline=None)
    ax.set_ylabel("rate per neuron\n(Hz)", fontsize=FONT)
    ax.set_ylim(bottom=0)
    if names or any(n.bio is not None for n in data.nodes):
        _legend(ax)


def _draw_resistance(ax, data: SessionData, end: float) -> None:
    colour = {dev: DEVICE_COLOURS[i % len(DEVICE_COLOURS)] for i, dev in enumerate(data.resistance)}
    for dev, (t, r) in data.resistance.items():
        ax.plot(np.append(t, max(end, t[-1])), np.append(r, r[-1]) / 1e3, drawstyle="steps-post", color=colour[dev],
                lw=1.8, label=dev, zorder=2)
    for dev, (t, r_after, ltp) in data.pulses.items():
        # a pulse marks the step it caused, pointing the way the resistance went
        for sel, marker in ((ltp, "v"), (~ltp, "^")):
            ax.plot(t[sel], r_after[sel] / 1e3, ls="none", marker=marker, ms=4.5, mew=0,
                    color=colour[dev], zorder=3)
    ax.set_ylabel("resistance\n(kΩ)", fontsize=FONT)
    lo, hi = ax.get_ylim()
    if hi - lo < 1.0:  # a flat trace: give it room rather than magnify the last digits
        lo, hi = (lo + hi) / 2 - 0.5, (lo + hi) / 2 + 0.5
    ax.set_ylim(lo, hi + (0.2 * (hi - lo) if data.phases else 0.0))  # headroom for the phase names
    ltp = sum(int(p[2].sum()) for p in data.pulses.values())
    ltd = sum(int((~p[2]).sum()) for p in data.pulses.values())
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="none", marker="v", color="0.3", ms=6, label=f"LTP pulse ({ltp})"),
                Line2D([], [], ls="none", marker="^", color="0.3", ms=6, label=f"LTD pulse ({ltd})")]
    _legend(ax, handles)


def _draw_latency(ax, latency: dict[str, np.ndarray]) -> None:
    """Histograms on a log axis in µs (a latency <= 0 cannot be drawn there; build_figure says how many)."""
    us = {label: v * 1e6 for label, v in latency.items()}
    positive = np.concatenate([np.zeros(0), *(v[v > 0] for v in us.values())])
    ax.set_xscale("log")
    if not len(positive):
        ax.text(0.5, 0.5, "no packets received", transform=ax.transAxes, ha="center", va="center", fontsize=FONT)
        return
    lo, hi = math.log10(positive.min()), math.log10(positive.max())
    bins = np.logspace(lo - 0.02, hi + 0.02, max(10, round(25 * (hi - lo))) + 1)  # 25 bins a decade
    for i, (label, v) in enumerate(us.items()):
        colour = LINK_COLOURS[i % len(LINK_COLOURS)]
        if len(v):
            p50, p99 = np.percentile(v, (50, 99))
            ax.hist(v[v > 0], bins, histtype="step", lw=1.6, color=colour,
                    label=f"{label}\n  {len(v)} packets, p50 {p50:,.0f} µs, p99 {p99:,.0f} µs")
        else:
            ax.plot([], [], color=colour, lw=1.6, label=f"{label}\n  no packets")
    ax.set_xlim(bins[0] / 1.3, bins[-1] * 1.3)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.7)
    ax.set_xlabel("latency: receive − send (µs)", fontsize=FONT)
    ax.set_ylabel("packets per bin", fontsize=FONT)
    ax.grid(True, which="major", color="0.88", lw=0.7)
    _legend(ax, labelspacing=0.5)


def build_figure(session_dir: str | Path, rate_bin: float = 1.0) -> Figure:
    """The session's figure (not saved): axes are, top to bottom, one raster per spiking node, the rates,
    the resistances (only with memristors), the latencies. ``rate_bin`` is the rate panel's bin [s]."""
    if not rate_bin > 0:
        raise ValueError(f"rate_bin must be > 0 s, got {rate_bin}")
    data = read_session(session_dir)
    notes = list(data.notes)
    dropped = sum(int((v <= 0).sum()) for v in data.latency.values())
    if dropped:
        notes.append(f"{dropped} packets with receive ≤ send time left out of the latency histograms")
    end = data.duration
    starts = [t.min() for n in data.nodes for t, _ in n.populations.values() if len(t)]
    start = min(0.0, *starts) if starts else 0.0

    heights = [max(0.9, min(2.6, 0.36 * _raster_rows(n) + 0.3)) for n in data.nodes] + [1.5]
    if data.resistance:
        heights.append(1.7)
    heights += [0.05, 2.1]  # a spacer: the latency panel's x axis is not time
    fig = Figure(figsize=(13, 2.0 + sum(heights) + 0.22 * len(notes)), layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    time_axes = []
    for i in range(len(heights) - 2):
        time_axes.append(fig.add_subplot(gs[i], sharex=time_axes[0] if time_axes else None))
    lat_ax = fig.add_subplot(gs[-1])

    colours, k = {}, 0
    for node in data.nodes:
        for pop in node.populations:
            colours[(node.name, pop)] = POP_COLOURS[k % len(POP_COLOURS)]
            k += 1
    for ax, node in zip(time_axes, data.nodes):
        if node.bio is not None:
            _draw_bio_raster(ax, node)
        else:
            _draw_population_raster(ax, node, colours)
        ax.set_title(f"{node.name} ({node.kind})", loc="left", fontsize=FONT, pad=3)
        ax.tick_params(axis="y", length=0)
    edges = np.arange(math.floor(start / rate_bin) * rate_bin, end + rate_bin * 0.999, rate_bin)
    edges = edges if len(edges) > 1 else np.array([start, start + rate_bin])
    rate_ax = time_axes[len(data.nodes)]
    _draw_rates(rate_ax, data, colours, edges)
    rate_ax.set_title(f"rates ({rate_bin:g} s bins)", loc="left", fontsize=FONT, pad=3)
    res_ax = time_axes[-1] if data.resistance else None
    if res_ax is not None:
        _draw_resistance(res_ax, data, end)
        res_ax.set_title("memristor resistance", loc="left", fontsize=FONT, pad=3)
    for i, ax in enumerate(time_axes):
        _shade_phases(ax, data.phases, label="above" if i == 0 else "inside" if ax is res_ax else "")
        ax.tick_params(labelsize=FONT - 1)
        if ax is not time_axes[-1]:
            ax.tick_params(labelbottom=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    time_axes[-1].set_xlabel("session time (s)", fontsize=FONT)
    time_axes[0].set_xlim(start, end)

    _draw_latency(lat_ax, data.latency)
    lat_ax.set_title("link latency", loc="left", fontsize=FONT, pad=3)
    lat_ax.tick_params(labelsize=FONT - 1)

    panels = time_axes[:1] * bool(data.nodes) + [rate_ax] + [res_ax] * bool(res_ax) + [lat_ax]
    for letter, ax in zip("abcd", panels):
        ax.annotate(letter, xy=(0, 1), xycoords="axes fraction", xytext=(-8, 14), textcoords="offset points",
                    ha="right", va="bottom", fontsize=FONT + 4, fontweight="bold", gid="panel")

    head = data.network + (f": {data.description}" if data.description else "")
    sub = f"session {data.folder.name}   {data.created[:19].replace('T', ' ')} UTC   {data.duration:.1f} s, " \
          f"{data.outcome}" + (f"   spikewire @ {data.commit}" if data.commit else "")
    if data.merged_from:
        sub += f"\nmerged from sites {', '.join(data.merged_from)}, on {data.merged_from[0]}'s clock"
    fig.suptitle(f"{head}\n{sub}", fontsize=FONT + 2, x=0.01, ha="left")
    if notes:
        fig.supxlabel("\n".join(f"⚠ {n}" for n in notes), fontsize=FONT - 1, color="#b2182b", x=0.01, ha="left")
    return fig


def plot_session(session_dir: str | Path, out_path: str | Path, dpi: int = 120) -> Path:
    """Draw a session folder's figure (see the module docstring) into ``out_path``; the format follows its
    suffix (.png, .pdf, .svg). Returns the path written."""
    out = Path(out_path)
    fig = build_figure(session_dir)
    fig.savefig(out, dpi=dpi)
    return out
