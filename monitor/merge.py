"""The sessions the sites of one multi-site run recorded, merged into one session folder on one clock.

Each lab's ``spikewire run NETWORK --site NAME`` records its own session, every time in it on that
machine's local_clock. ``merge_sessions`` writes one folder that ``spikewire plot`` and ``spikewire
export`` read like a one-machine run, every time on the reference site's clock::

    network.toml          the network file (checked to be the same at every site)
    journal/<node>.swj    every node's journal; record times, send times and event times shifted
    status.jsonl          every site's status lines, their times and their log entries' times shifted,
                          in time order
    summary.json          the sites' summaries as one: neurons, memristors and nodes of every site, each link
                          as its receiving site reported it (with the sender's count of packets sent), the
                          phase table's columns side by side, the reference's outcome and each site's
                          (``outcomes``), how each site started (``starts``)
    provenance.json       the reference site's, with ``site`` null, ``nodes_run`` every node, the sites'
                          node events, links and start states, ``merged_from``: per site its folder, session
                          id, clock offset, where the offset came from, its t0 in merged session time and
                          its start; and ``merge``: when, the reference, every offset used (one per hop)

Which clock stamped a time: a journal record's time and a sent packet's send time are the journal's
site's; an event's time is its sender's (for a received packet, the upstream node's site), except a loop
probe's (its origin node's: probes keep the origin's stamp as they go round) and a clock pong's first
event (t1, stamped by the subscriber that pinged; for a received pong taken as the journal's own site).

A site's offset is its clock minus the reference's; every time it stamped is shifted by minus that. It
comes from the barrier's measurement (provenance ``site_offsets``), preferably the reference's own, else
from the inter-site links' NTP-style estimates (provenance ``links``), chained through other sites when no
direct one exists. The catch: those are estimates, so times from different sites agree only as well as
the clocks were measured (about 0.1 ms on one machine; over the internet, up to half the difference
between the two directions' path delays, which no two-way method can see). A pong that answered another
site's ping (a port feeding several sites answers every ping to all its subscribers) has its t1 shifted by
the wrong site's offset; nothing reads it. A journal's damaged tail is copied as it was, so readers still
report the damage.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from spikewire.config.network import Network, NetworkError, load_network
from spikewire.config.session import SessionError, StatusLog, check_session_folder, read_json_object, read_status
from spikewire.streams.journal import RECEIVED, SENT, JournalWriter, Record, read_journal
from spikewire.streams.wire import Kind, encode

FLUSH_EVERY = 4096
"""Records buffered before the merged journal is written out (a long session's journal is large)."""


class MergeError(ValueError):
    """Sessions that cannot be merged; the message names the session or site and what is wrong."""


@dataclass
class SiteSession:
    """One site's session folder, as read for merging."""

    folder: Path
    site: str
    provenance: dict
    network: dict  # network.toml, parsed: compared between sites
    summary: dict | None  # None: the site's run did not finish
    status: StatusLog
    offset_s: float = 0.0  # this site's clock minus the reference's
    offset_source: str = ""


@dataclass
class MergeResult:
    out: Path
    sessions: list[SiteSession]
    warnings: list[str] = field(default_factory=list)


def read_site_session(folder: str | Path) -> SiteSession:
    """One site's session; MergeError if the folder is not a session of one site."""
    try:
        folder = check_session_folder(folder)
        prov = read_json_object(folder / "provenance.json", "provenance")
        summary = read_json_object(folder / "summary.json", "summary") if (folder / "summary.json").is_file() else None
    except SessionError as e:
        raise MergeError(str(e)) from None
    site = prov.get("site")
    if not isinstance(site, str) or not site:
        why = "a merged session" if prov.get("merged_from") else "a run of the whole network"
        raise MergeError(f"{folder}: not one site's session (provenance.json names no site: {why}); merge joins "
                         "the sessions `spikewire run NETWORK --site NAME` recorded")
    try:
        network = tomllib.loads((folder / "network.toml").read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise MergeError(f"{folder / 'network.toml'}: unreadable ({e})") from None
    return SiteSession(folder, site, prov, network, summary, read_status(folder / "status.jsonl"))


def check_one_run(sessions: list[SiteSession], force: bool) -> list[str]:
    """Refuse sessions of different networks, of one site twice, or of different runs; the warnings
    for sessions whose run cannot be told (recorded before sites agreed a session id)."""
    first = sessions[0]
    for s in sessions[1:]:
        if s.network != first.network:
            raise MergeError(f"{s.folder} ran a different network than {first.folder} (their network.toml differ)")
    seen: dict[str, Path] = {}
    for s in sessions:
        if s.site in seen:
            raise MergeError(f"site {s.site!r} given twice ({seen[s.site]} and {s.folder}); give one session per site")
        seen[s.site] = s.folder
    ids = {s.site: s.provenance.get("session_id") for s in sessions}
    known = {site: sid for site, sid in ids.items() if sid is not None}
    if len(set(known.values())) > 1:
        raise MergeError("the sessions are of different runs: session ids " +
                         ", ".join(f"{site} {sid!r}" for site, sid in known.items()))
    unknown = [site for site, sid in ids.items() if sid is None]
    if not unknown:
        return []
    text = (f"no session id in the session of {', '.join(unknown)} (recorded before sites agreed one): "
            "cannot check that the sessions are of one run")
    if not force:
        raise MergeError(text + "; pass --force to merge anyway")
    return [text]


# --- clocks -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Edge:
    to: str
    offset_s: float  # the clock of ``to`` minus the clock the edge starts from
    source: str
    cost: tuple[int, int, int]  # (link estimates, hops, negated records): lower is preferred


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _clock_edges(sessions: list[SiteSession], network: Network) -> dict[str, list[_Edge]]:
    """Every measured clock offset between two sites, both ways: the barrier's (``site_offsets``) and,
    per pair of sites, the median of the inter-site links' estimates."""
    edges: dict[str, list[_Edge]] = {}

    def add(a: str, b: str, d: float, source: str, links: int, negated: int) -> None:
        edges.setdefault(a, []).append(_Edge(b, d, source, (links, 1, negated)))

    pairs: dict[tuple[str, str], list[tuple[float, str]]] = {}  # (a, b), a < b -> (b - a, which link)
    labels = {ln.label: ln for ln in network.links}
    for s in sessions:
        for other, d in (s.provenance.get("site_offsets") or {}).items():
            if _finite(d) and other != s.site:
                add(s.site, other, float(d), f"site_offsets of {s.site}", 0, 0)
                add(other, s.site, -float(d), f"site_offsets of {s.site}, negated", 0, 1)
        for label, row in (s.provenance.get("links") or {}).items():
            ln = labels.get(label)
            d = row.get("clock_offset_s") if isinstance(row, dict) else None
            if ln is None or not ln.src_node or ln.src_site == ln.dst_site or not _finite(d):
                continue
            sender, receiver = ln.src_site, ln.dst_site  # d: the sender's clock minus the receiver's
            pair = tuple(sorted((sender, receiver)))
            pairs.setdefault(pair, []).append((float(d) if pair == (receiver, sender) else -float(d), label))
    for (a, b), found in pairs.items():
        d = float(np.median([v for v, _ in found]))
        source = f"inter-site link{'s' if len(found) > 1 else ''} {'; '.join(sorted({lb for _, lb in found}))}"
        if len(found) > 1:
            source += f" (median of {len(found)} estimates)"
        add(a, b, d, source, 1, 0)
        add(b, a, -d, source, 1, 0)
    return edges


def clock_offsets(sessions: list[SiteSession], network: Network, reference: str) -> tuple[dict[str, float], list[dict]]:
    """Each site's clock minus the reference's, for every site a measurement reaches (the sessions' and
    any site that fed them), and every offset used (one per hop). Sets each session's ``offset_s`` and
    ``offset_source``. Prefers the barrier's measurements over the links', then the fewest hops, then
    the reference's (or the nearer site's) own record over its peer's negated one."""
    edges = _clock_edges(sessions, network)
    best: dict[str, tuple[tuple[int, int, int], float, list[tuple[str, _Edge]]]] = {reference: ((0, 0, 0), 0.0, [])}
    queue = [((0, 0, 0), reference)]
    while queue:
        cost, site = heapq.heappop(queue)
        if cost > best[site][0]:
            continue
        for e in edges.get(site, []):
            c = tuple(x + y for x, y in zip(cost, e.cost))
            if e.to not in best or c < best[e.to][0]:
                best[e.to] = (c, best[site][1] + e.offset_s, best[site][2] + [(site, e)])
                heapq.heappush(queue, (c, e.to))
    for s in sessions:
        if s.site not in best:
            raise MergeError(f"no clock offset reaches site {s.site!r} from the reference {reference!r}: no session "
                             "records one between them, directly or through other sites (provenance.json "
                             "site_offsets or inter-site links' clock_offset_s)")
        _, s.offset_s, path = best[s.site]
        if s.site == reference:
            s.offset_source = "reference"
        elif len(path) == 1:
            s.offset_source = path[0][1].source
        else:
            s.offset_source = " -> ".join([reference] + [f"{e.to} ({e.source})" for _, e in path])
    used: dict[tuple[str, str], dict] = {}
    for site, (_, _, path) in best.items():
        for frm, e in path:
            used[(frm, e.to)] = {"from": frm, "to": e.to, "offset_s": e.offset_s, "source": e.source}
    return {site: d for site, (_, d, _) in best.items()}, list(used.values())


# --- journals ---------------------------------------------------------------------------------------------

def retime(rec: Record, own: float, node_offset: dict[str, float], nodes: list[str]) -> bytes:
    """A journal record's packet with its times on the reference clock. ``own``: the offset of the
    journal's site; ``node_offset``: each node's site's; ``nodes``: the network's nodes in file order (a
    probe's origin is its index there). An undecodable packet is returned as it was."""
    p = rec.packet
    if p is None:
        return rec.raw
    sender = own if rec.direction == SENT else node_offset.get(rec.port.split(".", 1)[0], own)
    shift = np.full(len(p.events), sender)
    if p.kind == Kind.PROBE:  # value = origin node index * 256 + hops; t = the origin's send time
        for i, origin in enumerate((p.events["value"].astype(np.int64) // 256).tolist()):
            if 0 <= origin < len(nodes):
                shift[i] = node_offset.get(nodes[origin], sender)
    elif p.kind == Kind.CLOCK and rec.direction == RECEIVED and len(shift):
        shift[0] = own  # t1: our own ping's send time, echoed back
    events = p.events.copy()
    events["t"] -= shift
    return encode(p.kind, p.source, p.sequence, p.send_time - sender, events)


def merge_journal(src: Path, dst: Path, own: float, node_offset: dict[str, float], nodes: list[str]) -> str:
    """Write ``src`` retimed to ``dst``; return its damage ('' if none). A damaged tail is appended as it
    was, so a reader of the merged journal skips and reports the same bytes; a file that is no journal at
    all (a node killed before its header) is copied as it was."""
    try:
        journal = read_journal(src)
    except ValueError as e:
        shutil.copyfile(src, dst)
        return f"{e}; copied as it was"
    ports = list(journal.ports) + sorted({r.port for r in journal.records} - set(journal.ports))
    writer = JournalWriter(dst, journal.node, ports, max_bytes=0)
    try:
        for i, rec in enumerate(journal.records):
            writer.log(rec.direction, rec.port, rec.logged - own, retime(rec, own, node_offset, nodes))
            if i % FLUSH_EVERY == FLUSH_EVERY - 1:
                writer.flush()
    finally:
        writer.close()
    if not journal.skipped_bytes:
        return ""
    with open(src, "rb") as f:
        f.seek(-journal.skipped_bytes, os.SEEK_END)
        tail = f.read()
    with open(dst, "ab") as f:
        f.write(tail)
    return f"{src}: {journal.problem}, last {journal.skipped_bytes} bytes copied as they were"


# --- status, summary, provenance -------------------------------------------------------------------------

def merge_status(sessions: list[SiteSession], node_site: dict[str, str]) -> tuple[list[str], int]:
    """Every site's status lines with their times shifted, in time order (unreadable lines last, as they
    were), and how many were unreadable."""
    offset = {s.site: s.offset_s for s in sessions}
    timed, torn = [], []
    for s in sessions:
        torn += [text for _, text in s.status.torn]
        for line in s.status.lines:
            msg = json.loads(json.dumps(line))  # a copy to shift
            d = offset.get(node_site.get(msg.get("node")), s.offset_s)
            if _finite(msg.get("t")):
                msg["t"] -= d
            for ev in msg.get("log") or []:
                if isinstance(ev, dict) and _finite(ev.get("t")):
                    ev["t"] -= d
            timed.append((msg["t"] if _finite(msg.get("t")) else math.inf, json.dumps(msg)))
    timed.sort(key=lambda x: x[0])
    return [line for _, line in timed] + torn, len(torn)


def _nodes_run(s: SiteSession, node_site: dict[str, str]) -> list[str]:
    return s.provenance.get("nodes_run") or [n for n, site in node_site.items() if site == s.site]


def _t0(s: SiteSession) -> float | None:
    """The site's t0 on the reference clock."""
    t0 = s.provenance.get("t0_local_clock")
    return t0 - s.offset_s if _finite(t0) else None


def merge_summary(sessions: list[SiteSession], network: Network, node_site: dict[str, str]) -> dict:
    """The sites' summaries as one (see the module docstring). A site without one contributes its nodes as
    finished or not (by their final status lines) and nothing else."""
    ref = sessions[0]
    have = [s for s in sessions if s.summary is not None]
    out = dict((ref.summary or have[0].summary) if have else {})
    out["outcome"] = (ref.summary or {}).get("outcome") or ref.provenance.get("outcome")
    out["outcomes"] = {s.site: (s.summary or {}).get("outcome") or s.provenance.get("outcome") for s in sessions}
    out.pop("start", None)  # how one site started: every site's is under "starts"
    starts = {s.site: s.summary["start"] for s in have if s.summary.get("start") is not None}
    if starts:
        out["starts"] = starts
    for key in ("neurons", "memristors", "warnings"):
        out[key] = [row for s in have for row in s.summary.get(key, [])]
    out["nodes"], out["killed_at_stop"] = {}, {}
    for s in sessions:
        if s.summary is not None:
            out["nodes"].update(s.summary.get("nodes", {}))
            out["killed_at_stop"].update(s.summary.get("killed_at_stop") or {})
            continue
        finals = s.status.final_nodes()
        for node in _nodes_run(s, node_site):
            out["nodes"][node] = {"final": node in finals}
    out["probes"] = next((s.summary["probes"] for s in have if s.summary.get("probes")), None)
    out["links"] = _merge_links(have, network, node_site)
    out["phases"] = _merge_phases(have)
    t0 = _t0(ref)  # the run lasted until the last site stopped
    ends = [_t0(s) + s.summary["duration_s"] for s in have
            if _t0(s) is not None and _finite(s.summary.get("duration_s"))]
    if t0 is not None and ends:
        out["duration_s"] = max(ends) - t0
    return out


def _merge_links(have: list[SiteSession], network: Network, node_site: dict[str, str]) -> list[dict]:
    """Each link's row from the site that received it, with the sending site's count of packets sent (and
    the drops and in-flight packets that follow from it, as the run summary counts them)."""
    rows: dict[str, dict[str, dict]] = {}  # label -> site -> row
    for s in have:
        for row in s.summary.get("links", []):
            rows.setdefault(row.get("link"), {})[s.site] = row
    out = []
    for ln in network.links:
        by_site = rows.get(ln.label)
        if not by_site:
            continue
        rx = by_site.get(node_site.get(ln.dst_node))
        tx = by_site.get(node_site.get(ln.src_node)) if ln.src_node else None
        row = dict(rx or tx)
        if rx is not None and tx is not None and tx.get("sent") is not None:
            sent, queue = tx["sent"], tx.get("send_queue_drops") or 0
            gaps, received = rx.get("gaps") or 0, rx.get("received")
            row.update(sent=sent, send_queue_drops=queue, dropped=queue + gaps,
                       in_flight=sent - (received or 0) - gaps if received is not None else None)
        out.append(row)
    return out


def _merge_phases(have: list[SiteSession]) -> list[dict]:
    """The phase table's rows, one per phase, each site's columns side by side (each site counted its
    phases from its own start: the same instants once the sites agreed their start)."""
    rows: dict[str, dict] = {}
    for s in have:
        for row in s.summary.get("phases", []):
            merged = rows.setdefault(row["phase"], {})
            merged.update({k: v for k, v in row.items() if k not in merged})
    return sorted(rows.values(), key=lambda r: r.get("start_s", 0.0))


def merge_provenance(sessions: list[SiteSession], node_site: dict[str, str], nodes: list[str],
                     offsets_used: list[dict], warnings: list[str], damage: dict[str, list[str]]) -> dict:
    """The reference's provenance describing the merged session (see the module docstring)."""
    ref = sessions[0]
    offset = {s.site: s.offset_s for s in sessions}
    prov = json.loads(json.dumps(ref.provenance))
    for key in ("site_offsets", "start"):  # one site's view: merged_from has every site's
        prov.pop(key, None)
    ran = {n for s in sessions for n in _nodes_run(s, node_site)}
    prov.update(site=None, nodes_run=[n for n in nodes if n in ran], nodes={}, links={}, start_state={},
                warnings=[], outcome=(ref.summary or {}).get("outcome") or ref.provenance.get("outcome"),
                outcomes={s.site: s.provenance.get("outcome") for s in sessions})
    for s in sessions:
        for node, events in (s.provenance.get("nodes") or {}).items():
            d = offset.get(node_site.get(node), s.offset_s)
            prov["nodes"][node] = {what: {**ev, "local_clock": ev["local_clock"] - d}
                                   if isinstance(ev, dict) and _finite(ev.get("local_clock")) else ev
                                   for what, ev in events.items()}
        prov["links"].update(s.provenance.get("links") or {})
        prov["start_state"].update(s.provenance.get("start_state") or {})
        prov["warnings"] += s.provenance.get("warnings") or []
    t0 = _t0(ref)
    prov["merged_from"] = [{
        "site": s.site, "folder": str(s.folder.resolve()), "session_id": s.provenance.get("session_id"),
        "offset_s": s.offset_s, "offset_source": s.offset_source,
        "t0_s": _t0(s) - t0 if t0 is not None and _t0(s) is not None else None,
        "start": s.provenance.get("start"), "damage": damage.get(s.site, [])} for s in sessions]
    prov["merge"] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "command_line": [Path(sys.argv[0]).name, *sys.argv[1:]], "reference": ref.site,
        "note": "offset_s: a site's clock minus the reference's; every time the site stamped was shifted by minus it",
        "offsets_used": offsets_used, "warnings": warnings}
    return prov


# --- the whole ------------------------------------------------------------------------------------------

def merge_sessions(folders: list[str | Path], out: str | Path, reference: str | None = None,
                   force: bool = False) -> MergeResult:
    """Merge the sites' sessions in ``folders`` into the new folder ``out``, on the clock of site
    ``reference`` (default: the first session's). MergeError (nothing written) if they cannot be."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeError(f"{out} exists and is not an empty folder; choose another --out")
    sessions = [read_site_session(f) for f in folders]
    if not sessions:
        raise MergeError("no session given")
    warnings = check_one_run(sessions, force)
    if reference is not None:
        by_site = {s.site: s for s in sessions}
        if reference not in by_site:
            raise MergeError(f"--reference {reference!r} is none of the sessions' sites ({', '.join(by_site)})")
        sessions.remove(by_site[reference])
        sessions.insert(0, by_site[reference])
    try:
        network = load_network(sessions[0].folder / "network.toml", check_keys=False)
    except NetworkError as e:
        raise MergeError(f"{sessions[0].folder / 'network.toml'}: {e}") from None
    nodes = list(network.nodes)
    node_site = {n: network.site_of(n) for n in nodes}
    site_offset, offsets_used = clock_offsets(sessions, network, sessions[0].site)
    absent = [site for site in network.start_sites if site not in {s.site for s in sessions}]
    if absent:
        warnings.append(f"no session of {', '.join(absent)}: the merged session lacks "
                        f"{', '.join(n for n in nodes if node_site[n] in absent)}")
    lost = [site for site in absent if site not in site_offset]
    if lost:
        warnings.append(f"no clock offset for {', '.join(lost)}: the events its nodes sent to merged nodes stay on "
                        "the receiving site's clock")
    if sessions[0].provenance.get("t0_local_clock") is None:
        warnings.append(f"the reference {sessions[0].site!r} recorded no t0 (its run did not finish): readers "
                        "recover one")
    for s in sessions:
        if s.summary is None:
            warnings.append(f"{s.folder}: no summary.json (the run did not finish): its nodes' final figures are "
                            "missing from the merged summary")

    tmp = out.with_name(f".{out.name}.merging.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "journal").mkdir(parents=True)
        shutil.copyfile(sessions[0].folder / "network.toml", tmp / "network.toml")
        node_offset = {n: site_offset[node_site[n]] for n in nodes if node_site[n] in site_offset}
        damage: dict[str, list[str]] = {}
        for s in sessions:
            for src in sorted((s.folder / "journal").glob("*.swj")):
                dst = tmp / "journal" / src.name
                if dst.exists():
                    raise MergeError(f"journal {src.name} is in two sessions (another one and {s.folder})")
                problem = merge_journal(src, dst, s.offset_s, node_offset, nodes)
                if problem:
                    damage.setdefault(s.site, []).append(problem)
                    warnings.append(f"damaged: {problem}")
        lines, torn = merge_status(sessions, node_site)
        if torn:
            warnings.append(f"{torn} unreadable status line{'s' if torn > 1 else ''} kept at the end of status.jsonl")
        if lines:
            (tmp / "status.jsonl").write_text("\n".join(lines) + "\n")
        if any(s.summary is not None for s in sessions):
            summary = merge_summary(sessions, network, node_site)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        prov = merge_provenance(sessions, node_site, nodes, offsets_used, warnings, damage)
        (tmp / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
        os.replace(tmp, out)  # an empty out is replaced; a failed merge leaves no half-written folder there
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return MergeResult(out, sessions, warnings)
