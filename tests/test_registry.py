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


def _no_settings_node():
    from spikewire.nodes.base import Node

    class NoSettings(Node):
        kind = "nosettings"
        Settings = None

    return NoSettings


NoSettings = _no_settings_node()


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


class Boom:
    pass


@pytest.mark.parametrize("entry, message", [
    (("bad", "fake_plugin:Missing"), r"^entry point 'bad' \(fake_plugin:Missing\) of group 'test.group' cannot be "
                                     r"loaded: AttributeError"),
    (("bad", "no_such_module:X"), r"cannot be loaded: ModuleNotFoundError: No module named 'no_such_module'$"),
    (("bad", "fake_plugin:NotOne"), r"is <class 'object'>, not a test_registry.Base subclass$"),
    (("good2", "fake_plugin:Misnamed"), r"the class's name is 'other'; name the entry point after it$"),
    (("builtin", "fake_plugin:Builtin"), r"^thing 'builtin' of fake_plugin clashes with the built-in thing of "
                                         r"test_registry; rename it$"),
])
def test_a_wrong_plugin_is_one_line_and_spoils_only_its_own_name(monkeypatch, entry, message):
    reg = _registry(monkeypatch, entry, ("good", "fake_plugin:Good"))
    assert "good" in reg.all() and entry[0] not in reg.all()  # the others still work
    assert list(reg.broken) == [entry[0]]
    with pytest.raises(Problem, match=message):
        reg.get(entry[0])
    assert reg.get("good").name == "good" and reg.get("nothing") is None


def test_a_module_that_raises_at_import_is_one_line(monkeypatch, tmp_path):
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = _registry(monkeypatch, ("boom", "raising_plugin:X"))
    with pytest.raises(Problem, match=r"cannot be loaded: RuntimeError: boom at import$"):
        reg.get("boom")


def test_two_packages_claiming_one_name_are_both_refused(monkeypatch):
    reg = _registry(monkeypatch, ("good", "fake_plugin:Good"), ("good", "other_plugin:Good"))
    assert "good" not in reg.all()
    with pytest.raises(Problem, match=r"^thing 'good' is claimed by several entry points .*fake_plugin:Good, "
                                      r"other_plugin:Good\); uninstall or rename one$"):
        reg.get("good")


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


def test_a_broken_element_plugin_stops_only_networks_that_use_it(monkeypatch, tmp_path):
    """A network that uses the broken kind is refused with its problem in one line; others still load."""
    from spikewire.config.network import NetworkError, load_network
    from spikewire.nodes import element

    eps = [metadata.EntryPoint("broken", "no_such_module:Node", element.ENTRY_POINT_GROUP),
           metadata.EntryPoint("nosettings", "test_registry:NoSettings", element.ENTRY_POINT_GROUP)]
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: eps if kw.get("group") == element.ENTRY_POINT_GROUP else real(**kw))
    element.REGISTRY.forget()
    try:
        net = tmp_path / "n.toml"
        net.write_text('[nodes.a]\nkind = "silicon"\n[nodes.a.populations.p]\nsize = 1\n')
        assert list(load_network(net).nodes) == ["a"]
        net.write_text('[nodes.a]\nkind = "broken"\n')
        with pytest.raises(NetworkError, match=r"^nodes.a.kind: the plugin of kind 'broken' cannot be used: entry "
                                               r"point 'broken' \(no_such_module:Node\) .* ModuleNotFoundError"):
            load_network(net)
        net.write_text('[nodes.a]\nkind = "nosettings"\n')
        with pytest.raises(NetworkError, match=r"NoSettings.Settings is None; it must be a settings class"):
            load_network(net)
        net.write_text('[nodes.a]\nkind = "izpop"\n')
        with pytest.raises(NetworkError, match=r"unknown node kind 'izpop'; .* needs that package installed here"):
            load_network(net)
    finally:
        element.REGISTRY.forget()


def test_a_crossbar_models_params_keep_their_toml_types():
    """device.params is handed to the model's Params as read (not made floats first), so a model may take
    integers, strings and booleans; the model's Params checks them."""
    from dataclasses import dataclass

    from spikewire.core.settings import Settings, SettingsError, parse, setting
    from spikewire.nodes.memristor import DeviceParams

    device = parse(DeviceParams, {"model": "linear", "params": {"rate": 5, "asymmetry": 2}}, "nodes.x.device")
    assert device.params == {"rate": 5, "asymmetry": 2} and type(device.params["rate"]) is int

    @dataclass(frozen=True)
    class Params(Settings):
        levels: int = setting(4, "levels")
        label: str = setting("", "label")
        clip: bool = setting(True, "clip")

    raw = {"levels": 6, "label": "abc", "clip": False}
    assert parse(Params, raw, "nodes.x.device.params") == Params(6, "abc", False)
    with pytest.raises(SettingsError, match=r"^nodes.x.device.params.levels: must be an integer, got 6.5$"):
        parse(Params, {"levels": 6.5}, "nodes.x.device.params")
