"""A recorded session (config/session.py) as one NWB 2 file, for analysis tools and archives (DANDI).

Everything comes from the session folder alone. Times are seconds from the run's t0 (session time) and
``session_start_time`` is t0 in UTC. The file holds::

    general        session_description (the network's), session_id (the folder's name), notes (command
                   line, git commit, package versions, damage found, network.toml as run), protocol (the
                   phases), one device per node, subject (in silico, or what a rig session lacks)
    units          one unit per neuron of every silicon population and biological node (per id seen, for
                   another node's SPIKE port): spike_times are the SPIKE and BIO events each node sent.
                   Columns node, node_kind, site, port, population, neuron_id; per spike, bio_event_type
                   (1 stimulated AP, 2 spontaneous AP, -1 a plain spike). PSPs are no spikes: events/psps.
    events/stimuli            STIMULUS events sent (node, port, target, amplitude [V])
    events/psps               PSPs a biological node reported (node, neuron_id)
    events/synaptic_events    SPIKE events a memristor sent: weighted synaptic events (node, port, target, value)
    events/plasticity_pulses  pulses from status.jsonl's logs (node, device, direction, voltage,
                              duration = pulse width, r_before, r_after)
    acquisition/resistance_<device>   TimeSeries [ohm], continuity "step": r_start at 0, every status sample
                              and every pulse's exact r_after, in time order
    epochs         the protocol phases that started (tags = [phase], completed); a phase the run stopped in
                   stops when the run did
    processing/misc/links, processing/misc/journals   per-link traffic and latency; journal integrity

The catch: a journal records what left its node. A node that computes ahead has counted spikes it had not
sent when the run stopped, so summary.json can exceed the units here by up to its lookahead's worth
(20 ms by default). A journal with a damaged tail is exported up to the damage, with a
DamagedSessionWarning that names the skipped bytes (also in notes and processing/misc/journals).

A killed run (its supervisor SIGKILLed, a site losing power) is exported as far as it goes: every problem
is one DamagedSessionWarning, listed in ``notes`` and counted in ``session_description``. What is
recovered, and how:

* no t0 in provenance.json: t0 = a status line's ``t - elapsed`` (exact: ``elapsed`` counts from t0), else
  the last node's ready time + START_MARGIN, else the first journal record (an upper bound);
* no summary.json: the run's end is its last journal record or status line; each memristor's resistance
  at t0 is the first pulse's ``r_before`` or the first status sample, whichever came first (exact: only a
  pulse changes it); processing/misc/links is rebuilt from the journals (packets sent and received,
  latency);
* a node with no final report: its counts and pulses after its last status line are lost (said so);
  everything it sent is still in its journal.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pynwb
from hdmf.common import DynamicTable, VectorData
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.event import DurationVectorData, EventsTable, TimestampVectorData
from pynwb.file import Subject
from pynwb.misc import Units

from spikewire import __version__
from spikewire.config.network import Network, NetworkError, load_network
from spikewire.config.session import START_MARGIN
from spikewire.nodes.hub_bridge import OUT_SOUTHAMPTON
from spikewire.streams.journal import RECEIVED, SENT, ReadResult, read_journal
from spikewire.streams.wire import DATA_KINDS, EVENT_DTYPE, BioEvent, Kind

NOT_BIO = -1
"""``bio_event_type`` of a spike that is no biological event (a silicon neuron's)."""
SYNAPTIC_PORTS = {"hub_bridge": {OUT_SOUTHAMPTON}}
"""SPIKE ports that carry weighted synaptic events, not neurons' spikes (besides every memristor's)."""
NO_EVENTS = np.zeros(0, EVENT_DTYPE)


class SessionError(ValueError):
    """A folder that is not a session, or a part of one that cannot be read."""


class DamagedSessionWarning(UserWarning):
    """The session is exported, but a part of it was missing or damaged (the message names it)."""


@dataclass
class Session:
    """A session folder, read once. ``sent``: per node and output port, the kind and every event sent
    (loop probes left out); times stay on the local_clock, ``t0`` is the run's start on it."""

    folder: Path
    network: Network
    provenance: dict
    summary: dict
    status: list[dict]
    journals: dict[str, ReadResult]
    sent: dict[str, dict[str, tuple[Kind, np.ndarray]]]
    t0: float
    start: datetime  # t0 in UTC
    end_s: float  # session time at which the run stopped
    damage: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        _warn(self.damage, text)


def _warn(damage: list[str], text: str) -> None:
    damage.append(text)
    warnings.warn(text, DamagedSessionWarning, stacklevel=4)


def read_session(folder: str | Path) -> Session:
    """Read a session folder; SessionError if it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SessionError(f"{folder}: no such session folder")
    missing = [n for n in ("network.toml", "provenance.json", "journal") if not (folder / n).exists()]
    if missing:
        raise SessionError(f"{folder} is not a spikewire session folder (no {', '.join(missing)}); "
                           "`spikewire run NETWORK --session-dir DIR` writes one")
    try:
        network = load_network(folder / "network.toml", check_keys=False)  # reading a record needs no keys
    except NetworkError as e:
        raise SessionError(f"{folder / 'network.toml'}: {e}") from None
    damage: list[str] = []
    provenance = _read_json(folder / "provenance.json")
    summary = {}
    if (folder / "summary.json").exists():
        summary = _read_json(folder / "summary.json")
    else:
        _warn(damage, f"{folder}: no summary.json (the run did not finish); exporting what the journals hold")
    status = _read_status(folder / "status.jsonl", damage)
    run_here = provenance.get("nodes_run")
    if run_here:  # one site's session: its own nodes are the record (the others' are in their sites' sessions)
        import dataclasses

        network = dataclasses.replace(network, nodes={n: sp for n, sp in network.nodes.items() if n in run_here})
    journals = {}
    for node in network.nodes:
        path = folder / "journal" / f"{node}.swj"
        if not path.exists():
            _warn(damage, f"{path}: missing; node {node!r} is exported without its events")
            continue
        try:
            journals[node] = result = read_journal(path)
        except ValueError as e:  # killed before its header was written, or not a journal at all
            _warn(damage, f"{e}; node {node!r} is exported without its events")
            continue
        if result.skipped_bytes:
            _warn(damage, f"{path}: damaged tail ({result.problem}); skipped its last {result.skipped_bytes} "
                          f"bytes, kept {len(result.records)} records")
    t0 = provenance.get("t0_local_clock")
    if t0 is None:  # the supervisor itself was killed: provenance.json lacks what finish() writes
        t0, how = _recover_t0(provenance, status, journals)
        if t0 is None:
            raise SessionError(f"{folder}: the run never started (no t0, no status line, no node became ready "
                               "and no journal holds a record)")
        _warn(damage, f"{folder}: no t0 recorded (the run did not finish); t0 recovered {how}")
    _no_final_reports(network, summary, status, t0, damage)
    offset = _utc_minus_local(provenance)
    if offset is not None:
        start = datetime.fromtimestamp(t0 + offset, timezone.utc)
    else:
        start = datetime.fromisoformat(provenance["created"])
        _warn(damage, f"{folder}: no node event stamped with both UTC and local_clock; session_start_time "
                      "is the folder's creation, not t0")
    last = max([rec.logged for j in journals.values() for rec in j.records]
               + [line["t"] for line in status if _number(line.get("t"))], default=t0)
    sent = {node: sent_events(j) for node, j in journals.items()}
    return Session(folder, network, provenance, summary, status, journals, sent, t0, start,
                   summary.get("duration_s", last - t0), damage)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _recover_t0(provenance: dict, status: list[dict], journals: dict[str, ReadResult]) -> tuple[float | None, str]:
    """t0 of a run whose supervisor never wrote it, and how it was found (the best source first)."""
    exact = [line["t"] - line["elapsed"] for line in status
             if line.get("type") == "status" and _number(line.get("t")) and _number(line.get("elapsed"))]
    if exact:
        return statistics.median(exact), f"from {len(exact)} status lines (t - elapsed: exact)"
    readies = [ev["ready"]["local_clock"] for ev in provenance.get("nodes", {}).values()
               if isinstance(ev, dict) and "ready" in ev]
    if readies:
        return max(readies) + START_MARGIN, f"as the last node's ready time + {START_MARGIN} s (as the supervisor " \
                                            "picks it)"
    first = [j.records[0].logged for j in journals.values() if j.records]
    if first:
        return min(first), "as the first journal record's time (an upper bound: times may be late by up to a tick)"
    return None, ""


def _no_final_reports(network: Network, summary: dict, status: list[dict], t0: float, damage: list[str]) -> None:
    """One problem per node that sent no final report: what it did after its last status line is lost."""
    if summary and "nodes" not in summary:
        return  # a summary that does not say (an older one): nothing to judge by
    finals = {line.get("node") for line in status if line.get("type") == "final"}
    for name in network.nodes:
        if summary:
            if summary["nodes"].get(name, {}).get("final", True):
                continue
        elif name in finals:
            continue
        last = max((line["t"] for line in status if line.get("node") == name and _number(line.get("t"))), default=None)
        after = f"after its last status line (at {last - t0:.1f} s)" if last is not None else "(it has no status line)"
        _warn(damage, f"node {name!r} sent no final report (killed?): its counts and plasticity pulses {after} are "
                      "lost; its journal still has every packet it sent")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise SessionError(f"{path}: not JSON ({e})") from None


def _read_status(path: Path, damage: list[str]) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            out.append(json.loads(line))
        except ValueError:
            _warn(damage, f"{path}:{i + 1}: unreadable line skipped (the run stopped mid-write?)")
    return out


def _utc_minus_local(provenance: dict) -> float | None:
    """UTC epoch minus local_clock, from the node events the supervisor stamped with both at once."""
    offsets = [datetime.fromisoformat(ev["utc"]).timestamp() - ev["local_clock"]
               for events in provenance.get("nodes", {}).values() for ev in events.values()
               if isinstance(ev, dict) and "utc" in ev and "local_clock" in ev]
    return statistics.median(offsets) if offsets else None


def sent_events(journal: ReadResult) -> dict[str, tuple[Kind, np.ndarray]]:
    """Per output port: the kind and every event the node sent on it, loop probes left out."""
    parts: dict[str, list[np.ndarray]] = {}
    kinds: dict[str, Kind] = {}
    for rec in journal.records:
        if rec.direction == SENT and rec.packet is not None and rec.packet.kind != Kind.PROBE:
            kinds[rec.port] = rec.packet.kind
            parts.setdefault(rec.port, []).append(rec.packet.events)
    return {port: (kinds[port], np.concatenate(evs)) for port, evs in parts.items()}


# --- the file ---------------------------------------------------------------------------------------------
def export_nwb(session_dir: str | Path, out_path: str | Path, overwrite: bool = False, *,
               experimenter: str | list[str] | None = None, lab: str | None = None,
               institution: str | None = None, subject: Subject | None = None) -> Path:
    """Write the session in ``session_dir`` to ``out_path`` as NWB 2; return the path written.

    SessionError if ``session_dir`` is not a session; FileExistsError if ``out_path`` exists and not
    ``overwrite``. What is damaged or missing (a journal's tail, the summary) is exported as far as it goes,
    with a DamagedSessionWarning each. ``subject`` describes a real preparation (a rig's culture); without
    one a simulated session gets an in-silico subject, and a rig session one that says what is unknown."""
    out = Path(out_path)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give the file to write, like session.nwb")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    s = read_session(session_dir)
    nwb = _nwbfile(s, experimenter, lab, institution, subject)
    _add_units(nwb, s)
    _add_events(nwb, s)
    _add_resistance(nwb, s)
    _add_epochs(nwb, s)
    _add_diagnostics(nwb, s)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix or '.nwb'}")
    try:  # written aside, then moved: a failed export never leaves a half-written file under the real name
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _nwbfile(s: Session, experimenter, lab, institution, subject: Subject | None) -> NWBFile:
    prov, net = s.provenance, s.network
    subject = subject or _default_subject(s)  # first: it may add to the damage the notes list
    src = prov.get("source", {})
    commit = src.get("commit") or "unknown (not a git checkout)"
    if src.get("dirty"):
        commit += " with uncommitted changes"
    where = f"in {prov.get('cwd', '?')} on {prov.get('host', '?')}"
    notes = [f"spikewire session {s.folder.name}; outcome: {prov.get('outcome', 'unknown (the run did not finish)')}",
             f"command line: {' '.join(prov.get('command_line', []))} ({where})",
             f"spikewire source: {src.get('path', '?')} at git commit {commit}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items()),
             f"t0 = local_clock {s.t0!r} s; every time in this file is seconds from t0",
             *_merged_notes(prov),
             *(f"damaged: {d}" for d in s.damage),
             "", "network.toml as run:", (s.folder / "network.toml").read_text()]
    phases = "; ".join(f"{n} {a:g}-{b:g} s" for n, a, b in net.phases)
    nodes = ", ".join(f"{n} ({sp.kind})" for n, sp in net.nodes.items())
    # The same session always exports under the same identifier; a merged one (its provenance is its
    # reference site's) under one of its own.
    merged = "".join(f":{m.get('site')}@{m.get('folder')}" for m in prov.get("merged_from", []))
    identifier = uuid.uuid5(uuid.NAMESPACE_URL,
                            f"spikewire:{prov.get('host')}:{prov.get('created')}:{net.name}{merged}")
    description = net.description or f"spikewire network {net.name}"
    if s.damage:  # what an archive's listing shows: a reader must not take this for a whole record
        description += (f" (incomplete record: {len(s.damage)} problem{'s' if len(s.damage) > 1 else ''} with the "
                        "session, listed in notes)")
    nwb = NWBFile(
        session_description=description,
        identifier=str(identifier),
        session_start_time=s.start,
        session_id=s.folder.name,
        experiment_description=f"spikewire network {net.name!r}: {net.description or '(no description)'}. "
                               f"Nodes: {nodes}. Links: {'; '.join(ln.label for ln in net.links)}.",
        protocol=f"phases: {phases}" if phases else None,
        notes="\n".join(notes),
        data_collection="Every node journals each packet it sends (journal/<node>.swj). An event's time is when "
                        "it happened at its source, on the machine's local_clock, minus t0. Memristor resistances "
                        "are the nodes' 1 Hz status samples and the exact value after every pulse (status.jsonl).",
        stimulus_notes="CME stimulus pulses sent by memristor synapses with output = 'stimulus' (events/stimuli); "
                       "amplitude in V at the electrode.",
        keywords=["spiking neural network", "hybrid network", "memristor", "neuromorphic", "plasticity"],
        experimenter=experimenter, lab=lab, institution=institution,
        was_generated_by=[["spikewire", __version__], ["pynwb", pynwb.__version__]],
        subject=subject,
    )
    for name, spec in net.nodes.items():
        nwb.create_device(name=name, description=f"spikewire {spec.kind} node {name!r} at site {spec.settings.site!r}")
    return nwb


def _merged_notes(prov: dict) -> list[str]:
    """For a session `spikewire merge` made: which sites, and how their clocks were put on one."""
    merged = prov.get("merged_from")
    if not merged:
        return []
    ref = prov.get("merge", {}).get("reference", merged[0].get("site"))
    return [f"merged from {len(merged)} sites' sessions onto site {ref}'s clock (provenance and command line above "
            f"are {ref}'s):"] + [f"  {m.get('site')}: {m.get('folder')}, clock offset {m.get('offset_s')!r} s "
                                 f"({m.get('offset_source')})" for m in merged]


def _default_subject(s: Session) -> Subject:
    rigs = [n for n, sp in s.network.nodes.items() if sp.kind == "biological" and sp.settings.backend == "rig"]
    if rigs:
        s.warn(f"biological node(s) {', '.join(rigs)} recorded a rig: spikewire does not know the preparation's "
               "species, sex or age; pass subject= to describe it")
        return Subject(subject_id=s.network.name,
                       description=f"the preparation recorded by {', '.join(rigs)}; not described by spikewire")
    return Subject(subject_id=s.network.name, sex="U", date_of_birth=s.start,
                   description="In silico: no animal. Every neuron is a model (silicon AdEx, simulated biological "
                               "Izhikevich) instantiated when the session starts, hence date_of_birth = "
                               "session_start_time; species not applicable.")


# --- units ------------------------------------------------------------------------------------------------
def _unit_sources(s: Session):
    """(node, port, population, size) of every output port whose events are neurons' spikes; size 0: the
    ids seen."""
    for name, spec in s.network.nodes.items():
        if spec.kind == "silicon":
            for pop, cfg in spec.settings.populations.items():
                yield name, f"{pop}.spikes", pop, cfg.size
        elif spec.kind == "biological":
            # A rig's "spikes" port repeats its APs as plain spikes: the typed events are the record.
            yield name, "events", name, spec.settings.size
        elif spec.kind != "memristor":
            for port, out in spec.outputs.items():
                if out.kind in (Kind.SPIKE, Kind.BIO) and port not in SYNAPTIC_PORTS.get(spec.kind, ()):
                    yield name, port, port, 0


def _add_units(nwb: NWBFile, s: Session) -> None:
    sources = list(_unit_sources(s))
    if not sources:
        return
    dts = [s.network.nodes[n].settings.dt for n, *_ in sources if hasattr(s.network.nodes[n].settings, "dt")]
    units = Units(name="units", resolution=max(dts) if dts else None, description=(
        "One unit per neuron: spike_times are the SPIKE events each node sent on its output port and, for a "
        "biological node, its action potentials (BIO events of type 1 stimulated or 2 spontaneous; PSPs are "
        "in events/psps); seconds from t0, on the grid of the model's integration step (resolution)."))
    for col, doc in (("node", "spikewire node that produced the spikes"), ("node_kind", "the node's kind"),
                     ("site", "the node's site (lab)"), ("port", "output port the spikes were sent on"),
                     ("population", "population (silicon) or node (biological) the neuron belongs to"),
                     ("neuron_id", "the neuron's index in its population (the events' id)")):
        units.add_column(col, doc)
    units.add_column("bio_event_type", "per spike: 1 stimulated action potential, 2 spontaneous action potential "
                     "(Padova's types, streams/wire.py BioEvent); -1 a plain spike, which has no type", index=True)
    for node, port, pop, size in sources:
        spec = s.network.nodes[node]
        kind, events = s.sent.get(node, {}).get(port, (Kind.SPIKE, NO_EVENTS))
        if kind == Kind.BIO:
            events = events[events["value"] != BioEvent.PSP]
        events = events[np.lexsort((events["t"], events["id"]))]  # by neuron, then time
        ids = np.array(sorted(set(range(size)) | set(np.unique(events["id"]).tolist())), dtype=np.int64)
        starts = np.searchsorted(events["id"], ids, side="left")
        ends = np.searchsorted(events["id"], ids, side="right")
        for neuron, a, b in zip(ids, starts, ends):
            mine = events[a:b]
            types = mine["value"].astype(np.int8) if kind == Kind.BIO else np.full(len(mine), NOT_BIO, np.int8)
            units.add_unit(spike_times=mine["t"] - s.t0, bio_event_type=types, node=node, node_kind=spec.kind,
                           site=spec.settings.site, port=port, population=pop, neuron_id=int(neuron))
    nwb.units = units


# --- events -----------------------------------------------------------------------------------------------
def _gather(s: Session, keep) -> tuple[np.ndarray, list[str], list[str]]:
    """Every event sent on the ports ``keep(spec, port, kind, events)`` picks (it may filter the events too),
    with the node and port of each."""
    evs, nodes, ports = [], [], []
    for node, by_port in s.sent.items():
        for port, (kind, events) in by_port.items():
            picked = keep(s.network.nodes[node], port, kind, events)
            if picked is not None and len(picked):
                evs.append(picked)
                nodes += [node] * len(picked)
                ports += [port] * len(picked)
    return (np.concatenate(evs) if evs else NO_EVENTS), nodes, ports


def _events_table(name: str, description: str, source: str, t, columns: dict[str, tuple[str, object]],
                  duration=None) -> EventsTable:
    order = np.argsort(np.asarray(t), kind="stable")
    cols = [TimestampVectorData(name="timestamp", description="seconds from t0", data=np.asarray(t)[order])]
    if duration is not None:
        cols.append(DurationVectorData(name="duration", description="seconds", data=np.asarray(duration)[order]))
    for col, (doc, values) in columns.items():
        data = np.asarray(values)[order]
        cols.append(VectorData(name=col, description=doc, data=data.tolist() if data.dtype.kind in "UO" else data))
    return EventsTable(name=name, description=description, source_description=source, columns=cols)


def _feeds(s: Session, ports: list[str], nodes: list[str]) -> str:
    pairs = sorted(set(zip(nodes, ports)))
    return "; ".join(f"{n}.{p} feeds " + ", ".join(f"{ln.dst_node}.{ln.dst_port}" for ln in s.network.links_from(n)
                                                   if ln.src_port == p) for n, p in pairs)


def _add_events(nwb: NWBFile, s: Session) -> None:
    journals = "spikewire journals (the events each node sent)"
    ev, nodes, ports = _gather(s, lambda spec, port, kind, e: e if kind == Kind.STIMULUS else None)
    if len(ev):
        nwb.add_events_table(_events_table(
            "stimuli", f"Every STIMULUS event sent: a CME stimulus pulse to neuron 'target', taken as instantaneous "
            f"({_feeds(s, ports, nodes)})", journals, ev["t"] - s.t0, {
                "node": ("node that sent the stimulus", nodes), "port": ("output port it was sent on", ports),
                "target": ("target neuron (the event's id)", ev["id"].astype(np.int64)),
                "amplitude": ("stimulus amplitude [V]", ev["value"].astype(np.float64))}))
    ev, nodes, _ = _gather(s, lambda spec, port, kind, e: e[e["value"] == BioEvent.PSP] if kind == Kind.BIO else None)
    if len(ev):
        nwb.add_events_table(_events_table(
            "psps", "Postsynaptic potentials (BIO events of type 0): a stimulus that evoked no action potential "
            "within the node's stim_window; the time is the stimulus's", journals, ev["t"] - s.t0, {
                "node": ("node that reported the PSP", nodes),
                "neuron_id": ("neuron that answered with a PSP", ev["id"].astype(np.int64))}))
    ev, nodes, ports = _gather(s, lambda spec, port, kind, e: e if kind == Kind.SPIKE and (
        spec.kind == "memristor" or port in SYNAPTIC_PORTS.get(spec.kind, ())) else None)
    if len(ev):
        nwb.add_events_table(_events_table(
            "synaptic_events", "Weighted synaptic events sent by memristor synapses (SPIKE events), one per "
            f"presynaptic spike and connectivity row ({_feeds(s, ports, nodes)})", journals, ev["t"] - s.t0, {
                "node": ("node that sent the event", nodes), "port": ("output port it was sent on", ports),
                "target": ("postsynaptic neuron (the event's id)", ev["id"].astype(np.int64)),
                "value": ("what the synapse delivers; with output = 'synaptic' a synaptic current step [A]",
                          ev["value"].astype(np.float64))}))
    pulses = plasticity_pulses(s)
    if pulses:
        rules = _pulse_rules(s)
        rule = [rules.get((p["node"], p["device"].split("[")[0]), {}) for p in pulses]
        nwb.add_events_table(_events_table(
            "plasticity_pulses", "Every plasticity pulse a memristor node applied, with the device's resistance "
            "before and after; duration is the pulse width", "spikewire memristor nodes' pulse logs (status.jsonl)",
            [p["t"] - s.t0 for p in pulses], {
                "node": ("memristor node", [p["node"] for p in pulses]),
                "device": ("device: its synapse group, with [pre->post] when the group has several rows",
                           [p["device"] for p in pulses]),
                "direction": ("ltp (potentiation: resistance falls) or ltd", [p["direction"] for p in pulses]),
                "voltage": ("pulse amplitude [V] (NaN: unknown)",
                            [r.get(f"{p['direction']}_voltage", np.nan) for p, r in zip(pulses, rule)]),
                "r_before": ("resistance before the pulse [ohm]", [p["r_before"] for p in pulses]),
                "r_after": ("resistance after the pulse [ohm]", [p["r_after"] for p in pulses]),
            }, duration=[r.get(f"{p['direction']}_width", np.nan) for p, r in zip(pulses, rule)]))


def plasticity_pulses(s: Session) -> list[dict]:
    """Every pulse logged in status.jsonl, with its node, in time order (times on the local_clock)."""
    out = [{"node": line["node"], **ev} for line in s.status for ev in line.get("log", [])
           if ev.get("event") == "pulse"]
    return sorted(out, key=lambda p: p["t"])


def _pulse_rules(s: Session) -> dict[tuple[str, str], dict]:
    out = {}
    for name, spec in s.network.nodes.items():
        if spec.kind == "memristor":
            for syn, cfg in spec.settings.synapses.items():
                p = cfg.plasticity
                out[(name, syn)] = {"ltp_voltage": p.ltp_voltage, "ltd_voltage": p.ltd_voltage,
                                    "ltp_width": p.ltp_width, "ltd_width": p.ltd_width}
    return out


# --- resistance -------------------------------------------------------------------------------------------
def resistance_samples(s: Session) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Per (node, device): session times and resistances [ohm] from r_start (at 0), the status samples and
    every pulse's r_after, in time order; one value per time (a pulse's wins over a sample's)."""
    points: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
    for m in s.summary.get("memristors", []):
        points.setdefault((m["node"], m["name"]), []).append((0.0, 0, m["r_start"]))
    started = set(points)
    first: dict[tuple[str, str], tuple[float, float]] = {}  # the earliest known value: a sample's, a pulse's r_before
    for line in s.status:
        for dev, r in line.get("model", {}).get("resistance", {}).items():
            points.setdefault((line["node"], dev), []).append((line["t"] - s.t0, 1, r))
            first[(line["node"], dev)] = min(first.get((line["node"], dev), (np.inf, r)), (line["t"] - s.t0, r))
    for p in plasticity_pulses(s):
        points.setdefault((p["node"], p["device"]), []).append((p["t"] - s.t0, 2, p["r_after"]))
        key = (p["node"], p["device"])
        if p["t"] - s.t0 <= first.get(key, (np.inf, 0.0))[0]:
            first[key] = (p["t"] - s.t0, p["r_before"])
    for key, (_, r) in first.items():  # no summary.json: only a pulse changes a resistance, so this is r_start
        if key not in started:
            points[key].append((0.0, 0, r))
    out = {}
    for key, pts in points.items():
        pts.sort()
        keep = [p for i, p in enumerate(pts) if i + 1 == len(pts) or pts[i + 1][0] != p[0]]
        out[key] = (np.array([p[0] for p in keep]), np.array([p[2] for p in keep]))
    return out


def _add_resistance(nwb: NWBFile, s: Session) -> None:
    series = resistance_samples(s)
    labels = [dev for _, dev in series]
    where = {}
    for name, spec in s.network.nodes.items():
        if spec.kind == "memristor":
            for syn, cfg in spec.settings.synapses.items():
                for pre, post, wl, bl in cfg.table:
                    label = syn if len(cfg.table) == 1 else f"{syn}[{pre}->{post}]"
                    where[(name, label)] = f"wordline {wl}, bitline {bl}"
    for (node, dev), (t, r) in series.items():
        label = dev if labels.count(dev) == 1 else f"{node}_{dev}"
        nwb.add_acquisition(TimeSeries(
            name=re.sub(r"[/:]", "_", f"resistance_{label}"), data=r, unit="ohm", timestamps=t, continuity="step",
            description=f"Resistance of memristor {dev} of node {node!r} ({where.get((node, dev), 'device ?')}): "
                        "its value at the session's start, the node's status samples and the exact value after "
                        "every plasticity pulse; it holds until the next",
            comments="from summary.json (r_start) and status.jsonl (samples and pulse logs)"))


# --- epochs and diagnostics -------------------------------------------------------------------------------
def _add_epochs(nwb: NWBFile, s: Session) -> None:
    started = [(n, a, b) for n, a, b in s.network.phases if a < s.end_s]
    if not started:
        return
    done = {p["phase"] for p in s.summary["phases"]} if "phases" in s.summary else None
    nwb.add_epoch_column("completed", "whether the phase ran to its planned end (else the run stopped in it, "
                         "and stop_time is when)")
    for name, a, b in started:
        completed = name in done if done is not None else b <= s.end_s
        nwb.add_epoch(start_time=float(a), stop_time=float(b if completed else min(b, s.end_s)), tags=[name],
                      completed=completed)


def _add_diagnostics(nwb: NWBFile, s: Session) -> None:
    misc = nwb.create_processing_module("misc", "spikewire run diagnostics: per-link traffic and latency "
                                                "(summary.json), per-node journal integrity")
    links = s.summary.get("links", [])
    if not links and not s.summary:
        links = links_from_journals(s)
        if links:
            misc.add(_table("links", "Per-link traffic and latency, rebuilt from the journals (summary.json is "
                            "missing): data packets (loop probes included) each end logged", {
                                k: (doc, [ln.get(k) for ln in links]) for k, doc in _REBUILT_LINK_COLUMNS.items()}))
    elif links:
        docs = {"link": "'<node>.<port> -> <node>.<port>'", "sent": "packets sent", "received": "packets received",
                "events": "data events received", "dropped": "packets lost (send queue + sequence gaps)",
                "in_flight": "packets sent but neither received nor lost when the run stopped",
                "out_of_order": "packets received out of order", "malformed": "undecodable packets received",
                "latency_p50_s": "median latency (receive - send time) [s]", "latency_p99_s": "99th percentile [s]",
                "latency_max_s": "largest latency [s]"}
        misc.add(_table("links", "Per-link traffic and latency over the run (summary.json)",
                        {k: (doc, [ln.get(k) for ln in links]) for k, doc in docs.items()}))
    names = list(s.journals)
    misc.add(_table("journals", "Per-node journal integrity: a damaged tail is skipped from its first bad record", {
        "node": ("node", names),
        "records": ("intact records read", [len(s.journals[n].records) for n in names]),
        "skipped_bytes": ("bytes skipped at a damaged tail (0: intact)", [s.journals[n].skipped_bytes for n in names]),
        "problem": ("what was wrong with the tail ('': nothing)", [s.journals[n].problem for n in names]),
    }))


_REBUILT_LINK_COLUMNS = {
    "link": "'<node>.<port> -> <node>.<port>'",
    "sent": "data packets the sending node journaled on the port (NaN: its journal is not in this session)",
    "received": "data packets the receiving node journaled from the upstream port (NaN: not in this session)",
    "events": "events in the packets received", "latency_p50_s": "median latency (receive - send time) [s]",
    "latency_p99_s": "99th percentile [s]", "latency_max_s": "largest latency [s]"}


def links_from_journals(s: Session) -> list[dict]:
    """Per link with an end in this session: data packets sent and received and their latency, from the
    journals alone (a node journals a packet once however many of its input ports the upstream feeds)."""
    rows = []
    for ln in s.network.links:
        src = ln.label.split(" -> ")[0]
        row: dict = {"link": ln.label, "sent": None, "received": None, "events": None}
        if ln.src_node in s.journals:
            row["sent"] = sum(1 for r in s.journals[ln.src_node].records if r.direction == SENT
                              and r.port == ln.src_port and r.packet is not None and r.packet.kind in DATA_KINDS)
        if ln.dst_node in s.journals:
            got = [r for r in s.journals[ln.dst_node].records if r.direction == RECEIVED and r.port == src
                   and r.packet is not None and r.packet.kind in DATA_KINDS]
            row["received"], row["events"] = len(got), sum(len(r.packet.events) for r in got)
            lat = np.array([r.logged - r.packet.send_time for r in got])
            if len(lat):
                row.update(latency_p50_s=float(np.percentile(lat, 50)), latency_p99_s=float(np.percentile(lat, 99)),
                           latency_max_s=float(lat.max()))
        if row["sent"] is not None or row["received"] is not None:
            rows.append(row)
    return rows


def _table(name: str, description: str, columns: dict[str, tuple[str, list]]) -> DynamicTable:
    cols = []
    for col, (doc, values) in columns.items():
        if all(isinstance(v, str) for v in values):
            data = list(values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            data = np.array(values, dtype=np.int64)
        else:  # numbers with gaps (None): NaN marks a gap
            data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        cols.append(VectorData(name=col, description=doc, data=data))
    return DynamicTable(name=name, description=description, columns=cols)
