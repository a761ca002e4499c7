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
from spikewire.config.plan import node_plan
from spikewire.core.settings import SettingsError
from spikewire.monitor.exporter import MetricsPortError, MetricsServer
from spikewire.nodes import placement
from spikewire.nodes.probes import ProbeState
from spikewire.nodes.runtime import Runtime
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
    ap.add_argument("--replay-t0", type=float, default=None, help="the recorded session's t0 (local_clock) as "
                    "its reader found it; default: its provenance.json's")
    ap.add_argument("--secret-key", help="this site's CURVE secret key file (instead of the network file's)")
    ap.add_argument("--journal-max-mb", type=int, help="cap of this node's session journal [MB]")
    ap.add_argument("--metrics-base-port", type=int, help="[monitor] base_port as the run has it (spikewire run "
                    "--base-port), instead of the file's")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[{args.node}] %(levelname)s %(message)s", stream=sys.stderr)
    _die_with_parent()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the supervisor's "where are you stuck?"

    ctx = zmq.Context()
    control = ControlClient(ctx, args.control, args.node)
    runtime = None
    try:
        network = load_network(args.network)
        if args.metrics_base_port is not None and args.metrics_base_port != network.monitor.base_port:
            network = network.with_base_port(args.metrics_base_port)
        spec = network.nodes[args.node]
        replayed = set(filter(None, args.replayed.split(",")))
        if spec.name in replayed:
            from pathlib import Path

            from spikewire.nodes.replay import ReplayNode

            node = ReplayNode(spec.name, spec.settings, spec.outputs, Path(args.replay_from), args.speed,
                              t0=args.replay_t0)
        else:
            node = spec.cls(spec.name, spec.settings)
        node.context = network.node_context(args.reset_state, args.session or "")
        node.phase_ends = network.phase_ends
        try:
            node.load_state()
        except ValueError as e:  # a state file spoilt since the run's pre-flight check: one line, no traceback
            control.send({"type": "error", "message": str(e)})
            return 1
        plan = node_plan(network, spec.name, replayed=frozenset(replayed))
        curve = curve_config(network, plan.site, args.secret_key) if plan.needs_curve else None
        runtime = Runtime(node, ctx, plan.source_ids, plan.expected, endpoints=plan.binds, curve=curve,
                          curve_ports=plan.curve_ports, transport=network.transport, safety=network.safety,
                          port_queues=plan.port_queues, remote_ports=plan.remote_ports)
        runtime.control = control
        for port, names in plan.subscribers.items():  # every subscriber the file names, at any site (pong budget)
            runtime.publishers[port].expected = names
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
        # A replayed node consumes nothing: it has no input ports.
        runtime.connect([p for p in plan.input_plans(msg["inputs"]) if p.port in node.inputs])
        if args.session:
            from pathlib import Path

            runtime.record_to(Path(args.session) / "journal" / f"{spec.name}.swj",
                              None if args.journal_max_mb is None else args.journal_max_mb << 20)
        t_warm = local_clock()
        node.warm_up()
        warm_up_s = local_clock() - t_warm
        placed = placement.apply(f"nodes.{spec.name}", spec.settings)  # after compiling, before the first packet
        if placed:
            log.info("placed: %s", placed)
        runtime.export_lsl(network.name)
        runtime.wait_for_subscribers(args.timeout)
        node.wait_for_consumers(args.timeout)
        if mon.metrics:
            runtime.metrics = MetricsServer(runtime, spec.settings.bind, network.metrics_port(spec.name),
                                            max_age=mon.scrape_interval, render_on_scrape=mon.render == "scrape")
        runtime.ready = True
        if runtime.metrics is not None:
            runtime.metrics.refresh(local_clock())
        runtime.collect_before_start()  # ~60 ms with numba loaded: now, not when the first packets arrive
        control.send({"type": "ready", "warm_up_s": warm_up_s,
                      "metrics": runtime.metrics.port if runtime.metrics is not None else None})
        start = control.wait("start", args.timeout)
        runtime.run(float(start["t0"]), start.get("duration"))
        control.send({"type": "final", "summary": runtime.summary(local_clock()), "log": runtime.take_log()})
        return 0
    except InterruptedError:
        return 0
    except SettingsError as e:  # a placement the OS refused: one line naming the key
        control.send({"type": "error", "message": str(e)})
        return 1
    except MetricsPortError as e:  # taken since the run's pre-flight looked: one line, no traceback
        control.send({"type": "error", "message": str(e)})
        return 1
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
