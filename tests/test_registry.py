"""The registry behind element kinds and crossbar models (core/registry.py): every way a plugin can be
wrong is one line naming it, and a good one is found by its entry point."""

from __future__ import annotations

import sys
import types
from importlib import metadata

import pytest

from spikewire.core.registry import Registry


class Base:
    name = ""


class Problem(ValueError):
    pass


def _registry(monkeypatch, *entries: tuple[str, str]) -> Registry:
    module = types.ModuleType("fake_plugin")

    class Good(Base):
        name = "good"

    class Misnamed(Base):
        name = "other"

    class Builtin(Base):
        name = "builtin"

    for cls in (Good, Misnamed, Builtin):
        cls.__module__ = "fake_plugin"
    module.Good, module.Misnamed, module.NotOne, module.Builtin = Good, Misnamed, object, Builtin
    monkeypatch.setitem(sys.modules, "fake_plugin", module)
    eps = [metadata.EntryPoint(n, v, "test.group") for n, v in entries]
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: eps if kw.get("group") == "test.group" else real(**kw))
    reg = Registry("thing", "name", "test.group", lambda: Base, Problem)

    @reg.register
    class Mine(Base):
        name = "builtin"

    return reg


def test_a_plugin_is_found_beside_the_builtins(monkeypatch):
    reg = _registry(monkeypatch, ("good", "fake_plugin:Good"))
    assert sorted(reg.all()) == ["builtin", "good"]


@pytest.mark.parametrize("entry, message", [
    (("bad", "fake_plugin:Missing"), r"^entry point 'bad' \(fake_plugin:Missing\) of group 'test.group' cannot be "
                                     r"loaded: AttributeError"),
    (("bad", "no_such_module:X"), r"cannot be loaded: ModuleNotFoundError: No module named 'no_such_module'$"),
    (("bad", "fake_plugin:NotOne"), r"is <class 'object'>, not a test_registry.Base subclass$"),
    (("good2", "fake_plugin:Misnamed"), r"the class's name is 'other'; name the entry point after it$"),
    (("builtin", "fake_plugin:Builtin"), r"^thing 'builtin' of fake_plugin clashes with the built-in thing of "
                                         r"test_registry; rename it$"),
])
def test_a_wrong_plugin_is_one_line(monkeypatch, entry, message):
    reg = _registry(monkeypatch, entry)
    with pytest.raises(Problem, match=message):
        reg.all()


def test_a_class_without_a_name_or_registered_twice_is_refused():
    reg = Registry("thing", "name", "test.group", lambda: Base, Problem)
    with pytest.raises(Problem, match=r"^Base: a registered class needs a `name` name$"):
        reg.register(Base)

    class A(Base):
        name = "a"

    class B(Base):
        name = "a"

    reg.register(A)
    reg.register(A)  # the same class again (a module imported twice) is fine
    with pytest.raises(Problem, match=r"^thing 'a' registered twice: test_registry.*A and test_registry.*B$"):
        reg.register(B)


def test_a_broken_element_plugin_is_a_network_error_naming_it(monkeypatch, tmp_path):
    """A network file that needs the kinds is refused with the plugin's problem, not a traceback."""
    from spikewire.config.network import NetworkError, load_network
    from spikewire.nodes import element

    eps = [metadata.EntryPoint("broken", "no_such_module:Node", element.ENTRY_POINT_GROUP)]
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: eps if kw.get("group") == element.ENTRY_POINT_GROUP else real(**kw))
    element.REGISTRY.forget()
    try:
        net = tmp_path / "n.toml"
        net.write_text('[nodes.a]\nkind = "silicon"\n[nodes.a.populations.p]\nsize = 1\n')
        with pytest.raises(NetworkError, match=r"^nodes: an element kind cannot be loaded: entry point 'broken'"):
            load_network(net)
    finally:
        element.REGISTRY.forget()
