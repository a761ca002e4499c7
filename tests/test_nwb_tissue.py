"""NWB for tissue: a real rig session (`spikewire rig-sim` over LSL + rig_loop.toml) exported through the real
CLI with the preparation described, then checked by NWB Inspector and read back: the electrodes table and the
units linked to it, the detector's waveforms, and no stand-in columns on model neurons. Without processes:
the detector's waveform snippets against the signal they were cut from, and the export's refusals of bad
subject flags and sidecar keys (one line each, naming them)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import spikewire_cmd
from nwbinspector import Importance, inspect_nwbfile
from pynwb import NWBHDF5IO
from rig_helpers import LSL_CFG, read_truth, rig_loop_copy, start_rig_sim, stop, tag
from spikewire.monitor.nwb_export import UNIT_COLUMNS
from spikewire.monitor.nwb_subject import Preparation, SubjectError, preparation
from spikewire.nodes.kernels.detect import SpikeDetector
from spikewire.nodes.rig import WAVEFORMS_PER_CHANNEL, merge_waveforms

BARRED = {Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION, Importance.ERROR, Importance.PYNWB_VALIDATION}


def _export(session: Path, out: Path, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    """`spikewire export SESSION --nwb OUT FLAGS...`, the real CLI in a reaped subprocess."""
    return subprocess.run(spikewire_cmd("export", str(session), "--nwb", str(out), *flags), cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, LSLAPICFG=LSL_CFG))


@pytest.fixture(scope="module")
def rig_session(tmp_path_factory):
    """(session folder, rig-sim's truth, the file exported with the preparation described, the CLI's
    answer): one 6 s rig loop shared by the tests below."""
    where = tmp_path_factory.mktemp("tissue")
    name, stim = f"tissue-{tag()}", f"tissue-stim-{tag()}"
    rig, truth, log = start_rig_sim(where, name, stim, "--duration", "40")
    session = where / "session"
    try:
        done = subprocess.run(spikewire_cmd("run", str(rig_loop_copy(where, name, stim)), "--duration", "6",
                                            "--session-dir", str(session)),
                              cwd=where, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"spikewire run did not finish within 120 s:\n{e.stdout}\n{e.stderr}")
    finally:
        stop(rig)
    assert done.returncode == 0, done.stdout + done.stderr + log.read_text()
    sidecar = where / "culture.yaml"  # flags win over it: its sex is replaced by --sex F
    sidecar.write_text("species: Rattus norvegicus\nsex: U\nage: P18D\nelectrode_location: CA1 culture, MEA well 3\n")
    out = where / "tissue.nwb"
    export = _export(session, out, "--subject", str(sidecar), "--subject-id", "culture-7", "--sex", "F",
                     "--session-description", "BN on a rig in the paper's loop", cwd=where)
    assert export.returncode == 0, export.stdout + export.stderr
    return session, read_truth(truth), out, export


@pytest.mark.integration
def test_a_rig_session_with_its_subject_passes_nwb_inspector(rig_session):
    _, _, out, export = rig_session
    assert "warning" not in export.stderr, export.stderr  # nothing left undescribed
    found = [m for m in inspect_nwbfile(nwbfile_path=str(out)) if m.importance in BARRED]
    assert not found, "\n".join(f"{m.importance.name} {m.check_function_name} {m.location}: {m.message}" for m in found)
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        s = nwb.subject
        assert (s.subject_id, s.species, s.sex, s.age) == ("culture-7", "Rattus norvegicus", "F", "P18D")
        assert nwb.session_description == "BN on a rig in the paper's loop"


@pytest.mark.integration
def test_without_a_subject_the_warning_names_the_flags(rig_session, tmp_path):
    session, _, _, _ = rig_session
    export = _export(session, tmp_path / "bare.nwb", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    warning = [ln for ln in export.stderr.splitlines() if "recorded a preparation" in ln]
    assert len(warning) == 1 and "--species ... --sex ... --age ..." in warning[0] and "subject=" not in warning[0]
    assert "damaged" not in export.stderr  # an undescribed subject is no damage to the record
    critical = {m.check_function_name for m in inspect_nwbfile(nwbfile_path=str(tmp_path / "bare.nwb"))
                if m.importance == Importance.CRITICAL}
    assert critical == {"check_subject_age", "check_subject_sex"}  # what the flags are for


@pytest.mark.integration
def test_electrodes_are_the_rig_channels_used_and_units_link_to_them(rig_session):
    _, truth, out, _ = rig_session
    header = truth[0]
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        electrodes = nwb.electrodes.to_dataframe()
        # rig_loop.toml maps rig channel 0 to BN (neuron 0); channels 1-3 are not used: not electrodes
        assert list(electrodes["rig_channel"]) == [0] and list(electrodes["neuron_id"]) == [0]
        assert list(electrodes["label"]) == ["ch0"]  # from the stream's description (rig-sim's labels)
        assert list(electrodes["sampling_rate"]) == [header["rate"]]
        assert list(electrodes["location"]) == ["CA1 culture, MEA well 3"]  # from the sidecar
        assert list(electrodes["group_name"]) == ["padova"] and nwb.electrode_groups["padova"].device.name == "padova"
        units = nwb.units.to_dataframe()
        assert list(units["node"]) == ["padova"] and list(units["neuron_id"]) == [0]
        linked = nwb.units["electrodes"][0]  # the unit's electrodes, as rows of the electrodes table
        assert list(linked["rig_channel"]) == [0]
        assert nwb.units.resolution == pytest.approx(1.0 / header["rate"])
        spikes = units["spike_times"][0]
        aps = nwb.events["action_potentials"].to_dataframe()
        assert len(spikes) > 20 and aps["timestamp"].to_numpy() == pytest.approx(spikes)
        assert set(aps["type"]) == {"stimulated", "spontaneous"}  # evoked at 5 ms, and rig-sim's own


@pytest.mark.integration
def test_waveforms_are_the_detected_spikes(rig_session):
    _, truth, out, _ = rig_session
    header = truth[0]
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        units = nwb.units
        assert units.waveform_unit == "volts" and units.waveform_rate == header["rate"]
        mean, sd = np.asarray(units["waveform_mean"][0]), np.asarray(units["waveform_sd"][0])
        pre = round(units.waveform_time_before_peak_in_ms * 1e-3 * units.waveform_rate)
        assert mean.shape == sd.shape == (pre + round(2e-3 * header["rate"]),) and pre == round(1e-3 * header["rate"])
        # rig-sim's spikes are biphasic, negative first, `spike_uv` deep in the raw signal: the band-passed mean
        # has its trough where the detector placed it, well below the noise, and comes back up after it
        assert int(np.argmin(mean)) == pre
        assert -1.5 * header["spike_uv"] * 1e-6 < mean[pre] < -3 * header["noise_uv"] * 1e-6
        assert mean[-1] > 0.2 * mean[pre] and np.all(sd >= 0) and sd[pre] < abs(mean[pre])
        snippets = nwb.processing["ecephys"]["spike_snippets_padova_ch0"]
        data = snippets.data[:] * snippets.conversion
        assert data.shape[1:] == (1, len(mean)) and 5 <= data.shape[0] <= WAVEFORMS_PER_CHANNEL
        assert list(snippets.electrodes.data[:]) == [0]
        # every one is aligned on a negative trough; nearly all on their window's lowest sample (a spike detected
        # as the dead time ends, on its predecessor's tail, or one with a neighbour in its window, is not)
        assert np.all(data[:, 0, pre] < 0) and np.mean(np.argmin(data[:, 0, :], axis=1) == pre) >= 0.8
        # each snippet is of a detected spike: its trough's time is one of the unit's spike times (within
        # the trough search's 0.3 ms)
        stamps, spikes = snippets.timestamps[:], np.asarray(units["spike_times"][0])
        assert np.all(np.diff(stamps) > 0)
        gap = np.abs(stamps[:, None] - spikes[None, :]).min(axis=1)
        assert np.all(gap <= 0.35e-3), gap


@pytest.mark.integration
def test_model_neurons_carry_no_stand_in_columns(rig_session):
    _, _, out, _ = rig_session
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        model = nwb.processing["model"]["model_units"].to_dataframe()
        assert set(model["node"]) == {"zurich"} and len(model) == 2
        assert set(model.columns) == set(UNIT_COLUMNS) | {"spike_times"}
        for table in (model, nwb.units.to_dataframe()):
            assert "bio_event_type" not in table.columns
            for col in table.columns:  # nothing anywhere is a -1 standing in for "does not apply"
                values = table[col].tolist()
                flat = np.concatenate([np.ravel(v) for v in values]) if col == "spike_times" else values
                assert not any(isinstance(v, (int, np.integer)) and v == -1 for v in flat), col


# --- the detector's waveforms, from arrays alone ---------------------------------------------------------
def _recording(seconds: float = 2.0, rate: float = 30_000.0):
    """Three channels of noise (SD 10) with a -80 trough on channel 0 every 20 ms (0.8 x on channel 2;
    channel 1 none): (samples, trough sample indices)."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((int(seconds * rate), 3)) * 10).astype(np.float32)
    template = -80 * np.exp(-((np.arange(30) - 10) / 3.0) ** 2) + 30 * np.exp(-((np.arange(30) - 20) / 5.0) ** 2)
    troughs = np.arange(int(0.6 * rate), len(x) - 100, int(0.02 * rate))
    for t in troughs:
        x[t - 10:t + 20, 0] += template
        x[t - 10:t + 20, 2] += 0.8 * template
    return x, troughs


