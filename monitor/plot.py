"""One figure of a recorded session: rasters, rates, device resistance across the protocol, link latency.

``plot_session(folder, "fig.png")`` reads a session folder (config/session.py's one reader) and draws,
against session time (seconds since the run's t0), from what each node's kind declares (nodes/element.py):

    a  a raster per node with populations: each SPIKES population's spikes as its node sent them, and each
       BIO_EVENTS population's events by type (stimulated AP, spontaneous AP, PSP) next to the stimuli its
       STIMULI input received
    b  rates per neuron of every population (a typed-event population's APs and PSPs apart), in bins
    c  each device's resistance, exact at every plasticity pulse (status.jsonl's pulse log) and sampled by
       every status message in between; a node of more than ``AGGREGATE_ABOVE`` devices as each device
       set's mean with its min-max and 10-90 % bands, so a 1,000-device crossbar is three lines, not 1,000
    d  each link's latency histogram: the receiver's logged time minus the packet's send_time, for every
       packet it received (spikes, stimuli, typed events and loop probes alike, as the run summary counts)
    e  (only with such device sets) each set's weight matrix at the run's end, a heatmap of its declared
       quantity laid out by the two coordinates of its devices' declared address (a crossbar's wordline x
       bitline: pre x post when its table wires them so), and a histogram of the values at start and end

Protocol phases are shaded on every time axis and named. Panel c is left out when no device was recorded
while the run went. The catch: everything comes from what the nodes journaled, so a node killed mid-run
appears up to its last journal flush; a damaged journal tail or status line is skipped with a
``DamagedSessionWarning`` and a note under the figure. Latencies assume one clock: true on one machine
(provenance.json's link clock offsets are all 0) and in a session ``spikewire merge`` made of the sites'
sessions (every time put on its reference site's clock); a single site's session draws only its own nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from spikewire.config.session import (DamagedSessionWarning, RecordedSession, SessionError, link_source,
                                      read_session as read_recorded)
from spikewire.nodes.element import Role
from spikewire.nodes.figures import AGGREGATE_ABOVE
from spikewire.streams.journal import RECEIVED
from spikewire.streams.wire import DATA_KINDS, BioEvent, empty_events

__all__ = ["DamagedSessionWarning", "DeviceSet", "NotASession", "SessionData", "build_figure", "plot_session",
           "read_session"]

NotASession = SessionError
"""The folder is not a session (config/session.py's SessionError, under the name plot used first)."""


# --- what the figure shows -------------------------------------------------------------------------------

@dataclass
class TypedEvents:
    """A population's typed events (BIO_EVENTS: action potentials and PSPs), in session seconds."""

    t: np.ndarray
    ids: np.ndarray
    types: np.ndarray
    """streams.wire.BioEvent of each event."""
    size: int
    stimuli: tuple[np.ndarray, np.ndarray] | None = None
    """(times, target ids) of the stimuli the population's STIMULI input received (None: it has none)."""


@dataclass
class SpikingNode:
    """One node's neurons, in session seconds: its SPIKES populations and its BIO_EVENTS populations, in
    the order its kind declares them."""

    name: str
    kind: str
    populations: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """population -> (times, neuron ids) of the spikes it sent."""
    sizes: dict[str, int] = field(default_factory=dict)
    """population -> neurons (as declared, else the highest id seen + 1)."""
    typed: dict[str, TypedEvents] = field(default_factory=dict)
    """population -> its typed events."""

    @property
    def bio(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(times, ids, types) of the node's first typed-event population (None: it has none)."""
        first = next(iter(self.typed.values()), None)
        return None if first is None else (first.t, first.ids, first.types)

    @property
    def bio_size(self) -> int:
        first = next(iter(self.typed.values()), None)
        return 0 if first is None else first.size

    @property
    def stimuli(self) -> tuple[np.ndarray, np.ndarray] | None:
        first = next(iter(self.typed.values()), None)
        return None if first is None else first.stimuli


@dataclass
class DeviceSet:
    """The devices of one set (synapse group) of a node with more than ``AGGREGATE_ABOVE`` devices."""

    node: str
    name: str
    quantity: str
    unit: str
    names: list[str]
    addresses: list[dict[str, int]]
    """Each device's declared address (``{"wordline": 3, "bitline": 7}``), in ``names``' order."""
    steps: list[tuple[np.ndarray, np.ndarray]]
    """Each device's (session times, values) step function."""
    pulses: tuple[int, int]
    """LTP and LTD pulses applied to the set."""

    @property
    def label(self) -> str:
        return f"{self.node}.{self.name}"

    def at(self, t: np.ndarray) -> np.ndarray:
        """Every device's value at times ``t`` (devices x times), each held from its first record back."""
        out = np.empty((len(self.steps), len(t)))
        for i, (times, values) in enumerate(self.steps):
            out[i] = values[np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(values) - 1)]
        return out

    def start_end(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([v[0] for _, v in self.steps]), np.array([v[-1] for _, v in self.steps])

    def grid(self) -> tuple[np.ndarray, tuple[str, str], tuple[int, int]] | None:
        """The values at the end laid out by the two address coordinates (NaN where no device sits), their
        names and first values; None when the devices do not have a two-coordinate address."""
        keys = list(self.addresses[0]) if self.addresses else []
        if len(keys) != 2 or any(list(a) != keys for a in self.addresses):
            return None
        rows = np.array([a[keys[0]] for a in self.addresses])
        cols = np.array([a[keys[1]] for a in self.addresses])
        grid = np.full((rows.max() - rows.min() + 1, cols.max() - cols.min() + 1), np.nan)
        grid[rows - rows.min(), cols - cols.min()] = self.start_end()[1]
        return grid, (keys[0], keys[1]), (int(rows.min()), int(cols.min()))


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
    device_sets: list[DeviceSet] = field(default_factory=list)
    """Devices of nodes with more than ``AGGREGATE_ABOVE`` of them, by set (not in ``resistance``)."""


def read_session(session_dir: str | Path) -> SessionData:
    """What the figure of a session folder shows (config/session.py reads the folder). Raises
    ``FileNotFoundError`` if it does not exist and ``NotASession`` if it is not a session; warns
    ``DamagedSessionWarning`` for the parts it has to skip."""
    s = read_recorded(session_dir)
    nodes = [node for node in (_spiking_node(s, name) for name in s.network.nodes if name in s.journals)
             if node.populations or node.typed]
    resistance, pulses, sets = _devices(s)
    phases = [(p.name, p.start, p.stop) for p in s.phases()]
    duration = s.end_s if s.end_s > 0 else max((b for _, _, b in s.network.phases), default=1.0)
    phases = [(n, a, min(b, duration)) for n, a, b in phases if a < duration]
    source = s.provenance.get("source") or {}
    commit = (source.get("commit") or "")[:10] + ("+dirty" if source.get("dirty") else "")
    return SessionData(folder=s.folder, network=s.summary.get("network") or s.network.name,
                       description=s.network.description, created=s.provenance.get("created", ""),
                       outcome=s.outcome or "unfinished", commit=commit, t0=float(s.t0), duration=float(duration),
                       phases=phases, nodes=nodes, resistance=resistance, pulses=pulses,
                       latency=_latencies(s), notes=[_note(s, d) for d in s.damage],
                       merged_from=[str(m.get("site")) for m in s.provenance.get("merged_from") or []],
                       device_sets=sets)


def _note(s: RecordedSession, damage: str) -> str:
    """A damage message for the figure's footer: paths inside the session folder made relative to it."""
    return damage.replace(f"{s.folder}/", "").removeprefix(f"{s.folder}: ")


def _spiking_node(s: RecordedSession, name: str) -> SpikingNode:
    """A node's populations as its kind declares them, with what it sent on each one's output port."""
    spec = s.network.nodes[name]
    node = SpikingNode(name, spec.kind)
    sent = s.sent(name)
    for pop in spec.declaration.populations:
        port = spec.outputs.get(pop.port)
        if port is None or port.role not in (Role.SPIKES, Role.BIO_EVENTS):
            continue
        ev = sent.get(pop.port, (None, empty_events()))[1]
        size = int(pop.size or (ev["id"].max() + 1 if len(ev) else 1))
        if port.role == Role.SPIKES:
            node.populations[pop.name] = (ev["t"] - s.t0, ev["id"].astype(np.int64))
            node.sizes[pop.name] = size
            continue
        stimuli = None
        feed = spec.inputs.get(pop.input) if pop.input else None
        if feed is not None and feed.role == Role.STIMULI:
            st = s.received(name, pop.input)
            stimuli = (st["t"] - s.t0, st["id"].astype(np.int64))
        node.typed[pop.name] = TypedEvents(ev["t"] - s.t0, ev["id"].astype(np.int64),
                                           np.rint(ev["value"]).astype(np.int64), size, stimuli)
    return node


def _devices(s: RecordedSession) -> tuple[dict, dict, list[DeviceSet]]:
    """Resistance step functions and pulses of every device recorded while the run went (named by device,
    or node.device when devices of several nodes are drawn); the devices of a node with more than
    ``AGGREGATE_ABOVE`` of them go by set into the third instead."""
    shown = [d for d in s.devices() if d.observed]
    per_node: dict[str, int] = {}
    for d in shown:
        per_node[d.node] = per_node.get(d.node, 0) + 1
    big = {node for node, n in per_node.items() if n > AGGREGATE_ABOVE}
    sets: dict[tuple[str, str], DeviceSet] = {}
    for d in shown:
        if d.node not in big:
            continue
        group = d.declared.group if d.declared is not None else "(undeclared)"
        ds = sets.get((d.node, group))
        if ds is None:
            ds = sets[(d.node, group)] = DeviceSet(
                d.node, group, d.declared.quantity if d.declared else "resistance",
                d.declared.unit if d.declared else "ohm", [], [], [], (0, 0))
        ds.names.append(d.name)
        ds.addresses.append(dict(d.declared.address) if d.declared is not None else {})
        ds.steps.append(d.steps())
        final = s.final(d.node)
        counted = final.devices.get(d.name) if final is not None else None
        if counted is not None:  # the node's own counts: exact, where its pulse log keeps at most some a second
            ltp, ltd = counted.ltp, counted.ltd
        else:
            ltp = sum(1 for p in d.pulses if p.ltp)
            ltd = len(d.pulses) - ltp
        ds.pulses = (ds.pulses[0] + ltp, ds.pulses[1] + ltd)
    shown = [d for d in shown if d.node not in big]
    prefixed = len({d.node for d in shown}) > 1
    resistance, pulses = {}, {}
    for d in shown:
        label = f"{d.node}.{d.name}" if prefixed else d.name
        resistance[label] = d.steps()
        if d.pulses:
            pulses[label] = (np.array([p.t for p in d.pulses]), np.array([p.r_after for p in d.pulses]),
                             np.array([p.ltp for p in d.pulses]))
    return resistance, pulses, list(sets.values())


def _latencies(s: RecordedSession) -> dict[str, np.ndarray]:
    """link label -> receive - send [s], in network-file order. A node journals a packet once however many
    of its ports the upstream output feeds, so links from one output to one node share one histogram."""
    lat: dict[tuple[str, str], list[float]] = {}
    links = [(link_source(ln.label), f"{ln.dst_node}.{ln.dst_port}") for ln in s.network.links]
    for src, dst in links:  # every link, so one that carried nothing shows as such
        lat.setdefault((src, dst.split(".", 1)[0]), [])
    for node, journal in s.journals.items():
        for rec in journal.records:
            if rec.direction == RECEIVED and rec.packet is not None and rec.packet.kind in DATA_KINDS:
                lat.setdefault((rec.port, node), []).append(rec.logged - rec.packet.send_time)
    out = {}
    for (src, node), values in lat.items():
        targets = [dst for frm, dst in links if frm == src and dst.startswith(node + ".")]
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


@dataclass
class _Raster:
    """One raster panel: a node's SPIKES populations together, or one of its typed-event populations."""

    node: SpikingNode
    title: str
    typed: TypedEvents | None = None

    @property
    def rows(self) -> int:
        if self.typed is not None:
            return 4 if self.typed.size == 1 else self.typed.size
        return sum(self.node.sizes.values())


def _rasters(nodes: list[SpikingNode]) -> list[_Raster]:
    """The raster panels, node by node; a panel is titled by its node alone unless the node has several
    and the population is not named after it."""
    out = []
    for node in nodes:
        several = len(node.typed) + bool(node.populations) > 1
        title = f"{node.name} ({node.kind})"
        if node.populations:
            out.append(_Raster(node, title))
        for pop, typed in node.typed.items():
            out.append(_Raster(node, f"{node.name}.{pop} ({node.kind})" if several and pop != node.name else title,
                               typed))
    return out


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


def _draw_bio_raster(ax, typed: TypedEvents) -> None:
    t, ids, types = typed.t, typed.ids, typed.types
    st, sid = typed.stimuli if typed.stimuli is not None else (np.zeros(0), np.zeros(0, np.int64))
    handles = []
    if typed.size == 1:  # one neuron: a row per kind of event, stimuli on top
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
        ax.set_ylim(typed.size - 0.5, -0.5)
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
        for pop, typed in node.typed.items():
            who = node.name if pop == node.name else f"{node.name}.{pop}"
            aps = np.isin(typed.types, (BioEvent.STIMULATED_AP, BioEvent.SPONTANEOUS_AP))
            ax.stairs(_rate(typed.t[aps], edges, typed.size), edges, color=BIO_STYLE[BioEvent.STIMULATED_AP][1],
                      lw=1.8, label=f"{who} APs", baseline=None)
            ax.stairs(_rate(typed.t[typed.types == BioEvent.PSP], edges, typed.size), edges,
                      color=BIO_STYLE[BioEvent.PSP][1], lw=1.4, ls="--", label=f"{who} PSPs", baseline=None)
    ax.set_ylabel("rate per neuron\n(Hz)", fontsize=FONT)
    ax.set_ylim(bottom=0)
    if names or any(n.typed for n in data.nodes):
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
    for i, ds in enumerate(data.device_sets):
        _draw_set_over_time(ax, ds, end, SET_COLOURS[i % len(SET_COLOURS)])
    ax.set_ylabel("resistance\n(kΩ)", fontsize=FONT)
    lo, hi = ax.get_ylim()
    if hi - lo < 1.0:  # a flat trace: give it room rather than magnify the last digits
        lo, hi = (lo + hi) / 2 - 0.5, (lo + hi) / 2 + 0.5
    ax.set_ylim(lo, hi + (0.2 * (hi - lo) if data.phases else 0.0))  # headroom for the phase names
    ltp = sum(int(p[2].sum()) for p in data.pulses.values()) + sum(ds.pulses[0] for ds in data.device_sets)
    ltd = sum(int((~p[2]).sum()) for p in data.pulses.values()) + sum(ds.pulses[1] for ds in data.device_sets)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="none", marker="v", color="0.3", ms=6, label=f"LTP pulse ({ltp})"),
                Line2D([], [], ls="none", marker="^", color="0.3", ms=6, label=f"LTD pulse ({ltd})")]
    _legend(ax, handles)


