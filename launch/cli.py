"""The ``spikewire`` command line."""

from __future__ import annotations

import argparse
import re
import sys

from spikewire import __version__
from spikewire.core.argtypes import number, output_file

_positive = number(above=0)
_mb = number(int, at_least=1)
_non_negative = number(at_least=0)


class BadNetwork(Exception):
    """The network file was refused (already reported on stderr)."""


def _load(path: str, check_keys: bool = True):
    from spikewire.config.network import NetworkError, load_network

    try:
        return load_network(path, check_keys)
    except NetworkError as e:
        print(f"{path}: {e}", file=sys.stderr)
        raise BadNetwork from None


def _warn(net) -> None:
    """The network's warnings (unconnected ports, ids a table will refuse), one line each on stderr."""
    for warning in net.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_check(args) -> int:
    net = _load(args.network)
    _warn(net)
    print(f"{args.network}: ok: network {net.name!r}, {len(net.nodes)} nodes, {len(net.links)} links")
    for spec in net.nodes.values():
        print(f"  {spec.name} ({spec.kind}): in {', '.join(spec.inputs) or '-'}; out {', '.join(spec.outputs) or '-'}")
    for link in net.links:
        extra = []
        if link.inter_site:
            extra.append(f"between sites {link.src_site} -> {link.dst_site}")
        if link.delay or link.auto_delay:
            extra.append(f"jitter buffer {'auto' if link.auto_delay else f'{link.delay:g} s'}, late: {link.late}")
        if link.via:
            extra.append(f"via {link.via}")
        print(f"  link {link.label}" + (f" ({'; '.join(extra)})" if extra else ""))
    if net.sites is not None:
        print(f"  security: CURVE {net.security.curve}")
        for site, cfg in net.sites.items():
            ports = ", ".join(f"{n}.{p} {net.fixed_endpoint(n, p, bind=False)}" for n, p in net.site_ports(site))
            channel = (f"; session channel {net.session_endpoint(site, bind=False)}"
                       if len(net.start_sites) > 1 and site in net.start_sites else "")
            print(f"  site {site}: nodes {', '.join(net.site_nodes(site)) or '-'}; inter-site outputs: {ports or '-'}"
                  + channel)
    return 0


def default_session_dir():
    from spikewire.config.session import default_session_dir as d

    return d()


def cmd_run(args) -> int:
    from spikewire.config.network import NetworkError, preflight
    from spikewire.config.session import default_session_dir
    from spikewire.launch.supervisor import Supervisor

    dashboard = None
    if args.dashboard is not None:
        try:
            dashboard, loopback = dashboard_listen(args.dashboard)
        except ValueError as e:
            print(f"spikewire run: --dashboard: {e}", file=sys.stderr)
            return 2
        if not loopback:
            print(f"spikewire run: WARNING: the dashboard listens on {dashboard}, reachable beyond this machine: "
                  "anyone who reaches it sees the session (its controls need the token)", file=sys.stderr)
    net = _load(args.network)
    if args.base_port is not None:
        try:
            net = net.with_base_port(args.base_port)
        except NetworkError as e:
            print(f"{args.network}: --base-port: {e}", file=sys.stderr)
            return 2
    session = None
    if not args.no_record:
        session = args.session_dir or str(default_session_dir()) + (f"-{args.site}" if args.site else "")
    # The site, bind addresses, keys and what the nodes will read or hold beyond the file (a memristor's
    # saved crossbar and its lock), checked before any node starts: one clear line (the same check as
    # spikewire.run from Python).
    try:
        preflight(net, args.reset_weights, str(session or ""), args.site, args.secret_key)
    except NetworkError as e:
        print(f"{args.network}: {e}", file=sys.stderr)
        return 2
    try:
        sup = Supervisor(net, duration=args.duration, json_path=args.json, ready_timeout=args.ready_timeout,
                         status_every=args.status_every, reset_state=args.reset_weights, session_dir=session,
                         site=args.site, secret_key=args.secret_key, journal_max_mb=args.journal_max_mb,
                         start_wait=args.start_wait, dashboard=dashboard)
    except FileExistsError as e:  # a --session-dir that is not empty: nothing has started
        print(f"spikewire run: {e}", file=sys.stderr)
        return 2
    _warn(net)  # after the last refusal, so that a refused run stays one line
    return sup.run()


DASHBOARD_DEFAULT = "127.0.0.1:8765"