def _detect(x, chunk: int, snippets: int = 5, gap_at: int | None = None):
    d = SpikeDetector(3, 30_000.0, snippets=snippets, dead_time_s=1.5e-3)
    for a in range(0, len(x), chunk):
        first = a + (10_000 if gap_at is not None and a >= gap_at else 0)  # samples missed from gap_at on
        d.process(x[a:a + chunk], first, np.arange(first, first + len(x[a:a + chunk])) / 30_000.0)
    return d.waveforms()


def test_snippets_do_not_depend_on_how_the_stream_is_chunked():
    x, troughs = _recording()
    runs = [_detect(x, chunk) for chunk in (7, 30, 1000)]
    for w in runs[1:]:
        assert list(w.count) == list(runs[0].count)
        np.testing.assert_allclose(w.mean[[0, 2]], runs[0].mean[[0, 2]], rtol=1e-6)
        for c in (0, 2):
            np.testing.assert_array_equal(w.snippets[c], runs[0].snippets[c])
            np.testing.assert_array_equal(w.times[c], runs[0].times[c])
    w = runs[0]
    assert w.count[0] == w.count[2] == len(troughs) and w.count[1] == 0 and np.isnan(w.mean[1]).all()
    assert w.mean.shape == (3, 90) and w.pre == 30  # 1 ms before the trough, 2 ms after, at 30 kHz
    for c in (0, 2):
        assert int(np.argmin(w.mean[c])) == w.pre  # aligned on the filtered trough
        assert len(w.snippets[c]) == 5 and np.all(np.argmin(w.snippets[c], axis=1) == w.pre)
        # kept: a sample of the spikes, stamped at their troughs (filter delay: ~0.07 ms)
        offsets = w.times[c] * 30_000.0 - troughs[np.searchsorted(troughs, w.times[c] * 30_000.0 - 5)]
        assert np.all((0 <= offsets) & (offsets <= 4)), offsets
    # the uniform sample reaches past the first few spikes (reservoir, not the first five)
    assert w.times[0][-1] * 30_000.0 > troughs[len(troughs) // 2]


def test_a_gap_in_the_stream_drops_only_the_snippets_it_cuts():
    x, troughs = _recording()
    whole = _detect(x, 30)
    gapped = _detect(x, 30, gap_at=int(1.0 * 30_000) + 15)  # mid-chunk boundary: the stream jumps ahead
    assert whole.count[0] - 2 <= gapped.count[0] <= whole.count[0]


def test_merged_connections_pool_counts_and_stay_bounded():
    x, _ = _recording()
    a, b = _detect(x[:30_000], 30, snippets=WAVEFORMS_PER_CHANNEL), _detect(x[30_000:], 30,
                                                                          snippets=WAVEFORMS_PER_CHANNEL)
    m = merge_waveforms(a, b)
    assert list(m.count) == list(a.count + b.count)
    assert all(len(s) <= WAVEFORMS_PER_CHANNEL for s in m.snippets)
    pooled = (a.mean[0] * a.count[0] + b.mean[0] * b.count[0]) / (a.count[0] + b.count[0])
    np.testing.assert_allclose(m.mean[0], pooled, rtol=1e-9)
    assert merge_waveforms(None, b) is b and merge_waveforms(a, None) is a


# --- flags and sidecar ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, said", [
    (["--age", "90"], "--age: must be an ISO 8601 duration"),
    (["--age", "P"], "--age: must be an ISO 8601 duration"),
    (["--age", "90 days"], "--age: must be an ISO 8601 duration"),
    (["--sex", "female"], "--sex: must be one of M, F, U, O"),
    (["--subject-id", " "], "--subject-id: must be a non-empty text"),
])
def test_a_bad_flag_is_one_line_naming_it(flags, said, tmp_path):
    done = _export(tmp_path / "no-such-session", tmp_path / "x.nwb", *flags, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"spikewire export: {said}"), done.stderr
    assert not (tmp_path / "x.nwb").exists()


