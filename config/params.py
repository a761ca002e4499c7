"""The parameter reference: every key a network file takes, with its type, unit, default and rule.

It is made from the settings schema alone (core/settings.py): the network-level tables (config/network.py),
the keys every node has, and each element kind's ``Settings`` (spikewire's and installed packages'), walked
into nested tables (neuron parameters, drives, plasticity, the rig) and each crossbar model's ``device.params``.
``spikewire params [KIND]`` prints it; ``make params-docs`` writes docs/parameters.md from spikewire's own
kinds only, so the committed file does not depend on what a machine has installed.

The catch: a rule that ties several keys (``tick`` a whole number of ``dt``, ``r_max`` above ``r_min``) lives
in a class's ``validate`` and is not listed here; the descriptions say the ones that matter.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

from spikewire.config.network import (LinkSettings, MonitorSettings, NetworkInfo, ProtocolSettings,
                                        SecuritySettings, SiteSettings)
from spikewire.core.settings import DIMENSIONLESS, Settings, rule_of, unit_of
from spikewire.nodes.base import ClockedSettings, NodeSettings
from spikewire.nodes.crossbar import crossbars
from spikewire.nodes.element import broken_kinds, kinds
from spikewire.nodes.interlock import SafetySettings
from spikewire.nodes.memristor import DeviceParams
from spikewire.streams.transport import TransportSettings

NETWORK_TABLES: tuple[tuple[str, type, str], ...] = (
    ("network", NetworkInfo, "network"),
    ("protocol", ProtocolSettings, "protocol"),
    ("monitor", MonitorSettings, "monitor"),
    ("sites", SiteSettings, "sites.<site>"),
    ("security", SecuritySettings, "security"),
    ("transport", TransportSettings, "transport"),
    ("safety", SafetySettings, "safety"),
    ("links", LinkSettings, "links[i]"),
)
"""Each top-level table but ``nodes`` (``TOP_LEVEL``): its name, settings class and key prefix."""
NODE = "nodes.<node>"
NON_SI = re.compile(r"\bm[Vs]\b")
"""A unit in the Izhikevich model's millivolts and milliseconds, not SI."""
SI_NOTE = ("Every number is in SI units (s, Hz, V, A, F, S, Ohm) unless its unit says otherwise. The one "
           "exception is the Izhikevich model of the biological kind (backend = \"model\"): its neuron "
           "parameters and input currents are in the model's own mV and ms (its currents in mV/ms, added to "
           "dv/dt), as Izhikevich (2003) wrote them; the node's own times (dt, tick, stim_tau, stim_window) stay "
           "in seconds. The units below are those the schema declares; a key in mV or ms is marked as such in "
           "every format.")
UNIT_NAMES = {
    "input unit": "the unit of the events on a population's or port's input (A for silicon and lif, V for a "
                  "biological node's stimuli)",
    "output unit": "the unit of the events a synapse group sends: V for stimuli, A for synaptic steps (its "
                   "output setting)",
    "noise SD": "multiples of a channel's noise standard deviation (estimated from its median absolute deviation)",
}
"""Units that are words, not symbols, beside ``DIMENSIONLESS``."""
UNIT_WORDS = ("s", "Hz", "V", "A", "F", "S", "Ohm", "bytes", "mV", "ms", *DIMENSIONLESS, *UNIT_NAMES)
"""What a unit is made of (with "/", "(", ")" and ", " between): a test keeps to these, so "ohm" or "sec"
cannot slip in beside "Ohm" and "s"."""


@dataclass(frozen=True)
class Param:
    key: str
    """The full dotted key as a network file writes it (``nodes.<node>.device.r_min``)."""
    type: str
    unit: str | None
    """What the number is counted in; None for a key that is not a number (or declares none)."""
    default: str
    """As TOML writes it; "(required)" if there is none."""
    rule: str
    """The check in words ("> 0", "in [0, 1]", "one of ..."); "" if none."""
    doc: str
    numeric: bool
    only: str = ""
    """When it applies, if not always (``device.model = "linear"``)."""
    declared_in: str = ""
    """The module whose settings class declares it (where a missing unit is to be added)."""

    @property
    def non_si(self) -> bool:
        return bool(self.unit and NON_SI.search(self.unit))


@dataclass(frozen=True)
class Section:
    name: str
    """What ``spikewire params NAME`` selects: a kind, ``node``, ``clocked`` or a network table."""
    title: str
    about: str
    params: tuple[Param, ...]
    group: Literal["network", "node", "kind"]
    origin: str = "spikewire"
    """The package that defines it."""