def dashboard_listen(text: str) -> tuple[str, bool]:
    """``HOST:PORT`` for the dashboard, checked (HOST an IP address or localhost, PORT 1-65535), and
    whether HOST is loopback; ValueError (one line) if it is not one."""
    import ipaddress

    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT (like {DASHBOARD_DEFAULT})")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number in 1-65535")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == "localhost":
        return f"{host}:{int(port)}", True
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError(f"{text!r}: the host must be an IP address or localhost") from None
    return f"{host}:{int(port)}", ip.is_loopback


def cmd_keygen(args) -> int:
    from spikewire.streams.security import keygen

    if args.network:
        net = _load(args.network, check_keys=False)
        if net.sites is None:
            print(f"{args.network}: no [sites] to make keys for", file=sys.stderr)
            return 2
        if args.site and args.site not in net.sites:
            print(f"{args.network}: --site: no site {args.site!r}; sites are: {', '.join(net.sites)}", file=sys.stderr)
            return 2
        for site, cfg in net.sites.items():
            if args.site and site != args.site:
                continue
            if not cfg.public_key or not cfg.secret_key:
                print(f"sites.{site}: no public_key/secret_key file named; skipped")
                continue
            pub, sec = net.key_path(cfg.public_key), net.key_path(cfg.secret_key)
            if pub.exists() or sec.exists():
                print(f"sites.{site}: {pub if pub.exists() else sec} exists; kept")
                continue
            if pub.parent != sec.parent or pub.name + "_secret" != sec.name:
                print(f"sites.{site}: secret_key must be public_key + '_secret' in the same folder "
                      f"(the ZeroMQ certificate convention), got {sec}", file=sys.stderr)
                return 2
            keygen(pub.parent, pub.name.removesuffix(".key"))
            print(f"sites.{site}: wrote {pub} (public: give it to the other sites) and {sec} (secret, mode 600: "
                  "keep it at this site)")
        return 0
    if not args.name:
        print("spikewire keygen: give a NAME, or --network FILE", file=sys.stderr)
        return 2
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.name):
        print(f"spikewire keygen: NAME must be letters, digits, _ or -, at most 64 (it names NAME.key in --dir), "
              f"got {args.name!r}", file=sys.stderr)
        return 2
    try:
        pub, sec = keygen(args.dir, args.name)
    except FileExistsError as e:
        print(f"spikewire keygen: {e}", file=sys.stderr)
        return 2
    print(f"wrote {pub} (public: give it to the other sites) and {sec} (secret: keep it here, mode 600)")
    return 0


def _top(argv: list[str]) -> int:
    from spikewire.monitor.top import main as top_main

    return top_main(argv)


def _rig_sim(argv: list[str]) -> int:
    from spikewire.tools.rig_sim import main as rig_sim_main

    return rig_sim_main(argv)


def _fault_proxy(argv: list[str]) -> int:
    from spikewire.tools.fault_proxy import main as fault_proxy_main

    return fault_proxy_main(argv)


def _params(argv: list[str]) -> int:
    from spikewire.config.params import main as params_main

    return params_main(argv)


def _device(argv: list[str]) -> int:
    from spikewire.monitor.device import main as device_main

    return device_main(argv)


def _dashboard(argv: list[str]) -> int:
    from spikewire.monitor.dashboard.cli import main as dashboard_main

    return dashboard_main(argv)


PASS_THROUGH = {"top": _top, "rig-sim": _rig_sim, "fault-proxy": _fault_proxy, "params": _params, "device": _device,
                "dashboard": _dashboard}
"""Commands with their own argument parser: `spikewire top ARGS...` is monitor/top.py's main(ARGS)."""


