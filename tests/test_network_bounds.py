"""Values that passed `check` and then hung, ran away or misfired at run time (outside testing, second
round): each is refused at load with one line naming the key."""

from __future__ import annotations

import tomllib

import pytest

from conftest import NETWORKS
from spikewire.config.network import NetworkError, build_network

PAPER = (NETWORKS / "paper_loop.toml").read_text()
RIG = (NETWORKS / "rig_loop.toml").read_text()
SITES = (NETWORKS / "paper_sites.toml").read_text()


def _refused(text: str, key: str, why: str = "") -> None:
    with pytest.raises(NetworkError) as e:
        build_network(tomllib.loads(text), check_keys=False)
    assert str(e.value).startswith(f"{key}: ") and why in str(e.value), str(e.value)


@pytest.mark.parametrize("text, key", [
    (PAPER.replace("rate = 10.0, weight", "rate = 1e12, weight"), "nodes.zurich.populations.anpre.drive.rate"),
    (PAPER.replace("rate = 10.0, weight", 'kind = "pacemaker", schedule = [[0.0, 1e300]], weight')
     .replace('kind = "pacemaker", kind', "kind"), "nodes.zurich.populations.anpre.drive.schedule[0]"),
    (PAPER.replace("tick = 1e-3\n", "tick = 1e-3\nlookahead = 1e9\n", 1), "nodes.zurich.lookahead"),
    (PAPER.replace("tick = 1e-3\n", "tick = 1e9\n", 1), "nodes.zurich.tick"),
    (PAPER.replace('[nodes.padova]\nkind = "biological"', '[nodes.padova]\nkind = "biological"\nstim_gain = 1e30'),
     "nodes.padova.stim_gain"),
])
def test_runaway_model_settings_are_refused(text, key):
    _refused(text, key)


def test_a_rig_channel_map_naming_a_missing_neuron_is_refused():
    text = RIG.replace("channel_map = [0, -1, -1, -1]", "channel_map = [0, -1, -1, 7]")
    assert text != RIG
    _refused(text, "nodes.padova.rig.channel_map[3]", "names neuron 7")


@pytest.mark.parametrize("setting, key", [("max_amplitude = 100.0", "max_amplitude"), ("max_width = 10.0", "max_width"),
                                          ("max_rate = 1e9", "max_rate"), ("max_total_rate = 1e9", "max_total_rate")])
def test_rig_hard_limits_have_hard_maxima(setting, key):
    text = RIG.replace("[nodes.padova.rig]\n", f"[nodes.padova.rig]\n{setting}\n")
    _refused(text, f"nodes.padova.rig.{key}")


def test_a_port_in_an_address_is_named_as_such():
    text = SITES.replace('[sites.padova]\naddress = "127.0.0.1"', '[sites.padova]\naddress = "127.0.0.1:80"')
    assert text != SITES
    _refused(text, "sites.padova.address", "without a port")


def test_site_ports_are_not_privileged():
    text = SITES.replace("port = 9520", "port = 1")
    _refused(text, "sites.padova.port", "between 1024 and 65000")