# --- the walk -------------------------------------------------------------------------------------------
def _words(tp: Any) -> tuple[str, bool]:
    """A type in words, and whether it holds numbers."""
    origin = get_origin(tp)
    if tp is float:
        return "number", True
    if tp is int:
        return "integer", True
    if tp is bool:
        return "boolean", False
    if tp is str or origin is Literal:
        return "string", False
    if tp is Any:
        return "table", False
    if isinstance(tp, type) and issubclass(tp, Settings):
        return "table", False
    if origin in (typing.Union, types.UnionType):  # None is "unset"; a word beside a number is named
        parts = [(" or ".join(map(json.dumps, get_args(a))), False) if get_origin(a) is Literal else _words(a)
                 for a in get_args(tp) if a is not type(None)]
        words = " or ".join(w for w, _ in parts)
        if words == "number or array of numbers":  # core/settings.py's per-neuron parameters
            words += " (one per neuron)"
        return words, any(n for _, n in parts)
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            inner, numeric = _words(args[0])
            return f"array of {inner if inner.startswith('[') else inner + 's'}", numeric
        parts = [_words(a) for a in args]
        return "[" + ", ".join(w for w, _ in parts) + "]", any(n for _, n in parts)
    if origin is dict:
        if get_args(tp)[1] is Any:
            return "table", False
        inner, numeric = _words(get_args(tp)[1])
        return f"table of {inner if inner.startswith('[') else inner + 's'}", numeric
    return str(tp), False


def _toml(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    return "(table)"


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return _toml(f.default)
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "" if isinstance(value, Settings) else _toml(value)
    return "(required)"


def _rule(f: dataclasses.Field, tp: Any) -> str:
    check = f.metadata.get("check")
    rules = ["one of " + ", ".join(map(json.dumps, get_args(tp))) if get_origin(tp) is Literal else "",
             rule_of(check) or ("a rule of its own" if check is not None else "")]
    return "; ".join(r for r in rules if r)


def _nested(tp: Any) -> tuple[type | None, str]:
    """The settings class a field holds (a table, a table of tables, an array of tables) and how a key goes on
    into it: "" (``.key``), "name" (``.<name>.key``) or "index" (``[i].key``)."""
    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, Settings):
        return tp, ""
    args = get_args(tp)
    if origin is dict and isinstance(args[1], type) and issubclass(args[1], Settings):
        return args[1], "name"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and isinstance(args[0], type) \
            and issubclass(args[0], Settings):
        return args[0], "index"
    return None, ""


