"""A registry of named classes: built-in ones register with a decorator, installed packages through an
entry-point group. Element kinds (nodes/element.py) and crossbar models (nodes/crossbar.py) use it.

Every problem is one line naming the class or the entry point, raised as the registry's own error type:
a class without its name, a name registered twice, an entry point that cannot be loaded, is not a
subclass of the base, is named otherwise than its class, or clashes with a built-in.
"""

from __future__ import annotations

from importlib import metadata
from typing import Callable


class Registry:
    """``what``: what a name is, for messages ("kind"); ``attr``: the class attribute holding it; ``base``:
    a callable returning the class every entry must subclass (lazy, so the registry can be made before its
    base exists); ``builtins``: imports the modules whose decorators register the built-in classes."""

    def __init__(self, what: str, attr: str, group: str, base: Callable[[], type], error: type[Exception],
                 builtins: Callable[[], None] = lambda: None):
        self.what, self.attr, self.group = what, attr, group
        self.base, self.error, self.builtins = base, error, builtins
        self._builtin: dict[str, type] = {}
        self._all: dict[str, type] | None = None

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

    def _entry_points(self) -> dict[str, type]:
        base = self.base()
        found: dict[str, type] = {}
        for ep in metadata.entry_points(group=self.group):
            where = f"entry point {ep.name!r} ({ep.value}) of group {self.group!r}"
            try:
                cls = ep.load()
            except (ImportError, AttributeError, SyntaxError) as e:
                raise self.error(f"{where} cannot be loaded: {type(e).__name__}: {e}") from e
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise self.error(f"{where} is {cls!r}, not a {base.__module__}.{base.__qualname__} subclass")
            if getattr(cls, self.attr, None) != ep.name:
                raise self.error(f"{where}: the class's {self.attr} is {getattr(cls, self.attr, None)!r}; name the "
                                 "entry point after it")
            found[ep.name] = cls
        return found

    def all(self) -> dict[str, type]:
        """Every class by name: the built-in ones and those of installed packages (loaded once)."""
        if self._all is None:
            self.builtins()
            out = dict(self._builtin)
            for name, cls in self._entry_points().items():
                if name in out and out[name] is not cls:
                    raise self.error(f"{self.what} {name!r} of {cls.__module__} clashes with the built-in {self.what} "
                                     f"of {out[name].__module__}; rename it")
                out[name] = cls
            self._all = out
        return self._all

    def forget(self) -> None:
        """Look the entry points up again at the next ``all()`` (after installing a package in-process)."""
        self._all = None
