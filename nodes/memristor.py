"""Memristor synapses: a crossbar of devices whose conductance scales what each spike delivers.

A synapse group ``<syn>`` has a connectivity table of rows ``(pre, post, wordline, bitline)`` as the
original Southampton hub had, and three ports: ``<syn>.pre`` (presynaptic spikes or typed biological
events), ``<syn>.post`` (postsynaptic ones, which trigger plasticity) and ``<syn>.out``. The node is
event-driven: every accepted presynaptic event is answered at once with one output event per table row,
``id = post`` and ``value = out_min + (out_max - out_min) * g``, where ``g`` in [0, 1] is the device's
conductance, as read, normalised over the device range. ``output = "stimulus"`` makes these CME stimulus
amplitudes [V] for a biological neuron; ``"synaptic"`` makes them synaptic current steps [A] for a
silicon neuron.

Two seams keep the node apart from what it drives. The devices are a ``Crossbar`` (nodes/crossbar.py)
chosen by ``device.model``: the TiOx compact model by default (nodes/tiox.py), another model or an
instrument from an installed package. Each group's plasticity ``rule`` (nodes/plasticity.py: srdp, stdp,
none) decides which pulse a device gets; the crossbar applies it. Times are taken on arrival at this
node's clock.

Devices differ (``spread``: relative spread of each device's switching rates and initial resistance) and
reads are noisy (``read_noise``: relative noise of each read that sets an output), both from ``seed``.
Weights are non-volatile: a node run by the supervisor restores its crossbar from its state file at start
and saves it as it learns (``persist``), unless the run is told to reset (``spikewire run --reset-weights``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spikewire.core.settings import (NODE_MEMORY_BUDGET, Settings, SettingsError, in_range, non_empty, non_negative,
                                     positive, setting, stated)
from spikewire.nodes.base import InPort, Node, NodeSettings, OutPort
from spikewire.nodes.crossbar import Crossbar, CrossbarError, CrossbarSpec, crossbar_class
from spikewire.nodes.element import Declaration, Device, Role, element
from spikewire.nodes.figures import DeviceFigures, Figures
from spikewire.nodes.kernels import lazy

mk = lazy("memristor")
from spikewire.nodes.plasticity import PlasticitySettings, Pulse, Rule, rule_for
from spikewire.streams.wire import Kind

log = logging.getLogger("spikewire.memristor")


TIOX_FIT = ("a0", "a1", "b0", "b1", "a_p", "t_p", "a_n", "t_n")
"""The keys of ``device`` that only the tiox model reads."""


def _installed_model(name: str) -> str | None:
    try:
        crossbar_class(name)
    except CrossbarError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class DeviceParams(Settings):
    """The crossbar's device model: which one (``model``), its range and its parameters. The TiOx fit
    (Messaris et al.) keys ``a0`` .. ``t_n`` belong to the default model; resistances in ohms."""

    model: str = setting("tiox", "Device model of the crossbar: tiox (the TiOx compact model), or a model an "
                         "installed package adds (entry-point group spikewire.crossbars; docs/elements.md).",
                         check=stated("an installed crossbar model", _installed_model))
    params: dict[str, Any] = setting(doc="Parameters of a model other than tiox, as its Params declare and check "
                                     "(e.g. { rate = 2e7 }).", factory=dict)
    instrument: str = setting("", "Where a crossbar instrument is, for a model that drives one (a VISA resource, "
                              "a serial port, a URL: the model says); empty for a simulated crossbar.")
    a0: float = setting(17.16e3, "tiox: r_p(v) = a0 + a1 v: intercept [Ohm].", unit="Ohm")
    a1: float = setting(0.15e3, "tiox: r_p slope [Ohm/V].", unit="Ohm/V")
    b0: float = setting(24.81e3, "tiox: r_n(v) = b0 + b1 v: intercept [Ohm].", unit="Ohm")
    b1: float = setting(17.91e3, "tiox: r_n slope [Ohm/V].", unit="Ohm/V")
    a_p: float = setting(-4.86e-5, "tiox: A_p [1/(Ohm s)].", unit="1/(Ohm s)")
    t_p: float = setting(0.12, "tiox: t_p [V].", check=positive, unit="V")
    a_n: float = setting(1.09e-3, "tiox: A_n [1/(Ohm s)].", unit="1/(Ohm s)")
    t_n: float = setting(0.18, "tiox: t_n [V].", check=positive, unit="V")
    r_min: float = setting(10e3, "Lowest resistance the device reaches [Ohm].", check=positive, unit="Ohm")
    r_max: float = setting(17e3, "Highest resistance the device reaches [Ohm].", check=positive, unit="Ohm")

    def validate(self, key: str) -> None:
        if self.r_max <= self.r_min:
            raise SettingsError(f"{key}.r_max", f"must be above r_min ({self.r_min!r}), got {self.r_max!r}")
        if self.model != "tiox":  # a tiox key set for another model would be silently ignored
            for name in TIOX_FIT:
                if getattr(self, name) != DeviceParams.__dataclass_fields__[name].default:
                    raise SettingsError(f"{key}.{name}", f"is a parameter of the tiox model; model {self.model!r} "
                                        f"takes its parameters in {key}.params")
        crossbar_class(self.model).parameters(self, key)

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in mk.PARAM_NAMES], dtype=np.float64)


SYNAPTIC_OUT_MAX = 4e-9
"""Default synaptic step at the highest conductance [A]: the default AdEx cell fires once for it. (It was
1.0, a 1 A step: 475 Hz neurons.)"""
PULSE_LOG_MAX = 2_000
"""Most pulses logged one by one per status period (~1 s) and node; beyond, they are counted. A 100 x 10 STDP
crossbar pulsing ~100,000 times a second made 20 MB status messages that held its loop for ~0.4 s."""
PERSIST_EVERY = 0.1
"""A changed crossbar is saved at most this often [s] (atomically, in the loop's slack), so a killed node
loses at most this window of plasticity."""


MAX_TABLE_ROWS = 65_536
"""Most devices one synapse group names (a 256 x 256 all-to-all)."""
BYTES_PER_ID = 8_024
"""State per pre or post id of a group (its rule's memory), which bounds the ids a table may name."""
CONNECT_RULES = ("table", "one_to_one", "all_to_all", "random", "file")


@dataclass(frozen=True)
class SynapseSettings(Settings):
    table: tuple[tuple[int, int, int, int], ...] = setting(((0, 0, 0, 0),), "Rows (pre, post, wordline, bitline), "
                                                          "with connect = \"table\" (the default).",
                                                          check=non_empty.rows_within_memory(MAX_TABLE_ROWS, BYTES_PER_ID,
                                                                                             "ids"), unit="id")
    connect: Literal["table", "one_to_one", "all_to_all", "random", "file"] = setting(
        "table", "How the rows are made: as written in table, or by a rule over pre x post ids: one_to_one (i -> i), "
        "all_to_all, random (each pair with probability p, drawn from seed), file (a pre x post array whose "
        "nonzero entries connect). A rule's pair (i, j) is the device (wordline + i, bitline + j).")
    pre: int = setting(0, "A rule's presynaptic ids 0..pre-1 (the pre port's size) [count].",
                       check=in_range(0, 1 << 16), unit="count")
    post: int = setting(0, "A rule's postsynaptic ids 0..post-1 (the out port's size; one_to_one: default pre) "
                        "[count].", check=in_range(0, 1 << 16), unit="count")
    p: float = setting(1.0, "random: probability of each pre x post pair [1].", check=in_range(0.0, 1.0), unit="1")
    seed: int = setting(0, "random: seed of the draw.", check=non_negative, unit="id")
    file: str = setting("", "file: a .npy array, or text (.csv, .txt: numbers separated by commas or blanks), "
                        "pre rows x post columns, relative to the network file's folder (or absolute); nonzero entries connect.")
    wordline: int = setting(0, "A rule's first wordline: presynaptic id i is on wordline + i.", check=non_negative, unit="id")
    bitline: int = setting(0, "A rule's first bitline: postsynaptic id j is on bitline + j.", check=non_negative, unit="id")
    output: Literal["stimulus", "synaptic"] = setting("synaptic", "What out events are: CME stimuli [V] or synaptic steps [A].")
    out_min: float | None = setting(None, "Output value at the lowest conductance (default 0).", unit="output unit")
    out_max: float | None = setting(None, "Output value at the highest conductance; default 1 V for stimuli, "
                                    f"{SYNAPTIC_OUT_MAX:g} A for synaptic steps (one default AdEx kick).", unit="output unit")

    @property
    def out_range(self) -> tuple[float, float]:
        """(out_min, out_max) with their defaults, which depend on ``output``."""
        hi = self.out_max if self.out_max is not None else (1.0 if self.output == "stimulus" else SYNAPTIC_OUT_MAX)
        return (self.out_min if self.out_min is not None else 0.0, hi)
    pre_types: tuple[int, ...] = setting((1, 2), "Biological event types that count as presynaptic spikes.", unit="id")
    post_types: tuple[int, ...] = setting((0, 1, 2), "Biological event types that trigger plasticity.", unit="id")
    plasticity: PlasticitySettings = setting(doc="Plasticity rule.", factory=PlasticitySettings)

    def validate(self, key: str) -> None:
        for i, row in enumerate(self.table):
            if min(row) < 0:
                raise SettingsError(f"{key}.table[{i}]", f"indices must be >= 0, got {list(row)}")
        rule = self.connect
        given = {name for name in ("pre", "post", "file", "p", "seed", "wordline", "bitline")
                 if getattr(self, name) != SynapseSettings.__dataclass_fields__[name].default}
        if rule == "table":
            for name in ("pre", "post", "file", "p", "seed", "wordline", "bitline"):
                if name in given:
                    raise SettingsError(f"{key}.{name}", f"is a setting of a connect rule; with connect = \"table\" "
                                        "the rows are the table's (set connect to one_to_one, all_to_all, random or file)")
            return
        for name in ("p", "seed"):
            if name in given and rule != "random":
                raise SettingsError(f"{key}.{name}", f"is read only with connect = \"random\", got connect = {rule!r}")
        if self.table != SynapseSettings.__dataclass_fields__["table"].default:
            raise SettingsError(f"{key}.table", f"give either the rows (table) or a rule (connect = {rule!r}), not both")
        if rule == "file":
            if not self.file:
                raise SettingsError(f"{key}.file", "required with connect = \"file\": the pre x post array's path")
        elif self.file:
            raise SettingsError(f"{key}.file", f"is read only with connect = \"file\", got connect = {rule!r}")
        if rule != "file" and self.pre < 1:
            raise SettingsError(f"{key}.pre", f"must be >= 1 with connect = {rule!r} (the number of presynaptic ids), "
                                f"got {self.pre}")
        post = self.n_post
        if rule in ("all_to_all", "random") and post < 1:
            raise SettingsError(f"{key}.post", f"must be >= 1 with connect = {rule!r} (the number of postsynaptic ids), "
                                f"got {self.post}")
        if rule == "one_to_one" and post != self.pre:
            raise SettingsError(f"{key}.post", f"one_to_one connects i -> i: post must equal pre ({self.pre}), got {post}")
        if rule != "file":
            most = NODE_MEMORY_BUDGET // BYTES_PER_ID
            for name, n in (("pre", self.pre), ("post", post)):
                if n > most:
                    raise SettingsError(f"{key}.{name}", f"at most {most:,} ids (the rule's state per id), got {n:,}")
            pairs = self.pre if rule == "one_to_one" else self.pre * post
            if rule != "random" and pairs > MAX_TABLE_ROWS:
                raise SettingsError(f"{key}.pre", f"{rule} of {self.pre} x {post} makes {pairs:,} devices; a group "
                                    f"has at most {MAX_TABLE_ROWS:,}")
        if rule == "random" and self.p <= 0:
            raise SettingsError(f"{key}.p", "must be > 0: no pair would connect")
        if rule == "random" and self.p * self.pre * post > 1.2 * MAX_TABLE_ROWS:
            raise SettingsError(f"{key}.p", f"{self.p:g} of {self.pre:,} x {post:,} pairs is ~{self.p * self.pre * post:,.0f} "
                                f"devices; a group has at most {MAX_TABLE_ROWS:,}")
        if rule == "file" and "_mask" not in self.__dict__:
            return  # the array is read by with_files (the network file's folder known), which checks again
        rows = self.rows  # expand now: a rule that makes no device, or too many, is refused before start
        if not len(rows):
            raise SettingsError(f"{key}.{'file' if rule == 'file' else 'p'}", "connects no pair: the group has no device")
        if len(rows) > MAX_TABLE_ROWS:
            raise SettingsError(f"{key}.{'file' if rule == 'file' else 'p'}", f"makes {len(rows):,} devices; a group "
                                f"has at most {MAX_TABLE_ROWS:,}")

    @property
    def sizes(self) -> tuple[int, int]:
        """(pre, post): the ids the group's ports carry: a rule's sizes, or the table's largest ids + 1."""
        rows = self.rows
        top = rows[:, :2].max(axis=0) + 1 if len(rows) else (0, 0)
        return max(self.pre, int(top[0])), max(self.n_post, int(top[1]))

    @property
    def n_post(self) -> int:
        return self.post or (self.pre if self.connect == "one_to_one" else 0)

    @property
    def rows(self) -> np.ndarray:
        """Every row (pre, post, wordline, bitline) the group names, as an (n, 4) int64 array: the table, or
        the rule expanded (once; a file rule after ``with_files`` read its array)."""
        cached = self.__dict__.get("_rows")
        if cached is not None:
            return cached
        rule = self.connect
        if rule == "table":
            rows = np.array(self.table, dtype=np.int64).reshape(-1, 4)
        else:
            if rule == "one_to_one":
                pre = post = np.arange(self.pre, dtype=np.int64)
            elif rule == "all_to_all":
                pre, post = (a.ravel() for a in np.meshgrid(np.arange(self.pre), np.arange(self.n_post), indexing="ij"))
            elif rule == "random":  # a binomial count of distinct pairs, in pair order: no pre x post array
                rng = np.random.default_rng(self.seed)
                pairs = self.pre * self.n_post
                pick = np.sort(rng.choice(pairs, size=min(int(rng.binomial(pairs, self.p)), pairs), replace=False))
                pre, post = np.divmod(pick, self.n_post)
            else:
                mask = self.__dict__.get("_mask")
                if mask is None:
                    return np.zeros((0, 4), np.int64)  # not read yet (``with_files``)
                pre, post = np.nonzero(mask)
            rows = np.stack([pre, post, pre + self.wordline, post + self.bitline], axis=1).astype(np.int64)
        rows.setflags(write=False)
        object.__setattr__(self, "_rows", rows)  # a frozen settings object: computed once, never changed
        return rows

    def with_files(self, base: Path, key: str) -> SynapseSettings:
        """This group with its connect = "file" array read (relative to ``base``), checked, and its size taken
        as pre x post; SettingsError names ``key.file``."""
        if self.connect != "file":
            return self
        path = Path(self.file)
        path = path if path.is_absolute() else base / path
        mask = _read_mask(path, f"{key}.file")
        n_pre, n_post = mask.shape
        for name, n, size in (("pre", self.pre, n_pre), ("post", self.post, n_post)):
            if n and n != size:
                raise SettingsError(f"{key}.{name}", f"is {n}, but {self.file!r} has {size} "
                                    f"{'rows' if name == 'pre' else 'columns'}")
        out = dataclasses.replace(self, pre=n_pre, post=n_post)
        object.__setattr__(out, "_mask", mask)
        out.validate(key)
        return out


@dataclass(frozen=True)
class MemristorSettings(NodeSettings):
    rows: int = setting(1, "Crossbar wordlines.",
                        check=positive.within_memory(112, "devices (a square crossbar)", square=True), unit="count")
    cols: int = setting(1, "Crossbar bitlines.",
                        check=positive.within_memory(112, "devices (a square crossbar)", square=True), unit="count")
    r_init: float = setting(14e3, "Initial resistance of every device [Ohm].", check=positive, unit="Ohm")
    device: DeviceParams = setting(doc="Device model parameters.", factory=DeviceParams)
    spread: float = setting(0.0, "Device-to-device relative spread (std) of switching rates and initial R.",
                            check=in_range(0.0, 0.5), unit="1")
    read_noise: float = setting(0.0, "Relative noise (std) of each read that sets an output value.",
                                check=in_range(0.0, 0.5), unit="1")
    seed: int = setting(0, "Seed of the spread and the read noise.", check=non_negative, unit="id")
    persist: bool = setting(True, "Restore the crossbar at start and save it at shutdown.")
    state_file: str = setting("", "Where the crossbar is kept (relative to the network file); default "
                              ".spikewire/state/<network>.<node>.json under the working directory.")
    synapses: dict[str, SynapseSettings] = setting(doc="Synapse groups by name.", factory=dict, check=non_empty)

    def validate(self, key: str) -> None:
        super().validate(key)
        if not self.device.r_min <= self.r_init <= self.device.r_max:
            raise SettingsError(f"{key}.r_init", f"must lie in the device range [{self.device.r_min!r}, "
                                f"{self.device.r_max!r}], got {self.r_init!r}")
        lines, owner, index = [], [], []  # every device's linear address, its group and its row there
        for g, (name, syn) in enumerate(self.synapses.items()):
            rows = syn.rows
            if syn.connect == "file" and not len(rows):
                continue  # its array is read by with_files, which checks again
            wl, bl = rows[:, 2], rows[:, 3]
            outside = np.flatnonzero((wl >= self.rows) | (bl >= self.cols))
            if len(outside):
                i = int(outside[0])
                raise SettingsError(self._row_key(key, name, syn, i), f"device ({wl[i]}, {bl[i]}) is outside the "
                                    f"{self.rows}x{self.cols} crossbar" + self._row_of(syn, i))
            lines.append(wl * self.cols + bl)
            owner.append(np.full(len(rows), g))
            index.append(np.arange(len(rows)))
        if not lines:
            return
        lin, own, idx = np.concatenate(lines), np.concatenate(owner), np.concatenate(index)
        order = np.argsort(lin, kind="stable")  # groups in order, rows in order: the later of a pair is the clash
        twice = np.flatnonzero(lin[order][1:] == lin[order][:-1])
        if len(twice):
            later = order[twice + 1]
            k = int(later[np.argmin(own[later] * (1 << 32) + idx[later])])  # the first clash in file order
            first = order[np.searchsorted(lin[order], lin[k])]
            names = list(self.synapses)
            syn, i = self.synapses[names[own[k]]], int(idx[k])
            wl, bl = divmod(int(lin[k]), self.cols)
            raise SettingsError(self._row_key(key, names[own[k]], syn, i), f"device ({wl}, {bl}) is already used by "
                                f"synapse {names[own[first]]!r}" + self._row_of(syn, i))

    def _row_key(self, key: str, name: str, syn: SynapseSettings, i: int) -> str:
        """The key to name for row ``i``'s device: its table row, or the rule's offset on the line that
        does not fit (the wordline, unless only the bitline is outside)."""
        if syn.connect == "table":
            return f"{key}.synapses.{name}.table[{i}]"
        wl, bl = syn.rows[i, 2:]
        return f"{key}.synapses.{name}." + ("bitline" if bl >= self.cols and wl < self.rows else "wordline")

    @staticmethod
    def _row_of(syn: SynapseSettings, i: int) -> str:
        if syn.connect == "table":
            return ""
        pre, post = syn.rows[i, :2]
        return (f" (pair {pre} -> {post} of connect = {syn.connect!r}: its devices are wordlines {syn.wordline}.."
                f"{syn.wordline + syn.pre - 1} x bitlines {syn.bitline}..{syn.bitline + syn.n_post - 1})")

    def with_files(self, base: Path, key: str) -> MemristorSettings:
        """These settings with every file they name read (a connect = "file" array), relative to ``base`` (the
        network file's folder), and checked again; SettingsError names the key."""
        if not any(syn.connect == "file" for syn in self.synapses.values()):
            return self
        synapses = {name: syn.with_files(base, f"{key}.synapses.{name}") for name, syn in self.synapses.items()}
        out = dataclasses.replace(self, synapses=synapses)
        out.validate(key)
        return out


MAX_MASK_BYTES = 64 << 20
"""Largest connectivity array file read (a 4,096 x 4,096 float32 array is 64 MB)."""


def _read_mask(path: Path, key: str) -> np.ndarray:
    """The 2-D array of a connect = "file" group: nonzero entries connect (pre row, post column)."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SettingsError(key, f"cannot read {str(path)!r}: {e.strerror or e}") from None
    if size > MAX_MASK_BYTES:
        raise SettingsError(key, f"{str(path)!r} is larger than {MAX_MASK_BYTES >> 20} MB, far more than a crossbar")
    most = NODE_MEMORY_BUDGET // BYTES_PER_ID
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as f:  # the header first: its shape is refused before anything is allocated
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                shape, _, dtype = read_header(f) if read_header is not None else ((), False, np.dtype(object))
                data_bytes = size - f.tell()
            if len(shape) == 2 and max(shape) > most:
                raise SettingsError(key, f"{str(path)!r} is {shape[0]} x {shape[1]}; a group has at most {most:,} pre "
                                    "and post ids")
            if dtype.kind in "biuf" and math.prod(shape) * dtype.itemsize > data_bytes:
                raise SettingsError(key, f"cannot read {str(path)!r} as an array: its header says "
                                    f"{' x '.join(map(str, shape))} of {dtype}, but the file is truncated")
            mask = np.load(path, allow_pickle=False)  # never unpickle what a file holds
        else:
            text = path.read_text(encoding="utf-8")
            if not any(ln.strip() and not ln.lstrip().startswith("#") for ln in text.splitlines()):
                raise SettingsError(key, f"{str(path)!r} holds no numbers (pre rows x post columns)")
            delimiter = "," if "," in text else None
            mask = np.loadtxt(io.StringIO(text), delimiter=delimiter, ndmin=2, comments="#")
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as e:
        raise SettingsError(key, f"cannot read {str(path)!r} as an array: {str(e).splitlines()[0] if str(e) else e}") \
            from None
    if mask.ndim != 2 or not mask.size:
        raise SettingsError(key, f"{str(path)!r} must hold a 2-D array (pre rows x post columns), got shape {mask.shape}")
    if mask.dtype.kind not in "biuf":
        raise SettingsError(key, f"{str(path)!r} must hold numbers, got {mask.dtype}")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        bad = np.argwhere(~np.isfinite(mask))[0]
        raise SettingsError(key, f"{str(path)!r} has a non-finite entry at row {bad[0]}, column {bad[1]}")
    if max(mask.shape) > most:
        raise SettingsError(key, f"{str(path)!r} is {mask.shape[0]} x {mask.shape[1]}; a group has at most {most:,} "
                            "pre and post ids")
    return mask != 0


def _of_types(events: np.ndarray, types: frozenset[int]) -> np.ndarray:
    """Typed biological events whose type (``value``) is one of ``types``. (On the hot path: a packet holds
    an event or two, for which np.isin's sort costs ten times a Python pass.)"""
    values = events["value"]
    if len(values) <= 8:
        keep = [i for i, v in enumerate(values.tolist()) if v in types]
        return events if len(keep) == len(values) else events[keep]
    mask = np.zeros(len(values), bool)
    for t in types:
        mask |= values == t
    return events[mask]


class SynapseGroup:
    """One connectivity table over the shared crossbar, with its plasticity rule."""

    def __init__(self, name: str, cfg: SynapseSettings, r_min: float, r_max: float):
        self.name = name
        self.cfg = cfg
        table = cfg.rows
        self.pre, self.post, self.wl, self.bl = (np.ascontiguousarray(c) for c in table.T)
        self.n_pre = max(cfg.pre, int(self.pre.max()) + 1)  # the ports' sizes (a rule's, or the table's ids)
        self.n_post = max(cfg.n_post, int(self.post.max()) + 1)
        # Rows by presynaptic and by postsynaptic id (CSR: the rows of id k are order[ptr[k]:ptr[k + 1]], in
        # table order): a packet's events gather their rows at once.
        self.pre_ptr, self.pre_order = _csr(self.pre, self.n_pre)
        self.post_ptr, self.post_order = _csr(self.post, self.n_post)
        self.fanout = int(np.diff(self.pre_ptr).max())
        self.gathered = np.empty(len(table), np.int64)  # gather_rows' output (a packet's distinct ids: <= n rows)
        # Plain ints, looked up once per event, when no id has more than SCALAR_ROWS rows: the answer to a lone
        # spike through a few rows (the paper's loop) touches no numpy at all.
        self.by_pre: dict[int, tuple[tuple[int, int, int, int], ...]] = {}
        if self.fanout <= SCALAR_ROWS:
            by_pre: dict[int, list] = {}
            for i, (pre, post, wl, bl) in enumerate(table.tolist()):
                by_pre.setdefault(pre, []).append((i, post, wl, bl))
            self.by_pre = {pre: tuple(rows) for pre, rows in by_pre.items()}
        self.rule: Rule = rule_for(cfg.plasticity, self.n_pre, self.n_post)
        self.pre_types = frozenset(cfg.pre_types)
        self.post_types = frozenset(cfg.post_types)
        self.g_lo, self.g_span = 1.0 / r_max, 1.0 / r_min - 1.0 / r_max
        self.ltp = np.zeros(len(self.pre), np.int64)  # pulses per table row
        self.ltd = np.zeros(len(self.pre), np.int64)
        p = cfg.plasticity
        self.pulse_v = {1: p.ltp_voltage, -1: p.ltd_voltage}
        self.pulse_w = {1: p.ltp_width, -1: p.ltd_width}
        self.port_out = f"{name}.out"
        self.out = cfg.out_range
        self.lo, self.span = self.out[0], self.out[1] - self.out[0]
        self.labels = [name] if len(table) == 1 else [f"{name}[{pre}->{post}]" for pre, post in table[:, :2].tolist()]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The table rows of presynaptic ``ids`` (known, distinct), id after id, each id's in table order."""
        n = mk.gather_rows(self.pre_ptr, self.pre_order, ids, self.gathered)
        return self.gathered[:n].copy()

    def values(self, r: np.ndarray) -> np.ndarray:
        """``value`` of each resistance."""
        return self.lo + self.span * ((1.0 / r - self.g_lo) / self.g_span)

    def value(self, r: float) -> float:
        """The output for a device read at ``r``: its conductance mapped linearly onto ``out``."""
        return self.lo + self.span * ((1.0 / r - self.g_lo) / self.g_span)


SCALAR_ROWS = 16
"""A packet of one presynaptic event is answered in plain Python when no presynaptic id has more rows than
this (the group then keeps its rows as plain ints): 10 rows take ~10 us warm, against ~18 us through the
array path, whose cost hardly grows with rows (5 events x 10 rows: 21 us against 45; a postsynaptic spike
deciding 100 STDP rows: 21 us against 113; warm, in-process). tests/test_crossbar_scale.py keeps the two paths
answering alike."""


def _csr(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, order): the rows holding id k are order[ptr[k]:ptr[k + 1]], in ascending row order."""
    order = np.argsort(ids, kind="stable").astype(np.int64)
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(ids, minlength=n), out=ptr[1:])
    return ptr, order


def _state_path(name: str, settings: MemristorSettings, ctx: dict) -> Path | None:
    """Where a node's crossbar is kept (None: not persisted, not run by the supervisor, or devices that keep
    their own state)."""
    if not settings.persist or "network" not in ctx or not crossbar_class(settings.device.model).persistent:
        return None
    if settings.state_file:
        return Path(ctx["network_dir"]) / settings.state_file
    return Path.cwd() / ".spikewire" / "state" / f"{ctx['network']}.{name}.json"


def _lock(path: Path):
    """The state file's lock, taken (the open file; closing it releases the lock). One run at a time per
    state file: a second would restore the same weights and overwrite the first's learning."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path.with_name(path.name + ".lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise ValueError(f"the crossbar state {path} is in use by another run (pid {holder}); two runs must not "
                         "share one crossbar: stop the other, or give this one its own state_file") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def _read_state(path: Path, s: MemristorSettings) -> tuple[np.ndarray, dict]:
    """A saved crossbar's resistances (checked against the node's shape and device range) and the record."""
    try:
        saved = json.loads(path.read_text())
        r = np.asarray(saved["resistance"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read the crossbar state {path}: {e}; fix or delete it, or run with "
                         "--reset-weights") from None
    if r.shape != (s.rows, s.cols):
        raise ValueError(f"the crossbar state {path} has shape {'x'.join(map(str, r.shape)) or 'scalar'} but this "
                         f"node's crossbar is {s.rows}x{s.cols}; delete it or run with --reset-weights")
    if not (np.isfinite(r).all() and (r >= s.device.r_min).all() and (r <= s.device.r_max).all()):
        raise ValueError(f"the crossbar state {path} has resistances outside the device range "
                         f"[{s.device.r_min}, {s.device.r_max}]; delete it or run with --reset-weights")
    return r, saved


@element
class MemristorNode(Node):
    kind = "memristor"
    Settings = MemristorSettings
    keywords = ("memristor", "plasticity")
    interlocked = True  # programs devices, and its stimulus outputs drive the CME

    def __init__(self, name: str, settings: MemristorSettings):
        super().__init__(name, settings)
        s = settings
        self.crossbar: Crossbar = self.make_crossbar(name, s)
        self.r_start = self.crossbar.r.copy()
        self.groups = {name: SynapseGroup(name, cfg, s.device.r_min, s.device.r_max) for name, cfg in s.synapses.items()}
        self.rejected: dict[str, int] = {}
        self.state_path: Path | None = None
        self.pulse_log: list[tuple] = []  # the pulses applied since the last take_log() (which expands them)
        self.unlogged = 0  # pulses counted but not logged one by one (PULSE_LOG_MAX)
        self.held_pulses = 0  # plasticity pulses the safety interlock held back
        self.start_state: dict = {"source": "r_init"}  # where the crossbar's start came from (summary, provenance)
        self.warnings: list[str] = []  # said loudly at start, and kept in the summary
        self.dirty = False  # pulses applied since the last save
        self.last_save = float("-inf")
        self._lock = None  # the state file's lock, held while this node runs

    @staticmethod
    def make_crossbar(name: str, s: MemristorSettings) -> Crossbar:
        """The crossbar ``device.model`` names, built from the node's settings."""
        cls = crossbar_class(s.device.model)
        spec = CrossbarSpec(node=name, rows=s.rows, cols=s.cols, r_init=s.r_init, r_min=s.device.r_min,
                            r_max=s.device.r_max, spread=s.spread, read_noise=s.read_noise, seed=s.seed,
                            params=cls.parameters(s.device, "device"), instrument=s.device.instrument)
        return cls(spec)

    @property
    def r(self) -> np.ndarray:
        """Every device's resistance as last known (the crossbar's ``r``), (rows, cols) [Ohm]."""
        return self.crossbar.r

    @classmethod
    def ports(cls, settings: MemristorSettings):
        inputs, outputs = {}, {}
        either = frozenset({Kind.SPIKE, Kind.BIO})
        for s, cfg in settings.synapses.items():
            pre, post = cfg.sizes
            inputs[f"{s}.pre"] = InPort(either, f"presynaptic events of {s}", pre, named=True, role=Role.PRE, group=s)
            inputs[f"{s}.post"] = InPort(either, f"postsynaptic events of {s} (trigger plasticity)", post, named=True,
                                         role=Role.POST, group=s)
            kind, role = (Kind.STIMULUS, Role.STIMULI) if cfg.output == "stimulus" else (Kind.SPIKE, Role.SYNAPTIC)
            outputs[f"{s}.out"] = OutPort(kind, f"weighted output of {s}", post, tuple(sorted(cfg.out_range)),
                                          named=True, role=role, group=s)
        return inputs, outputs

    def warm_up(self) -> None:
        for group in self.groups.values():  # only a rule that runs a kernel loads numba
            group.rule.warm_up()
        self.crossbar.warm_up()
        if not self.crossbar.persistent:  # an instrument, open now: its devices are where this run starts
            self.r_start = self.crossbar.read_all()
            self.start_state = {"source": "device"}
            self._check_bounds()

    def start(self, t0: float) -> None:
        super().start(t0)
        for g in self.groups.values():
            g.rule.start(t0)

    def probe_route(self, port: str) -> tuple[str, ...]:
        syn, _, role = port.rpartition(".")
        return (f"{syn}.out",) if role == "pre" else ()

    # --- non-volatile weights ------------------------------------------------------------------
    @classmethod
    def preflight(cls, name: str, settings: MemristorSettings, context: dict) -> None:
        """Refuse, before any process starts, a state file another run holds or that cannot be restored."""
        path = _state_path(name, settings, context)
        if path is None:
            return
        _lock(path).close()
        if not context.get("reset_state") and path.exists():
            _read_state(path, settings)

    def load_state(self) -> None:
        ctx = self.context
        if not self.crossbar.persistent:  # an instrument: its devices are the state, read in warm_up once open
            return
        self.state_path = _state_path(self.name, self.settings, ctx)
        if self.state_path is None:
            return
        self._lock = _lock(self.state_path)
        if ctx.get("reset_state") or not self.state_path.exists():
            log.info("%s: crossbar starts fresh (r_init)%s", self.name,
                     " as asked" if ctx.get("reset_state") else "")
            self.start_state = {"source": "reset" if ctx.get("reset_state") else "r_init", "path": str(self.state_path)}
        else:
            r, saved = _read_state(self.state_path, self.settings)
            self.crossbar.restore(r)
            self.r_start = r.copy()
            self.start_state = {"source": "file", "path": str(self.state_path), "saved_at": saved.get("saved_at"),
                                "saved_by_session": saved.get("session")}
        self._check_bounds()

    def _check_bounds(self) -> None:
        """Say loudly when the run does not start from r_init, or when devices start pinned at a bound
        (potentiation, or depression, then cannot move them: a repeated protocol would silently differ)."""
        s = self.settings
        devs = list(self.devices())
        r = np.array([self.r[g.wl[row], g.bl[row]] for _, g, row in devs])
        tol = 1e-6 * s.device.r_max
        at_max = [label for (label, _, _), x in zip(devs, r) if x >= s.device.r_max - tol]
        at_min = [label for (label, _, _), x in zip(devs, r) if x <= s.device.r_min + tol]
        self.start_state["at_r_max"] = at_max
        self.start_state["at_r_min"] = at_min
        if self.start_state["source"] == "file":
            st = self.start_state
            by = f"session {st['saved_by_session']}" if st.get("saved_by_session") else "a run that recorded no session"
            self.warnings.append(f"crossbar restored from {st['path']} (saved {st.get('saved_at', '?')} by {by}), "
                                 "not from r_init: this run continues another "
                                 "one's learning (--reset-weights or [protocol] reset_weights = true start fresh)")
        for which, devices in (("r_max (LTD cannot raise them)", at_max), ("r_min (LTP cannot lower them)", at_min)):
            if devices:
                shown = ", ".join(devices[:8]) + (f" and {len(devices) - 8} more" if len(devices) > 8 else "")
                self.warnings.append(f"{len(devices)} of {len(devs)} device(s) start at {which}: {shown}")
        for w in self.warnings:
            log.warning("%s: %s", self.name, w)

    def save_state(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"node": self.name, "network": self.context.get("network"),
                                   "session": self.context.get("session") or None,
                                   "saved_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                                   "rows": self.settings.rows, "cols": self.settings.cols,
                                   "resistance": self.r.tolist()}, indent=1))
        os.replace(tmp, self.state_path)  # atomic: a crash mid-write leaves the previous state intact
        self.dirty = False

    def housekeeping(self, now: float) -> None:
        # Weights are non-volatile: learning is saved as it happens (batched), so kill -9 loses at most
        # PERSIST_EVERY of it. A killed process's writes survive; a power cut may lose the OS's unwritten pages.
        if self.dirty and now - self.last_save >= PERSIST_EVERY:
            self.last_save = now
            self.save_state()

    def close(self) -> None:
        self.save_state()
        self.crossbar.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- events ----------------------------------------------------------------------------------
    def _reject(self, reason: str, n: int) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + n

    def take_log(self) -> list[dict]:
        """The pulses since the last call (a status period), one record each up to PULSE_LOG_MAX, expanded here
        in the loop's slack (the hot path only appended what it applied); the rest are counted in one
        ``pulses_unlogged`` record, and in the final figures."""
        out = []
        unlogged = 0
        room = PULSE_LOG_MAX
        for now, group, rows, ltp, r_before, r_after in self.pulse_log:
            n = 1 if isinstance(rows, int) else len(rows)
            if room <= 0:
                unlogged += n
                continue
            if isinstance(rows, int):
                rows, ltp, r_before, r_after = [rows], [ltp], [r_before], [r_after]
            else:
                rows, ltp, r_before, r_after = (rows[:room].tolist(), ltp[:room].tolist(), r_before[:room].tolist(),
                                                r_after[:room].tolist())
            unlogged += n - len(rows)
            room -= len(rows)
            labels = group.labels
            out += [{"event": "pulse", "t": now, "device": labels[row], "direction": "ltp" if up else "ltd",
                     "r_before": rb, "r_after": ra} for row, up, rb, ra in zip(rows, ltp, r_before, r_after)]
        if unlogged:
            out.append({"event": "pulses_unlogged", "t": self.pulse_log[-1][0], "count": unlogged})
            if not self.unlogged:
                note = (f"over {PULSE_LOG_MAX:,} pulses in a status period: the rest are counted (pulses_unlogged), "
                        "not logged; device counts stay exact")
                log.warning("%s: %s", self.name, note)
                self.warnings.append(note)
            self.unlogged += unlogged
        self.pulse_log = []
        return out

    def _pulse(self, group: SynapseGroup, row: int, pulse: Pulse, now: float = 0.0) -> None:
        """Apply the pulse ``group``'s rule asked for to the device of table row ``row``."""
        if self.held:  # the safety interlock: no programming while the input is not trustworthy
            self.held_pulses += 1
            return
        wl, bl = int(group.wl[row]), int(group.bl[row])
        r_before = self.crossbar.r.item(wl, bl)
        r_after = self.crossbar.pulse(wl, bl, pulse.voltage, pulse.width)
        if pulse.direction == "ltp":
            group.ltp[row] += 1
        else:
            group.ltd[row] += 1
        self.dirty = True
        self.pulse_log.append((now, group, row, pulse.direction == "ltp", float(r_before), float(r_after)))

    def _pulse_rows(self, group: SynapseGroup, rows: np.ndarray, decisions: np.ndarray, now: float) -> None:
        """Apply the pulses a rule decided (+1 LTP, -1 LTD, 0 none, per row of ``rows``), in row order."""
        act = decisions != 0
        if not act.any():
            return
        rows, decisions = rows[act], decisions[act]
        if self.held:
            self.held_pulses += len(rows)
            return
        ltp = decisions > 0
        volts = np.where(ltp, group.pulse_v[1], group.pulse_v[-1])
        widths = np.where(ltp, group.pulse_w[1], group.pulse_w[-1])
        wl, bl = group.wl[rows], group.bl[rows]
        r_before = self.crossbar.r[wl, bl]  # a copy (fancy indexing)
        r_after = self.crossbar.pulse_many(wl, bl, volts, widths)
        group.ltp[rows[ltp]] += 1  # rows are distinct
        group.ltd[rows[~ltp]] += 1
        self.dirty = True
        self.pulse_log.append((now, group, rows, ltp, r_before, r_after))

    def on_events(self, port: str, kind: Kind, events: np.ndarray, now: float) -> None:
        syn, _, role = port.rpartition(".")
        group = self.groups[syn]
        if role == "pre":
            if kind == Kind.BIO:
                events = _of_types(events, group.pre_types)
            if len(events) == 1 and group.by_pre:
                rows = group.by_pre.get(events["id"].item())
                if rows is not None:
                    self._on_pre_scalar(group, events["id"].item(), rows, now)
                    return
            self._on_pre(group, events, now)
        else:
            if kind == Kind.BIO:
                events = _of_types(events, group.post_types)
            self._on_post(group, events, now)

    def _known(self, ids: np.ndarray, ptr: np.ndarray) -> np.ndarray:
        """``ids`` (int64) that have rows; the others are counted as unknown_id."""
        ids = ids.astype(np.int64)
        n = len(ptr) - 1
        ok = ids < n
        if ok.all():
            ok = ptr[ids + 1] > ptr[ids]
        else:
            ok[ok] = ptr[ids[ok] + 1] > ptr[ids[ok]]
        if not ok.all():
            self._reject("unknown_id", int((~ok).sum()))
            ids = ids[ok]
        return ids

    def _on_pre_scalar(self, group: SynapseGroup, pre: int, rows: tuple, now: float) -> None:
        # The hot path of a small table: a spike is answered here, at once; the rule only records unless it
        # acts on pre. (The same answers as _on_pre, checked by tests/test_crossbar_scale.py.)
        rule = group.rule
        rule.pre(pre, now)
        read = self.crossbar.read
        emit = self.outbox.emit
        port = group.port_out
        for row, post, wl, bl in rows:
            if rule.acts_on_pre:
                pulse = rule.on_pre(pre, post, now)
                if pulse is not None:
                    self._pulse(group, row, pulse, now)
            emit(port, now, post, group.value(read(wl, bl)))

    def _on_pre(self, group: SynapseGroup, events: np.ndarray, now: float) -> None:
        """A packet's presynaptic events at once: their rows gathered, decided, pulsed and read as arrays, the
        answer emitted in one go (event after event, each event's rows in table order)."""
        ids = self._known(events["id"], group.pre_ptr)
        if not len(ids):
            return
        if len(ids) > 1 and len(np.unique(ids)) < len(ids):
            for i in range(len(ids)):  # a repeated id: in order, so its second event sees the first's pulses
                self._on_pre_known(group, ids[i : i + 1], now)
            return
        self._on_pre_known(group, ids, now)

    def _on_pre_known(self, group: SynapseGroup, ids: np.ndarray, now: float) -> None:
        rule = group.rule
        rule.pre_many(ids, now)
        rows = group.rows_of(ids)
        if rule.acts_on_pre:  # each row's device is its own: pulsing all before reading all is row by row
            self._pulse_rows(group, rows, rule.decide_pre(group.pre[rows], group.post[rows], now), now)
        values = group.values(self.crossbar.read_many(group.wl[rows], group.bl[rows]))
        self.outbox.emit_many(group.port_out, np.full(len(rows), now), group.post[rows], values)

    def _on_post(self, group: SynapseGroup, events: np.ndarray, now: float) -> None:
        rule = group.rule
        for post in self._known(events["id"], group.post_ptr).tolist():
            rule.post(post, now)
            if not rule.learns:
                continue
            rows = group.post_order[group.post_ptr[post] : group.post_ptr[post + 1]]
            self._pulse_rows(group, rows, rule.decide_post(group.pre[rows], post, now), now)

    # --- reports ---------------------------------------------------------------------------------
    def devices(self):
        """(label, group, table row) of every device a table names."""
        for g in self.groups.values():
            for row, label in enumerate(g.labels):
                yield label, g, row

    @classmethod
    def declare(cls, name: str, settings: MemristorSettings) -> Declaration:
        """Every crossbar device a synapse group's table names, where it sits and how it is pulsed."""
        devices = []
        for syn, cfg in settings.synapses.items():
            p = cfg.plasticity
            pulse = {"ltp_voltage": p.ltp_voltage, "ltd_voltage": p.ltd_voltage,
                     "ltp_width": p.ltp_width, "ltd_width": p.ltd_width}
            rows = cfg.rows.tolist()
            for pre, post, wl, bl in rows:
                label = syn if len(rows) == 1 else f"{syn}[{pre}->{post}]"
                devices.append(Device(label, syn, {"wordline": wl, "bitline": bl}, pulse))
        return Declaration(devices=tuple(devices), keywords=cls.keywords)

    def figures(self, now: float, final: bool = False) -> Figures:
        devices: dict[str, DeviceFigures] = {}
        for g in self.groups.values():  # plain lists, one pass: a 100 x 10 crossbar in ~0.3 ms, not 1.2
            devices.update(zip(g.labels, map(DeviceFigures, self.r[g.wl, g.bl].tolist(),
                                             self.r_start[g.wl, g.bl].tolist(), g.ltp.tolist(), g.ltd.tolist())))
        f = Figures(elapsed=now - self.t0, devices=devices, rejected=dict(self.rejected),
                    held={"pulses": self.held_pulses})
        if final:
            f.info = {"state_file": str(self.state_path) if self.state_path else None, "start_state": self.start_state,
                      "pulses_unlogged": self.unlogged}
            f.warnings = list(self.warnings)
        return f