def walk(cls: type, prefix: str, skip: frozenset = frozenset(), only: str = "",
         builtin_only: bool = False) -> list[Param]:
    """Every key of ``cls`` under ``prefix``, nested tables included (a row for the table, then its keys)."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f in skip:
            continue
        name = f.metadata.get("key") or f.name
        tp = hints[f.name]
        key = f"{prefix}.{name}"
        words, numeric = _words(tp)
        sub, how = _nested(tp)
        if sub is not None:
            words = {"": "table", "name": "table of tables", "index": "array of tables"}[how]
        out.append(Param(key, words, unit_of(f), _default(f), _rule(f, tp), f.metadata.get("doc", ""),
                         numeric and sub is None, only, cls.__module__))
        if sub is not None:
            inner = {"": key, "name": f"{key}.<{name.removesuffix('s')}>", "index": f"{key}[i]"}[how]
            out += walk(sub, inner, only=only, builtin_only=builtin_only)
        if cls is DeviceParams and name == "params":  # each crossbar model's own table
            for model, xb in sorted(crossbars().items()):
                if xb.Params is not None and (_builtin(xb) or not builtin_only):
                    package = "" if _builtin(xb) else f" (from the installed package {xb.__module__.split('.')[0]})"
                    out += walk(xb.Params, key, only=f'{prefix.rsplit(".", 1)[-1]}.model = "{model}"{package}',
                                builtin_only=builtin_only)
    return out


def _builtin(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "spikewire"


def _about(cls: type, *more: type) -> str:
    """The first paragraph of the first real docstring of ``cls``, then ``more``, then their modules."""
    for c in (cls, *more):
        doc = c.__doc__ or ""
        if doc and not doc.startswith(f"{c.__name__}("):  # dataclasses write a signature where none is
            return " ".join(doc.strip().split("\n\n")[0].split())
    module = sys.modules[(more[-1] if more else cls).__module__]
    return " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())


def reference(builtin_only: bool = False) -> list[Section]:
    """The whole reference: the network-level tables, the keys of every node, then each kind by name.
    ``builtin_only``: spikewire's own kinds and crossbar models, none of an installed package's."""
    sections = [Section(name, "[[links]]" if name == "links" else f"[{prefix}]", _about(cls),
                        tuple(walk(cls, prefix)), "network") for name, cls, prefix in NETWORK_TABLES]
    node_fields = frozenset(dataclasses.fields(NodeSettings))
    kind_field = frozenset(f for f in node_fields if f.name == "kind")  # each kind's section says its own
    sections.append(Section("node", f"Every node: [{NODE}]", _about(NodeSettings),
                            tuple(walk(NodeSettings, NODE, skip=kind_field)), "node"))
    sections.append(Section("clocked", f"Every clock-driven node: [{NODE}]", _about(ClockedSettings),
                            tuple(walk(ClockedSettings, NODE, skip=node_fields)), "node"))
    for kind, cls in sorted(kinds().items()):
        if builtin_only and not _builtin(cls):
            continue
        settings = cls.Settings
        base = next((b for b in (ClockedSettings, NodeSettings) if issubclass(settings, b)), None)
        skip = frozenset(dataclasses.fields(base)) if base else frozenset()
        own = Param(f"{NODE}.kind", "string", None, "(required)", json.dumps(kind), "This kind.", False,
                    declared_in=cls.__module__)
        sections.append(Section(kind, f'kind = "{kind}"', _about(settings, cls),
                                (own, *walk(settings, NODE, skip=skip, builtin_only=builtin_only)), "kind",
                                "spikewire" if _builtin(cls) else cls.__module__.split(".")[0]))
    return sections


def common_sections(kind: Section, sections: list[Section]) -> list[Section]:
    """The sections of keys a kind's nodes have besides its own (every node's, every clock-driven node's)."""
    cls = kinds()[kind.name].Settings
    names = [n for n, b in (("node", NodeSettings), ("clocked", ClockedSettings)) if issubclass(cls, b)]
    return [s for s in sections if s.name in names]


def select(sections: list[Section], topic: str | None) -> list[Section]:
    """The sections ``spikewire params TOPIC`` shows: all, the network-level tables, or one kind with the keys
    every node of it has."""
    if topic is None:
        return sections
    if topic == "network":
        return [s for s in sections if s.group == "network"]
    kind = next(s for s in sections if s.group == "kind" and s.name == topic)
    return [*common_sections(kind, sections), kind]


# --- units ----------------------------------------------------------------------------------------------
def units_line(section: Section) -> str:
    """Which units a section's numbers are in, so that no one reads millivolts as volts."""
    odd = [_short(p) + f" [{p.unit}]" for p in section.params if p.non_si]
    line = ("Units: SI, except the Izhikevich model's mV and ms (not V and s) in " + ", ".join(odd) + "; every other "
            "number is SI." if odd else "Units: SI (s, Hz, V, A, F, S, Ohm).")
    missing = [_short(p) for p in section.params if p.numeric and not p.unit]
    return line + (f" Not yet declared: the unit of {', '.join(missing)}." if missing else "")


def unit_words() -> list[tuple[str, str]]:
    """The units that are not physical ones, and what each means."""
    return [*DIMENSIONLESS.items(), *UNIT_NAMES.items()]


# --- formats --------------------------------------------------------------------------------------------
def _short(p: Param) -> str:
    return p.key.removeprefix(NODE + ".") if p.key.startswith(NODE + ".") else p.key


