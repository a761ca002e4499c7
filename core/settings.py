"""Frozen, documented settings parsed from TOML tables, with errors that name the key.

A settings class is a frozen dataclass whose fields are declared with ``setting(default, doc, check)``.
``parse(cls, table, key)`` checks every value's type strictly (a string is never a number, a bool is
never an int), rejects unknown keys (a typo is an error, not a silently ignored key), runs each field's
check and then the class's cross-field ``validate``. The first problem raises ``SettingsError`` whose
message is one line: ``nodes.mr1.pulse_width: must be > 0, got -0.0001``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Callable, Literal, get_args, get_origin, get_type_hints

Check = Callable[[Any], "str | None"]
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


MAX_KEY_CHARS = 200
MAX_REASON_CHARS = 600


def printable(text: str, limit: int) -> str:
    """``text`` as one printable line of at most ``limit`` characters: a key or value from a file may hold
    newlines or terminal escapes, and an error message must stay one line the user can read."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SettingsError(ValueError):
    """A network file value that cannot be used. ``key`` is the dotted path, ``reason`` the why; both are
    made one printable line, whatever the file held."""

    def __init__(self, key: str, reason: str):
        self.key = printable(key, MAX_KEY_CHARS)
        self.reason = printable(reason, MAX_REASON_CHARS)
        super().__init__(f"{self.key}: {self.reason}" if self.key else self.reason)


class Settings:
    """Base of all settings classes; subclasses are ``@dataclass(frozen=True)``."""

    def validate(self, key: str) -> None:
        """Cross-field checks; raise SettingsError naming the offending key."""


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, check: Check | None = None,
            key: str | None = None, factory: Callable[[], Any] | None = None, unit: str | None = None) -> Any:
    """Declare a settings field. ``key`` is the TOML name when it differs (``from`` is a keyword). ``unit``
    is what a number is counted in, for the parameter reference (config/params.py): an SI symbol ("s", "V",
    "Ohm"), a model's own ("mV", "1/ms"), or a word for a number without one (``DIMENSIONLESS``)."""
    meta = {"doc": doc, "check": check, "key": key, "unit": unit}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def join(key: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else name


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


DIMENSIONLESS = {
    "1": "a pure number: a ratio, fraction or factor",
    "count": "how many of something (packets, samples, neurons, rows)",
    "id": "a number that names something: a seed, a TCP or UDP port, a CPU, a channel, a source id",
}
"""The units of a number that has none, each said on purpose (``setting(..., unit="count")``)."""


def unit_of(f: dataclasses.Field) -> str | None:
    """The unit a settings field declares (None: it declares none)."""
    return f.metadata.get("unit")


# Checks: each returns None when fine, else the reason. Each also states its rule in words (``rule``), for the
# parameter reference; a check written elsewhere states its own with ``stated``.
def stated(rule: str, check: Check) -> Check:
    """``check``, with its rule in words for the parameter reference: ``stated("in (0, 10]", lambda v: ...)``."""
    check.rule = rule
    return check


def rule_of(check: Check | None) -> str | None:
    """A check's rule in words ("> 0", "in [0, 1]"); None if it states none."""
    return getattr(check, "rule", None) if check is not None else None


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def non_negative(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v!r}"


def in_range(lo: float, hi: float) -> Check:
    def check(v: float) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo!r} and {hi!r}, got {v!r}"
    return stated(f"in [{_number(lo)}, {_number(hi)}]", check)


def non_empty(v: Any) -> str | None:
    return None if len(v) else "must not be empty"


def each(check: Check) -> Check:
    """``check`` applied to a number, or to every element of an array of them (per-neuron parameters)."""
    def run(v: Any) -> str | None:
        for x in (v if isinstance(v, tuple) else (v,)):
            reason = check(x)
            if reason:
                return reason
        return None
    rule = rule_of(check)
    return stated(f"each value {rule}", run) if rule else run


stated("> 0", positive)
stated(">= 0", non_negative)
stated("not empty", non_empty)


NODE_MEMORY_BUDGET = 1 << 30
"""Bytes of model state one node may need (its arrays: neurons, devices, per-step buffers). A size that
needs more is refused before anything allocates, so a typo (10^9 neurons) is one line from ``check``, not a
machine swapping to death. 1 GiB is far beyond what runs in real time (the AdEx kernel steps ~10^4
neurons per core at dt = 0.1 ms); an offline experiment that needs more raises it here."""


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _too_big(count: int, what: str, bytes_each: int, most: int, budget: int) -> str:
    return (f"must be at most {most:,}: {count:,} {what} needs ~{format_bytes(count * bytes_each)} "
            f"(~{bytes_each:,} B each), over the {format_bytes(budget)} one node may use")


