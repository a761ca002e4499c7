"""`spikewire device --sweep`: what one programming pulse does to a device, against its resistance.

    spikewire device --sweep                                   the default device and pulses
    spikewire device NETWORK NODE [--group G] --sweep          a memristor node's model and a group's pulses
                                                               [--points 41] [--pulses 200] [--out sweep.png]
                                                               [--json sweep.json]

For resistances across the device range it applies the group's LTP pulse and its LTD pulse (voltage and
width from its plasticity settings) to a fresh model device and reports the change per pulse; then the
resistance after n pulses of each from ``r_init``; how many LTP pulses one LTD pulse undoes at ``r_init``;
where equal numbers of LTP and LTD pulses hold a device (stable) and where they drive it away either way
(a tipping point); and the LTD voltage whose pulse matches the LTP pulse at mid-range. A rule that mostly potentiates drifts
to the end LTP drives towards unless one LTD pulse does correspondingly more (README, "Choosing pulses").

It drives the node's own crossbar model through the Crossbar seam (``restore`` then ``pulse``), so any
installed model sweeps; an instrument (a crossbar whose devices are real) is refused, never programmed.
Units: Ohm, V, s.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikewire.config.network import NetworkError, load_network
from spikewire.core.argtypes import number, output_file
from spikewire.core.settings import SettingsError, parse


@dataclass
class Pulses:
    ltp_voltage: float
    ltp_width: float
    ltd_voltage: float
    ltd_width: float


@dataclass
class Sweep:
    model: str
    r_min: float
    r_max: float
    r_init: float
    pulses: Pulses
    r: np.ndarray  # the grid [Ohm]
    d_ltp: np.ndarray  # change per LTP pulse at each r [Ohm]
    d_ltd: np.ndarray
    after_ltp: np.ndarray  # resistance after 0..n LTP pulses from r_init [Ohm]
    after_ltd: np.ndarray
    stable: list[float]  # resistances equal numbers of LTP and LTD pulses hold a device at [Ohm]
    tipping: list[float]  # resistances they drive a device away from, either way [Ohm]
    balancing_ltd_voltage: float | None  # the LTD voltage that balances at mid-range, None if none found

    def to_dict(self) -> dict:
        return {"version": 1, "model": self.model, "r_min": self.r_min, "r_max": self.r_max, "r_init": self.r_init,
                "pulses": vars(self.pulses), "r": self.r.tolist(), "d_ltp": self.d_ltp.tolist(),
                "d_ltd": self.d_ltd.tolist(), "after_ltp": self.after_ltp.tolist(), "after_ltd": self.after_ltd.tolist(),
                "stable_r": self.stable, "tipping_r": self.tipping, "balancing_ltd_voltage": self.balancing_ltd_voltage}


def _device(node_settings, crossbar_cls):
    """A fresh 1 x 1 crossbar of the node's model (no spread, no read noise: the model's own response)."""
    from spikewire.nodes.crossbar import CrossbarSpec

    s, d = node_settings, node_settings.device
    spec = CrossbarSpec(node="sweep", rows=1, cols=1, r_init=s.r_init, r_min=d.r_min, r_max=d.r_max,
                        params=crossbar_cls.parameters(d, "device"), instrument=d.instrument)
    xb = crossbar_cls(spec)
    xb.warm_up()
    return xb


def _step(xb, r: float, voltage: float, width: float) -> float:
    xb.restore(np.array([[r]]))
    return xb.pulse(0, 0, voltage, width) - r


def sweep(node_settings, pulses: Pulses, points: int = 41, n_pulses: int = 200) -> Sweep:
    from spikewire.nodes.crossbar import crossbar_class

    d = node_settings.device
    cls = crossbar_class(d.model)
    if not cls.persistent:
        raise ValueError(f"device.model {d.model!r} is an instrument: a sweep would program real devices; sweep a "
                         "model of them instead")
    xb = _device(node_settings, cls)
    grid = np.linspace(d.r_min, d.r_max, points)
    p = pulses
    d_ltp = np.array([_step(xb, r, p.ltp_voltage, p.ltp_width) for r in grid])
    d_ltd = np.array([_step(xb, r, p.ltd_voltage, p.ltd_width) for r in grid])
    after = []
    for v, w in ((p.ltp_voltage, p.ltp_width), (p.ltd_voltage, p.ltd_width)):
        xb.restore(np.array([[node_settings.r_init]]))
        trace = [node_settings.r_init] + [xb.pulse(0, 0, v, w) for _ in range(n_pulses)]
        after.append(np.array(trace))
    net = d_ltp + d_ltd  # drift under one LTP and one LTD pulse
    stable, tipping = [], []
    for i in np.flatnonzero(np.sign(net[:-1]) * np.sign(net[1:]) < 0):
        r0 = float(grid[i] - net[i] * (grid[i + 1] - grid[i]) / (net[i + 1] - net[i]))
        (stable if net[i] > 0 else tipping).append(r0)  # pushed up below it and down above it: it holds
    return Sweep(d.model, d.r_min, d.r_max, node_settings.r_init, pulses, grid, d_ltp, d_ltd, after[0], after[1],
                 stable, tipping, _balancing_voltage(xb, (d.r_min + d.r_max) / 2, p))


def _balancing_voltage(xb, r_mid: float, p: Pulses) -> float | None:
    """The LTD voltage (same width) whose pulse at ``r_mid`` moves the device as far as the LTP pulse does,
    by bisection over [-5 V, -0.01 V] (None if no voltage there does)."""
    target = abs(_step(xb, r_mid, p.ltp_voltage, p.ltp_width))
    if target == 0.0:
        return None
    lo, hi = -5.0, -0.01  # |step| grows as the voltage goes more negative
    if abs(_step(xb, r_mid, lo, p.ltd_width)) < target or abs(_step(xb, r_mid, hi, p.ltd_width)) > target:
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        if abs(_step(xb, r_mid, mid, p.ltd_width)) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _pulses_to(trace: np.ndarray, r_end: float) -> str:
    """How many pulses bring the trace within 1 % of the range's end it approaches."""
    span = abs(trace[0] - r_end) or 1.0
    close = np.flatnonzero(np.abs(trace - r_end) <= 0.01 * max(span, abs(r_end) * 0.01))
    return f"{int(close[0])}" if len(close) else f"> {len(trace) - 1}"