SET_COLOURS = ("#6a3d9a", "#b15928", "#1f78b4", "#33a02c")
SET_SAMPLES = 400
"""Times a device set's mean and bands are evaluated at across the run."""


def _draw_set_over_time(ax, ds: DeviceSet, end: float, colour: str) -> None:
    """A device set as its mean, a 10-90 % band and a min-max band: three legend entries, not one per device."""
    t0 = min(0.0, min(float(t[0]) for t, _ in ds.steps))
    t = np.linspace(t0, end, SET_SAMPLES)
    v = ds.at(t) / 1e3
    ax.fill_between(t, v.min(axis=0), v.max(axis=0), step="post", color=colour, alpha=0.15, lw=0,
                    label=f"{ds.label} min–max", zorder=1)
    lo, hi = np.percentile(v, (10, 90), axis=0)
    ax.fill_between(t, lo, hi, step="post", color=colour, alpha=0.3, lw=0, label=f"{ds.label} 10–90 %", zorder=1.5)
    ax.plot(t, v.mean(axis=0), drawstyle="steps-post", color=colour, lw=1.8, zorder=2,
            label=f"{ds.label} mean of {len(ds.names)}")


def _draw_set_matrix(ax, cax, ds: DeviceSet) -> bool:
    """The set's values at the end as a heatmap by address (False: its devices have no 2-D address)."""
    laid = ds.grid()
    if laid is None:
        ax.text(0.5, 0.5, "no two-coordinate address to lay the devices out by", transform=ax.transAxes,
                ha="center", va="center", fontsize=FONT - 1)
        ax.set_axis_off()
        cax.set_axis_off()
        return False
    grid, (row_key, col_key), (row0, col0) = laid
    image = ax.imshow(np.ma.masked_invalid(grid) / 1e3, aspect="auto", interpolation="nearest", cmap="viridis",
                      extent=(col0 - 0.5, col0 + grid.shape[1] - 0.5, row0 + grid.shape[0] - 0.5, row0 - 0.5))
    image.set_gid("device-heatmap")
    ax.set_xlabel(col_key, fontsize=FONT)
    ax.set_ylabel(row_key, fontsize=FONT)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    bar = ax.figure.colorbar(image, cax=cax)
    bar.set_label(f"{ds.quantity} at the end (k{'Ω' if ds.unit == 'ohm' else ds.unit})", fontsize=FONT - 1)
    ax.set_title(f"{ds.label}: {ds.quantity} by {row_key} × {col_key} ({len(ds.names)} devices)", loc="left",
                 fontsize=FONT, pad=3)
    return True


