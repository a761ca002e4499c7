"""``spikewire top``: a live view of a running network, read from its nodes' /metrics endpoints alone.

Every refresh fetches each node's Prometheus exposition. Counters and histograms there are cumulative,
so rates, CPU % and quantiles come from the difference between a node's last two *distinct* expositions;
on the first refresh, before there is a difference, they fall back to the node's own figures (its rate
gauge, CPU since process start, cumulative histograms).

The catch: a node re-renders its exposition at most once a second (``MetricsServer.max_age``) and the
text carries no timestamps, so two fetches may return the same render and the time between fetches is
not the time between renders. So an unchanged exposition changes nothing on screen, and a difference is
divided by the node's own clock (committed ticks times its tick period) when it has one; only
event-driven nodes fall back to the time between fetches.

For the same reason a link's figures all come from one exposition, its receiver's: two processes render
at different moments, and a sender's own count read beside a receiver's was routinely behind it (more
received than sent). ``sent`` is what the receiver knows the sender had sent by the newest packet that
reached it: every sequence number up to that one is received, lost (a gap) or refused with its number
accounted for (``IN_SEQUENCE``). Packets sent after it (in flight) are not in it, and drops at the
sender's own full send queue, which consume no sequence number, are added to ``dropped`` from the
sender's exposition (a count, whatever its moment).

The view is ``render_frame`` of parsed ``Exposition``s, a pure function; ``main`` only fetches and draws.
"""

from __future__ import annotations

import argparse
import http.client
import math
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

from spikewire.config.network import Network, NetworkError, NodeSpec, load_network
from spikewire.monitor import catalogue as C
from spikewire.monitor.report import _table, _us, phase_text, rate_text, sparkline
from spikewire.nodes.figures import AGGREGATE_ABOVE, Spread
from spikewire.core.argtypes import number

Labels = dict[str, str]

IN_SEQUENCE = ("wrong_kind", "bad_time")
"""Malformed reasons whose packets had a plausible sequence number, which the receiver accounts for like a
delivered one (streams/link_rx.py); the other reasons' packets never reached the sequence."""


@dataclass(frozen=True)
class Exposition:
    """One node's parsed /metrics: samples by series name, and when they were fetched."""

    fetched: float
    """time.monotonic() at the fetch."""
    wall: float
    """time.time() at the fetch (the clock of ``process_start_time_seconds``)."""
    samples: dict[str, tuple[tuple[Labels, float], ...]]
    """(labels, value) of every sample, by series name (``spikewire_spikes_total``, ``..._bucket``)."""

    def _matching(self, name: str, labels: Labels):
        for have, value in self.samples.get(name, ()):
            if all(have.get(k) == v for k, v in labels.items()):
                yield have, value

    def value(self, name: str, **labels: str) -> float | None:
        """The first sample of ``name`` carrying ``labels`` (others may differ), or None."""
        return next((v for _, v in self._matching(name, labels)), None)

    def total(self, name: str, **labels: str) -> float | None:
        """Sum over the samples of ``name`` carrying ``labels``; None when there are none."""
        values = [v for _, v in self._matching(name, labels)]
        return sum(values) if values else None

    def label_values(self, name: str, label: str) -> list[str]:
        return [have[label] for have, _ in self.samples.get(name, ()) if label in have]

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """Cumulative (upper bound, count) pairs of histogram ``name``, sorted, ending with +Inf."""
        return sorted((float(have["le"]), v) for have, v in self._matching(f"{name}_bucket", labels))


def parse_exposition(text: str, fetched: float, wall: float) -> Exposition:
    """Raises ValueError on text that is not the Prometheus text format."""
    samples: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    return Exposition(fetched, wall, {k: tuple(v) for k, v in samples.items()})


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative (upper bound, count) buckets ending with +Inf, interpolated linearly
    within its bucket as Prometheus' ``histogram_quantile`` does (the first bucket starts at 0). None
    with no observations; inf where Prometheus would return the largest finite bound, so a view can say
    "above 100 ms" instead of understating."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"a quantile is between 0 and 1, got {q!r}")
    if not buckets or buckets[-1][1] <= 0:
        return None
    if buckets[-1][0] != math.inf:
        raise ValueError(f"histogram buckets must end with +Inf, got upper bound {buckets[-1][0]!r}")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == math.inf:
                return math.inf
            if count == below:  # only for q == 0 before the first observation
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return math.inf  # counts not monotonic; cannot happen in a valid exposition


