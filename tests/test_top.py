"""`spikewire top`: quantiles and rendering on canned expositions, then the real command on a live loop."""

from __future__ import annotations

import io
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spikewire.launch.ports import free_port_block

from conftest import NETWORKS, ROOT
from spikewire.config.network import load_network
from spikewire.monitor import top
from spikewire.monitor.top import NodeState, histogram_quantile, parse_exposition, recent_buckets, render_frame

LOOP = load_network(NETWORKS / "paper_loop.toml")
BOUNDS = ("1e-05", "2e-05", "5e-05", "0.0001", "0.0002", "0.0005", "0.001", "0.002", "0.005", "0.01", "0.02",
          "0.05", "0.1", "+Inf")


def _hist(name: str, labels: str, counts: list[int]) -> str:
    """A histogram in the exposition format; ``counts`` are per bucket (not cumulative), one per bound."""
    out, acc = [f"# TYPE {name} histogram"], 0
    sep = "," if labels else ""
    for le, n in zip(BOUNDS, counts):
        acc += n
        out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {acc}.0')
    out += [f"{name}_count{{{labels}}} {acc}.0", f"{name}_sum{{{labels}}} {acc * 1e-4}"]
    return "\n".join(out)


def _lat(hundreds_us: int, ms: int = 0) -> list[int]:
    """Latency counts: ``hundreds_us`` in (100, 200] us, ``ms`` in (1, 2] ms."""
    counts = [0] * len(BOUNDS)
    counts[4], counts[7] = hundreds_us, ms
    return counts


