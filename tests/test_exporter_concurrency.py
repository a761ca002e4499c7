"""Issue 11, item 6: a client that holds the metrics port idle must not blind monitoring or hang a stop.

A live ``MetricsServer`` (a real runtime, a real loopback HTTP server) meets idle TCP clients, a client
that sends half a request line, a slowloris that trickles bytes, and a flood beyond its connection
bound; scrapes still succeed and ``close`` returns at once. Then the same against a real node process.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.request

import pytest
import zmq

from conftest import network_copy
from spikewire.config.network import load_network
from spikewire.monitor.exporter import MetricsServer
from spikewire.nodes.probe import PulseSource, SourceSettings
from spikewire.nodes.runtime import Runtime
from spikewire.streams.clock import local_clock

SCRAPE_TIMEOUT = 2.0


@pytest.fixture
def runtime():
    ctx = zmq.Context()
    rt = Runtime(PulseSource("src", SourceSettings()), ctx, {"out": 1}, {})
    try:
        yield rt
    finally:
        rt.close()
        ctx.destroy(linger=0)


@pytest.fixture
def clients():
    """Raw TCP clients, every one closed at the end (so even a server that blocks on one is freed)."""
    made: list[socket.socket] = []

    def connect(port: int, send: bytes = b"") -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=2.0)
        made.append(s)
        if send:
            s.sendall(send)
        return s

    yield connect
    for s in made:
        s.close()


def _serve(rt, **kw) -> MetricsServer:
    server = MetricsServer(rt, "127.0.0.1", 0, **kw)
    rt.metrics = server  # rt.close() closes it too (a second close is harmless)
    server.refresh(time.monotonic())
    return server


def _scrape(port: int, timeout: float = SCRAPE_TIMEOUT) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        assert r.status == 200
        return r.read().decode()


def _close_within(server: MetricsServer, seconds: float) -> float:
    """Close the server from a thread; fails (never hangs) if it takes longer than ``seconds``."""
    t0 = time.monotonic()
    closer = threading.Thread(target=server.close, daemon=True)
    closer.start()
    closer.join(seconds)
    assert not closer.is_alive(), f"MetricsServer.close() still blocked after {seconds} s"
    return time.monotonic() - t0


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes (or resets) ``sock`` within ``within`` s; what it sent is ignored."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(4096) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def test_idle_and_half_request_clients_block_neither_scrapes_nor_close(runtime, clients):
    server = _serve(runtime)
    for _ in range(3):
        clients(server.port)  # connected, never says a word
    clients(server.port, b"GET /metr")  # half a request line, then nothing
    t0 = time.monotonic()
    for _ in range(3):
        assert "spikewire_node_up{" in _scrape(server.port)
    assert time.monotonic() - t0 < SCRAPE_TIMEOUT
    assert _close_within(server, 2.0) < 1.5


def test_a_slowloris_is_cut_off_at_the_request_deadline(runtime, clients):
    server = _serve(runtime, idle_timeout=0.5, request_deadline=1.0)
    idle = clients(server.port)
    assert _closed_by_server(idle, within=2.0), "an idle client was never timed out"
    slow = clients(server.port, b"G")
    t0 = time.monotonic()
    cut = False
    for byte in b"ET /metrics HTTP/1.0\r\nX-Slow: " + b"a" * 40:  # one byte every 0.1 s: never idle 0.5 s
        try:
            slow.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        time.sleep(0.1)
        if _closed_by_server(slow, within=0.01):
            cut = True
            break
    assert cut and time.monotonic() - t0 < 2.5, "a trickling client held its connection past the deadline"
    assert server.timed_out >= 1
    assert "spikewire_node_up{" in _scrape(server.port)


def test_connections_beyond_the_bound_are_refused_and_counted(runtime, clients):
    server = _serve(runtime, max_connections=4, idle_timeout=30.0, request_deadline=30.0)
    idle = [clients(server.port) for _ in range(4)]
    deadline = time.monotonic() + 2.0
    while server.open_connections < 4:  # accepted in the server's thread
        assert time.monotonic() < deadline, server.open_connections
        time.sleep(0.01)
    extra = [clients(server.port) for _ in range(3)]
    for s in extra:
        assert _closed_by_server(s, within=2.0), "a connection beyond the bound was kept open"
    assert server.refused == 3
    assert server.open_connections == 4  # no thread was started for the refused ones
    for s in idle:
        s.close()
    deadline = time.monotonic() + 2.0
    while server.open_connections:
        assert time.monotonic() < deadline, server.open_connections
        time.sleep(0.01)
    server.refresh(time.monotonic())
    assert 'spikewire_connections_refused_total{node="src",reason="metrics_busy"} 3.0' in _scrape(server.port)
    assert _close_within(server, 2.0) < 1.5


@pytest.mark.integration
def test_a_live_node_scrapes_and_stops_promptly_with_an_idle_client(cli_run, tmp_path, clients):
    network_file = network_copy("paper_loop.toml", tmp_path)
    network = load_network(network_file)
    run = cli_run("run", str(network_file), "--duration", "60", "--no-record")
    run.wait_for("all nodes ready", timeout=60)
    ports = [network.metrics_port(name) for name in network.nodes]
    for port in ports:
        clients(port)
        clients(port, b"GET /metrics HT")
    for port in ports:
        assert "spikewire_node_up{" in _scrape(port)
    t_stop = local_clock()
    run.proc.send_signal(signal.SIGTERM)
    code, text = run.finish(timeout=30)
    took = local_clock() - t_stop
    assert code == 0, text
    assert "did not stop" not in text, text
    assert took < 4.0, f"stopping took {took:.1f} s with idle metrics clients:\n{text}"