def recent_buckets(last: Exposition, prev: Exposition | None, name: str, **labels: str) -> list[tuple[float, float]]:
    """The buckets of what was observed between ``prev`` and ``last``; cumulative ones when there is no
    ``prev`` or the counts went down (the node restarted)."""
    now = last.buckets(name, **labels)
    before = dict(prev.buckets(name, **labels)) if prev is not None else {}
    if not before:
        return now
    delta = [(le, n - before.get(le, 0.0)) for le, n in now]
    return now if any(n < 0 for _, n in delta) else delta


def tick_period(spec: NodeSpec) -> float | None:
    """A node's tick period as its runtime takes it. ``Node.tick_period`` reads only the settings, so it
    is evaluated on a stand-in rather than by building the node (which allocates its model)."""
    prop = getattr(spec.cls, "tick_period", None)
    if not isinstance(prop, property):
        return None
    try:
        return prop.fget(SimpleNamespace(settings=spec.settings))
    except AttributeError:  # a property that needs more than settings: fall back to fetch times
        return None


def population_sizes(spec: NodeSpec) -> dict[str, int]:
    """Neurons per population, as the node's kind declares them."""
    return {p.name: p.size for p in spec.declaration.populations}


@dataclass
class NodeState:
    """What top knows of one node: its last two distinct expositions, and why it is unreachable now."""

    last: Exposition | None = None
    prev: Exposition | None = None
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.error is None and self.last is not None

    def update(self, scraped: Exposition | str) -> None:
        """Take a new exposition, or the reason the fetch failed."""
        if isinstance(scraped, str):
            self.error = scraped
            return
        self.error = None
        if self.last is None or scraped.samples != self.last.samples:
            self.prev, self.last = self.last, scraped


def _delta(name: str, last: Exposition, prev: Exposition | None, **labels: str) -> float | None:
    if prev is None:
        return None
    a, b = last.total(name, **labels), prev.total(name, **labels)
    return a - b if a is not None and b is not None and a >= b else None


def node_elapsed(spec: NodeSpec, st: NodeState) -> float | None:
    """Seconds between the node's last two renders: by its tick count when it has a clock."""
    if st.prev is None or st.last is None:
        return None
    period = tick_period(spec)
    ticks = _delta(C.TICKS.name, st.last, st.prev)
    if period and ticks:
        return ticks * period
    dt = st.last.fetched - st.prev.fetched
    return dt if dt > 0 else None


def _q_us(x: float | None) -> str:
    return f">{_us(C.HISTOGRAM_BUCKETS[-1])}" if x == math.inf else _us(x)


def _int(x: float | None) -> str:
    return "-" if x is None else str(int(x))


def node_row(spec: NodeSpec, st: NodeState) -> list[str]:
    if not st.up:
        return [spec.name, "down", spec.kind, "-", "-", "-", "-", "-", f"unreachable: {st.error or 'no answer yet'}"]
    last, prev = st.last, st.prev
    dt = node_elapsed(spec, st)
    ready = last.value(C.NODE_READY.name)
    tick_p99 = histogram_quantile(0.99, recent_buckets(last, prev, C.TICK_COMPUTE.name))
    rss = last.value("process_resident_memory_bytes")
    cpu_d = _delta("process_cpu_seconds_total", last, prev)
    if cpu_d is not None and dt:
        cpu = 100 * cpu_d / dt
    else:  # first refresh: the average since the process started
        cpu_s, start = last.value("process_cpu_seconds_total"), last.value("process_start_time_seconds")
        cpu = 100 * cpu_s / (last.wall - start) if cpu_s is not None and start and last.wall > start else None
    sizes = population_sizes(spec)
    detail = []
    for pop in last.label_values(C.SPIKES.name, "population"):
        size = sizes.get(pop, 1)
        n = _delta(C.SPIKES.name, last, prev, population=pop)
        if n is not None and dt:
            per_s = n / dt
        else:  # first refresh: the node's own gauge, per neuron
            rate = last.value(C.RATE.name, population=pop)
            per_s = None if rate is None else rate * size
        detail.append(rate_text(pop, size, per_s))
    detail += device_texts(spec, last)
    return [spec.name, "up" if ready != 0 else "starting", spec.kind, _int(last.value(C.TICKS.name)),
            _q_us(tick_p99) if last.buckets(C.TICK_COMPUTE.name) else "-", _int(last.value(C.OVERRUNS.name)),
            f"{rss / 2**20:.0f}" if rss is not None else "-", f"{cpu:.1f}" if cpu is not None else "-",
            "  ".join(detail)]


