"""`spikewire top` during paper_fig2: a link never shows more packets received than sent, across refreshes
(both figures come from the receiver's one exposition), and the protocol phase shows."""

from __future__ import annotations

import re

import pytest

from conftest import short_fig2
from spikewire.config.network import load_network
from test_top import top_frames


def _link_rows(frame: str, labels: list[str]) -> dict[str, list[str]]:
    rows = {}
    for line in frame.splitlines():
        for label in labels:
            if line.startswith(label + " "):
                rows[label] = line[len(label):].split()
    return rows


@pytest.mark.integration
def test_received_never_exceeds_sent_and_the_phase_shows(cli_run, tmp_path):
    path = short_fig2(tmp_path, 3.0)
    network = load_network(path)
    labels = [link.label for link in network.links]
    frames = top_frames(cli_run("run", str(path), "--duration", "14"), path, 6, 0.7)
    phases = set()
    checked = 0
    # top may look before the session's start (nodes are ready ~0.2 s before t0): that frame says so
    while frames and "protocol: not started" in frames[0]:
        frames = frames[1:]
    assert len(frames) >= 4, frames
    for frame in frames:
        found = re.search(r"^protocol: phase (\S+) (\d)/4 ", frame, re.M)
        assert found, frame
        phases.add(found[1])
        rows = _link_rows(frame, labels)
        assert set(rows) == set(labels), frame
        for label, (sent, received, *_rest) in rows.items():
            assert sent != "-" and received != "-", frame
            assert int(received) <= int(sent), f"{label}: received {received} > sent {sent}\n{frame}"
            checked += int(received) > 0
    assert checked >= 20, frames  # links that carried packets, over the frames
    assert len(phases) >= 2, phases  # the refreshes span a phase boundary (3 s phases, ~4 s of frames)
    assert "interlock clear: southampton" in frames[-1] or "INTERLOCK HOLDS" in frames[-1], frames[-1]
