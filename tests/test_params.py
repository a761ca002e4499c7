"""The parameter reference (config/params.py): complete, with a unit on every number, and committed current."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from spikewire.config import params
from spikewire.config.network import TOP_LEVEL
from spikewire.core.settings import (Settings, docs, each, in_range, non_negative, parse, positive, rule_of, setting,
                                     stated, unit_of)
from spikewire.nodes.element import kinds
from spikewire.nodes.memristor import MemristorSettings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "parameters.md"
NETWORK_FILES = sorted((ROOT / "launch" / "networks").glob("*.toml")) + sorted((ROOT / "examples").glob("*/*.toml"))
NETWORK_FILES = [p for p in NETWORK_FILES if p.name != "pyproject.toml"]
NOT_OURS = {"spikewire.nodes.memristor", "spikewire.nodes.plasticity", "spikewire.nodes.crossbar",
            "spikewire.nodes.tiox", "spikewire.nodes.probe", "spikewire.nodes.hub_bridge"}
"""Settings modules whose units another change fills in (the lead's, and the test kinds'); every other
module's numbers must have a unit now."""


@pytest.fixture(scope="module")
def reference():
    return params.reference()


def all_params(sections):
    return [p for s in sections for p in s.params]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = params.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- the schema -------------------------------------------------------------------------------------------
def test_setting_takes_a_unit_and_stays_compatible():
    @dataclasses.dataclass(frozen=True)
    class S(Settings):
        width: float = setting(1e-4, "Pulse width [s].", check=positive, unit="s")
        gain: float = setting(2.0, "Gain.", check=in_range(0.0, 10.0))
        rates: float | tuple[float, ...] = setting(1.0, "Rates.", check=each(non_negative), unit="Hz")
        odd: int = setting(3, "Odd.", check=stated("an odd number", lambda v: None if v % 2 else "must be odd"))

    fields = {f.name: f for f in dataclasses.fields(S)}
    assert unit_of(fields["width"]) == "s" and unit_of(fields["gain"]) is None
    assert docs(S)[0] == ("width", "Pulse width [s].", 1e-4)  # the old 3-tuples, unchanged
    assert [rule_of(fields[n].metadata["check"]) for n in fields] == ["> 0", "in [0, 10]", "each value >= 0",
                                                                      "an odd number"]
    assert parse(S, {"rates": [1.0, 2.0]}).rates == (1.0, 2.0)
    with pytest.raises(ValueError, match=r"^rates\[0\]|rates: must be >= 0"):
        parse(S, {"rates": [-1.0]}, "")
    with pytest.raises(ValueError, match="odd: must be odd"):
        parse(S, {"odd": 4})


# --- coverage ---------------------------------------------------------------------------------------------
def test_every_kind_and_every_top_level_table_has_a_section(reference):
    names = {s.name for s in reference}
    assert set(kinds()) <= names
    assert {name for name, _, _ in params.NETWORK_TABLES} | {"nodes"} == set(TOP_LEVEL)


def _pattern(key: str) -> re.Pattern:
    text = re.escape(key).replace(r"\[i\]", r"\[\d+\]")
    return re.compile(re.sub(r"<[a-z_]+>", r"[A-Za-z0-9_\\-]+", text) + r"\Z")


def _leaves(data: dict, prefix: str, tables: list[re.Pattern]):
    """The dotted keys of a TOML table's values; a table is walked into when the reference has keys inside it."""
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict) and any(t.match(key) for t in tables):
            yield from _leaves(value, key, tables)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                yield from _leaves(item, f"{key}[{i}]", tables)
        else:
            yield key


@pytest.mark.parametrize("path", NETWORK_FILES, ids=lambda p: p.name)
def test_every_key_of_the_shipped_networks_is_in_the_reference(path, reference):
    """The keys as the reference writes them are the keys a file uses (placeholders, [i], nested tables)."""
    every = [p.key for p in all_params(reference)]
    keys = [_pattern(k) for k in every]
    parts = [k.split(".") for k in every]
    tables = [_pattern(".".join(p[:n])) for p in parts for n in range(1, len(p))]  # every key with keys inside
    data = tomllib.loads(path.read_text())
    found = list(_leaves(data, "", tables))
    missing = [k for k in found if not any(p.match(k) for p in keys)]
    assert found and not missing, f"{path.name}: keys the reference does not list: {missing}"


def test_memristor_lists_every_parameter_with_unit_and_default(capsys):
    code, out, _ = run(capsys, "memristor")
    assert code == 0
    for p in params.walk(MemristorSettings, params.NODE):
        assert f"{p.key} = " in out, p.key
    assert "nodes.<node>.r_init = 14000.0" in out
    assert "nodes.<node>.synapses.<synapse>.plasticity.ltp_width = 0.0001" in out
    assert "nodes.<node>.tick = 0.001  [s]" in out  # the keys every node has come with it
    assert "nodes.<node>.dt" not in out  # a memristor node is not clock-driven
    assert "== [transport] ==" not in out


# --- units ------------------------------------------------------------------------------------------------
def _missing_units(reference, ours: bool) -> list[str]:
    return sorted({f"{p.key} ({p.declared_in})" for p in all_params(reference)
                   if p.numeric and not p.unit and (p.declared_in not in NOT_OURS) == ours})