def device_texts(spec: NodeSpec, last: Exposition) -> list[str]:
    """Each device's value, or past ``AGGREGATE_ABOVE`` devices each declared set's mean [min..max], a
    histogram and the pulses applied."""
    values = {have["device"]: v for have, v in last.samples.get(C.RESISTANCE.name, ()) if "device" in have}
    if len(values) <= AGGREGATE_ABOVE:
        return [f"{dev} {r / 1e3:.3f} kOhm" for dev, r in values.items()]
    pulses: dict[str, float] = {}
    for have, v in last.samples.get(C.PULSES.name, ()):
        if "device" in have and "direction" in have:
            pulses[f"{have['device']} {have['direction']}"] = v
    sets: dict[str, list[str]] = {}
    for dev in values:
        d = spec.declaration.device(dev)
        sets.setdefault(d.group if d is not None else "(undeclared)", []).append(dev)
    out = []
    for group, devs in sets.items():
        sp = Spread.of([values[d] for d in devs])
        ltp = sum(pulses.get(f"{d} ltp", 0.0) for d in devs)
        ltd = sum(pulses.get(f"{d} ltd", 0.0) for d in devs)
        out.append(f"{group} {sp.n} devices {sp.mean / 1e3:.2f} kOhm mean [{sp.min / 1e3:.2f}..{sp.max / 1e3:.2f}] "
                   f"sd {sp.sd / 1e3:.2f} {sparkline(sp.counts)} LTP {ltp:.0f} LTD {ltd:.0f}")
    return out


def link_row(link, states: dict[str, NodeState]) -> list[str]:
    src = states.get(link.src_node) if link.src_node else None
    dst = states.get(link.dst_node)
    drops = None
    if src is not None and src.up:
        drops = src.last.total(C.SEND_DROPS.name, port=link.src_port) or 0.0
    sent = received = gaps = malformed = p50 = p99 = None
    if dst is not None and dst.up:  # everything but the sender's queue drops from the receiver (module docstring)
        lab = {"link": link.label}
        received = dst.last.total(C.RECEIVED.name, **lab)
        gaps = dst.last.total(C.GAPS.name, **lab) or 0.0
        malformed = dst.last.total(C.MALFORMED.name, **lab) or 0.0  # a reason shows up with its first packet
        if received is not None:
            refused = sum(dst.last.total(C.MALFORMED.name, reason=r, **lab) or 0.0 for r in IN_SEQUENCE)
            sent = received + gaps + refused
        recent = recent_buckets(dst.last, dst.prev, C.LATENCY.name, **lab)
        p50, p99 = histogram_quantile(0.5, recent), histogram_quantile(0.99, recent)
    dropped = drops + gaps if drops is not None and gaps is not None else None
    return [link.label, _int(sent), _int(received), _int(dropped), _int(malformed), _q_us(p50), _q_us(p99)]


def site_link_row(link, states: dict[str, NodeState]) -> list[str]:
    """An inter-site link at its receiving end: up or down, clock offset and round trip, outages, late."""
    dst = states.get(link.dst_node)
    if dst is None or not dst.up:
        return [link.label, "?", "-", "-", "-", "-"]
    lab = {"link": link.label}
    up = dst.last.value(C.LINK_UP.name, **lab)
    offset, rtt = dst.last.value(C.CLOCK_OFFSET.name, **lab), dst.last.value(C.RTT.name, **lab)
    late = dst.last.total(C.LATE.name, **lab)
    return [link.label, "up" if up == 1 else "DOWN" if up == 0 else "?", _q_us(offset) if rtt is not None else "-",
            _q_us(rtt), _int(dst.last.total(C.OUTAGES.name, **lab)), _int(late) if late is not None else "-"]


def protocol_line(network: Network, states: dict[str, NodeState]) -> str | None:
    """The protocol phase and its progress, by the session time of the node furthest on."""
    elapsed = [st.last.value(C.SESSION_ELAPSED.name) for name in network.nodes
               if (st := states.get(name)) is not None and st.up]
    elapsed = [e for e in elapsed if e is not None]
    if not network.phases:
        return f"session time {max(elapsed):.1f} s" if elapsed else None
    if not elapsed:
        return "protocol: no node exports its session time"
    t = max(elapsed)
    return f"protocol: {phase_text(network, t)} (session time {t:.1f} of {network.phases[-1][2]:g} s)"


def interlock_line(network: Network, states: dict[str, NodeState]) -> str | None:
    """Every interlocked node's state; the ones holding stimulation and programming first, in capitals."""
    held, clear = [], []
    for name in network.nodes:
        st = states.get(name)
        if st is None or not st.up:
            continue
        state = st.last.value(C.INTERLOCK.name)
        if state is not None:
            (held if state == 1 else clear).append(f"{name} ({_int(st.last.value(C.HOLDS.name))} holds)")
    if not held and not clear:
        return None
    if held:
        return (f"INTERLOCK HOLDS stimulation and programming of: {', '.join(held)}"
                + (f"; clear: {', '.join(clear)}" if clear else ""))
    return f"interlock clear: {', '.join(clear)}"