def table(s: Sweep, rows: int = 9) -> str:
    p = s.pulses
    lines = [f"device model {s.model!r}, range {s.r_min:,.0f}..{s.r_max:,.0f} Ohm, r_init {s.r_init:,.0f} Ohm",
             f"LTP pulse {p.ltp_voltage:+g} V x {p.ltp_width * 1e6:g} us, LTD pulse {p.ltd_voltage:+g} V x "
             f"{p.ltd_width * 1e6:g} us", "",
             f"{'R [Ohm]':>10}  {'dR per LTP pulse':>17}  {'dR per LTD pulse':>17}  {'|LTD| / |LTP|':>13}"]
    for i in np.linspace(0, len(s.r) - 1, rows).round().astype(int):
        ratio = abs(s.d_ltd[i]) / abs(s.d_ltp[i]) if s.d_ltp[i] else math.inf
        lines.append(f"{s.r[i]:>10,.0f}  {s.d_ltp[i]:>+17,.2f}  {s.d_ltd[i]:>+17,.2f}  {ratio:>13,.3g}")
    lines.append("")
    ltp_end = s.r_min if s.after_ltp[-1] < s.r_init else s.r_max
    ltd_end = s.r_max if s.after_ltd[-1] > s.r_init else s.r_min
    lines.append(f"from r_init: {len(s.after_ltp) - 1} LTP pulses -> {s.after_ltp[-1]:,.0f} Ohm (within 1 % of "
                 f"{ltp_end:,.0f} after {_pulses_to(s.after_ltp, ltp_end)}); {len(s.after_ltd) - 1} LTD pulses -> "
                 f"{s.after_ltd[-1]:,.0f} Ohm (within 1 % of {ltd_end:,.0f} after {_pulses_to(s.after_ltd, ltd_end)})")
    ratio = abs(np.interp(s.r_init, s.r, s.d_ltd)) / max(abs(np.interp(s.r_init, s.r, s.d_ltp)), 1e-12)
    lines.append(f"at r_init one LTD pulse undoes {ratio:,.3g} LTP pulses: a rule must potentiate {ratio:,.3g} times as "
                 "often as it depresses to hold a device there")
    for r0 in s.stable:
        lines.append(f"equal numbers of LTP and LTD pulses hold a device at {r0:,.0f} Ohm (stable)")
    for r0 in s.tipping:
        lines.append(f"tipping point {r0:,.0f} Ohm: with equal numbers of pulses a device above it drifts up, one "
                     "below it drifts down")
    if not s.stable and not s.tipping:
        up = bool((s.d_ltp + s.d_ltd)[len(s.r) // 2] > 0)
        lines.append(f"equal numbers of LTP and LTD pulses drive every device to {'r_max' if up else 'r_min'}")
    if s.balancing_ltd_voltage is not None:
        lines.append(f"an LTD pulse of {s.balancing_ltd_voltage:+.3f} V (same width) balances the LTP pulse at "
                     f"mid-range ({(s.r_min + s.r_max) / 2:,.0f} Ohm)")
    return "\n".join(lines)


def plot(s: Sweep, out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from spikewire.monitor.plot import image_path

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    a, b = fig.subplots(1, 2)
    p = s.pulses
    floor = 1e-2  # Ohm: a log axis, on which "no change" (at the range's ends) sits at the floor
    a.plot(s.r, np.maximum(np.abs(s.d_ltp), floor), label=f"LTP {p.ltp_voltage:+g} V, {p.ltp_width * 1e6:g} us (R down)",
           color="tab:blue")
    a.plot(s.r, np.maximum(np.abs(s.d_ltd), floor), label=f"LTD {p.ltd_voltage:+g} V, {p.ltd_width * 1e6:g} us (R up)",
           color="tab:red")
    for r0 in s.stable:
        a.axvline(r0, color="tab:green", ls="--", lw=1, label=f"held by equal pulses {r0:,.0f} Ohm")
    for r0 in s.tipping:
        a.axvline(r0, color="0.4", ls=":", lw=1, label=f"tipping point {r0:,.0f} Ohm")
    a.axvline(s.r_init, color="0.7", lw=0.8)
    a.set_yscale("log")
    a.set_ylim(bottom=floor)
    a.set_xlabel("R before the pulse [Ohm]")
    a.set_ylabel("|dR| per pulse [Ohm]")
    a.set_title(f"one pulse against R ({s.model})")
    a.legend(fontsize=8)
    b.plot(s.after_ltp, color="tab:blue", label="LTP pulses")
    b.plot(s.after_ltd, color="tab:red", label="LTD pulses")
    b.axhline(s.r_min, color="0.6", lw=0.8)
    b.axhline(s.r_max, color="0.6", lw=0.8)
    b.set_xlabel("pulses from r_init")
    b.set_ylabel("R [Ohm]")
    b.set_title(f"repeated pulses from r_init = {s.r_init:,.0f} Ohm")
    b.legend(fontsize=8)
    fig.tight_layout()
    out = image_path(out)
    fig.savefig(out)
    return out


def _settings(args):
    """(memristor settings, pulses) from the network's node and group, or the defaults."""
    from spikewire.nodes.memristor import MemristorSettings

    if args.network is None:
        s = parse(MemristorSettings, {"synapses": {"s": {}}}, "device")
        cfg = s.synapses["s"].plasticity
        return s, Pulses(cfg.ltp_voltage, cfg.ltp_width, cfg.ltd_voltage, cfg.ltd_width)
    net = load_network(args.network, check_keys=False)
    if args.node not in net.nodes:
        raise ValueError(f"{args.network}: no node {args.node!r}; nodes: {', '.join(net.nodes)}")
    s = net.nodes[args.node].settings
    groups = getattr(s, "synapses", None)
    device = getattr(s, "device", None)
    if not groups or device is None or not hasattr(device, "r_min"):
        raise ValueError(f"nodes.{args.node}: not a node of programmable devices with synapse groups (a memristor node)")
    name = args.group or next(iter(groups))
    if name not in groups:
        raise ValueError(f"nodes.{args.node}: no synapse group {name!r}; groups: {', '.join(groups)}")
    cfg = groups[name].plasticity
    return s, Pulses(cfg.ltp_voltage, cfg.ltp_width, cfg.ltd_voltage, cfg.ltd_width)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikewire device", description=__doc__.split("\n\n")[0],
                                 epilog="Without NETWORK NODE: the default TiOx device and default pulses.")
    ap.add_argument("network", nargs="?", help="network file (TOML)")
    ap.add_argument("node", nargs="?", help="a memristor node of the network")
    ap.add_argument("--group", help="the synapse group whose pulses to use (default: the node's first)")
    ap.add_argument("--sweep", action="store_true", help="sweep dR per pulse against R (the only action so far)")
    ap.add_argument("--points", type=number(int, at_least=3, at_most=10_000), default=41,
                    help="resistances in the sweep (default 41)")
    ap.add_argument("--pulses", type=number(int, at_least=1, at_most=1_000_000), default=200,
                    help="pulses of each kind from r_init (default 200)")
    ap.add_argument("--out", metavar="FILE", type=output_file, help="also draw the sweep to FILE (.png, .pdf, .svg)")
    ap.add_argument("--json", metavar="PATH", type=output_file, help="write the sweep as JSON")
    args = ap.parse_args(argv)
    if not args.sweep:
        ap.error("say what to do: --sweep")
    if (args.network is None) != (args.node is None):
        ap.error("give both NETWORK and NODE, or neither (the default device)")
    if args.group and args.network is None:
        ap.error("--group names a synapse group of NETWORK NODE: give them too")
    try:
        if args.out:
            from spikewire.monitor.plot import image_path

            image_path(args.out)  # a bad name is refused before the work
        settings, pulses = _settings(args)
        s = sweep(settings, pulses, args.points, args.pulses)
    except NetworkError as e:
        print(f"spikewire device: {args.network}: {e}", file=sys.stderr)
        return 2
    except (ValueError, SettingsError) as e:
        print(f"spikewire device: {e}", file=sys.stderr)
        return 2
    try:
        print(table(s))
        if args.out:
            print(f"wrote {plot(s, Path(args.out))}")
        if args.json:
            Path(args.json).write_text(json.dumps(s.to_dict(), indent=1))
            print(f"wrote {args.json}")
    except BrokenPipeError:  # `spikewire device --sweep | head`
        sys.stdout = None
    return 0


if __name__ == "__main__":
    sys.exit(main())