def render_text(sections: list[Section], width: int = 100) -> str:
    out = ["Parameters of a network file: each key = its default, [unit], type and (check).",
           *textwrap.wrap(SI_NOTE, width), ""]
    for s in sections:
        origin = "" if s.origin == "spikewire" else f"  (from the installed package {s.origin})"
        out += [f"== {s.title} =={origin}", *textwrap.wrap(s.about, width)]
        if s.group == "kind":
            out += textwrap.wrap(units_line(s), width)
        out.append("")
        for p in s.params:
            unit = f"  [{p.unit}]" if p.unit else "  [unit not declared]" if p.numeric else ""
            mark = "  (Izhikevich units, not SI)" if p.non_si else ""
            rule = f"  (check: {p.rule})" if p.rule else ""
            only = f"  (only with {p.only})" if p.only else ""
            out.append(f"  {p.key} = {p.default or '(table)'}{unit}  {p.type}{rule}{only}{mark}")
            if p.doc:
                out += textwrap.wrap(p.doc, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
        out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def render_markdown(sections: list[Section]) -> str:
    out = ["# Parameters", "",
           "Every key a network file takes, with its type, unit, default and check. Generated from the settings "
           "schema by `make params-docs` (`spikewire params --builtin --format markdown`): do not edit it by "
           "hand. It lists spikewire's own element kinds; `spikewire params` also lists those of installed "
           "packages, and `spikewire params KIND` one kind.", "",
           "A key is written as in the file: `nodes.<node>.neuron.c_m` is `c_m` in the table "
           "`[nodes.<node>.neuron]`; `<node>`, `<population>`, `<synapse>` and `<site>` are names you choose, "
           "`[i]` an element of an array of tables (`[[links]]`). A check that ties several keys (`tick` a whole "
           "number of `dt`) is in the description.", "",
           "## Units", "", SI_NOTE, ""]
    for s in sections:
        if s.group == "kind":
            out.append(f"- `{s.name}`: {_cell(units_line(s).removeprefix('Units: '))}")
    out += ["", "A number without a physical unit says which kind of number it is:", ""]
    out += [f"- `{unit}`: {text}" for unit, text in unit_words()]
    groups = {"network": "Network-level tables", "node": "Keys of every node", "kind": "Element kinds"}
    shown = set()
    for s in sections:
        if s.group not in shown:
            shown.add(s.group)
            out += ["", f"## {groups[s.group]}"]
        out += ["", f"### {_cell(s.title)}", "", _cell(s.about), ""]
        if s.group == "kind":
            out += [_cell(units_line(s)), ""]
        out += ["| Key | Type | Unit | Default | Check | Description |", "|---|---|---|---|---|---|"]
        for p in s.params:
            doc = p.doc + (f" Only with `{p.only}`." if p.only else "")
            unit = _code(p.unit) + (" (not SI)" if p.non_si else "") if p.unit else "not declared" if p.numeric else ""
            out.append(f"| `{p.key}` | {p.type} | {unit} | {_code(p.default)} | {_cell(p.rule)} | {_cell(doc)} |")
    return "\n".join(out) + "\n"


def render_json(sections: list[Section]) -> str:
    data = {"units": {"convention": SI_NOTE, "without_physical_unit": dict(unit_words()),
                      "by_kind": {s.name: units_line(s) for s in sections if s.group == "kind"}},
            "sections": [{**{k: v for k, v in dataclasses.asdict(s).items() if k != "params"},
                          "params": [{**dataclasses.asdict(p), "non_si": p.non_si} for p in s.params]}
                         for s in sections]}
    return json.dumps(data, indent=2) + "\n"


RENDER = {"text": render_text, "markdown": render_markdown, "json": render_json}


# --- the command ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikewire params",
        description="Print every parameter a network file takes: its full key, type, unit, default and check. "
                    "Numbers are SI (s, V, A, Ohm) except the biological kind's Izhikevich model (mV, ms), and "
                    "every such key is marked. docs/parameters.md holds the same for spikewire's own kinds.")
    parser.add_argument("kind", nargs="?", metavar="KIND",
                        help="one element kind (its keys and those every node of it has), or 'network' for the "
                             "network-level tables ([network], [monitor], [[links]], ...); default: everything")
    parser.add_argument("--format", choices=sorted(RENDER), default="text",
                        help="text (for a terminal, the default), markdown (as docs/parameters.md) or json")
    parser.add_argument("--builtin", action="store_true",
                        help="only spikewire's own kinds and crossbar models, leaving out installed packages' "
                             "(how docs/parameters.md is made)")
    return parser


def _write(text: str) -> int:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `spikewire params | head` stopped reading: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's own flush at exit fails no more
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sections = reference(builtin_only=args.builtin)
    if args.kind is not None:
        known = sorted(s.name for s in sections if s.group == "kind")
        if args.kind in broken_kinds() and not args.builtin:
            print(f"spikewire params: the plugin of kind {args.kind!r} cannot be used: "
                  f"{broken_kinds()[args.kind]}", file=sys.stderr)
            return 2
        if args.kind != "network" and args.kind not in known:
            print(f"spikewire params: unknown kind {args.kind!r}; known kinds: {', '.join(known)} "
                  "(or 'network' for the network-level tables)", file=sys.stderr)
            return 2
    return _write(RENDER[args.format](select(sections, args.kind)))


if __name__ == "__main__":
    sys.exit(main())