def rig_lines(network: Network, states: dict[str, NodeState]) -> list[str]:
    """Each recording rig's health: up, calibrated, stimulation consumer, stimuli held or refused."""
    out = []
    for name in network.nodes:
        st = states.get(name)
        if st is None or not st.up or st.last.value(C.RIG_UP.name) is None:
            continue
        e = st.last
        cal = e.value(C.RIG_CALIBRATED.name)
        words = ["up" if e.value(C.RIG_UP.name) == 1 else "DOWN",
                 "calibration not exported" if cal is None else "calibrated" if cal == 1 else "NOT CALIBRATED",
                 "stim consumer ready" if e.value(C.STIM_READY.name) == 1 else "NO STIM CONSUMER",
                 f"stimuli sent {_int(e.value(C.STIM_SENT.name))}",
                 f"held {_int(e.value(C.STIM_HELD.name))} while down, {_int(e.value(C.STIM_NO_CONSUMER.name))} "
                 f"with no consumer", f"refused {_int(e.total(C.STIM_REFUSED.name) or 0.0)}",
                 f"disconnects {_int(e.value(C.RIG_DISCONNECTS.name))}"]
        out.append(f"rig of {name}: " + ", ".join(words))
    return out


def probe_line(network: Network, states: dict[str, NodeState]) -> str | None:
    if not network.monitor.probe_from:
        return None
    origin = network.monitor.probe_from.partition(".")[0]
    st = states.get(origin)
    head = f"loop probe from {network.monitor.probe_from}:"
    if st is None or not st.up:
        return f"{head} origin node down"
    recent = recent_buckets(st.last, st.prev, C.PROBE_LATENCY.name)
    if not recent:
        return f"{head} no probe figures exported yet"
    lost = f"{_int(st.last.value(C.PROBES_LOST.name))} lost since start"
    count = int(recent[-1][1])
    if not count:
        return f"{head} none returned in the last interval; {lost}"
    p50, p99 = histogram_quantile(0.5, recent), histogram_quantile(0.99, recent)
    return f"{head} round trip p50 {_q_us(p50)} us, p99 {_q_us(p99)} us over {count} probes; {lost}"


def render_frame(network: Network, states: dict[str, NodeState], clock: str = "") -> list[str]:
    """The view, one string per screen row."""
    up = sum(1 for name in network.nodes if states.get(name, NodeState()).up)
    lines = [(f"spikewire top: {network.name}  {clock}  nodes up {up}/{len(network.nodes)}  "
              "(rates, CPU, tick p99 and latency over the last interval; counts since start)")]
    lines += [line for line in (protocol_line(network, states),) if line]
    lines += _table(["node", "state", "kind", "ticks", "tick p99 us", "overruns", "RSS MB", "CPU %",
                     f"rates (Hz per neuron; Hz of the whole population) and memristors (sets of more than "
                     f"{AGGREGATE_ABOVE}: mean [min..max], histogram)"],
                    [node_row(spec, states.get(name, NodeState())) for name, spec in network.nodes.items()],
                    {3, 4, 5, 6, 7})
    if network.links:
        lines += _table(["link (all from its receiver but sender queue drops)", "sent", "received", "dropped",
                         "malformed", "p50 us", "p99 us"],
                        [link_row(link, states) for link in network.links], {1, 2, 3, 4, 5, 6})
    inter = [link for link in network.links if link.inter_site]
    if inter:
        lines += _table(["inter-site link", "state", "offset us", "rtt us", "outages", "late"],
                        [site_link_row(link, states) for link in inter], {2, 3, 4, 5})
    extra = [line for line in (interlock_line(network, states), *rig_lines(network, states),
                               probe_line(network, states)) if line]
    return [line.rstrip() for line in lines + extra]


def metrics_url(network: Network, node: str) -> str:
    host = network.nodes[node].settings.bind
    if host in ("", "0.0.0.0", "*"):  # bound to every interface: this machine's loopback is one of them
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{network.metrics_port(node)}/metrics"


