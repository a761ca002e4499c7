"""Network files written back as TOML: the data ``tomllib`` reads, as text it reads back equal.

The standard library only reads TOML, and a network file's data is simple (tables, arrays, text, numbers,
booleans), so this small emitter writes it rather than a dependency. The layout follows the shipped files:
a table that is a collection (``[nodes.zurich]``, ``[nodes.zurich.populations.anpre]``) gets a header; a
small flat table that is one setting among others (``drive = { kind = "pacemaker", rate = 10.0 }``) stays
inline; an array of tables at the top (``links``) is written as ``[[links]]``; a long array gets one
element per line. Comments are not data: a file read and written again loses them.
"""

from __future__ import annotations

import datetime
import math
import re

WIDTH = 120
"""Inline tables and arrays longer than this are laid out over several lines (or as a header table)."""
BARE_KEY = re.compile(r"[A-Za-z0-9_\-]+")
ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def dumps(data: dict) -> str:
    """TOML text whose ``tomllib.loads`` equals ``data`` (values: dict, list/tuple, str, int, float, bool,
    datetime, date, time). Raises TypeError naming the key of any other value."""
    lines: list[str] = []
    _table(lines, (), data, top=True)
    return "\n".join(lines).strip("\n") + "\n"


def key_text(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else string_text(key)


def string_text(text: str) -> str:
    return '"' + "".join(ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                         for c in text) + '"'


def _path(path: tuple[str, ...]) -> str:
    return ".".join(key_text(k) for k in path)


def _value(value, path: tuple[str, ...]) -> str:
    """One value on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # shortest text that reads back the same float; inf and -inf are TOML's too
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 file, and no TOML escape, can hold it
            raise ValueError(f"{_path(path)}: text that is not valid Unicode: {value!r}") from None
        return string_text(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, (*path[:-1], f"{path[-1]}[{i}]")) for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{key_text(k)} = {_value(v, (*path, k))}" for k, v in value.items()) + " }"
    raise TypeError(f"{_path(path)}: {type(value).__name__} is not a TOML value")


def _array(key: str, value: list, path: tuple[str, ...]) -> list[str]:
    line = f"{key_text(key)} = {_value(value, path)}"
    if len(line) <= WIDTH or not value:
        return [line]
    items = [_value(v, (*path[:-1], f"{path[-1]}[{i}]")) + "," for i, v in enumerate(value)]
    if any(isinstance(v, (list, tuple, dict)) for v in value):
        return [f"{key_text(key)} = ["] + [f"    {item}" for item in items] + ["]"]  # a row or a table a line
    rows = [""]
    for item in items:  # numbers and text: as many to a line as fit
        rows[-1] += (" " if rows[-1] else "") + item
        if len(rows[-1]) > WIDTH - 4 and rows[-1] != item:
            rows[-1] = rows[-1][: -len(item) - 1]
            rows.append(item)
    return [f"{key_text(key)} = ["] + [f"    {row}" for row in rows] + ["]"]


def _is_table_array(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(lines: list[str], path: tuple[str, ...], table: dict, top: bool = False, header: str = "") -> None:
    """``table`` at ``path``: its header (``header``: an [[array]] element's, given), its key/value lines,
    then its sub-tables, each with a header of its own."""
    has_values = any(not isinstance(v, dict) for v in table.values())
    simple, tables, arrays = [], [], []
    for k, v in table.items():
        if isinstance(v, dict):
            flat = not any(isinstance(x, dict) or _is_table_array(x) for x in v.values())
            inline = f"{key_text(k)} = {_value(v, (*path, k))}"
            if not top and has_values and flat and len(inline) <= WIDTH:
                simple.append(inline)
            else:
                tables.append((k, v))
        elif top and _is_table_array(v):
            arrays.append((k, v))
        elif isinstance(v, (list, tuple)):
            simple += _array(k, list(v), (*path, k))
        else:
            simple.append(f"{key_text(k)} = {_value(v, (*path, k))}")
    if header or (path and (simple or not table)):  # a table of tables only is declared by its children
        lines += ["", header or f"[{_path(path)}]"]
    lines += simple
    for k, v in tables:
        _table(lines, (*path, k), v)
    for k, items in arrays:
        for item in items:
            _table(lines, (*path, k), item, header=f"[[{_path((*path, k))}]]")
