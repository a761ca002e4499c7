"""The element contract: what a kind declares about itself, so that nothing outside it names it.

A kind is one ``Node`` subclass, registered with ``@element`` (built-in kinds) or through the
``spikewire.elements`` entry-point group (a package outside spikewire). From its settings alone it declares:

- its **ports** (``Node.ports``): each with a wire kind, a ``Role`` and the population or device set
  (``group``) it belongs to, and its size;
- its **structure** (``Node.declare`` -> ``Declaration``): the populations it owns, with their sizes and
  integration step, and the devices it owns (a crossbar's memristors, where they sit, how they are pulsed).

While it runs it reports **figures** (``Node.figures`` -> ``Figures``, nodes/figures.py): spikes per
population, typed event counts, device resistances and pulses, what it held back or rejected, and
kind-specific gauges. The exporter, the run report, the phase table, ``top``, plots and the NWB export read
only these declarations and figures: a new kind appears in all of them without a line changed there.

Entry points: a package adds kinds with, in its ``pyproject.toml``::

    [project.entry-points."spikewire.elements"]
    lif = "my_package.lif:LifNode"

The name on the left is the kind's name (it must equal the class's ``kind``).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from spikewire.core.registry import Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "spikewire.elements"


class Role(str, enum.Enum):
    """What a port's events mean, for everything that reads them without knowing the kind."""

    SPIKES = "spikes"
    """Spikes of a population (ids are its neurons): NWB units, rasters, rates."""
    BIO_EVENTS = "bio_events"
    """Typed events of recorded or modelled tissue (value: streams.wire.BioEvent): action potentials are
    units, PSPs an events table."""
    COPY = "copy"
    """Events that repeat another output port's (a rig's detected spikes beside its typed events): not
    recorded twice."""
    STIMULI = "stimuli"
    """Stimulation commands (value: amplitude in V)."""
    SYNAPTIC = "synaptic"
    """Weighted synaptic events (value: what the synapse delivers, e.g. a current step in A)."""
    PRE = "pre"
    """Presynaptic events into a device set."""
    POST = "post"
    """Postsynaptic events into a device set (they trigger plasticity)."""
    DATA = "data"
    """Anything else (a probe, a bridge's raw traffic)."""


UNIT_ROLES = frozenset({Role.SPIKES, Role.BIO_EVENTS})
"""Output roles whose events are neurons' action potentials (NWB units, rasters)."""


@dataclass(frozen=True)
class Population:
    """Neurons a node owns (or records): ``size`` of them, ids 0..size-1 on its ``port``."""

    name: str
    size: int
    port: str
    """Output port its spikes (or typed events) leave on."""
    role: Role = Role.SPIKES
    input: str | None = None
    """Input port that drives it (synaptic input or stimuli), if any."""
    resolution: float | None = None
    """Integration step of a model [s] (spike times lie on its grid); None for a recording."""


@dataclass(frozen=True)
class Device:
    """One device a node owns (a memristor of a crossbar): where it sits and how it is pulsed."""

    name: str
    """Its label in figures and records (a synapse group, with [pre->post] when the group has several)."""
    group: str
    """The device set (synapse group) it belongs to."""
    address: dict[str, int] = field(default_factory=dict)
    """Where it sits (``{"wordline": 0, "bitline": 1}`` on a crossbar)."""
    pulse: dict[str, float] = field(default_factory=dict)
    """Programming pulses: ``ltp_voltage``, ``ltd_voltage`` [V], ``ltp_width``, ``ltd_width`` [s]."""
    quantity: str = "resistance"
    unit: str = "ohm"


@dataclass(frozen=True)
class Declaration:
    """What a node owns, from its settings alone (the same before, during and after a run)."""

    populations: tuple[Population, ...] = ()
    devices: tuple[Device, ...] = ()
    keywords: tuple[str, ...] = ()
    """Subject keywords for records of a session that has this node (NWB ``keywords``): the kind's own."""

    def population(self, name: str) -> Population | None:
        return next((p for p in self.populations if p.name == name), None)

    def device(self, name: str) -> Device | None:
        return next((d for d in self.devices if d.name == name), None)

    @property
    def location(self) -> dict[str, str]:
        """Each device's address for people ('wordline 0, bitline 1')."""
        return {d.name: ", ".join(f"{k} {v}" for k, v in d.address.items()) for d in self.devices}


class ElementError(ValueError):
    """A kind that cannot be registered or loaded; ``str()`` is one line naming it."""


def _builtins() -> None:
    # Importing the kinds' modules runs their @element decorators.
    from spikewire.nodes import biological, hub_bridge, memristor, probe, silicon  # noqa: F401


def _node_class() -> type:
    from spikewire.nodes.base import Node

    return Node


def _check_kind(cls: type) -> str | None:
    from spikewire.core.settings import Settings

    settings = getattr(cls, "Settings", None)
    if not (isinstance(settings, type) and issubclass(settings, Settings)):
        return (f"{cls.__qualname__}.Settings is {settings!r}; it must be a settings class (a subclass of "
                "spikewire.nodes.base.NodeSettings)")
    return None


REGISTRY = Registry("kind", "kind", ENTRY_POINT_GROUP, _node_class, ElementError, _builtins, _check_kind)
element = REGISTRY.register
"""Class decorator: register a built-in kind under its ``kind`` name."""


def kinds() -> dict[str, type]:
    """Every usable element kind by name: the built-in ones and those of installed packages (loaded once).
    A plugin that cannot be used is left out and named by ``broken_kinds``."""
    return REGISTRY.all()


def broken_kinds() -> dict[str, str]:
    """Kind names whose plugin cannot be used, with the one-line reason (a network using one is refused)."""
    return REGISTRY.broken