def scrape(url: str, timeout: float) -> Exposition | str:
    """The node's exposition, or a few words on why there is none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8")
    except urllib.error.URLError as e:  # before OSError: it is one
        reason = e.reason
        return getattr(reason, "strerror", None) or str(reason)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (OSError, http.client.HTTPException) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__
    try:
        return parse_exposition(text, time.monotonic(), time.time())
    except ValueError as e:
        return f"not a Prometheus exposition ({e})"


class Screen:
    """Redraws in place on a terminal; elsewhere prints each frame, frames separated by a blank line."""

    def __init__(self, out: TextIO):
        self.out = out
        self.tty = out.isatty()
        self.frames = 0

    def show(self, lines: list[str]) -> None:
        if self.tty:
            size = shutil.get_terminal_size()
            rows = lines[: max(1, size.lines - 1)]  # a last newline on the bottom row would scroll
            text = ("\x1b[?25l\x1b[2J" if not self.frames else "") + "\x1b[H"
            text += "".join(f"{row[: size.columns]}\x1b[K\n" for row in rows) + "\x1b[J"
        else:
            text = ("\n" if self.frames else "") + "".join(f"{row}\n" for row in lines)
        self.out.write(text)
        self.out.flush()
        self.frames += 1

    def close(self) -> None:
        if self.tty and self.frames:
            self.out.write("\x1b[?25h")
            self.out.flush()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spikewire top", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Live view of a running network, read from its nodes' Prometheus metrics endpoints.",
        epilog="What it shows:\n"
               "  rates      spikes per second per neuron (Hz), and of the whole population for more than one\n"
               "             neuron, over the last interval: the same figures as `spikewire run`'s status line\n"
               f"  devices    each value; a node of more than {AGGREGATE_ABOVE} devices as each set's mean [min..max],\n"
               "             standard deviation, a histogram from min to max, pulses applied\n"
               "  links      read from the receiving node alone, so that they are of one moment: sent is what\n"
               "             the receiver knows the sender had sent by the newest packet that reached it\n"
               "             (received + lost + refused, by their sequence numbers), so received never exceeds\n"
               "             it; packets still in flight are not counted yet. dropped adds the sender's own\n"
               "             send-queue drops (which take no sequence number) to the receiver's gaps\n"
               "  protocol   the phase running and how far it is, by the nodes' session time\n"
               "  safety     each interlocked node's interlock, each rig's state (up, calibrated, stimulation\n"
               "             consumer, stimuli held), inter-site links' clock offset and round trip")
    ap.add_argument("network", help="the network file the running network was started from (TOML)")
    ap.add_argument("--interval", type=number(above=0), default=1.0, help="seconds between refreshes (default 1)")
    ap.add_argument("--iterations", type=number(int, above=0), default=None, help="stop after this many frames")
    ap.add_argument("--timeout", type=number(above=0), default=10.0,
                    help="seconds to wait at start for a first node to answer (default 10)")
    ap.add_argument("--base-port", type=int, metavar="N", help="the --base-port the network was run with (default: "
                    "the file's [monitor] base_port)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        network = load_network(args.network)
        if args.base_port is not None:
            network = network.with_base_port(args.base_port)
    except NetworkError as e:
        print(f"{args.network}: {e}", file=sys.stderr)
        return 2
    if not network.monitor.metrics:
        print(f"{args.network}: monitor.metrics is false, so its nodes serve no metrics to read", file=sys.stderr)
        return 2
    urls = {name: metrics_url(network, name) for name in network.nodes}
    fetch_timeout = min(1.0, max(0.2, args.interval / 2))
    states = {name: NodeState() for name in network.nodes}
    screen = Screen(sys.stdout)
    with ThreadPoolExecutor(max_workers=len(urls), thread_name_prefix="top-fetch") as pool:

        def refresh() -> None:
            for name, got in zip(urls, pool.map(lambda u: scrape(u, fetch_timeout), urls.values())):
                states[name].update(got)

        try:
            deadline = time.monotonic() + args.timeout
            refresh()
            while not any(st.up for st in states.values()):
                if time.monotonic() >= deadline:
                    print(f"spikewire top: no node of {network.name!r} answered within {args.timeout:g} s (tried "
                          f"{', '.join(urls.values())}); is it running? Start it with: spikewire run {args.network}",
                          file=sys.stderr)
                    return 2
                time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
                refresh()
            due = time.monotonic()
            while True:
                screen.show(render_frame(network, states, time.strftime("%H:%M:%S")))
                if args.iterations is not None and screen.frames >= args.iterations:
                    return 0
                due = max(due + args.interval, time.monotonic())
                time.sleep(max(0.0, due - time.monotonic()))
                refresh()
        except KeyboardInterrupt:
            return 0
        finally:
            screen.close()


if __name__ == "__main__":
    sys.exit(main())
