"""A recorded session (config/session.py) as one NWB 2 file, for analysis tools and archives (DANDI).

Everything comes from the session folder alone, read by config/session.py's one reader, and from what each
node's kind declares (nodes/element.py: port roles, populations, devices) and reports (its figures): no
kind is named here. Times are seconds from the run's t0 (session time) and ``session_start_time`` is t0 in
UTC. The file holds::

    general        session_description (the network's, or --session-description), session_id (the folder's
                   name), notes (command line, git commit, package versions, damage found, network.toml as
                   run), protocol (the phases), one device per node, subject (in silico; for a recorded
                   preparation what the scientist gave: --subject-id --species --sex --age or --subject FILE,
                   monitor/nwb_subject.py)
    units          one unit per neuron of every declared population: the events of every output port whose
                   role is SPIKES or BIO_EVENTS (COPY ports repeat another's: not units), per id seen when
                   the population's size is not known. Columns node, node_kind, site, port, population,
                   neuron_id, and nothing that some unit would hold a stand-in for. PSPs are no spikes
                   (events/psps); which action potentials were stimulated: events/action_potentials.
                   In a session that recorded a preparation (``recordings``), ``units`` holds the recorded
                   neurons, with what only they have: ``electrodes`` (their rig channels), ``waveform_mean`` and
                   ``waveform_sd`` [V] over every detected spike (the detector's band-passed signal, trough at
                   time_before_peak_in_ms), resolution one sample; a neuron no channel records
                   is left out. The model neurons (silicon, simulated) are then in processing/model/model_units.
                   Elsewhere ``units`` holds every neuron; resolution: the populations' integration step.
    electrodes     one row per rig channel a recording used (its final report): location (--electrode-location,
                   else "unknown"), group (one ElectrodeGroup per recording node, on its device), rig_channel,
                   label (the stream's channel label), neuron_id, sampling_rate [Hz]
    processing/ecephys/spike_snippets_<node>_ch<C>   SpikeEventSeries per channel: a uniform sample of the
                   detected spikes' waveforms (at most nodes/rig.py WAVEFORMS_PER_CHANNEL), timestamped at
                   their troughs, linked to the channel's electrode. NWB's units.waveforms needs one waveform
                   per spike; the rig keeps a bounded sample, so the sample lives here
    events/stimuli            events sent on STIMULI outputs (node, port, target, amplitude [V])
    events/action_potentials  action potentials of BIO_EVENTS outputs: node, neuron_id, type (stimulated:
                              within the node's stim_window after a stimulus; spontaneous)
    events/psps               PSPs of BIO_EVENTS outputs (node, neuron_id)
    events/synaptic_events    events sent on SYNAPTIC outputs: weighted synaptic events (node, port, target, value)
    events/plasticity_pulses  pulses from status.jsonl's logs (node, device, direction, voltage and
                              duration = pulse width as the device is declared, r_before, r_after)
    events/marks              the operator's marks during the run (launch/operator.py, e.g. the dashboard's
                              mark button): annotation (the note), source (who); NWB's replacement for an
                              AnnotationSeries, which pynwb 4 deprecates
    intervals/operator_holds  stimulation and programming held by the operator: from each hold to the next
                              release (or the run's end), source (who held), released_by ('' if never)
    acquisition/resistance_<device>   per device: TimeSeries [ohm], continuity "step": r_start at 0, every
                              status sample and every pulse's exact r_after, in time order
    epochs         the protocol phases that started (tags = [phase], completed); a phase the run stopped in
                   stops when the run did
    processing/misc/links, processing/misc/journals   per-link traffic and latency; journal integrity

The catch: a journal records what left its node. A node that computes ahead has counted spikes it had not
sent when the run stopped, so summary.json can exceed the units here by up to its lookahead's worth
(20 ms by default). A journal with a damaged tail is exported up to the damage, with a
DamagedSessionWarning that names the skipped bytes (also in notes and processing/misc/journals).

A killed run (its supervisor SIGKILLed, a site losing power) is exported as far as it goes: every problem
is one DamagedSessionWarning, listed in ``notes`` and counted in ``session_description``. The reader
recovers what a session recorded before provenance ``format`` 2 lacks, and says how (config/session.py):
t0, its UTC, each device's start value. Without summary.json, processing/misc/links is rebuilt from the
journals (packets sent and received, latency). A node with no final report: its counts and pulses after
its last status line are lost (said so); everything it sent is still in its journal.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pynwb
from hdmf.common import DynamicTable, VectorData
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.ecephys import SpikeEventSeries
from pynwb.epoch import TimeIntervals
from pynwb.event import DurationVectorData, EventsTable, TimestampVectorData
from pynwb.file import Subject
from pynwb.misc import Units

from spikewire import __version__
from spikewire.config.session import (DamagedSessionWarning, RecordedSession, SessionError, link_source,
                                      read_session)
from spikewire.monitor.nwb_subject import Preparation
from spikewire.nodes.element import UNIT_ROLES, Role
from spikewire.streams.journal import RECEIVED, SENT
from spikewire.streams.wire import DATA_KINDS, EVENT_DTYPE, BioEvent

__all__ = ["DamagedSessionWarning", "MetadataWarning", "Session", "SessionError", "export_nwb", "links_from_journals",
           "read_session"]

Session = RecordedSession
"""A session folder, read once (config/session.py; the name this module used first)."""

NO_EVENTS = np.zeros(0, EVENT_DTYPE)
UNIT_COLUMNS = {"node": "spikewire node that produced the spikes", "node_kind": "the node's kind",
                "site": "the node's site (lab)", "port": "output port the spikes were sent on",
                "population": "population (silicon) or node (biological) the neuron belongs to",
                "neuron_id": "the neuron's index in its population (the events' id)"}
UV_TO_V = 1e-6


class MetadataWarning(UserWarning):
    """The file lacks what NWB wants and only the scientist can say (a recorded preparation's subject)."""
BASE_KEYWORDS = ["spiking neural network", "hybrid network"]


# --- the file ---------------------------------------------------------------------------------------------
def export_nwb(session_dir: str | Path, out_path: str | Path, overwrite: bool = False, *,
               experimenter: str | list[str] | None = None, lab: str | None = None,
               institution: str | None = None, subject: Subject | None = None,
               preparation: Preparation | None = None, advice: list[str] | None = None) -> Path:
    """Write the session in ``session_dir`` to ``out_path`` as NWB 2; return the path written.

    SessionError if ``session_dir`` is not a session; FileExistsError if ``out_path`` exists and not
    ``overwrite``. What is damaged or missing (a journal's tail, the summary) is exported as far as it goes,
    with a DamagedSessionWarning each. ``preparation`` (monitor/nwb_subject.py: what `spikewire export`'s
    subject flags say) describes a recorded preparation (a rig's culture), its session and electrodes;
    ``subject``, a pynwb Subject, replaces the subject whole. Without either a simulated session gets an
    in-silico subject, and a rig session one that says what is unknown. What the file then lacks that only
    the scientist can say is appended to ``advice`` if given, else warned (MetadataWarning)."""
    out = Path(out_path)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give the file to write, like session.nwb")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    s = read_session(session_dir)
    prep = preparation or Preparation()
    say = advice.append if advice is not None else (lambda text: warnings.warn(text, MetadataWarning, stacklevel=3))
    nwb = _nwbfile(s, experimenter, lab, institution, subject, prep, say)
    _add_units(nwb, s, prep, say)
    _add_events(nwb, s)
    _add_resistance(nwb, s)
    _add_epochs(nwb, s)
    _add_operator(nwb, s)
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


def _nwbfile(s: Session, experimenter, lab, institution, subject: Subject | None, prep: Preparation,
             say) -> NWBFile:
    prov, net = s.provenance, s.network
    start = _session_start(s)  # first: these may add to the damage the notes list
    subject = subject or _default_subject(s, start, prep, say)
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
    description = prep.session_description or net.description or f"spikewire network {net.name}"
    if s.damage:  # what an archive's listing shows: a reader must not take this for a whole record
        description += (f" (incomplete record: {len(s.damage)} problem{'s' if len(s.damage) > 1 else ''} with the "
                        "session, listed in notes)")
    nwb = NWBFile(
        session_description=description,
        identifier=str(identifier),
        session_start_time=start,
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
        keywords=_keywords(s),
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


def _session_start(s: Session) -> datetime:
    """t0 in UTC, else (a session that relates its clock to UTC nowhere) when the folder was created."""
    if s.start_utc is not None:
        return s.start_utc
    try:
        created = datetime.fromisoformat(str(s.provenance.get("created")))
    except ValueError:
        created = datetime.fromtimestamp((s.folder / "provenance.json").stat().st_mtime, timezone.utc)
    s.warn(f"{s.folder}: no UTC recorded for its clock (no utc_minus_local_clock, no node event stamped with both); "
           "session_start_time is the folder's creation, not t0")
    return created


def _keywords(s: Session) -> list[str]:
    """spikewire's keywords, then the network's kinds' own (Declaration.keywords), sorted."""
    declared = sorted({k for spec in s.network.nodes.values() for k in spec.declaration.keywords} - set(BASE_KEYWORDS))
    return BASE_KEYWORDS + declared


def recordings(s: Session) -> list[str]:
    """Nodes that recorded a real preparation rather than running a model: a typed-event population
    without an integration step (a recording's), or figures that come from a rig."""
    out = []
    for name, spec in s.network.nodes.items():
        final = s.final(name)
        if any(p.role == Role.BIO_EVENTS and p.resolution is None for p in spec.declaration.populations) \
                or (final is not None and final.rig is not None) or any(f.rig is not None for _, f in s.figures(name)):
            out.append(name)
    return out


def _default_subject(s: Session, start: datetime, prep: Preparation, say) -> Subject:
    rigs = recordings(s)
    if rigs:
        missing = prep.missing()
        if missing:
            say(f"node(s) {', '.join(rigs)} recorded a preparation: spikewire does not know its "
                f"{', '.join(m.removeprefix('--').replace('-', ' ') for m in missing)}; give "
                f"{' '.join(f'{m} ...' for m in missing)} (or --subject FILE) to `spikewire export` "
                "(NWB Inspector rates a missing sex or age CRITICAL)")
        described = "described by the experimenter at export" if prep.subject_given else "not described by spikewire"
        return Subject(subject_id=prep.subject_id or s.network.name, species=prep.species, sex=prep.sex,
                       age=prep.age, description=f"the preparation recorded by {', '.join(rigs)}; {described}")
    return Subject(subject_id=s.network.name, sex="U", date_of_birth=start,
                   description="In silico: no animal. Every neuron is a model (silicon AdEx, simulated biological "
                               "Izhikevich) instantiated when the session starts, hence date_of_birth = "
                               "session_start_time; species not applicable.")


# --- units ------------------------------------------------------------------------------------------------
def _unit_sources(s: Session):
    """(node, port, population, size, role, resolution) of every output port whose events are neurons'
    spikes (SPIKES, or BIO_EVENTS: their action potentials), as the node's kind declares its population;
    size 0: the ids seen."""
    for name, spec in s.network.nodes.items():
        for port, out in spec.outputs.items():
            if out.role not in UNIT_ROLES:
                continue
            pop = next((p for p in spec.declaration.populations if p.port == port), None)
            if pop is not None:
                yield name, port, pop.name, pop.size, out.role, pop.resolution
            else:  # a port the kind declares no population for: its group (or the node) names it
                yield name, port, out.group or name, out.size or 0, out.role, None


def _add_units(nwb: NWBFile, s: Session, prep: Preparation, say) -> None:
    sources = list(_unit_sources(s))
    if not sources:
        return
    recorded = set(recordings(s))
    tissue = [src for src in sources if src[0] in recorded]
    model = [src for src in sources if src[0] not in recorded]
    if not tissue:
        nwb.units = _model_units("units", s, model)
        return
    nwb.units = _recorded_units(nwb, s, tissue, prep, say)
    if model:
        nwb.create_processing_module("model", "spikewire's model neurons (silicon, simulated): their spikes as a "
                                     "units table apart from the recorded preparation's").add(
            _model_units("model_units", s, model))


def _spikes(s: Session, node: str, port: str, role: Role, size: int):
    """(neuron id, its spike times in session seconds) of every neuron of the port: 0..size-1 and any id
    seen; a typed port's action potentials (its PSPs are no spikes)."""
    events = s.sent(node).get(port, (None, NO_EVENTS))[1]
    if role == Role.BIO_EVENTS:
        events = events[events["value"] != BioEvent.PSP]
    events = events[np.lexsort((events["t"], events["id"]))]  # by neuron, then time
    ids = np.array(sorted(set(range(size)) | set(np.unique(events["id"]).tolist())), dtype=np.int64)
    starts = np.searchsorted(events["id"], ids, side="left")
    ends = np.searchsorted(events["id"], ids, side="right")
    for neuron, a, b in zip(ids, starts, ends):
        yield int(neuron), events["t"][a:b] - s.t0


def _unit_columns(units: Units) -> None:
    for col, doc in UNIT_COLUMNS.items():
        units.add_column(col, doc)


def _model_units(name: str, s: Session, sources) -> Units:
    steps = [res for *_, res in sources if res is not None]
    units = Units(name=name, resolution=max(steps) if steps else None, description=(
        "One unit per neuron: spike_times are the SPIKE events each node sent on its output port and, for a "
        "biological node, its action potentials (stimulated or spontaneous: events/action_potentials; PSPs are "
        "in events/psps); seconds from t0, on the grid of the model's integration step (resolution)."))
    _unit_columns(units)
    for node, port, pop, size, role, _ in sources:
        spec = s.network.nodes[node]
        for neuron, times in _spikes(s, node, port, role, size):
            units.add_unit(spike_times=times, node=node, node_kind=spec.kind, site=spec.settings.site, port=port,
                           population=pop, neuron_id=neuron)
    return units


def _recorded_units(nwb: NWBFile, s: Session, sources, prep: Preparation, say) -> Units:
    """The recorded neurons, linked to the electrodes table and with their mean waveforms when every one of
    them has them (a node without a final report has neither: said)."""
    rows = []  # (node, port, pop, role, neuron, times, electrode rows, waveform) per unit
    rates = set()
    for node, port, pop, size, role, _ in sources:
        rec = _recording(s, node)
        channels = {}  # neuron -> [channel]
        for e in rec.get("electrodes") or []:
            channels.setdefault(e["neuron"], []).append(e["channel"])
        where = _add_electrodes(nwb, s, node, rec, prep) if channels else {}
        waves = rec.get("waveforms") or {}
        if waves.get("rate_hz"):
            rates.add(float(waves["rate_hz"]))
        for neuron, times in _spikes(s, node, port, role, size):
            mine = channels.get(neuron, [])
            if where and not mine and not len(times):
                continue  # no channel records it: not a recorded neuron
            seen = [(waves.get("channels", {}).get(str(c)) or {}).get("count", 0) for c in mine]
            best = mine[int(np.argmax(seen))] if mine and waves.get("channels") is not None else None
            rows.append((node, port, pop, neuron, times, [where[c] for c in mine if c in where],
                         None if best is None else waves, best))
    linked = all(r[5] for r in rows)
    shapes = {(w["samples"], w["pre_samples"], w["rate_hz"], w["unit"]) for *_, w, _ in rows if w is not None}
    waved = all(r[6] is not None for r in rows) and len(shapes) == 1
    if not (linked and waved):
        lacking = sorted({r[0] for r in rows if not r[5] or r[6] is None})
        say(f"recorded node(s) {', '.join(lacking) or ', '.join(sorted({r[0] for r in rows}))} reported no channels "
            "and waveforms (no final report: killed? or recorded before spikewire reported them): the units carry "
            "no electrodes or waveforms")
    (samples, pre, rate, unit), = shapes if waved else ((None, None, None, None),)
    scale = UV_TO_V if unit == "uV" else 1.0
    units = Units(name="units", resolution=1.0 / min(rates) if rates else None,
                  electrode_table=nwb.electrodes if linked else None,
                  waveform_rate=float(rate) if waved else None,
                  waveform_time_before_peak_in_ms=pre / rate * 1e3 if waved else None,  # the trough (negative peak)
                  waveform_unit="volts" if not waved or unit == "uV" else "unknown (the rig stream's own units)",
                  description=(
                      "The recorded preparation's neurons: spike_times are the action potentials each recording node "
                      "detected on its rig channels (stimulated or spontaneous: events/action_potentials), at their "
                      "samples' time-corrected LSL timestamps, seconds from t0 (resolution: one sample)"
                      + (". electrodes: the unit's rig channels" if linked else "")
                      + (f". waveform_mean, waveform_sd: over every detected spike, {samples} samples at {rate:g} Hz, "
                         f"the trough at sample {pre}, of the detector's band-passed signal" if waved else "")))
    _unit_columns(units)
    for node, port, pop, neuron, times, electrodes, waves, best in rows:
        spec = s.network.nodes[node]
        extra = {}
        if linked:
            extra["electrodes"] = electrodes
        if waved:
            w = waves["channels"].get(str(best)) or {}
            extra["waveform_mean"] = _volts(w.get("mean"), samples, scale)
            extra["waveform_sd"] = _volts(w.get("sd"), samples, scale)
        units.add_unit(spike_times=times, node=node, node_kind=spec.kind, site=spec.settings.site, port=port,
                       population=pop, neuron_id=neuron, **extra)
    return units


def _volts(values, samples: int, scale: float) -> np.ndarray:
    """A waveform from the report (None where undefined) in the file's unit; NaN throughout for a channel
    that saw no whole spike (a mean of nothing)."""
    if not values:
        return np.full(samples, np.nan)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64) * scale


def _recording(s: Session, node: str) -> dict:
    """What a recording node's final figures say of its stream, electrodes and waveforms ({}: no final)."""
    final = s.final(node)
    return dict(final.rig) if final is not None and isinstance(final.rig, dict) else {}


def _add_electrodes(nwb: NWBFile, s: Session, node: str, rec: dict, prep: Preparation) -> dict[int, int]:
    """One electrodes row per rig channel the node used, in one ElectrodeGroup on the node's device; the
    spike snippets of each channel as a SpikeEventSeries linked to its row. Returns channel -> row."""
    stream = rec.get("stream") or {}
    location = prep.electrode_location or "unknown"
    group = nwb.create_electrode_group(
        name=node, location=location, device=nwb.devices[node],
        description=f"the rig channels node {node!r} recorded, stream {stream.get('name', '?')!r} "
                    f"(source_id {stream.get('source_id', '?')!r}, {stream.get('channels', '?')} channels at "
                    f"{stream.get('rate_hz', '?')} Hz, unit {stream.get('unit') or 'not stated'})")
    if nwb.electrodes is None or "rig_channel" not in nwb.electrodes.colnames:
        nwb.add_electrode_column("rig_channel", "the channel's index in the rig's stream")
        nwb.add_electrode_column("label", "the channel's label in the stream's description ('' if it has none)")
        nwb.add_electrode_column("neuron_id", "the neuron (unit neuron_id) the channel's spikes are reported as")
        nwb.add_electrode_column("sampling_rate", "the stream's nominal sampling rate [Hz]")
    where = {}
    for e in rec["electrodes"]:
        where[e["channel"]] = len(nwb.electrodes) if nwb.electrodes is not None else 0
        nwb.add_electrode(group=group, location=location, rig_channel=int(e["channel"]), label=e.get("label") or "",
                          neuron_id=int(e["neuron"]), sampling_rate=float(stream.get("rate_hz") or np.nan))
    waves = rec.get("waveforms") or {}
    scale = UV_TO_V if waves.get("unit") == "uV" else 1.0
    for c, row in where.items():
        w = (waves.get("channels") or {}).get(str(c))
        if not w or not w.get("snippets"):
            continue
        # (events, channels, samples): one channel, the electrode linked
        data = np.array([[[np.nan if v is None else v for v in snip]] for snip in w["snippets"]], dtype=np.float32)
        ecephys = nwb.processing.get("ecephys") or nwb.create_processing_module(
            "ecephys", "spike waveforms the rig nodes' detectors cut from their band-passed channels")
        ecephys.add(SpikeEventSeries(
            name=f"spike_snippets_{node}_ch{c}", data=data, conversion=scale,  # unit: volts, always
            timestamps=np.asarray(w["times"], dtype=np.float64) - s.t0,
            electrodes=nwb.create_electrode_table_region([row], f"rig channel {c} of {node}"),
            description=f"A uniform sample of {len(data)} of the {w['count']} spikes detected on rig channel {c} of "
                        f"node {node!r}: {waves['samples']} samples at {waves['rate_hz']:g} Hz, the trough at sample "
                        f"{waves['pre_samples']} (its timestamp); {waves.get('filter', '')}"
                        + ("; data in µV (conversion to V)" if scale == UV_TO_V else
                           "; data in the rig stream's own units (it states none): NOT volts")))
    return where


# --- events -----------------------------------------------------------------------------------------------
def _gather(s: Session, role: Role, keep=None) -> tuple[np.ndarray, list[str], list[str]]:
    """Every event sent on the output ports of ``role`` (those ``keep(events)`` picks, if given), with the
    node and port of each."""
    evs, nodes, ports = [], [], []
    for node in s.journals:
        outputs = s.network.nodes[node].outputs
        for port, (_, events) in s.sent(node).items():
            if port not in outputs or outputs[port].role != role:
                continue
            picked = keep(events) if keep is not None else events
            if len(picked):
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
    ev, nodes, ports = _gather(s, Role.STIMULI)
    if len(ev):
        nwb.add_events_table(_events_table(
            "stimuli", f"Every STIMULUS event sent: a CME stimulus pulse to neuron 'target', taken as instantaneous "
            f"({_feeds(s, ports, nodes)})", journals, ev["t"] - s.t0, {
                "node": ("node that sent the stimulus", nodes), "port": ("output port it was sent on", ports),
                "target": ("target neuron (the event's id)", ev["id"].astype(np.int64)),
                "amplitude": ("stimulus amplitude [V]", ev["value"].astype(np.float64))}))
    ev, nodes, _ = _gather(s, Role.BIO_EVENTS, lambda e: e[e["value"] != BioEvent.PSP])
    if len(ev):
        names = {int(BioEvent.STIMULATED_AP): "stimulated", int(BioEvent.SPONTANEOUS_AP): "spontaneous"}
        nwb.add_events_table(_events_table(
            "action_potentials", "Action potentials of biological nodes (BIO events of type 1 or 2), the same as their "
            "units' spike_times, with what the node made of each", journals, ev["t"] - s.t0, {
                "node": ("node that reported the action potential", nodes),
                "neuron_id": ("neuron that fired", ev["id"].astype(np.int64)),
                "type": ("stimulated: within the node's stim_window after a stimulus it delivered; spontaneous: any "
                         "other", [names.get(int(v), f"type {int(v)}") for v in ev["value"]])}))
    ev, nodes, _ = _gather(s, Role.BIO_EVENTS, lambda e: e[e["value"] == BioEvent.PSP])
    if len(ev):
        nwb.add_events_table(_events_table(
            "psps", "Postsynaptic potentials (BIO events of type 0): a stimulus that evoked no action potential "
            "within the node's stim_window; the time is the stimulus's", journals, ev["t"] - s.t0, {
                "node": ("node that reported the PSP", nodes),
                "neuron_id": ("neuron that answered with a PSP", ev["id"].astype(np.int64))}))
    ev, nodes, ports = _gather(s, Role.SYNAPTIC)
    if len(ev):
        nwb.add_events_table(_events_table(
            "synaptic_events", "Weighted synaptic events sent by memristor synapses (SPIKE events), one per "
            f"presynaptic spike and connectivity row ({_feeds(s, ports, nodes)})", journals, ev["t"] - s.t0, {
                "node": ("node that sent the event", nodes), "port": ("output port it was sent on", ports),
                "target": ("postsynaptic neuron (the event's id)", ev["id"].astype(np.int64)),
                "value": ("what the synapse delivers; with output = 'synaptic' a synaptic current step [A]",
                          ev["value"].astype(np.float64))}))
    pulses = s.pulses()
    if pulses:
        rule = [_pulse_parameters(s, p.node, p.device) for p in pulses]
        nwb.add_events_table(_events_table(
            "plasticity_pulses", "Every plasticity pulse a memristor node applied, with the device's resistance "
            "before and after; duration is the pulse width", "spikewire memristor nodes' pulse logs (status.jsonl)",
            [p.t for p in pulses], {
                "node": ("memristor node", [p.node for p in pulses]),
                "device": ("device: its synapse group, with [pre->post] when the group has several rows",
                           [p.device for p in pulses]),
                "direction": ("ltp (potentiation: resistance falls) or ltd", [p.direction for p in pulses]),
                "voltage": ("pulse amplitude [V] (NaN: unknown)",
                            [r.get(f"{p.direction}_voltage", np.nan) for p, r in zip(pulses, rule)]),
                "r_before": ("resistance before the pulse [ohm]", [p.r_before for p in pulses]),
                "r_after": ("resistance after the pulse [ohm]", [p.r_after for p in pulses]),
            }, duration=[r.get(f"{p.direction}_width", np.nan) for p, r in zip(pulses, rule)]))


def _pulse_parameters(s: Session, node: str, device: str) -> dict[str, float]:
    """How the node's kind declares the device is pulsed (ltp/ltd voltage and width); {} if it does not."""
    dev = s.declaration(node).device(device)
    return dict(dev.pulse) if dev is not None else {}


# --- resistance -------------------------------------------------------------------------------------------
def _add_resistance(nwb: NWBFile, s: Session) -> None:
    devices = s.devices()
    labels = [d.name for d in devices]
    where = {(node, dev): loc for node in s.network.nodes for dev, loc in s.declaration(node).location.items()}
    for d in devices:
        t, r = d.steps()
        if not len(t):
            continue
        label = d.name if labels.count(d.name) == 1 else f"{d.node}_{d.name}"
        nwb.add_acquisition(TimeSeries(
            name=re.sub(r"[/:]", "_", f"resistance_{label}"), data=r, unit="ohm", timestamps=t, continuity="step",
            description=f"Resistance of memristor {d.name} of node {d.node!r} "
                        f"({where.get((d.node, d.name)) or 'device ?'}): "
                        "its value at the session's start, the node's status samples and the exact value after "
                        "every plasticity pulse; it holds until the next",
            comments="from summary.json (r_start) and status.jsonl (samples and pulse logs)"))


# --- epochs and diagnostics -------------------------------------------------------------------------------
def _add_epochs(nwb: NWBFile, s: Session) -> None:
    phases = s.phases()
    if not phases:
        return
    nwb.add_epoch_column("completed", "whether the phase ran to its planned end (else the run stopped in it, "
                         "and stop_time is when)")
    for p in phases:
        nwb.add_epoch(start_time=p.start, stop_time=p.stop, tags=[p.name], completed=p.completed)


def _add_operator(nwb: NWBFile, s: Session) -> None:
    """The operator's marks (events/marks) and holds (intervals/operator_holds), as the session recorded them."""
    source = "spikewire operator controls accepted by the supervisor (status.jsonl, type control)"
    marks = s.marks()
    if marks:
        nwb.add_events_table(_events_table(
            "marks", "Timestamped notes the operator made during the run (the dashboard's mark)", source,
            [m.t for m in marks], {"annotation": ("the note", [m.text for m in marks]),
                                   "source": ("who made it", [m.source for m in marks])}))
    holds = s.operator_holds()
    if not holds:
        return
    table = TimeIntervals(name="operator_holds", description="Stimulation and device programming held by the "
                          "operator on every node (their interlocks' operator hold), from the hold to the release or "
                          "the run's end")
    table.add_column("source", "who held")
    table.add_column("released_by", "who released ('': the run ended held)")
    for h in holds:
        # Nothing runs before t0: a hold asked for before the start holds from it. A hold the run ended in
        # at once still lasts a little: stop after start, as NWB wants.
        start = max(0.0, h.start)
        table.add_interval(start_time=start, stop_time=max(h.stop, float(np.nextafter(start, np.inf))),
                           source=h.source, released_by=h.released_by)
    nwb.add_time_intervals(table)


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
        src = link_source(ln.label)
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