def test_every_number_has_a_unit(reference):
    missing = _missing_units(reference, ours=True)
    assert not missing, "numbers without a unit (setting(..., unit=...); '1', 'count' or 'id' if it has none): " \
        + ", ".join(missing)


def test_every_number_of_the_other_modules_has_a_unit(reference):
    missing = _missing_units(reference, ours=False)
    assert not missing, "numbers without a unit: " + ", ".join(missing)


def test_units_are_from_one_vocabulary_and_only_on_numbers(reference):
    words = sorted(params.UNIT_WORDS, key=len, reverse=True)
    token = re.compile("|".join(re.escape(w) for w in words))
    for p in all_params(reference):
        if not p.unit:
            continue
        assert p.numeric, f"{p.key} is a {p.type} with a unit ({p.unit!r})"
        rest = token.sub("", p.unit)
        assert not re.sub(r"[/(), ]", "", rest), f"{p.key}: unit {p.unit!r} is not made of {params.UNIT_WORDS}"


def test_izhikevich_keys_are_marked_not_si_and_nothing_else_is(reference, capsys):
    non_si = {(s.name, p.key) for s in reference for p in s.params if p.non_si}
    assert {kind for kind, _ in non_si} == {"biological"}
    assert ("biological", "nodes.<node>.neuron.c") in non_si and ("biological", "nodes.<node>.stim_gain") in non_si
    assert not any(k.endswith((".dt", ".stim_tau", ".stim_window")) for _, k in non_si)  # its times are seconds
    _, out, _ = run(capsys, "biological")
    assert "nodes.<node>.neuron.c = -65.0  [mV]  number  (Izhikevich units, not SI)" in out
    assert "nodes.<node>.stim_gain = 20.0  [(mV/ms)/V]  number  (check: in [0, 1000])  (Izhikevich units" in out
    assert "Units: SI, except the Izhikevich model's mV and ms" in out
    _, out, _ = run(capsys, "silicon")
    assert "Units: SI (s, Hz, V, A, F, S, Ohm)." in out and "not SI)" not in out
    assert "nodes.<node>.populations.<population>.neuron.c_m = 2.81e-10  [F]" in out


def test_checks_are_said_in_words(reference):
    rules = {p.key: p.rule for p in all_params(reference)}
    assert rules["nodes.<node>.populations.<population>.neuron.c_m"] == "each value > 0"
    assert rules["links[i].delay"] == '"auto", or in [0, 10]'
    assert rules["monitor.render"] == 'one of "loop", "scrape"'
    assert rules["nodes.<node>.rig.max_amplitude"] == "in (0, 10]"
    assert rules["safety.max_loss"] == "in [0, 1]"
    unstated = [f"{p.key} ({p.declared_in})" for p in all_params(reference)
                if p.rule.endswith("a rule of its own") and p.declared_in not in NOT_OURS]
    assert not unstated, f"checks without their rule in words (core.settings.stated): {unstated}"


# --- the command ------------------------------------------------------------------------------------------
def test_formats(capsys):
    code, out, _ = run(capsys, "silicon", "--format", "json")
    data = json.loads(out)
    assert code == 0 and [s["name"] for s in data["sections"]] == ["node", "clocked", "silicon"]
    c_m = next(p for p in data["sections"][2]["params"] if p["key"].endswith("neuron.c_m"))
    assert (c_m["unit"], c_m["default"], c_m["rule"], c_m["non_si"]) == ("F", "2.81e-10", "each value > 0", False)
    code, out, _ = run(capsys, "network", "--format", "markdown")
    assert code == 0 and "| `transport.heartbeat_every` | number | `s` | `0.2` | in [0.01, 5] |" in out
    assert "### [sites.&lt;site>]" in out  # GitHub would swallow a bare <site>


def test_unknown_kind_is_one_line_listing_the_known_ones(capsys):
    code, out, err = run(capsys, "memristr")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown kind 'memristr'" in err
    assert all(kind in err for kind in kinds())


def test_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as done:
        params.main(["--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: spikewire params [-h]")


def test_a_closed_pipe_is_no_traceback():
    """`spikewire params | head`: the reader goes away; nothing but silence."""
    proc = subprocess.Popen([sys.executable, "-m", "spikewire.config.params"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has written a byte: its write meets a closed pipe
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and b"Traceback" not in err and err == b""


def test_spikewire_params_command():
    done = subprocess.run([sys.executable, "-m", "spikewire", "params", "memristor"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "nodes.<node>.r_init = 14000.0" in done.stdout


# --- the committed reference ------------------------------------------------------------------------------
def test_docs_parameters_md_is_current():
    made = params.render_markdown(params.reference(builtin_only=True))
    committed = DOCS.read_text() if DOCS.exists() else ""
    assert committed == made, "docs/parameters.md is stale: run `make params-docs` and commit it"


def test_docs_hold_only_spikewire_s_own_kinds():
    text = DOCS.read_text()
    assert '### kind = "lif"' not in text and "spikewire_linear" not in text  # installed examples stay out
    assert '### kind = "memristor"' in text