def _draw_set_histogram(ax, ds: DeviceSet) -> None:
    start, end = ds.start_end()
    k = np.concatenate([start, end]) / 1e3
    lo, hi = float(k.min()), float(k.max())
    bins = np.linspace(lo - 0.5, hi + 0.5, 31) if hi - lo < 1e-9 else np.linspace(lo, hi, 31)
    ax.hist(start / 1e3, bins, histtype="step", lw=1.4, color="0.45", label=f"start (mean {start.mean() / 1e3:.2f})")
    ax.hist(end / 1e3, bins, histtype="stepfilled", alpha=0.6, color=SET_COLOURS[0],
            label=f"end (mean {end.mean() / 1e3:.2f}, {end.min() / 1e3:.2f}–{end.max() / 1e3:.2f})")
    ax.set_xlabel(f"{ds.quantity} (k{'Ω' if ds.unit == 'ohm' else ds.unit})", fontsize=FONT)
    ax.set_ylabel("devices", fontsize=FONT)
    ax.set_title(f"{ds.label}: distribution", loc="left", fontsize=FONT, pad=3)
    ax.legend(loc="upper center", fontsize=FONT - 2, frameon=False)


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
    the resistances (only with memristors), the latencies, then a weight matrix and histogram per device set
    of a node with more than ``AGGREGATE_ABOVE`` devices. ``rate_bin`` is the rate panel's bin [s]."""
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
    rasters = _rasters(data.nodes)

    devices = bool(data.resistance or data.device_sets)
    heights = [max(0.9, min(2.6, 0.36 * r.rows + 0.3)) for r in rasters] + [1.5]
    if devices:
        heights.append(1.7)
    heights += [0.05, 2.1]  # a spacer: the latency panel's x axis is not time
    n_time = len(heights) - 2
    heights += [3.0] * len(data.device_sets)  # a weight matrix and a histogram per device set
    fig = Figure(figsize=(13, 2.0 + sum(heights) + 0.22 * len(notes)), layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    time_axes = []
    for i in range(n_time):
        time_axes.append(fig.add_subplot(gs[i], sharex=time_axes[0] if time_axes else None))
    lat_ax = fig.add_subplot(gs[n_time + 1])
    set_axes = []
    for i, ds in enumerate(data.device_sets):
        cells = gs[n_time + 2 + i].subgridspec(1, 3, width_ratios=[1.6, 0.05, 1.0])
        matrix, bar, hist = (fig.add_subplot(cells[j]) for j in range(3))
        _draw_set_matrix(matrix, bar, ds)
        _draw_set_histogram(hist, ds)
        set_axes.append(matrix)

    colours, k = {}, 0
    for node in data.nodes:
        for pop in node.populations:
            colours[(node.name, pop)] = POP_COLOURS[k % len(POP_COLOURS)]
            k += 1
    for ax, raster in zip(time_axes, rasters):
        if raster.typed is not None:
            _draw_bio_raster(ax, raster.typed)
        else:
            _draw_population_raster(ax, raster.node, colours)
        ax.set_title(raster.title, loc="left", fontsize=FONT, pad=3)
        ax.tick_params(axis="y", length=0)
    edges = np.arange(math.floor(start / rate_bin) * rate_bin, end + rate_bin * 0.999, rate_bin)
    edges = edges if len(edges) > 1 else np.array([start, start + rate_bin])
    rate_ax = time_axes[len(rasters)]
    _draw_rates(rate_ax, data, colours, edges)
    rate_ax.set_title(f"rates ({rate_bin:g} s bins)", loc="left", fontsize=FONT, pad=3)
    res_ax = time_axes[-1] if devices else None
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

    panels = time_axes[:1] * bool(rasters) + [rate_ax] + [res_ax] * bool(res_ax) + [lat_ax] + set_axes[:1]
    for letter, ax in zip("abcde", panels):
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


IMAGE_FORMATS = (".png", ".pdf", ".svg")


def image_path(out_path: str | Path) -> Path:
    """Where a figure asked for as ``out_path`` is written: .png added when it has no suffix (as matplotlib
    would, silently), ValueError (one line) for a suffix that is not an image format we write."""
    out = Path(out_path)
    if not out.suffix:
        return out.with_name(out.name + ".png")
    if out.suffix.lower() not in IMAGE_FORMATS:
        raise ValueError(f"{str(out)!r}: cannot write a {out.suffix!r} image; give a file name ending in "
                         f"{', '.join(IMAGE_FORMATS)}")
    return out


def plot_session(session_dir: str | Path, out_path: str | Path, dpi: int = 120) -> Path:
    """Draw a session folder's figure (see the module docstring) into ``out_path`` (``image_path``: the
    format follows its suffix, .png, .pdf or .svg; .png when it has none). Returns the path written."""
    out = image_path(out_path)
    fig = build_figure(session_dir)
    fig.savefig(out, dpi=dpi)
    return out
