"""``spikewire fault-proxy``: one :class:`FaultProxy` from the command line.

``spikewire fault-proxy --listen 127.0.0.1:0 --to 127.0.0.1:5555 --loss 0.1`` (or
``python -m spikewire.tools.fault_proxy ...``) prints where it listens on stderr and one JSON line of stats
on stdout every ``--stats-every`` seconds and on exit (SIGINT / SIGTERM). It only listens on loopback
addresses unless given ``--allow-remote``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from spikewire.core.argtypes import number

from .proxy import FaultProxy, is_loopback

_seconds = number(at_least=0, name="a number of seconds")
_probability = number(at_least=0, at_most=1, name="a probability")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be in 0..65535")
    return host, number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikewire fault-proxy",
        description="Relay ZeroMQ subscribers to a publisher through injected delay, jitter, loss and reordering. "
                    "Prints where it listens on stderr and one JSON line of stats on stdout every --stats-every "
                    "seconds and on exit (SIGINT / SIGTERM).")
    parser.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT",
                        help="address subscribers connect to (port 0: any free port)")
    parser.add_argument("--to", type=_host_port, required=True, metavar="HOST:PORT",
                        help="the publisher's (XPUB's) bound address")
    parser.add_argument("--delay", type=_seconds, default=0.0, metavar="S", help="fixed delay, both directions")
    parser.add_argument("--jitter", type=_seconds, default=0.0, metavar="S",
                        help="extra uniform(0, S) delay per message, both directions")
    parser.add_argument("--up-delay", type=_seconds, default=None, metavar="S",
                        help="fixed delay subscriber -> publisher (default: --delay)")
    parser.add_argument("--up-jitter", type=_seconds, default=None, metavar="S",
                        help="jitter subscriber -> publisher (default: --jitter)")
    parser.add_argument("--loss", type=_probability, default=0.0, metavar="P",
                        help="probability that a down-going data packet is dropped")
    parser.add_argument("--reorder", type=_probability, default=0.0, metavar="P",
                        help="probability that a down-going data packet is swapped with the next message")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--stats-every", type=_seconds, default=10.0, metavar="S",
                        help="print stats every S seconds (0: only on exit; default 10)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow listening on a non-loopback address")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.to[1] == 0:
        parser.error("--to: the publisher's port cannot be 0")
    if not args.allow_remote and not is_loopback(args.listen[0]):
        parser.error(f"--listen: refusing to listen on {args.listen[0]!r}, not a loopback address "
                     "(pass --allow-remote to override)")
    proxy = FaultProxy(listen=args.listen, target=args.to, delay=args.delay, jitter=args.jitter, loss=args.loss,
                       reorder=args.reorder, seed=args.seed, up_delay=args.up_delay, up_jitter=args.up_jitter,
                       allow_remote=args.allow_remote)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        try:
            proxy.start()
        except OSError as exc:
            print(f"fault_proxy: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}", file=sys.stderr)
            return 1
        print(f"fault_proxy: listening on {proxy.bound_host}:{proxy.port}, forwarding to "
              f"{proxy.target[0]}:{proxy.target[1]}; faults {json.dumps(proxy.faults())}", file=sys.stderr, flush=True)
        every = args.stats_every
        next_print = time.monotonic() + every
        while not stop.wait(0.1 if every <= 0 else max(0.0, min(0.1, next_print - time.monotonic()))):
            if every > 0 and time.monotonic() >= next_print:
                print(json.dumps(proxy.stats()), flush=True)
                next_print += every
    finally:
        proxy.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(proxy.stats()), flush=True)
    return 0
