"""A registry of named classes: built-in ones register with a decorator, installed packages through an
entry-point group. Element kinds (nodes/element.py) and crossbar models (nodes/crossbar.py) use it.

Every problem is one line naming the class or the entry point, in the registry's own error type: a
class without its name, a name registered twice, an entry point that cannot be loaded, is not a subclass
of the base, is named otherwise than its class, or clashes with a built-in. A broken plugin spoils only
its own name: ``get`` of that name raises its problem, every other name still works (a lab's half-
installed package must not stop a network that does not use it), and ``broken`` lists them for a warning.
"""

from __future__ import annotations

from importlib import metadata
from typing import Callable


class Registry:
    """``what``: what a name is, for messages ("kind"); ``attr``: the class attribute holding it; ``base``:
    a callable returning the class every entry must subclass (lazy, so the registry can be made before its
    base exists); ``builtins``: imports the modules whose decorators register the built-in classes."""

    def __init__(self, what: str, attr: str, group: str, base: Callable[[], type], error: type[Exception],
                 builtins: Callable[[], None] = lambda: None, check: Callable[[type], str | None] = lambda cls: None):
        self.what, self.attr, self.group = what, attr, group
        self.base, self.error, self.builtins, self.check = base, error, builtins, check
        self._builtin: dict[str, type] = {}
        self._all: dict[str, type] | None = None
        self._broken: dict[str, str] = {}

    def register(self, cls: type) -> type:
        """Class decorator: register a built-in class under its name."""
        name = getattr(cls, self.attr, None)
        if not isinstance(name, str) or not name:
            raise self.error(f"{cls.__qualname__}: a registered class needs a `{self.attr}` name")
        other = self._builtin.get(name)
        if other is not None and other is not cls:
            raise self.error(f"{self.what} {name!r} registered twice: {other.__module__}.{other.__qualname__} and "
                             f"{cls.__module__}.{cls.__qualname__}")
        self._builtin[name] = cls
        return cls

    def _load(self, ep, base: type) -> type:
        where = f"entry point {ep.name!r} ({ep.value}) of group {self.group!r}"
        try:
            cls = ep.load()
        except Exception as e:  # a plugin's module may raise anything at import: one line, never a traceback
            raise self.error(f"{where} cannot be loaded: {type(e).__name__}: {e}") from e
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise self.error(f"{where} is {cls!r}, not a {base.__module__}.{base.__qualname__} subclass")
        if getattr(cls, self.attr, None) != ep.name:
            raise self.error(f"{where}: the class's {self.attr} is {getattr(cls, self.attr, None)!r}; name the "
                             "entry point after it")
        problem = self.check(cls)
        if problem:
            raise self.error(f"{where}: {problem}")
        return cls

    def _scan(self) -> None:
        self.builtins()
        base = self.base()
        out, broken = dict(self._builtin), {}
        eps = list(metadata.entry_points(group=self.group))
        values: dict[str, set[str]] = {}
        for ep in eps:
            values.setdefault(ep.name, set()).add(ep.value)
        for ep in eps:
            if len(values[ep.name]) > 1:  # two packages claim the name: neither may silently win
                broken[ep.name] = (f"{self.what} {ep.name!r} is claimed by several entry points of group "
                                   f"{self.group!r} ({', '.join(sorted(values[ep.name]))}); uninstall or rename one")
                continue
            try:
                cls = self._load(ep, base)
            except self.error as e:
                broken[ep.name] = str(e)
                continue
            if ep.name in out and out[ep.name] is not cls:
                broken[ep.name] = (f"{self.what} {ep.name!r} of {cls.__module__} clashes with the built-in "
                                   f"{self.what} of {out[ep.name].__module__}; rename it")
                continue
            out[ep.name] = cls
        for name in broken:  # a clash makes the name ambiguous: neither class is taken for it
            out.pop(name, None)
        self._all, self._broken = out, broken

    def all(self) -> dict[str, type]:
        """Every usable class by name: the built-in ones and those of installed packages (loaded once)."""
        if self._all is None:
            self._scan()
        return self._all

    @property
    def broken(self) -> dict[str, str]:
        """Names whose entry point cannot be used, with the one-line reason."""
        self.all()
        return dict(self._broken)

    def get(self, name: str) -> type | None:
        """The class called ``name``; None if there is none; the registry's error if its plugin is broken."""
        found = self.all().get(name)
        if found is None and name in self._broken:
            raise self.error(self._broken[name])
        return found

    def forget(self) -> None:
        """Look the entry points up again at the next ``all()`` (after installing a package in-process)."""
        self._all = None
