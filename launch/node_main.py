"""Entry point of one node process: ``python -m spikewire.launch.node_main --network F --node N --control E``.

The node validates the network file itself (the same code the supervisor ran), binds its output ports,
tells the supervisor where, connects its inputs where the supervisor says, compiles its kernels, waits for
every downstream link to join, reports ready, runs from the common start time until told to stop (or
SIGTERM, or its parent dies), then sends its final summary and exits 0. Any failure is reported to the
supervisor as an error message and the process exits 1.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import logging
import os
import signal
import sys
import traceback

import zmq

from spikewire.launch.control import ControlClient
from spikewire.config.network import curve_config, load_network
from spikewire.monitor.exporter import MetricsServer
from spikewire.nodes.probes import ProbeState
from spikewire.nodes.runtime import InputPlan, LinkOptions, Runtime
from spikewire.streams.clock import local_clock

log = logging.getLogger("spikewire.node")


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process if the supervisor dies, so no node outlives a crashed run."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        log.debug("prctl unavailable; relying on the parent check in the loop")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikewire-node")
    ap.add_argument("--network", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--timeout", type=float, default=60.0, help="setup handshake timeout [s]")
    ap.add_argument("--reset-state", action="store_true", help="ignore saved state (memristor weights)")
    ap.add_argument("--session", help="session folder: journal every packet to <session>/journal/<node>.swj")
    ap.add_argument("--replay-from", help="a recorded session: the --replayed nodes republish its recording")
    ap.add_argument("--replayed", default="", help="comma-separated nodes that are replayed, not live")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed factor")
    ap.add_argument("--secret-key", help="this site's CURVE secret key file (instead of the network file's)")
    ap.add_argument("--journal-max-mb", type=int, help="cap of this node's session journal [MB]")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[{args.node}] %(levelname)s %(message)s", stream=sys.stderr)
    _die_with_parent()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the supervisor's "where are you stuck?"

    ctx = zmq.Context()
    control = ControlClient(ctx, args.control, args.node)
    runtime = None
    try:
        network = load_network(args.network)
        spec = network.nodes[args.node]
        replayed = set(filter(None, args.replayed.split(",")))
        if spec.name in replayed:
            from pathlib import Path

            from spikewire.nodes.replay import ReplayNode

            node = ReplayNode(spec.name, spec.settings, spec.outputs, Path(args.replay_from), args.speed)
        else:
            node = spec.cls(spec.name, spec.settings)
        node.context = network.node_context(args.reset_state, args.session or "")
        node.phase_ends = network.phase_ends
        try:
            node.load_state()
        except ValueError as e:  # a state file spoilt since the run's pre-flight check: one line, no traceback
            control.send({"type": "error", "message": str(e)})
            return 1
        source_ids = {port: network.source_ids[(spec.name, port)] for port in spec.outputs}
        site = spec.settings.site
        # A downstream node opens one connection per upstream port, however many of its inputs it feeds.
        # Only links inside the site are waited for: other sites come and go on their own.
        expected: dict[str, set[str]] = {}
        for ln in network.links_from(spec.name):
            if not ln.inter_site and ln.dst_node not in replayed:  # a replayed node subscribes to nothing
                expected.setdefault(ln.src_port, set()).add(ln.dst_node)
        fixed = {port: ep for port in spec.outputs if (ep := network.fixed_endpoint(spec.name, port, bind=True))}
        curve_ports = frozenset(port for port in spec.outputs if network.curve_port(spec.name, port))
        # Keys are needed to serve CURVE ports, to reach other sites, and to subscribe (even from inside the
        # site) to a port that also feeds other sites: one socket, one security setting.
        needs_curve = curve_ports or any(ln.inter_site or (ln.src_node and network.curve_port(ln.src_node, ln.src_port))
                                         for ln in network.links_into(spec.name))
        curve = curve_config(network, site, args.secret_key) if needs_curve else None
        # An output port's send queue: the largest hwm of its links; its kernel buffer: the smallest sockbuf set.
        port_queues = {}
        for port in spec.outputs:
            out_links = [ln for ln in network.links_from(spec.name) if ln.src_port == port]
            if out_links:
                bufs = [ln.sockbuf for ln in out_links if ln.sockbuf]
                port_queues[port] = (max(ln.hwm for ln in out_links), min(bufs) if bufs else 0)
        runtime = Runtime(node, ctx, source_ids, expected, bind_host=spec.settings.bind, endpoints=fixed,
                          curve=curve, curve_ports=curve_ports, transport=network.transport, safety=network.safety,
                          port_queues=port_queues, remote_ports=frozenset(fixed))
        runtime.control = control
        for ln in network.links_from(spec.name):  # every subscriber the file names, at any site (pong budget)
            pub = runtime.publishers[ln.src_port]
            pub.expected = pub.expected | {ln.dst_node}
        mon = network.monitor
        origin = None
        if mon.probe_from:
            probe_node, _, probe_port = mon.probe_from.partition(".")
            # A replayed origin would only measure the replay: probes are for live sessions.
            origin = probe_port if probe_node == spec.name and spec.name not in replayed else None
        runtime.probe = ProbeState(network.node_index(spec.name), origin, mon.probe_every)
        stop = lambda *_: setattr(runtime, "stop_requested", True)  # noqa: E731
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        control.send({"type": "bound", "outputs": runtime.endpoints, "pid": os.getpid()})
        msg = control.wait("connect", args.timeout)
        plans = []
        for port, sources in msg["inputs"].items():
            if port not in node.inputs:
                continue  # a replayed node consumes nothing
            links = [ln for ln in network.links_into(spec.name) if ln.dst_port == port]
            hwm = max((ln.hwm for ln in links), default=None)
            bufs = [ln.sockbuf for ln in links if ln.sockbuf]
            options = {ln.label: LinkOptions(ln.delay, ln.late, ln.inter_site, ln.src_site,
                                             bool(ln.src_node) and network.curve_port(ln.src_node, ln.src_port),
                                             ln.auto_delay, ln.clock)
                       for ln in links}
            plans.append(InputPlan(port, tuple((int(s), str(e), str(label)) for s, e, label in sources),
                                   hwm or 100_000, options, min(bufs) if bufs else 0))
        runtime.connect(plans)
        if args.session:
            from pathlib import Path

            runtime.record_to(Path(args.session) / "journal" / f"{spec.name}.swj",
                              None if args.journal_max_mb is None else args.journal_max_mb << 20)
        t_warm = local_clock()
        node.warm_up()
        warm_up_s = local_clock() - t_warm
        runtime.export_lsl(network.name)
        runtime.wait_for_subscribers(args.timeout)
        node.wait_for_consumers(args.timeout)
        if mon.metrics:
            runtime.metrics = MetricsServer(runtime, spec.settings.bind, network.metrics_port(spec.name),
                                            max_age=mon.scrape_interval, render_on_scrape=mon.render == "scrape")
        runtime.ready = True
        if runtime.metrics is not None:
            runtime.metrics.refresh(local_clock())
        control.send({"type": "ready", "warm_up_s": warm_up_s,
                      "metrics": runtime.metrics.port if runtime.metrics is not None else None})
        start = control.wait("start", args.timeout)
        runtime.run(float(start["t0"]), start.get("duration"))
        control.send({"type": "final", "summary": runtime.summary(local_clock()), "log": runtime.take_log()})
        return 0
    except InterruptedError:
        return 0
    except Exception as e:  # report, then fail loudly: the supervisor stops the run and names this node
        traceback.print_exc()
        control.send({"type": "error", "message": f"{type(e).__name__}: {e}"})
        return 1
    finally:
        if runtime is not None:
            runtime.close()
        control.close()
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
