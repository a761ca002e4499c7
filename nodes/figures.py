"""A node's figures: the typed, kind-independent account of what its element did (nodes/element.py).

A kind fills a ``Figures`` (``Node.figures``); the runtime sends it as JSON in every status message, at
each protocol phase's end and in the final report; the exporter, report, phase table, ``top``, plots and
the NWB export read it back with ``Figures.from_dict``. Per-neuron counts travel only for populations of
at most ``LISTED`` neurons (a status line, a report row each); larger ones travel as totals, which is what
an aggregate view needs and keeps a 100,000-neuron node's status message small.

Sessions recorded before this contract (their status lines hold the kinds' own dicts) are read through
``Figures.from_legacy``, which maps those dicts by their keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LISTED = 16
"""Populations up to this size carry per-neuron counts in every message."""

EVENT_TYPES = ("psp", "stimulated_ap", "spontaneous_ap")
"""Typed biological event counts, by streams.wire.BioEvent value (0, 1, 2)."""
SPIKING_EVENTS = ("stimulated_ap", "spontaneous_ap")
"""The typed events that are action potentials (the population's spikes)."""


def _ints(a) -> list[int]:
    return [int(x) for x in a]


@dataclass
class PopulationFigures:
    """Counts of one population since the session started."""

    size: int
    spikes: int
    neuron_spikes: list[int] | None = None
    """Per neuron, when size <= LISTED."""
    events: dict[str, int] = field(default_factory=dict)
    """Typed event totals (``EVENT_TYPES``) of a biological population; empty for a model's spikes."""
    neuron_events: dict[str, list[int]] | None = None
    stimuli: int | None = None
    """Stimuli delivered to it (None: it takes none)."""
    neuron_stimuli: list[int] | None = None

    @classmethod
    def of(cls, spikes: np.ndarray, events: dict[str, np.ndarray] | None = None,
           stimuli: np.ndarray | None = None) -> PopulationFigures:
        """From per-neuron arrays (each of the population's size)."""
        size = len(spikes)
        listed = size <= LISTED
        events = events or {}
        return cls(size=size, spikes=int(np.sum(spikes)), neuron_spikes=_ints(spikes) if listed else None,
                   events={k: int(np.sum(v)) for k, v in events.items()},
                   neuron_events={k: _ints(v) for k, v in events.items()} if listed and events else None,
                   stimuli=None if stimuli is None else int(np.sum(stimuli)),
                   neuron_stimuli=_ints(stimuli) if listed and stimuli is not None else None)

    def to_dict(self) -> dict:
        out = {"size": self.size, "spikes": self.spikes}
        if self.neuron_spikes is not None:
            out["neuron_spikes"] = self.neuron_spikes
        if self.events:
            out["events"] = self.events
        if self.neuron_events is not None:
            out["neuron_events"] = self.neuron_events
        if self.stimuli is not None:
            out["stimuli"] = self.stimuli
        if self.neuron_stimuli is not None:
            out["neuron_stimuli"] = self.neuron_stimuli
        return out

    @classmethod
    def from_dict(cls, d: dict) -> PopulationFigures:
        return cls(size=int(d["size"]), spikes=int(d["spikes"]), neuron_spikes=d.get("neuron_spikes"),
                   events=dict(d.get("events", {})), neuron_events=d.get("neuron_events"),
                   stimuli=d.get("stimuli"), neuron_stimuli=d.get("neuron_stimuli"))


@dataclass
class DeviceFigures:
    """One device's state: its value now (and at the start) and the programming pulses applied."""

    r: float
    r_start: float | None = None
    ltp: int = 0
    ltd: int = 0

    def to_dict(self) -> dict:
        return {"r": self.r, "r_start": self.r_start, "ltp": self.ltp, "ltd": self.ltd}

    @classmethod
    def from_dict(cls, d: dict) -> DeviceFigures:
        return cls(r=float(d["r"]), r_start=None if d.get("r_start") is None else float(d["r_start"]),
                   ltp=int(d.get("ltp", 0)), ltd=int(d.get("ltd", 0)))


@dataclass
class Figures:
    """Everything a node reports about its element, typed; JSON through ``to_dict``/``from_dict``."""

    elapsed: float = 0.0
    """Session seconds the figures cover (now - t0 at the node)."""
    populations: dict[str, PopulationFigures] = field(default_factory=dict)
    devices: dict[str, DeviceFigures] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    """Inputs the element refused, by reason."""
    held: dict[str, int] = field(default_factory=dict)
    """Actions the safety interlock held back, by what they were (``pulses``, ``stimuli``)."""
    rig: dict | None = None
    """A recording rig's own figures (nodes/rig.py), when the node reads one."""
    info: dict = field(default_factory=dict)
    """Kind-specific JSON values for the report (a state file, a bridge's datagram counts)."""
    warnings: list[str] = field(default_factory=list)
    """What the scientist must read after the run (one line each)."""

    def to_dict(self) -> dict:
        out = {"elapsed": self.elapsed,
               "populations": {k: p.to_dict() for k, p in self.populations.items()},
               "devices": {k: d.to_dict() for k, d in self.devices.items()},
               "rejected": dict(self.rejected), "held": dict(self.held)}
        if self.rig is not None:
            out["rig"] = self.rig
        if self.info:
            out["info"] = self.info
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_dict(cls, d: dict | None) -> Figures:
        """Read back ``to_dict``'s JSON; a dict in the older per-kind shape goes through ``from_legacy``."""
        if not d:
            return cls()
        if "populations" not in d and "devices" not in d:
            return cls.from_legacy(d)
        return cls(elapsed=float(d.get("elapsed", 0.0)),
                   populations={k: PopulationFigures.from_dict(p) for k, p in d.get("populations", {}).items()},
                   devices={k: DeviceFigures.from_dict(v) for k, v in d.get("devices", {}).items()},
                   rejected=dict(d.get("rejected", {})), held=dict(d.get("held", {})), rig=d.get("rig"),
                   info=dict(d.get("info", {})), warnings=list(d.get("warnings", [])))

    @classmethod
    def from_legacy(cls, d: dict) -> Figures:
        """A status or final dict as nodes wrote them before the element contract (sessions recorded then):
        ``spikes``/``sizes``/``neuron_spikes`` per population, ``psp``/``stimulated_ap``/``spontaneous_ap``
        of a biological node's one population, ``resistance``/``ltp``/``ltd`` per device; finals as
        ``neurons`` and ``memristors`` rows."""
        f = cls(rejected=dict(d.get("rejected", {})), rig=d.get("rig"), warnings=list(d.get("warnings", [])))
        for what in ("pulses", "stimuli"):
            if f"held_{what}" in d:
                f.held[what] = int(d[f"held_{what}"])
        f.info = {k: d[k] for k in ("state_file", "start_state") if k in d}
        typed = {k: int(d[k]) for k in EVENT_TYPES if k in d}
        for pop, n in d.get("spikes", {}).items():
            listed = d.get("neuron_spikes", {}).get(pop)
            f.populations[pop] = PopulationFigures(size=int(d.get("sizes", {}).get(pop, len(listed or ()) or 1)),
                                                   spikes=int(n), neuron_spikes=listed, events=dict(typed))
        rows: dict[str, list[dict]] = {}
        for row in d.get("neurons", []):
            rows.setdefault(row["population"], []).append(row)
        for pop, rs in rows.items():
            if len(rs) == 1 and str(rs[0]["neuron"]).startswith("all "):
                size, listed = int(str(rs[0]["neuron"]).split()[1]), None
            else:
                size, listed = len(rs), [int(r["spikes"]) for r in rs]
            events = {k: sum(int(r.get(k, 0)) for r in rs) for k in EVENT_TYPES if k in rs[0]}
            f.populations[pop] = PopulationFigures(
                size=size, spikes=sum(int(r["spikes"]) for r in rs), neuron_spikes=listed, events=events,
                neuron_events={k: [int(r[k]) for r in rs] for k in events} if events and listed else None,
                stimuli=sum(int(r["stimuli"]) for r in rs) if "stimuli" in rs[0] else None,
                neuron_stimuli=[int(r["stimuli"]) for r in rs] if "stimuli" in rs[0] and listed else None)
            rated = [r for r in rs if r.get("spikes") and r.get("rate_hz")]
            if rated and not f.elapsed:  # rates were spikes / the node's own elapsed time
                r = rated[0]
                f.elapsed = int(r["spikes"]) / float(r["rate_hz"]) / (size if listed is None else 1)
        for dev, r in d.get("resistance", {}).items():
            f.devices[dev] = DeviceFigures(r=float(r), ltp=int(d.get("ltp", {}).get(dev, 0)),
                                           ltd=int(d.get("ltd", {}).get(dev, 0)))
        for m in d.get("memristors", []):
            f.devices[m["name"]] = DeviceFigures(r=float(m["r_end"]), r_start=float(m["r_start"]),
                                                 ltp=int(m["ltp_pulses"]), ltd=int(m["ltd_pulses"]))
        return f


AGGREGATE_ABOVE = LISTED
"""A node with more devices than this, or a population of more neurons, is shown in aggregate (mean, min,
max and a small histogram) by the status line, ``top``, the printed summary and the plot; the JSON summary
keeps every device. The same number as ``LISTED``: past it there are no per-neuron counts to list anyway."""

SPREAD_BINS = 8
"""Bins of a ``Spread``'s histogram: enough to see a pile-up at a bound, few enough for a status line."""


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation, range and a histogram of many values (one device set's resistances)."""

    n: int
    mean: float
    sd: float
    min: float
    max: float
    counts: tuple[int, ...]
    """Values per bin, ``SPREAD_BINS`` equal bins from ``min`` to ``max`` (all in the first when they are equal)."""

    @classmethod
    def of(cls, values, bins: int = SPREAD_BINS) -> Spread:
        a = np.asarray(values, dtype=np.float64)
        if a.ndim != 1 or not len(a):
            raise ValueError(f"a spread needs a non-empty list of values, got shape {a.shape}")
        lo, hi = float(a.min()), float(a.max())
        if hi > lo:
            counts = np.histogram(a, bins=bins, range=(lo, hi))[0]
        else:
            counts = np.zeros(bins, dtype=np.int64)
            counts[0] = len(a)
        return cls(n=len(a), mean=float(a.mean()), sd=float(a.std()), min=lo, max=hi, counts=tuple(_ints(counts)))

    @property
    def edges(self) -> list[float]:
        k = len(self.counts)
        return [self.min + (self.max - self.min) * i / k for i in range(k + 1)]

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max,
                "counts": list(self.counts), "edges": self.edges}
