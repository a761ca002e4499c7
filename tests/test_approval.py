"""Before/after approval of the element-contract redesign (issue 12).

``fixtures/approval_session`` is a real session (paper_fig2 shortened to four 1.5 s phases) recorded by
the code *before* the redesign, and ``fixtures/approval_golden`` holds what that code made of it: the NWB
file's content, the run report (with its phase table) and the data `spikewire plot` draws. After the
redesign the same session must give the same three. The projections below may follow API changes; the
golden files may not (regenerate them only with SPIKEWIRE_REGOLD=1, and say why in the commit).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
SESSION = HERE / "fixtures" / "approval_session"
GOLDEN = HERE / "fixtures" / "approval_golden"
VOLATILE_NWB = {"identifier", "file_create_date", "object_id", "source_script", "source_script_file_name"}


def _plain(x, digits: int = 9):
    """JSON-comparable: arrays to lists, floats rounded (HDF5 round trips are exact, this is for text)."""
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [_plain(v, digits) for v in x]
    if isinstance(x, dict):
        return {str(k): _plain(v, digits) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if not math.isfinite(x) else round(x, digits)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, bytes):
        return x.decode()
    return x


def _nwb_content(path: Path) -> dict:
    """Every object in the file by type and name, with its fields (containers by name, data as values)."""
    from pynwb import NWBHDF5IO
    from hdmf.container import AbstractContainer

    def field(v):
        if isinstance(v, AbstractContainer):
            return f"<{type(v).__name__} {v.name}>"
        if isinstance(v, (list, tuple)) and v and isinstance(v[0], AbstractContainer):
            return [field(e) for e in v]
        if isinstance(v, dict):
            return {k: field(e) for k, e in v.items()}
        if hasattr(v, "shape") and hasattr(v, "dtype"):
            return _plain(np.asarray(v[()]))
        if hasattr(v, "isoformat"):
            return "<datetime>"
        return _plain(v)

    out = {}
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        for obj in nwb.objects.values():
            parent = obj.parent.name if obj.parent is not None else ""
            key = f"{type(obj).__name__} {parent}/{obj.name}"
            out[key] = {k: field(v) for k, v in sorted(obj.fields.items()) if k not in VOLATILE_NWB}
    return out


def nwb_content(tmp_path: Path) -> dict:
    from spikewire.monitor.nwb_export import export_nwb

    out = tmp_path / "approval.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_nwb(SESSION, out)
    return _nwb_content(out)


def report_of_session() -> tuple[dict, str]:
    from spikewire.config.network import load_network
    from spikewire.monitor.report import build_report, render_text

    finals, summary = {}, json.loads((SESSION / "summary.json").read_text())
    for line in (SESSION / "status.jsonl").read_text().splitlines():
        msg = json.loads(line)
        if msg.get("type") == "final":
            finals[msg["node"]] = msg["summary"]
    network = load_network(SESSION / "network.toml")
    report = build_report(network, finals, summary["duration_s"], summary["outcome"])
    return _plain(report), render_text(report)


def plot_data() -> dict:
    from spikewire.monitor.plot import read_session

    d = read_session(SESSION)
    nodes = {}
    for n in d.nodes:
        nodes[n.name] = {"populations": {p: {"t": t, "id": i} for p, (t, i) in n.populations.items()},
                         "sizes": n.sizes, "bio": None if n.bio is None else {"t": n.bio[0], "id": n.bio[1],
                                                                                 "type": n.bio[2]},
                         "bio_size": n.bio_size,
                         "stimuli": None if n.stimuli is None else {"t": n.stimuli[0], "id": n.stimuli[1]}}
    return _plain({"t0": d.t0, "duration": d.duration, "phases": d.phases, "nodes": nodes,
                   "resistance": {k: {"t": t, "ohm": r} for k, (t, r) in d.resistance.items()},
                   "pulses": {k: {"t": t, "r": r, "ltp": ltp} for k, (t, r, ltp) in d.pulses.items()},
                   "latency": d.latency, "network": d.network, "outcome": d.outcome})


def _check(name: str, value) -> None:
    path = GOLDEN / name
    text = value if isinstance(value, str) else json.dumps(value, indent=1, sort_keys=True)
    if os.environ.get("SPIKEWIRE_REGOLD"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    expected = path.read_text()
    if isinstance(value, str):
        assert value == expected
    else:
        assert value == json.loads(expected)


def test_nwb_content_is_unchanged(tmp_path):
    _check("nwb.json", nwb_content(tmp_path))


def test_run_report_and_phase_table_are_unchanged():
    report, text = report_of_session()
    for node in report["nodes"].values():  # an empty warnings list says nothing (the contract leaves it out)
        if node.get("model", {}).get("warnings") == []:
            del node["model"]["warnings"]
    expected = json.loads((SESSION / "summary.json").read_text())
    expected.pop("killed_at_stop", None)
    assert report["phases"] == _plain(expected["phases"])  # the phase table the run itself wrote
    golden = json.loads((GOLDEN / "report.json").read_text()) if not os.environ.get("SPIKEWIRE_REGOLD") else None
    if golden is not None:
        for node in golden["nodes"].values():
            if node.get("model", {}).get("warnings") == []:
                del node["model"]["warnings"]
        assert report == golden
    else:
        _check("report.json", report)
    _check("report.txt", text)


def test_plot_data_is_unchanged():
    _check("plot.json", plot_data())
