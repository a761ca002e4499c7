"""Networks built in Python: a network file's tables as plain dicts and lists, checked by the same code.

A ``NetworkBuilder`` holds exactly what a network file holds (``data``: the tables ``tomllib`` reads), so
the TOML stays the primary format and the two forms round-trip: ``to_toml()`` writes text that loads to the
same data, and a file loaded and written again gives the same data (its comments are not data and are
lost). ``check()`` runs ``build_network``, the validation ``spikewire check`` runs, and raises the same
one-line ``NetworkError`` naming the key; nothing is validated while you build, so a network may pass
through invalid states on its way.

    net = NetworkBuilder("demo")
    net.node("zurich", kind, dt=1e-4, populations={"anpre": {"size": 1}})   # kind: an element kind's name
    net.link("zurich.anpre.spikes", "southampton.mr1.pre")
    net.set("nodes.zurich.dt", 5e-5)          # the dotted keys errors name; or net.nodes["zurich"]["dt"] = 5e-5

Relative paths in a network (CURVE key files, a memristor's ``state_file``) are relative to the folder of
the file it was loaded from (``folder``), as they are in that file; a network built from scratch has no
file and they are relative to the working directory.
"""

from __future__ import annotations

import copy
import datetime
import numbers
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from spikewire.config.network import (Network, NetworkError, build_network, check_name, parse_network_text,
                                        read_network_file, safe_name)
from spikewire.config.toml_writer import dumps
from spikewire.core.settings import join

KEY_TOKEN = re.compile(r'(?:^|\.)(?:([A-Za-z0-9_\-]+)|"([^"\\]*)")|\[(\d+)\]')
_MISSING = object()


