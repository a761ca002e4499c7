"""Drives (nodes/drives.py) serve any neuron kind: a toy kind written here, which knows nothing of AdEx, gets
pacemaker, Poisson and scheduled input from the same ``Drive`` the silicon node uses, checked on arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from spikewire.core.settings import SettingsError, parse, positive, setting
from spikewire.nodes.base import ClockedSettings, InPort, Node, OutPort
from spikewire.nodes.drives import Drive, DriveSettings
from spikewire.nodes.element import Role
from spikewire.streams.wire import EVENT_DTYPE, Kind


@dataclass(frozen=True)
class RelaySettings(ClockedSettings):
    size: int = setting(1, "Neurons.", check=positive)
    drive: DriveSettings = setting(doc="External drive.", factory=DriveSettings)
    seed: int = setting(0, "Seed of a Poisson drive.")

    def validate(self, key: str) -> None:
        super().validate(key)
        self.drive.check_step(self.dt, f"{key}.drive")


class Relay(Node):
    """A neuron that spikes once in every step it gets input: its spikes are its drive's kicks."""

    kind = "relay"
    Settings = RelaySettings

    def __init__(self, name: str, settings: RelaySettings):
        super().__init__(name, settings)
        self.syn_in = np.zeros((settings.steps_per_tick, settings.size))
        self.drive = Drive(settings.drive, settings.size, settings.dt, np.random.default_rng(settings.seed))

    @classmethod
    def ports(cls, settings: RelaySettings):
        return ({"input": InPort(frozenset({Kind.SPIKE}), role=Role.SYNAPTIC)},
                {"spikes": OutPort(Kind.SPIKE, size=settings.size, role=Role.SPIKES)})

    def start(self, t0: float) -> None:
        super().start(t0)
        self.drive.start(t0)

    def tick(self, t_start: float, t_end: float) -> None:
        self.drive.fill(self.syn_in, t_start, t_end)
        steps, ids = np.nonzero(self.syn_in)
        self.outbox.emit_many("spikes", t_start + steps * self.settings.dt, ids, 1.0)
        self.syn_in.fill(0.0)


def run(drive: dict, seconds: float, size: int = 1, t0: float = 1000.0, **extra) -> np.ndarray:
    s = parse(RelaySettings, {"dt": 1e-4, "tick": 1e-3, "size": size, "drive": drive, **extra}, "nodes.relay")
    node = Relay("relay", s)
    node.start(t0)
    out = []
    for k in range(int(round(seconds / 1e-3))):
        node.tick(t0 + k * 1e-3, t0 + (k + 1) * 1e-3)
        out += [ev.copy() for _, ev in node.outbox.pending()]
        node.outbox.clear()
    return np.concatenate(out) if out else np.zeros(0, EVENT_DTYPE)


def test_a_pacemaker_drives_a_kind_that_is_not_silicon():
    spikes = run({"kind": "pacemaker", "rate": 20.0, "start": 0.1}, 1.0, size=3)
    for neuron in range(3):
        t = spikes["t"][spikes["id"] == neuron] - 1000.0
        np.testing.assert_allclose(t, 0.1 + np.arange(18) / 20.0, atol=1e-9)


def test_a_schedule_changes_the_rate_at_its_times():
    spikes = run({"kind": "pacemaker", "schedule": [[0.0, 10.0], [0.5, 40.0], [0.8, 0.0]]}, 1.0)
    t = spikes["t"] - 1000.0
    assert len(t[t < 0.5]) == 5 and len(t[(t >= 0.5) & (t < 0.8)]) == 12 and len(t[t >= 0.8]) == 0


def test_poisson_kicks_each_neuron_apart_at_the_rate():
    spikes = run({"kind": "poisson", "rate": 50.0}, 2.0, size=40, seed=3)
    counts = np.bincount(spikes["id"], minlength=40)
    assert 80 < counts.mean() < 120 and counts.std() > 2  # ~100 each, independent


def test_the_silicon_node_uses_the_same_drive():
    from spikewire.nodes import silicon

    assert silicon.Drive is Drive and silicon.DriveSettings is DriveSettings


@pytest.mark.parametrize("drive, key", [
    ({"kind": "pacemaker", "rate": 2e4}, "nodes.relay.drive.rate"),
    ({"kind": "poisson", "schedule": [[0.0, 10.0], [1.0, 1e5]]}, r"nodes.relay.drive.schedule\[1\]"),
])
def test_a_rate_beyond_one_kick_per_step_is_refused_naming_it(drive, key):
    with pytest.raises(SettingsError, match=rf"^{key}: must be at most one kick per step, 1/dt = 10000 Hz"):
        parse(RelaySettings, {"dt": 1e-4, "tick": 1e-3, "drive": drive}, "nodes.relay")


def test_snapshot_and_restore_replay_the_same_kicks():
    """What a kind that computes ahead needs: restored (with its generator), a drive gives the same kicks."""
    cfg = DriveSettings(kind="poisson", rate=200.0)
    rng = np.random.default_rng(1)
    d = Drive(cfg, 5, 1e-4, rng)
    d.start(0.0)
    d.fill(np.zeros((10, 5)), 0.0, 1e-3)
    state, rng_state = d.snapshot(), rng.bit_generator.state
    first, again = np.zeros((10, 5)), np.zeros((10, 5))
    d.fill(first, 1e-3, 2e-3)
    d.restore(state)
    rng.bit_generator.state = rng_state
    d.fill(again, 1e-3, 2e-3)
    assert first.any()
    np.testing.assert_array_equal(first, again)
