"""Output ports mirrored as LSL streams, read back by a real pylsl inlet as LabRecorder would."""

from __future__ import annotations

import time

import pytest

from conftest import network_copy, read_json
from spikewire.streams import clock  # noqa: F401  (machine-scoped LSLAPICFG before pylsl)

import pylsl  # noqa: E402,I001

pytestmark = pytest.mark.integration


def test_exported_port_streams_every_event_with_metadata(cli_run, tmp_path):
    net = network_copy("paper_loop.toml", tmp_path)
    net.write_text(net.read_text().replace('site = "padova"\n', 'site = "padova"\nlsl_export = ["events"]\n'))
    out = tmp_path / "s.json"
    run = cli_run("run", str(net), "--duration", "6", "--json", str(out))
    run.wait_for("all nodes ready", timeout=60)
    t_ready = pylsl.local_clock()
    found = pylsl.resolve_byprop("name", "paper_loop.padova.events", minimum=1, timeout=10)
    assert found, "the exported stream was not found on this machine"
    inlet = pylsl.StreamInlet(found[0], processing_flags=pylsl.proc_clocksync)
    info = inlet.info(timeout=5)
    desc = info.desc()
    assert info.type() == "Events" and info.channel_count() == 2
    assert desc.child_value("node") == "padova" and desc.child_value("site") == "padova"
    assert desc.child_value("port") == "events"
    labels, ch = [], desc.child("channels").child("channel")
    while not ch.empty():
        labels.append(ch.child_value("label"))
        ch = ch.next_sibling()
    assert labels == ["id", "value"]
    samples, stamps = [], []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        chunk, ts = inlet.pull_chunk(timeout=0.5)
        samples += chunk
        stamps += ts
        if run.proc.poll() is not None:
            break
    chunk, ts = inlet.pull_chunk(timeout=0.5)
    samples += chunk
    stamps += ts
    code, text = run.finish(timeout=60)
    assert code == 0, text
    bn = next(n for n in read_json(out)["neurons"] if n["node"] == "padova")
    emitted = bn["psp"] + bn["stimulated_ap"] + bn["spontaneous_ap"]
    # The inlet joined after the first events may have been sent; all later ones must be there.
    assert 0 < len(samples) <= emitted and len(samples) >= emitted - 15
    assert {int(v) for _, v in samples} <= {0, 1, 2}
    # Each sample is stamped with its event's own time (on the shared clock), within the session.
    assert all(t_ready - 1.0 <= t <= pylsl.local_clock() for t in stamps)
