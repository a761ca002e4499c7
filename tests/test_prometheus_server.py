"""A real Prometheus server scrapes a live paper_loop through the generated config: the figures it stores
are the network's, and every dashboard query and alert rule parses and evaluates there."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from spikewire.config.network import load_network
from spikewire.monitor import catalogue as C
from spikewire.monitor.grafana import dashboard
from spikewire.monitor.prometheus_config import JOB, alert_rules, write_prometheus_config
from test_prometheus_config import free_port, paper_loop_copy, require

pytestmark = pytest.mark.integration

WINDOW = "10s"
FULL, FULL_SCRAPES = "11s", 11  # a scrape a second
DATA_DEADLINE = 30.0  # s from Prometheus' start until ten seconds of scrapes are stored
LATENCY_BUCKET = f"{C.LATENCY.name}_bucket"
GRAFANA_MACROS = {"$__rate_interval": WINDOW, "$__interval": "1s", "$__range": "1m"}


class PromAPI:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def get(self, path: str, **params) -> dict:
        url = f"{self.base}/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def query(self, expr: str) -> list[dict]:
        """The vector of an instant query; a query Prometheus rejects fails the test with its error."""
        try:
            body = self.get("query", query=expr)
        except urllib.error.HTTPError as e:
            pytest.fail(f"Prometheus rejected {expr!r}: {e.read().decode()}")
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def values(self, expr: str, by: str) -> dict[str, float]:
        return {s["metric"].get(by, ""): float(s["value"][1]) for s in self.query(expr)}


def _wait(what: str, check, deadline: float, log, server: subprocess.Popen) -> None:
    last = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"Prometheus exited with status {server.returncode} while waiting for {what}:\n{log()}")
        try:
            last = check()
            if last is True:
                return
        except OSError as e:  # not listening yet
            last = e
        time.sleep(0.25)
    pytest.fail(f"{what} not reached in time (last: {last!r}); Prometheus log:\n{log()}")


def test_real_prometheus_scrapes_the_live_loop(cli_run, tmp_path):
    prometheus = require("prometheus")
    network_file = paper_loop_copy(tmp_path, scrape_interval=1.0)
    network = load_network(network_file)
    config, _ = write_prometheus_config(network, tmp_path / "prom")
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    run = cli_run("run", str(network_file), "--duration", "25")
    prom = None
    try:
        with open(log_path, "wb") as log:
            prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        run.wait_for("all nodes ready", timeout=60)
        api = PromAPI(port)

        def tail() -> str:
            return "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])

        deadline = time.monotonic() + DATA_DEADLINE
        n = len(network.nodes)

        def full_window():
            # A whole window of successful scrapes of every node (up counts the failed ones before the nodes
            # listened): with fewer, rate() extrapolates a series that starts inside its window by only half
            # a scrape interval and reads ~8 Hz for the 10 Hz pacemaker.
            scrapes = api.values(f'count_over_time({C.NODE_UP.name}{{job="{JOB}"}}[{FULL}])', "node")
            return len(scrapes) == n and min(scrapes.values()) >= FULL_SCRAPES or scrapes

        _wait(f"{FULL} of successful scrapes of every node", full_window, deadline, tail, prom)

        up = api.query(f'up{{job="{JOB}"}}')
        assert {s["metric"]["node"]: s["value"][1] for s in up} == {name: "1" for name in network.nodes}
        for s in up:  # target labels filled in (honor_labels), none renamed to exported_*
            spec = network.nodes[s["metric"]["node"]]
            assert (s["metric"]["kind"], s["metric"]["site"]) == (spec.kind, spec.settings.site)
        assert api.query('count({__name__=~"spikewire_.+", exported_node!=""})') == []

        anpre = api.values(f'rate({C.SPIKES.name}{{population="anpre"}}[{WINDOW}])', "node")
        assert set(anpre) == {"zurich"} and 8 <= anpre["zurich"] <= 12, anpre

        p50 = api.values(f"histogram_quantile(0.5, sum by (le, link) (rate({LATENCY_BUCKET}[{WINDOW}])))", "link")
        packets = api.values(f"sum by (link) (rate({C.LATENCY.name}_count[{WINDOW}]))", "link")
        whole_run = api.values(f"histogram_quantile(0.5, sum by (le, link) ({LATENCY_BUCKET}))", "link")
        p99 = api.values(f"histogram_quantile(0.99, sum by (le, link) (rate({LATENCY_BUCKET}[{WINDOW}])))", "link")
        figures = {"anpre_rate_hz": anpre["zurich"], "links": {}, "link_p99_s": p99,
                   "overruns_per_s": api.values(f"rate({C.OVERRUNS.name}[{WINDOW}])", "node"),
                   "tick_p99_s": api.values(f"histogram_quantile(0.99, sum by (le, node) "
                                            f"(rate({C.TICK_COMPUTE.name}_bucket[{WINDOW}])))", "node")}
        for link in network.links:
            assert link.label in p50, f"no latency series for {link.label}"
            if packets[link.label] > 0:
                value = p50[link.label]
            else:  # no packet in the window (anpost hardly fires): the histogram of the whole run instead
                value = whole_run[link.label]
            figures["links"][link.label] = (value, packets[link.label])
            assert 10e-6 <= value <= 50e-3, (link.label, value)

        probe = {q: api.values(f"histogram_quantile({q}, sum by (le, node) "
                               f"(rate({C.PROBE_LATENCY.name}_bucket[{WINDOW}])))", "node") for q in (0.5, 0.99)}
        assert set(probe[0.5]) == {"zurich"}, probe
        assert 10e-6 <= probe[0.5]["zurich"] <= probe[0.99]["zurich"] <= 0.1, probe
        figures["probe_p50_p99_s"] = (probe[0.5]["zurich"], probe[0.99]["zurich"])

        resistance = api.values(C.RESISTANCE.name, "device")
        assert set(resistance) == {"mr1", "mr2"}, resistance
        assert all(10e3 <= r <= 17e3 for r in resistance.values()), resistance
        figures["resistance_ohm"] = resistance

        # every dashboard query and every alert rule parses and evaluates on the real server
        for panel in dashboard(network)["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for macro, value in GRAFANA_MACROS.items():
                    expr = expr.replace(macro, value)
                api.query(expr)
        rules = alert_rules(network)["groups"][0]["rules"]
        for rule in rules:
            api.query(rule["expr"])
        # ... and the server loaded the rule file by its relative path and evaluates every rule cleanly
        def rules_healthy():
            groups = api.get("rules")["data"]["groups"]
            loaded = {r["name"]: r for g in groups for r in g["rules"]}
            return (set(loaded) == {r["alert"] for r in rules}
                    and all(r["health"] == "ok" and not r["lastEvaluation"].startswith("0001")
                            for r in loaded.values())
                    or loaded)
        _wait("every rule loaded and evaluated", rules_healthy, time.monotonic() + 10, tail, prom)
        print(json.dumps(figures, indent=1))  # the measured figures, with -s
    finally:
        if prom is not None and prom.poll() is None:
            prom.terminate()
            try:
                prom.wait(timeout=10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(timeout=10)
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)  # a clean stop; cli_run kills it if this hangs
    code, text = run.finish(timeout=30)
    assert code == 0, text