def _read_session_for(prog: str, damaged: str, work, errors: tuple = ()):
    """Run ``work()``, which reads a session, and print what the reader found damaged one line each
    ("spikewire PROG: DAMAGED: ..."), any other warning as Python would, and a refusal (a SessionError or
    one of ``errors``) in one line. Returns (result, refused, number of damage lines)."""
    import warnings

    from spikewire.config.session import DamagedSessionWarning, SessionError

    result = refused = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedSessionWarning)
        try:
            result = work()
        except (SessionError, *errors) as e:
            refused = e
    damage = [str(w.message) for w in caught if issubclass(w.category, DamagedSessionWarning)]
    for w in caught:  # anything else (pynwb, hdmf, matplotlib) as Python would have shown it
        if not issubclass(w.category, DamagedSessionWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    for problem in damage:
        print(f"spikewire {prog}: {damaged}: {problem}", file=sys.stderr)
    if refused is not None:
        print(f"spikewire {prog}: {refused}", file=sys.stderr)
    return result, refused, len(damage)


def cmd_replay(args) -> int:
    from spikewire.config.session import read_session
    from spikewire.launch.supervisor import Supervisor

    # each replayed node reads its own journal
    s, refused, _ = _read_session_for("replay", "warning", lambda: read_session(args.session, journals=False))
    if refused is not None:
        return 2
    session, net = s.folder, s.network
    if s.site:
        print(f"{session}: a session of site {s.site!r} only; replay needs every node's recording (record a "
              "multi-site network on one machine with `spikewire run FILE` without --site)", file=sys.stderr)
        return 2
    # A t0 the reader had to recover (an unfinished run) is warned about above and handed to the replayed nodes.
    live = [n for n in args.nodes.split(",") if n]
    unknown = [n for n in live if n not in net.nodes]
    if not live or unknown:
        print(f"--nodes: name nodes of the session's network to run live ({', '.join(net.nodes)}); "
              f"got {args.nodes!r}", file=sys.stderr)
        return 2
    replayed = [n for n in net.nodes if n not in live]
    missing = [n for n in replayed if not s.journal_path(n).is_file()]
    if missing:
        print(f"{session}: no journal for {', '.join(missing)}", file=sys.stderr)
        return 2
    duration = args.duration or (s.end_s if s.end_s > 0 else 10.0)
    if s.end_s > 0 and duration > s.end_s * 1.001:
        print(f"spikewire replay: warning: the recording ends at {s.end_s:.1f} s; the replayed nodes are silent for "
              f"the last {duration - s.end_s:.1f} s of --duration {duration:g}", file=sys.stderr)
    # A recorded session is left as it was (it may be an archive, or read-only): the replay is a session of its
    # own beside the others, whose provenance names the session it replayed.
    out_dir = args.session_dir or f"{default_session_dir()}-replay"
    print(f"spikewire: replaying {', '.join(replayed)} from {session} into live {', '.join(live)}")
    # t0 and the journals as the reader found them, for the replayed nodes (ReplayNode's t0= and journal=)
    replay = {"session": str(session), "replayed": replayed, "speed": args.speed, "t0": s.t0,
              "journals": {n: str(s.journal_path(n)) for n in replayed}}
    sup = Supervisor(net, duration=duration / args.speed, json_path=args.json, reset_state=True,
                     session_dir=out_dir, replay=replay)
    return sup.run()


def cmd_export(args) -> int:
    """Exit 0 when the file was written, damaged session or not: the damage is printed (one line per
    problem) and recorded in the file, and a killed run's record is still the best one there is. Exit 2
    when nothing was written (not a session, the file exists, a subject flag or sidecar key refused: one
    line naming it)."""
    from spikewire.monitor.nwb_export import export_nwb
    from spikewire.monitor.nwb_subject import FIELDS, SubjectError, preparation, species_warning

    try:
        prep = preparation({key: getattr(args, key) for key in FIELDS}, args.subject)
    except SubjectError as e:
        print(f"spikewire export: {e}", file=sys.stderr)
        return 2
    advice: list[str] = []
    species = species_warning(prep)
    if species:
        advice.append(species)
    out, refused, n = _read_session_for("export", "damaged", lambda: export_nwb(
        args.session, args.nwb, overwrite=args.overwrite, experimenter=args.experimenter, lab=args.lab,
        institution=args.institution, preparation=prep, advice=advice),
        (FileExistsError, FileNotFoundError, IsADirectoryError))
    for line in advice:
        print(f"spikewire export: warning: {line}", file=sys.stderr)
    if refused is not None:
        return 2
    print(f"wrote {out}" + (f" from a damaged session: {n} problem{'s' if n > 1 else ''} (on stderr, and in the "
                            "file's notes)" if n else ""))
    return 0


def cmd_merge(args) -> int:
    """Exit 0 when the merged folder was written (warnings on stderr), 2 when nothing was (one line why)."""
    from spikewire.monitor.merge import MergeError, merge_sessions

    try:
        result = merge_sessions(args.sessions, args.out, reference=args.reference, force=args.force)
    except MergeError as e:
        print(f"spikewire merge: {e}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"spikewire merge: warning: {warning}", file=sys.stderr)
    ref = result.sessions[0].site
    print(f"wrote {result.out}: {len(result.sessions)} sites on {ref}'s clock")
    for s in result.sessions:
        print(f"  {s.site}: clock offset {s.offset_s * 1e3:+.3f} ms ({s.offset_source})")
    return 0


def cmd_plot(args) -> int:
    """Exit 0 when the figure was written (damage found is printed, one line per problem, and noted under
    the figure); 2 when nothing was (not a session)."""
    from spikewire.monitor.plot import plot_session

    out, refused, _ = _read_session_for("plot", "damaged", lambda: plot_session(args.session, args.out, dpi=args.dpi),
                                        (FileNotFoundError, ValueError))
    if refused is not None:
        return 2
    print(f"wrote {out}")
    return 0


def cmd_prometheus(args) -> int:
    from pathlib import Path

    from spikewire.monitor.grafana import write_dashboard
    from spikewire.monitor.prometheus_config import write_prometheus_config

    net = _load(args.network)
    try:
        written = write_prometheus_config(net, args.out)
    except ValueError as e:
        print(f"{args.network}: {e}", file=sys.stderr)
        return 2
    written.append(write_dashboard(net, Path(args.out) / "spikewire-dashboard.json"))
    for path in written:
        print(f"wrote {path}")
    print(f"run: prometheus --config.file={written[0]} --web.listen-address=127.0.0.1:9090; "
          "import the dashboard JSON into Grafana")
    return 0


def build_parser(extensions=()) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spikewire", description="Run hybrid spiking networks (biological, memristive, "
                                 "silicon nodes) in real time over ZeroMQ and LSL.")
    ap.add_argument("--version", action="version", version=f"spikewire {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a network file until --duration or Ctrl-C, then print a summary")
    p.add_argument("network", help="network file (TOML)")
    p.add_argument("--duration", type=_positive, help="seconds to run (default: until Ctrl-C / SIGTERM)")
    p.add_argument("--json", metavar="PATH", type=output_file, help="also write the summary as JSON to PATH")
    p.add_argument("--ready-timeout", type=_positive, default=60.0,
                   help="seconds every node has to start, compile and connect (default 60)")
    p.add_argument("--status-every", type=_positive, default=None,
                   help="seconds between live status updates (default 1 on a terminal, 5 otherwise)")
    p.add_argument("--session-dir", metavar="DIR", help="where to record the session (default sessions/<UTC time>/)")
    p.add_argument("--no-record", action="store_true", help="do not record a session folder (journal, provenance)")
    p.add_argument("--reset-weights", action="store_true",
                   help="start memristors from r_init instead of their saved crossbar state")
    p.add_argument("--site", metavar="NAME", help="start only this site's nodes; links from other sites connect to "
                   "their addresses in the network file (each lab runs its own site)")
    p.add_argument("--secret-key", metavar="FILE", help="this site's CURVE secret key (default: the file's "
                   "sites.<site>.secret_key)")
    p.add_argument("--journal-max-mb", type=_mb, metavar="MB", help="cap of each node's session journal (default "
                   "2048); past it, packets are counted as dropped from the record, not written")
    p.add_argument("--base-port", type=int, metavar="N", help="serve node i's metrics on N + i (instead of the "
                   "file's [monitor] base_port; default 9470), e.g. to run two networks side by side")
    p.add_argument("--start-wait", type=_non_negative, default=60.0, metavar="S",
                   help="with --site: seconds to wait for the other sites to be ready, then all start together "
                   "(one start time, length and session id); past it this site starts alone, loudly (default 60)")
    p.add_argument("--dashboard", nargs="?", const=DASHBOARD_DEFAULT, metavar="HOST:PORT",
                   help="also serve the live dashboard in the browser, at HOST:PORT (default "
                   f"{DASHBOARD_DEFAULT}; another host than loopback must be given explicitly and is warned of); "
                   "its address with the token for its controls is printed at start")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("keygen", help="make a CURVE key pair (NAME.key public, NAME.key_secret secret), or every "
                       "missing key a network file names (--network)")
    p.add_argument("name", nargs="?", help="key name, e.g. the site's name")
    p.add_argument("--dir", default=".", help="folder to write NAME.key and NAME.key_secret to (default .)")
    p.add_argument("--network", metavar="FILE", help="make the missing key pairs of this network's [sites]")
    p.add_argument("--site", help="with --network: only this site's key pair")
    p.set_defaults(func=cmd_keygen)

    sub.add_parser("fault-proxy", help="a TCP proxy that injects delay, jitter, loss and reordering into a spikewire "
                   "link, for rehearsing internet conditions (spikewire fault-proxy --help)")

    p = sub.add_parser("check", help="validate a network file without starting anything")
    p.add_argument("network", help="network file (TOML)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("replay", help="rerun some nodes of a recorded session live, fed by the others' recorded "
                       "output with its original timing")
    p.add_argument("session", help="a session folder (from spikewire run)")
    p.add_argument("--nodes", required=True, help="comma-separated nodes to run live; the rest are replayed")
    p.add_argument("--speed", type=_positive, default=1.0, help="replay speed factor (default 1)")
    p.add_argument("--duration", type=_positive, help="seconds of the original session to replay (default: all)")
    p.add_argument("--json", metavar="PATH", type=output_file, help="write the summary as JSON")
    p.add_argument("--session-dir", metavar="DIR", help="where to record the replay (default sessions/<UTC time>-replay; "
                   "the replayed session's folder is never written)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("export", help="export a recorded session as an NWB 2 file (units, stimuli, resistance, "
                       "pulses, phases)")
    p.add_argument("session", help="a session folder (from spikewire run)")
    p.add_argument("--nwb", required=True, metavar="OUT.nwb", type=output_file, help="NWB file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.nwb if it exists")
    p.add_argument("--experimenter", help="experimenter name(s) for the NWB metadata")
    p.add_argument("--lab", help="lab for the NWB metadata")
    p.add_argument("--institution", help="institution for the NWB metadata")
    prep = p.add_argument_group("the recorded preparation (a rig session; NWB Inspector rates a missing sex or age "
                                "CRITICAL)")
    prep.add_argument("--subject-id", metavar="ID", help="the preparation's (or animal's) identifier (default: the "
                      "network's name)")
    prep.add_argument("--species", help="Latin binomial (Rattus norvegicus) or an NCBI taxonomy IRI")
    prep.add_argument("--sex", metavar="M|F|U|O", help="male, female, unknown or other")
    prep.add_argument("--age", metavar="DURATION", help="age at the session as an ISO 8601 duration: P90D, P2Y6M, or "
                      "a range P90D/P120D")
    prep.add_argument("--session-description", metavar="TEXT", help="what the session was (default: the network's "
                      "description)")
    prep.add_argument("--electrode-location", metavar="TEXT", help="where the rig's electrodes record (brain area, "
                      "culture region; default 'unknown')")
    prep.add_argument("--subject", metavar="FILE", help="a YAML (or .toml) file with any of the keys subject_id, "
                      "species, sex, age, session_description, electrode_location; the flags win over it")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("merge", help="merge the sessions the sites of one run recorded (spikewire run --site) into "
                       "one session on one clock, for plot and export")
    p.add_argument("sessions", nargs="+", metavar="SESSION", help="one session folder per site, of the same run")
    p.add_argument("--out", required=True, metavar="DIR", help="the merged session folder to write (new or empty)")
    p.add_argument("--reference", metavar="SITE", help="the site whose clock the merged session keeps (default: "
                   "the first session's)")
    p.add_argument("--force", action="store_true", help="merge sessions that carry no session id (recorded before "
                   "sites agreed one), whose being of one run cannot be checked")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("plot", help="plot a recorded session: rasters, rates, weights with phases, link latencies")
    p.add_argument("session", help="a session folder (from spikewire run)")
    p.add_argument("--out", required=True, metavar="FILE", type=output_file, help="image file to write (.png, .pdf, .svg)")
    p.add_argument("--dpi", type=int, default=120, help="resolution (default 120)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("prometheus", help="write prometheus.yml, alert rules and a Grafana dashboard for a network")
    p.add_argument("network", help="network file (TOML)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write them to (created if needed)")
    p.set_defaults(func=cmd_prometheus)

    sub.add_parser("top", help="live terminal view of a running network, from its metrics endpoints "
                   "(spikewire top NETWORK [--interval S] [--iterations N] [--timeout S])")

    sub.add_parser("params", help="every parameter a network file takes, with its unit, default and check "
                   "(spikewire params [KIND] [--format text|markdown|json]; docs/parameters.md)")

    sub.add_parser("device", help="what one LTP or LTD pulse does to a device against its resistance, to choose "
                   "pulses (spikewire device [NETWORK NODE] --sweep [--out FILE])")

    sub.add_parser("dashboard", help="a live session in the browser: rasters, rates, weights, links, interlock, "
                   "protocol (spikewire dashboard NETWORK [--site NAME] | SESSION)")

    sub.add_parser("rig-sim", help="a mock recording rig over LSL (pylsl only): N channels of synthetic voltage with "
                   "spikes at known times, answering stimulation commands (spikewire rig-sim --help)")

    for extend in extensions:  # commands of the layers above launch (bench), added by the entry point
        extend(sub)
    return ap


def main(argv: list[str] | None = None, extensions=()) -> int:
    """``extensions``: callables that add subcommands to the parser (the `spikewire` entry point passes
    bench's), so that launch never imports a layer above it."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASS_THROUGH:
        return PASS_THROUGH[argv[0]](argv[1:])
    args = build_parser(extensions).parse_args(argv)
    try:
        return args.func(args)
    except BadNetwork:
        return 2


if __name__ == "__main__":
    sys.exit(main())