class NetworkBuilder:
    """A network file being built or changed in Python. ``data`` is its TOML's tables; ``nodes`` and
    ``links`` are views into it that may be changed in place. The methods that add return the builder, so
    calls chain."""

    def __init__(self, name: str, description: str = ""):
        check_name("network.name", name, "a network name (it names state files)")
        self._reset({"network": {"name": name, **({"description": description} if description else {})}}, None)

    def _reset(self, data: dict, path: Path | None) -> None:
        self.data: dict = data
        self.path: Path | None = path
        """The file this network was loaded from (None if built in Python)."""
        self._made: set[str] = set()  # top-level containers created empty by this builder, not by the file

    @classmethod
    def from_dict(cls, data: Mapping, path: str | Path | None = None) -> NetworkBuilder:
        """A builder holding (a copy of) ``data``, the tables of a network file; ``path``: the file they came
        from, whose folder relative paths in them refer to."""
        if not isinstance(data, Mapping):
            raise NetworkError("", f"a network is a table of tables, got a {type(data).__name__}")
        net = cls.__new__(cls)
        net._reset(copy.deepcopy(dict(data)), Path(path) if path is not None else None)
        return net

    @classmethod
    def from_toml(cls, text: str, path: str | Path | None = None) -> NetworkBuilder:
        """A builder holding the network file text ``text`` (NetworkError if it is not TOML)."""
        return cls.from_dict(parse_network_text(text), path)

    # --- what it holds ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The network's name: ``[network] name``, else (as for a file) the file's name."""
        return self.data.get("network", {}).get("name") or safe_name(self.path.stem if self.path else "network")

    @name.setter
    def name(self, name: str) -> None:
        check_name("network.name", name, "a network name (it names state files)")
        self._container("network", dict)["name"] = name

    @property
    def nodes(self) -> dict[str, dict]:
        """Node name -> its table (``kind`` and the kind's settings), in file order."""
        return self._container("nodes", dict)

    @property
    def links(self) -> list[dict]:
        """The ``[[links]]`` tables (``from``, ``to`` and options), in file order."""
        return self._container("links", list)

    @property
    def folder(self) -> Path:
        """The folder relative paths in this network refer to: its file's, else the working directory."""
        return (self.path.parent if self.path is not None else Path()).resolve()

    def _container(self, key: str, kind: type) -> Any:
        if key not in self.data:
            self.data[key] = kind()
            self._made.add(key)
        return self.data[key]

    # --- building --------------------------------------------------------------------------------
    def node(self, name: str, kind: str, **settings: Any) -> NetworkBuilder:
        """Add node ``name`` (one OS process) of element ``kind`` with the kind's ``settings`` (the keys of
        its ``[nodes.<name>]`` table; nested tables as dicts, arrays as lists or tuples)."""
        key = f"nodes.{name}"
        check_name(key, name, "a node name")
        if name in self.nodes:
            raise NetworkError(key, "declared twice: change it through net.nodes[...] or net.set(), or "
                               "remove_node() it first")
        self.nodes[name] = {"kind": kind, **settings}
        return self

    def remove_node(self, name: str) -> NetworkBuilder:
        """Remove node ``name`` and every link from or to it."""
        if name not in self.nodes:
            raise NetworkError(f"nodes.{name}", f"no such node; nodes are: {', '.join(self.nodes) or '(none)'}")
        del self.nodes[name]
        ends = [str(ln.get(end, "")).partition(".")[0] for ln in self.links for end in ("from", "to")]
        self.links[:] = [ln for i, ln in enumerate(self.links) if name not in ends[2 * i: 2 * i + 2]]
        return self

    def link(self, from_: str | None, to: str, **options: Any) -> NetworkBuilder:
        """Add a link from output port ``from_`` ('<node>.<port>') to input port ``to``, with ``options``
        (``delay``, ``late``, ``hwm``, ``via``, ...). For a publisher outside the network, ``from_`` is None
        and the options give its ``endpoint`` and ``source`` id."""
        self.links.append({**({"from": from_} if from_ is not None else {}), "to": to, **options})
        return self

    def unlink(self, from_: str, to: str) -> NetworkBuilder:
        """Remove the link(s) from ``from_`` to ``to``."""
        kept = [ln for ln in self.links if (ln.get("from"), ln.get("to")) != (from_, to)]
        if len(kept) == len(self.links):
            raise NetworkError("links", f"no link from {from_} to {to}")
        self.links[:] = kept
        return self

    def protocol(self, phases: list | None = None, **settings: Any) -> NetworkBuilder:
        """Set ``[protocol]``: ``phases`` as (name, duration) pairs or tables (replacing any), and settings
        such as ``reset_weights``."""
        table = self._container("protocol", dict)
        if phases is not None:
            table["phases"] = []
            for phase in phases:
                if isinstance(phase, (tuple, list)):
                    self.phase(*phase)
                else:
                    table["phases"].append(phase)
        table.update(settings)
        return self

    def phase(self, name: str, duration: float) -> NetworkBuilder:
        """Append a protocol phase of ``duration`` seconds."""
        self._container("protocol", dict).setdefault("phases", []).append({"name": name, "duration": duration})
        return self

    def monitor(self, **settings: Any) -> NetworkBuilder:
        """Update ``[monitor]`` (``base_port``, ``probe_from``, ...)."""
        self._container("monitor", dict).update(settings)
        return self

    def site(self, name: str, **settings: Any) -> NetworkBuilder:
        """Add or update ``[sites.<name>]`` (``address``, ``bind``, ``port``, key files)."""
        self._container("sites", dict).setdefault(name, {}).update(settings)
        return self

    def security(self, **settings: Any) -> NetworkBuilder:
        """Update ``[security]`` (``curve``, ``allow``)."""
        self._container("security", dict).update(settings)
        return self

    def transport(self, **settings: Any) -> NetworkBuilder:
        """Update ``[transport]`` (heartbeats, peer timeout, clock synchronisation)."""
        self._container("transport", dict).update(settings)
        return self

    def safety(self, **settings: Any) -> NetworkBuilder:
        """Update ``[safety]`` (the interlock)."""
        self._container("safety", dict).update(settings)
        return self

    def set(self, key: str, value: Any) -> NetworkBuilder:
        """Set the value at a dotted key, as errors name them: ``nodes.zurich.dt``, ``links[2].delay``,
        ``nodes.zurich.input_ranges."anpost.input"``. Missing tables on the way are created."""
        parts = _key_parts(key)
        table = self.data
        for i, part in enumerate(parts[:-1]):
            table = _step(table, part, parts[: i + 1], create=isinstance(parts[i + 1], str))
        last = parts[-1]
        if isinstance(last, int):
            _step(table, last, parts, create=False)  # the element must exist
        elif not isinstance(table, dict):
            raise KeyError(f"{_key_text(parts[:-1])} is not a table")
        table[last] = value
        return self

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value at a dotted key (see ``set``); ``default`` if the network does not set it."""
        parts = _key_parts(key)
        value = self.data
        try:
            for i, part in enumerate(parts):
                value = _step(value, part, parts[: i + 1], create=False)
        except KeyError:
            if default is _MISSING:
                raise
            return default
        return value

    # --- writing and checking --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The network file's data: a deep copy in the types TOML holds (tuples become lists, numpy numbers
        and arrays Python ones, paths text). NetworkError names a key whose value TOML cannot hold."""
        data = {k: v for k, v in self.data.items() if not (k in self._made and not v)}
        return _plain(data, "")

    def to_toml(self) -> str:
        """The network file's text (``tomllib.loads`` of it equals ``to_dict()``)."""
        return dumps(self.to_dict())

    def check(self, check_keys: bool = True) -> Network:
        """The validated network: what ``spikewire check`` would say of this network's file, placed where
        this one was loaded from. Raises NetworkError with one line naming the key of the first problem;
        ``warnings`` on the result lists what is merely suspicious. ``check_keys=False`` skips reading CURVE
        public key files."""
        return build_network(self.to_dict(), default_name=self.name, path=self.path, check_keys=check_keys)

    def save(self, path: str | Path, check: bool = True) -> Path:
        """Write the network file to ``path`` (atomically) and return it. With ``check``, the network is first
        validated as that file (its relative paths then refer to ``path``'s folder). ``self.path`` stays
        what it was."""
        path = Path(path)
        data = self.to_dict()
        if check:
            build_network(data, default_name=safe_name(path.stem), path=path.resolve())
        text = dumps(data)
        if not path.resolve().parent.is_dir():
            raise FileNotFoundError(f"cannot save {path}: no folder {path.resolve().parent}")
        fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def matches_file(self) -> bool:
        """True if the file this network was loaded from still says exactly what the builder says."""
        if self.path is None:
            return False
        try:
            return read_network_file(self.path) == self.to_dict()
        except NetworkError:  # gone or spoilt since: it no longer says the same
            return False

    def copy(self) -> NetworkBuilder:
        """An independent copy (to make a variant of a network)."""
        net = NetworkBuilder.from_dict(self.data, self.path)
        net._made = set(self._made)
        return net

    def __repr__(self) -> str:
        source = f", from {self.path}" if self.path is not None else ""
        nodes = self.data.get("nodes") if isinstance(self.data.get("nodes"), dict) else {}
        links = self.data.get("links") if isinstance(self.data.get("links"), list) else []
        return f"<NetworkBuilder {self.name!r}: {len(nodes)} nodes, {len(links)} links{source}>"


