"""``spikewire dashboard``: a running network (or a recorded session) in the browser.

    spikewire dashboard NETWORK [--site NAME]     attach to a network running from this folder
    spikewire dashboard --live FILE               the same, given its live file (spikewire run --dashboard)
    spikewire dashboard sessions/<time>           a recorded session, with a time slider

At start it prints one line, ``dashboard: http://HOST:PORT/?token=TOKEN``: the page is read-only without
the token; with it, it can hold stimulation and leave marks in the session.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
from pathlib import Path

from aiohttp import web

from spikewire.config.session import SessionError
from spikewire.monitor.dashboard.live import LiveFileError, find_live_file
from spikewire.monitor.dashboard.live_source import LiveSource, LiveSourceError
from spikewire.monitor.dashboard.recorded import RecordedSource
from spikewire.monitor.dashboard.server import Dashboard, make_app

DEFAULT_LISTEN = "127.0.0.1:8765"


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. {DEFAULT_LISTEN}), got {text!r}")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spikewire dashboard", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("target", nargs="?", metavar="NETWORK|SESSION",
                    help="a network file (or name) running from this folder, or a recorded session folder")
    ap.add_argument("--live", metavar="FILE", help="the live file of a running network (.spikewire/live/...)")
    ap.add_argument("--site", metavar="NAME", help="with NETWORK: the site of a multi-site run")
    ap.add_argument("--listen", type=listen_address, default=DEFAULT_LISTEN, metavar="HOST:PORT",
                    help=f"where to serve the page (default {DEFAULT_LISTEN}; port 0: any free one)")
    ap.add_argument("--token", help="the token controls need (default: a new random one)")
    return ap


def open_source(args, ap: argparse.ArgumentParser):
    if args.live and args.target:
        ap.error("give either --live FILE or NETWORK|SESSION, not both")
    if args.live:
        return LiveSource(Path(args.live))
    if not args.target:
        ap.error("give NETWORK, --live FILE or a session folder")
    if Path(args.target).is_dir():
        if args.site:
            ap.error("--site goes with NETWORK, not a session folder")
        return RecordedSource(args.target)
    return LiveSource(find_live_file(args.target, args.site))


async def serve(dash: Dashboard, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(dash), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    print(f"dashboard: http://{shown}:{bound}/?token={dash.token}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if args.token is not None and (len(args.token) < 8 or not args.token.isprintable() or " " in args.token):
        print("spikewire dashboard: --token must be at least 8 printable characters without spaces", file=sys.stderr)
        return 2
    try:
        source = open_source(args, ap)
    except (LiveFileError, LiveSourceError, SessionError) as e:
        print(f"spikewire dashboard: {e}", file=sys.stderr)
        return 2
    dash = Dashboard(source, args.token or secrets.token_urlsafe(16),
                     say=lambda text: print(text, file=sys.stderr, flush=True))
    source.start()
    try:
        asyncio.run(serve(dash, *args.listen))
    except OSError as e:
        print(f"spikewire dashboard: {e}", file=sys.stderr)
        return 2
    finally:
        source.close()
        dash.ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