def within_memory(bytes_each: int, what: str, square: bool = False, budget: int = NODE_MEMORY_BUDGET) -> Check:
    """A count > 0 whose ``what`` (plural: "neurons") take ``bytes_each`` bytes each, within ``budget``.
    ``square``: the count is one side of a square of them (a crossbar's wordlines or bitlines), so the
    bound is on side x side."""
    most = math.isqrt(budget // bytes_each) if square else budget // bytes_each

    def check(v: int) -> str | None:
        if v <= 0:
            return f"must be > 0, got {v!r}"
        if v > most:
            return _too_big(v * v if square else v, what, bytes_each, most, budget)
        return None
    return stated(f"in [1, {most}]", check)


def rows_within_memory(max_rows: int, bytes_per_id: int, what: str, budget: int = NODE_MEMORY_BUDGET) -> Check:
    """A non-empty table of at most ``max_rows`` rows of non-negative integers, each an id that costs
    ``bytes_per_id`` bytes of state for every id up to it (so ids are bounded by ``budget``)."""
    most = budget // bytes_per_id

    def check(rows: tuple) -> str | None:
        if not rows:
            return "must not be empty"
        if len(rows) > max_rows:
            return f"must have at most {max_rows:,} rows, got {len(rows):,}"
        for i, row in enumerate(rows):
            top = max(row, default=0)
            if top >= most:
                return f"row {i} names id {top:,}: " + _too_big(top + 1, what, bytes_per_id, most - 1, budget)
        return None
    return stated(f"1 to {max_rows} rows, each value < {most}", check)


# The kinds bound their size fields with these; they are reached through the checks every kind file
# already imports (``check=positive.within_memory(256, "neurons")``).
positive.within_memory = within_memory
non_empty.rows_within_memory = rows_within_memory


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:  # a table handed on as read, for a settings class chosen later (a crossbar model's Params)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(key, f"must be a number, got {describe(value)}")
        if not math.isfinite(value):
            raise SettingsError(key, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(key, f"must be an integer, got {describe(value)}")
        if not INT64_MIN <= value <= INT64_MAX:  # numpy, struct and ZeroMQ would each fail differently
            raise SettingsError(key, f"must be a 64-bit integer (between {INT64_MIN} and {INT64_MAX}), got a "
                                f"{value.bit_length() + 1}-bit integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingsError(key, f"must be true or false, got {describe(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(key, f"must be a string, got {describe(value)}")
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices or isinstance(value, bool):
            raise SettingsError(key, f"must be one of {', '.join(map(repr, choices))}, got {describe(value)}")
        return value
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, key)
        # "a number or an array of numbers" (per-neuron parameters): the array form takes lists
        seq = [a for a in inner if get_origin(a) is tuple]
        scalar = [a for a in inner if get_origin(a) is not tuple]
        if len(seq) == 1 and len(scalar) == 1:
            if isinstance(value, list):
                return _coerce(seq[0], value, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SettingsError(key, f"must be a number or an array of numbers, got {describe(value)}")
            return _coerce(scalar[0], value, key)
        # "a number or a word" (delay = 0.05 or "auto"): strings take the Literal arm
        words = [a for a in inner if get_origin(a) is Literal]
        numbers = [a for a in inner if a in (int, float)]
        if len(words) == 1 and len(numbers) == 1 and len(inner) == 2:
            if isinstance(value, str):
                return _coerce(words[0], value, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                choices = ", ".join(map(repr, get_args(words[0])))
                raise SettingsError(key, f"must be a number or one of {choices}, got {describe(value)}")
            return _coerce(numbers[0], value, key)
        raise TypeError(f"unsupported union {tp}")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list):
            raise SettingsError(key, f"must be an array, got {describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, join(key, i)) for i, v in enumerate(value))
        if len(value) != len(args):
            raise SettingsError(key, f"must have {len(args)} elements, got {len(value)}")
        return tuple(_coerce(a, v, join(key, i)) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        _, vt = get_args(tp)
        if not isinstance(value, dict):
            raise SettingsError(key, f"must be a table, got {describe(value)}")
        return {k: _coerce(vt, v, join(key, k)) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Settings):
        return parse(tp, value, key)
    raise TypeError(f"unsupported settings type {tp!r} at {key}")


def parse(cls: type, table: Any, key: str = "") -> Any:
    """Build ``cls`` from a TOML table, or raise SettingsError naming the first bad key."""
    if not isinstance(table, dict):
        raise SettingsError(key or "(top level)", f"must be a table, got {describe(table)}")
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cls)
    toml_names = {f.metadata.get("key") or f.name: f for f in fields}
    for name in table:
        if name not in toml_names:
            raise SettingsError(join(key, name), f"unknown key; expected one of: {', '.join(sorted(toml_names))}")
    values = {}
    for toml_name, f in toml_names.items():
        sub = join(key, toml_name)
        if toml_name in table:
            value = _coerce(hints[f.name], table[toml_name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SettingsError(sub, "required")
        else:
            continue
        check = f.metadata.get("check")
        if check is not None:
            reason = check(value)
            if reason:
                raise SettingsError(sub, reason)
        values[f.name] = value
    obj = cls(**values)
    try:
        obj.validate(key)
    except ArithmeticError as e:  # a cross-field computation on magnitudes no model uses (tick / dt = inf)
        raise SettingsError(key, f"values out of range for any model: {e}") from None
    return obj


def docs(cls: type) -> list[tuple[str, str, Any]]:
    """(toml key, doc, default) of each field, for help text and the README."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            "(table)" if f.default_factory is not dataclasses.MISSING else "(required)")
        out.append((f.metadata.get("key") or f.name, f.metadata.get("doc", ""), default))
    return out