def load(path: str | Path, check: bool = True) -> NetworkBuilder:
    """A network file as a builder, to change or run. With ``check`` (the default) it is validated first,
    so a bad file fails here with the one line ``spikewire check`` prints; ``check=False`` loads a file
    that does not validate (to repair it)."""
    try:
        data = read_network_file(path)
    except NetworkError as e:  # the CLI puts the path before the line; from Python, say which file
        raise NetworkError(e.key, f"{e.reason} ({path})") from None
    net = NetworkBuilder.from_dict(data, path)
    if check:
        net.check()
    return net


def _plain(value: Any, key: str) -> Any:
    """``value`` as TOML data (see ``NetworkBuilder.to_dict``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise NetworkError(key, f"text that is not valid Unicode (a lone surrogate): {value!r}") from None
        return str(value)
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise NetworkError(join(key, str(k)), f"a table's keys are text, got {type(k).__name__} {k!r}")
        return {k: _plain(v, join(key, k)) for k, v in value.items()}
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a numpy scalar (numpy.bool_ among them)
        return _plain(value.item(), key)
    if hasattr(value, "tolist") and getattr(value, "ndim", 0):  # a numpy array
        return _plain(value.tolist(), key)
    if isinstance(value, (list, tuple)):
        return [_plain(v, join(key, i)) for i, v in enumerate(value)]
    if value is None:
        raise NetworkError(key or "(top level)", "None: a network file has no null; leave the key out to take "
                           "its default")
    raise NetworkError(key or "(top level)", f"a {type(value).__name__} is not a value a network file holds "
                       "(numbers, text, true/false, arrays, tables)")


def _key_parts(key: str) -> list[str | int]:
    parts: list[str | int] = []
    pos = 0
    while pos < len(key) and not (pos == 0 and key.startswith(".")):
        m = KEY_TOKEN.match(key, pos)
        if m is None:
            break
        name, quoted, index = m.groups()
        parts.append(int(index) if index is not None else name if name is not None else quoted)
        pos = m.end()
    if not key or pos != len(key) or isinstance(parts[0], int):
        raise KeyError(f"{key!r} is not a dotted key like nodes.zurich.dt or links[0].delay")
    return parts


def _key_text(parts: list[str | int]) -> str:
    text = ""
    for p in parts:
        text = join(text, p if isinstance(p, int) or re.fullmatch(r"[A-Za-z0-9_\-]+", p) else f'"{p}"')
    return text


def _step(container: Any, part: str | int, where: list[str | int], create: bool) -> Any:
    """``container[part]``; KeyError naming ``where`` if there is no such entry (a missing table is made
    when ``create``)."""
    if isinstance(part, int):
        if not isinstance(container, list):
            raise KeyError(f"{_key_text(where[:-1])} is not an array")
        if not 0 <= part < len(container):
            raise KeyError(f"{_key_text(where)}: no such entry ({len(container)} in all)")
        return container[part]
    if not isinstance(container, dict):
        raise KeyError(f"{_key_text(where[:-1])} is not a table")
    if part not in container:
        if not create:
            raise KeyError(f"{_key_text(where)}: not set in this network")
        container[part] = {}
    return container[part]