def zurich(ticks: int, anpre: int, cpu: float, drops: int = 0, probe_ms: int = 0) -> str:
    pre = 'node="zurich",link="southampton.mr2.out -> zurich.anpost.input"'
    return "\n".join([
        "# TYPE spikewire_node_up gauge",
        'spikewire_node_up{node="zurich",kind="silicon",site="zurich"} 1.0',
        'spikewire_node_ready{node="zurich",kind="silicon"} 1.0',
        "# TYPE spikewire_spikes_total counter",
        f'spikewire_spikes_total{{node="zurich",population="anpre"}} {anpre}.0',
        'spikewire_spikes_total{node="zurich",population="anpost"} 3.0',
        "# TYPE spikewire_population_rate_hertz gauge",
        'spikewire_population_rate_hertz{node="zurich",population="anpre"} 9.98',
        'spikewire_population_rate_hertz{node="zurich",population="anpost"} 0.0',
        "# TYPE spikewire_link_packets_sent_total counter",
        f'spikewire_link_packets_sent_total{{node="zurich",port="anpre.spikes"}} {2 * anpre}.0',
        'spikewire_link_packets_sent_total{node="zurich",port="anpost.spikes"} 3.0',
        "# TYPE spikewire_link_send_dropped_total counter",
        f'spikewire_link_send_dropped_total{{node="zurich",port="anpre.spikes"}} {drops}.0',
        'spikewire_link_send_dropped_total{node="zurich",port="anpost.spikes"} 0.0',
        "# TYPE spikewire_link_packets_received_total counter",
        f"spikewire_link_packets_received_total{{{pre}}} 20.0",
        "# TYPE spikewire_link_sequence_gaps_total counter",
        f"spikewire_link_sequence_gaps_total{{{pre}}} 0.0",
        _hist("spikewire_link_latency_seconds", pre, _lat(20)),
        _hist("spikewire_tick_compute_seconds", 'node="zurich"', [ticks // 2, ticks // 2 - 10, 0, 0, 10] + [0] * 9),
        "# TYPE spikewire_ticks_total counter",
        f'spikewire_ticks_total{{node="zurich"}} {ticks}.0',
        "# TYPE spikewire_tick_overruns_total counter",
        'spikewire_tick_overruns_total{node="zurich"} 3.0',
        _hist("spikewire_probe_latency_seconds", 'node="zurich"', _lat(0, probe_ms)),
        "# TYPE spikewire_probes_lost_total counter",
        'spikewire_probes_lost_total{node="zurich"} 1.0',
        "# TYPE process_resident_memory_bytes gauge",
        "process_resident_memory_bytes 1.5343616e+08",
        "# TYPE process_start_time_seconds gauge",
        "process_start_time_seconds 1000.0",
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {cpu}",
        "",
    ])


def southampton(received: int, gaps: int = 0, slow: int = 0) -> str:
    links = ["zurich.anpre.spikes -> southampton.mr1.pre", "padova.events -> southampton.mr1.post",
             "padova.events -> southampton.mr2.pre", "zurich.anpost.spikes -> southampton.mr2.post"]
    out = ['spikewire_node_up{node="southampton",kind="memristor",site="southampton"} 1.0',
           'spikewire_link_packets_sent_total{node="southampton",port="mr1.out"} 40.0',
           'spikewire_link_packets_sent_total{node="southampton",port="mr2.out"} 20.0',
           'spikewire_link_send_dropped_total{node="southampton",port="mr1.out"} 0.0',
           'spikewire_link_send_dropped_total{node="southampton",port="mr2.out"} 0.0']
    for i, link in enumerate(links):
        lab = f'node="southampton",link="{link}"'
        out += [f"spikewire_link_packets_received_total{{{lab}}} {received + i}.0",
                f"spikewire_link_sequence_gaps_total{{{lab}}} {gaps if i == 0 else 0}.0",
                _hist("spikewire_link_latency_seconds", lab, _lat(received, slow if i == 0 else 0))]
    bad = 'spikewire_link_malformed_total{node="southampton",link="zurich.anpre.spikes -> southampton.mr1.pre",'
    out += [bad + 'reason="short"} 1.0', bad + 'reason="version"} 2.0',
            'spikewire_memristor_resistance_ohms{node="southampton",device="mr1"} 14000.0',
            'spikewire_memristor_resistance_ohms{node="southampton",device="mr2"} 15092.09',
            "process_resident_memory_bytes 1.0e+08", "process_cpu_seconds_total 2.0", ""]
    return "\n".join(out)


def _row(lines: list[str], start: str) -> list[str]:
    row = next((ln for ln in lines if ln.startswith(start)), None)
    assert row is not None, f"no row starting {start!r} in:\n" + "\n".join(lines)
    return row[len(start):].split()


# --- quantiles -------------------------------------------------------------------------------------------

def test_quantile_interpolates_within_the_bucket_like_prometheus():
    b = [(0.001, 0.0), (0.002, 50.0), (0.005, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, b) == pytest.approx(0.002)
    assert histogram_quantile(0.75, b) == pytest.approx(0.0035)  # halfway through (2, 5] ms
    assert histogram_quantile(0.25, b) == pytest.approx(0.0015)
    assert histogram_quantile(0.1, [(0.01, 10.0), (math.inf, 10.0)]) == pytest.approx(0.001)  # first bucket from 0


def test_quantile_matches_uniform_observations():
    xs = [(i + 0.5) / 1000 for i in range(1000)]  # uniform on (0, 1)
    bounds = [k / 10 for k in range(1, 11)] + [math.inf]
    buckets = [(ub, float(sum(x <= ub for x in xs))) for ub in bounds]
    for q in (0.05, 0.5, 0.9, 0.99):
        assert histogram_quantile(q, buckets) == pytest.approx(q, abs=1e-3)


def test_quantile_edges():
    assert histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.99, [(0.1, 90.0), (math.inf, 100.0)]) == math.inf  # beyond the largest bound
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram_quantile(1.5, [(math.inf, 1.0)])
    with pytest.raises(ValueError, match=r"\+Inf"):
        histogram_quantile(0.5, [(0.1, 1.0)])


def test_recent_buckets_are_the_difference_else_cumulative():
    first = parse_exposition(southampton(10), 0.0, 0.0)
    later = parse_exposition(southampton(30, slow=5), 1.0, 1.0)
    lab = {"link": "zurich.anpre.spikes -> southampton.mr1.pre"}
    assert recent_buckets(later, None, "spikewire_link_latency_seconds", **lab)[-1] == (math.inf, 35.0)
    delta = dict(recent_buckets(later, first, "spikewire_link_latency_seconds", **lab))
    assert delta[0.0002] == 20.0 and delta[0.002] == 25.0 and delta[math.inf] == 25.0
    restarted = dict(recent_buckets(first, later, "spikewire_link_latency_seconds", **lab))  # counts went down
    assert restarted[math.inf] == 10.0


def test_parse_reads_labels_and_sums_over_the_rest():
    e = parse_exposition(southampton(10), 0.0, 0.0)
    link = "zurich.anpre.spikes -> southampton.mr1.pre"
    assert e.value("spikewire_link_packets_received_total", link=link) == 10.0
    assert e.total("spikewire_link_malformed_total", link=link) == 3.0  # over both reasons
    assert e.total("spikewire_link_malformed_total", link="nothing") is None
    assert e.label_values("spikewire_memristor_resistance_ohms", "device") == ["mr1", "mr2"]
    assert e.buckets("spikewire_link_latency_seconds", link=link)[-1] == (math.inf, 10.0)
    with pytest.raises(ValueError):
        parse_exposition("this is { not prometheus", 0.0, 0.0)


# --- the frame --------------------------------------------------------------------------------------------

def _states(**nodes) -> dict[str, NodeState]:
    states = {name: NodeState() for name in LOOP.nodes}
    for name, scrapes in nodes.items():
        for s in scrapes:
            states[name].update(s)
    return states


def test_frame_shows_every_node_and_link_with_a_node_down():
    states = _states(
        zurich=[parse_exposition(zurich(1000, 10, 1.0, drops=2), 100.0, 1100.0),
                parse_exposition(zurich(3000, 30, 1.5, drops=2, probe_ms=8), 105.0, 1105.0)],
        southampton=[parse_exposition(southampton(10, gaps=3), 100.0, 1100.0),
                     parse_exposition(southampton(30, gaps=3, slow=5), 101.0, 1101.0)],
        padova=["Connection refused"])
    lines = render_frame(LOOP, states, "12:00:00")
    assert "nodes up 2/3" in lines[0]
    # 20 spikes over 2000 ticks of 1 ms: 10 Hz by the node's clock, although the fetches were 5 s apart;
    # tick p99 20 us: the 10 slow ticks (0.1-0.2 ms) all came before the last interval
    assert _row(lines, "zurich ") == ["up", "silicon", "3000", "20", "3", "146", "25.0", "anpre", "10.0", "Hz",
                                      "anpost", "0.0", "Hz"]
    assert _row(lines, "southampton ")[:2] == ["up", "memristor"]
    assert "mr1 14.000 kOhm  mr2 15.092 kOhm" in next(ln for ln in lines if ln.startswith("southampton "))
    assert _row(lines, "padova ") == ["down", "biological", "-", "-", "-", "-", "-", "unreachable:", "Connection",
                                      "refused"]
    # sent, received, dropped (2 send drops + 3 gaps), malformed (both reasons), p50 and p99 of the last
    # interval: 20 packets in (100, 200] us and 5 in (1, 2] ms, so p50 = 100 + 100 * 12.5 / 20 = 162.5 us and
    # p99 = 1000 + 1000 * 4.75 / 5 = 1950 us
    # sent is the receiver's: received + lost, not zurich's own count (60), rendered at another moment
    assert _row(lines, "zurich.anpre.spikes -> southampton.mr1.pre") == ["33", "30", "5", "3", "162", "1,950"]
    assert _row(lines, "southampton.mr1.out -> padova.stim") == ["-", "-", "-", "-", "-", "-"]
    assert _row(lines, "padova.events -> southampton.mr1.post") == ["31", "31", "-", "0", "150", "199"]
    assert _row(lines, "southampton.mr2.out -> zurich.anpost.input")[:2] == ["20", "20"]
    assert sum(1 for link in LOOP.links for ln in lines if ln.startswith(link.label)) == 6
    assert lines[-1] == ("loop probe from zurich.anpre.spikes: round trip p50 1,500 us, p99 1,990 us over 8 probes; "
                         "1 lost since start")
    assert all(ln == ln.rstrip() for ln in lines)


def test_first_refresh_falls_back_to_the_nodes_own_figures():
    states = _states(zurich=[parse_exposition(zurich(1000, 10, 1.0), 100.0, 1100.0)],
                     southampton=[parse_exposition(southampton(10, slow=10), 100.0, 1100.0)],
                     padova=["timed out"])
    lines = render_frame(LOOP, states)
    z = _row(lines, "zurich ")
    assert z[6] == "1.0" and z[7:10] == ["anpre", "10.0", "Hz"]  # CPU since start (1 s of 100 s); rate gauge
    assert _row(lines, "zurich.anpre.spikes -> southampton.mr1.pre")[4:] == ["200", "1,980"]  # cumulative
    assert lines[-1].endswith("none returned in the last interval; 1 lost since start")


def test_an_unchanged_exposition_keeps_the_last_difference():
    st = NodeState()
    st.update(parse_exposition(zurich(1000, 10, 1.0), 100.0, 1100.0))
    second = parse_exposition(zurich(2000, 20, 1.2), 101.0, 1101.0)
    st.update(second)
    st.update(parse_exposition(zurich(2000, 20, 1.2), 102.0, 1102.0))  # the node has not re-rendered yet
    assert st.last is second
    assert "anpre 10.0 Hz" in " ".join(render_frame(LOOP, {"zurich": st}))
    st.update("Connection refused")
    assert not st.up and _row(render_frame(LOOP, {"zurich": st}), "zurich ")[0] == "down"


def test_screen_prints_frames_apart_when_not_a_terminal():
    out = io.StringIO()
    screen = top.Screen(out)
    screen.show(["a", "b"])
    screen.show(["c"])
    screen.close()
    assert out.getvalue() == "a\nb\n\nc\n"


def test_screen_redraws_in_place_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(top.shutil, "get_terminal_size", lambda: os.terminal_size((8, 3)))
    out = Tty()
    screen = top.Screen(out)
    screen.show(["0123456789", "row 2", "row 3 is cut"])
    screen.show(["again"])
    screen.close()
    first, second = out.getvalue().split("\x1b[J", 1)
    assert first == "\x1b[?25l\x1b[2J\x1b[H01234567\x1b[K\nrow 2\x1b[K\n"  # width 8, height 3 minus one row
    assert second == "\x1b[Hagain\x1b[K\n\x1b[J\x1b[?25h"


# --- the command ------------------------------------------------------------------------------------------

free_port_run = free_port_block


def loop_copy(tmp_path: Path) -> tuple[Path, int]:
    base = free_port_run(3)
    text, n = re.subn(r"(?m)^base_port = \d+", f"base_port = {base}", (NETWORKS / "paper_loop.toml").read_text())
    assert n == 1
    path = tmp_path / "paper_loop.toml"
    path.write_text(text)
    return path, base


def test_nothing_answering_exits_2_with_a_message(tmp_path, capsys):
    path, base = loop_copy(tmp_path)
    assert top.main([str(path), "--timeout", "0.3", "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert "no node of 'paper_loop' answered within 0.3 s" in err and f"http://127.0.0.1:{base}/metrics" in err


def test_a_bad_network_file_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[nodes.x]\nkind = 'quantum'\n")
    assert top.main([str(path)]) == 2
    assert "nodes.x.kind: unknown node kind" in capsys.readouterr().err


def top_frames(run, path: Path, iterations: int, interval: float) -> list[str]:
    """``iterations`` frames of `spikewire top` on the network ``run`` (a conftest CliRun) runs, from its
    readiness; then the run is stopped with Ctrl-C and must exit cleanly."""
    run.wait_for("all nodes ready", timeout=60)
    try:
        done = subprocess.run([sys.executable, "-m", "spikewire.monitor.top", str(path), "--iterations",
                               str(iterations), "--interval", str(interval)], capture_output=True, text=True,
                              timeout=30 + iterations * interval, cwd=ROOT, check=False)
    finally:
        run.proc.send_signal(signal.SIGINT)
        code, text = run.finish(timeout=30)
    assert code == 0, text
    assert done.returncode == 0, done.stderr
    frames = done.stdout.split("\n\n")
    assert len(frames) == iterations, done.stdout
    return frames


@pytest.mark.integration
def test_top_on_a_running_loop(cli_run, tmp_path):
    path, _ = loop_copy(tmp_path)
    frames = top_frames(cli_run("run", str(path), "--duration", "12"), path, 3, 1.0)
    last = frames[-1].splitlines()
    assert "nodes up 3/3" in last[0], frames[-1]
    for name, spec in LOOP.nodes.items():
        assert _row(last, f"{name} ")[:2] == ["up", spec.kind], frames[-1]
    assert 7.0 <= float(re.search(r"anpre (\d+\.\d) Hz", frames[-1]).group(1)) <= 13.0, frames[-1]
    for link in LOOP.links:
        sent, received, dropped, malformed, p50, p99 = _row(last, link.label)
        assert dropped == "0" and malformed == "0", frames[-1]
        # every link carries the loop probes but the last, which carries only ANpost's rare spikes
        if link.label != "zurich.anpost.spikes -> southampton.mr2.post":
            assert int(sent) > 0 and int(received) > 0, frames[-1]
            assert 10 <= int(p50.replace(",", "")) <= int(p99.replace(",", "")) < 100_000, frames[-1]  # us
    assert "round trip p50" in last[-1], frames[-1]


def test_frame_shows_protocol_interlock_rig_and_aggregates():
    """A node of a 100-neuron population and 1,000 devices, a rig, an interlock, the session time."""
    from spikewire.config.network import build_network

    table = [[i, j, i, j] for i in range(100) for j in range(10)]
    net = build_network({
        "network": {"name": "big"},
        "protocol": {"phases": [{"name": "warm", "duration": 2.0}, {"name": "learn", "duration": 4.0}]},
        "nodes": {"xbar": {"kind": "memristor", "rows": 100, "cols": 10, "persist": False,
                           "synapses": {"w": {"table": table}}},
                  "src": {"kind": "silicon", "populations": {"pre": {"size": 100}}},
                  "bio": {"kind": "biological"}}})
    devs = "\n".join(f'spikewire_memristor_resistance_ohms{{node="xbar",device="w[{i}->{j}]"}} {14000 + 10 * i + j}.0'
                     for i in range(100) for j in range(10))
    pulses = "\n".join(f'spikewire_plasticity_pulses_total{{node="xbar",device="w[{i}->0]",direction="ltp"}} 2.0'
                       for i in range(100))
    xbar = (f'spikewire_node_up{{node="xbar",kind="memristor",site="local"}} 1.0\n{devs}\n{pulses}\n'
            'spikewire_session_elapsed_seconds{node="xbar"} 3.0\n'
            'spikewire_interlock_held{node="xbar"} 0.0\nspikewire_interlock_holds_total{node="xbar"} 1.0\n')
    src = ('spikewire_node_up{node="src",kind="silicon",site="local"} 1.0\n'
           'spikewire_spikes_total{node="src",population="pre"} %d.0\n'
           'spikewire_session_elapsed_seconds{node="src"} 3.1\n')
    bio = ('spikewire_node_up{node="bio",kind="biological",site="local"} 1.0\n'
           'spikewire_rig_up{node="bio"} 0.0\nspikewire_rig_calibrated{node="bio"} 0.0\n'
           'spikewire_rig_stim_ready{node="bio"} 1.0\nspikewire_rig_stimuli_sent_total{node="bio"} 7.0\n'
           'spikewire_rig_stimuli_held_total{node="bio"} 3.0\n'
           'spikewire_rig_stimuli_held_no_consumer_total{node="bio"} 0.0\n'
           'spikewire_interlock_held{node="bio"} 1.0\nspikewire_interlock_holds_total{node="bio"} 2.0\n')
    states = {name: NodeState() for name in net.nodes}
    states["xbar"].update(parse_exposition(xbar, 10.0, 1010.0))
    states["src"].update(parse_exposition(src % 100, 10.0, 1010.0))
    states["src"].update(parse_exposition(src % 2100, 12.0, 1012.0))  # 2,000 spikes in 2 s (by fetch time)
    states["bio"].update(parse_exposition(bio, 10.0, 1010.0))
    text = "\n".join(render_frame(net, states))
    assert "protocol: phase learn 2/2 1.1/4s (session time 3.1 of 6 s)" in text
    assert "pre 10.0 Hz/neuron (1,000 Hz all 100)" in text
    xbar_row = next(ln for ln in text.splitlines() if ln.startswith("xbar "))
    assert re.search(r"w 1000 devices 14\.50 kOhm mean \[14\.00\.\.15\.00\] sd 0\.29 \[.{8}\] LTP 200 LTD 0",
                     xbar_row), xbar_row
    assert "w[3->4]" not in text  # aggregated, not listed
    assert "INTERLOCK HOLDS stimulation and programming of: bio (2 holds); clear: xbar (1 holds)" in text
    assert ("rig of bio: DOWN, NOT CALIBRATED, stim consumer ready, stimuli sent 7, held 3 while down, 0 with no "
            "consumer, refused 0, disconnects -") in text


def test_help_says_where_sent_comes_from(capsys):
    with pytest.raises(SystemExit):
        top.build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "received never exceeds" in out and "Hz/neuron" not in out and "per neuron" in out