@pytest.mark.parametrize("text, said", [
    ("species: Rattus norvegicus\nweight: 250 g\n", "unknown key 'weight'"),
    ("age: 18 days\n", "age: must be an ISO 8601 duration"),
    ("sex: [F]\n", "sex: must be a non-empty text"),
    ("- a list\n", "must be a mapping of keys"),
    ("sex: F\n  age: P1D\n", "not valid YAML"),
])
def test_a_bad_sidecar_is_one_line_naming_the_key(text, said, tmp_path):
    sidecar = tmp_path / "subject.yaml"
    sidecar.write_text(text)
    done = _export(tmp_path / "no-such-session", tmp_path / "x.nwb", "--subject", str(sidecar), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"spikewire export: --subject {sidecar}: "), done.stderr
    assert said in done.stderr, done.stderr


def test_flags_win_over_the_sidecar_and_toml_reads_too(tmp_path):
    toml = tmp_path / "subject.toml"
    toml.write_text('subject_id = "c1"\nsex = "U"\nage = "P90D/P120D"\n')
    prep = preparation({"sex": "M", "species": None}, toml)
    assert prep == Preparation(subject_id="c1", sex="M", age="P90D/P120D")
    assert prep.missing() == ["--species"]
    with pytest.raises(SubjectError, match=r"^--age: .*got 'P90D/P120D/P1Y'$"):
        preparation({"age": "P90D/P120D/P1Y"})
    assert preparation({"age": "P2Y6MT12H"}).age == "P2Y6MT12H" and preparation({"age": "P90D/"}).age == "P90D/"


@pytest.mark.parametrize("key, value, words", [
    ("age", "P120D/P90D", "younger age to the older"),
    ("age", "P1Y/P11M", "younger age to the older"),
    ("subject_id", "culture\n7", "one line of printable text"),
    ("species", "Rattus\tnorvegicus", "one line of printable text"),
])
def test_subject_values_found_wrong_from_the_outside_are_refused(key, value, words):
    from spikewire.monitor.nwb_subject import SubjectError, check_value

    with pytest.raises(SubjectError, match=words):
        check_value(key, value, f"--{key}")
    assert check_value("age", "P90D/P120D", "--age") == "P90D/P120D" and check_value("age", "P11M/P1Y", "--age")
