"""Generated Prometheus config, alert rules and Grafana dashboard: promtool accepts them, and every node
of a live paper_loop serves an exposition that `promtool check metrics` accepts."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from spikewire.launch.ports import free_port_block

from conftest import NETWORKS
from spikewire.config.network import Network, load_network
from spikewire.monitor import catalogue as C
from spikewire.monitor.grafana import DATASOURCE, dashboard, write_dashboard
from spikewire.monitor.prometheus_config import (CONFIG_FILE, JOB, RULES_FILE, alert_rules, scrape_config,
                                                 write_prometheus_config)

PROMTOOL_TIMEOUT = 30


def require(tool: str) -> str:
    """The path of a Prometheus binary; fails (never skips) without it: the monitoring tests are part of CI."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"`{tool}` is not installed: apt-get install prometheus (Debian's package brings prometheus "
                    "and promtool; .ci/run and `make prometheus-bin` install it)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


free_base_port = free_port_block


def paper_loop_copy(directory: Path, scrape_interval: float | None = None) -> Path:
    """paper_loop.toml with a free metrics base_port (and optionally a scrape interval), in ``directory``."""
    text = (NETWORKS / "paper_loop.toml").read_text()
    text, n = re.subn(r"(?m)^base_port\s*=\s*\d+", f"base_port = {free_base_port(3)}", text)
    assert n == 1, "paper_loop.toml no longer sets [monitor] base_port"
    if scrape_interval is not None:
        text = text.replace("[monitor]\n", f"[monitor]\nscrape_interval = {scrape_interval!r}\n", 1)
    path = directory / "paper_loop.toml"
    path.write_text(text)
    return path


def endpoints(network: Network) -> dict[str, str]:
    return {name: f"http://127.0.0.1:{network.metrics_port(name)}/metrics" for name in network.nodes}


def fetch(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([require("promtool"), *args], input=stdin, capture_output=True, check=False,
                          timeout=PROMTOOL_TIMEOUT)


@pytest.fixture
def paper_loop():
    return load_network(NETWORKS / "paper_loop.toml")


def test_generated_config_and_rules_pass_promtool(paper_loop, tmp_path):
    paths = write_prometheus_config(paper_loop, tmp_path / "prom")
    assert [p.name for p in paths] == [CONFIG_FILE, RULES_FILE]
    # check config also loads and checks the rule files it names (by path relative to the config)
    r = promtool("check", "config", str(paths[0]))
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert b"1 rule files found" in r.stdout + r.stderr
    r = promtool("check", "rules", str(paths[1]))
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert f"{len(alert_rules(paper_loop)['groups'][0]['rules'])} rules found".encode() in r.stdout + r.stderr


def test_scrape_config_has_every_node_as_a_labelled_target(paper_loop):
    config = scrape_config(paper_loop)
    assert config["global"]["scrape_interval"] == "1s"
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB and job["honor_labels"] is True
    targets = {sc["labels"]["node"]: (sc["targets"], sc["labels"]) for sc in job["static_configs"]}
    assert set(targets) == set(paper_loop.nodes)
    for name, spec in paper_loop.nodes.items():
        addrs, labels = targets[name]
        assert addrs == [f"127.0.0.1:{paper_loop.metrics_port(name)}"]
        assert labels == {"node": name, "kind": spec.kind, "site": spec.settings.site}


def test_alert_rules_use_the_catalogue_and_the_network_budgets(paper_loop):
    rules = {r["alert"]: r for r in alert_rules(paper_loop)["groups"][0]["rules"]}
    assert set(rules) >= {"SpikewireNodeDown", "SpikewireLinkLatencyHigh", "SpikewirePopulationSilent",
                          "SpikewireSendQueueDrops", "SpikewireSequenceGaps", "SpikewireMalformedPackets",
                          "SpikewireTickOverruns"}
    names = {m.name for m in C.CATALOGUE}
    for name, rule in rules.items():
        used = set(re.findall(r"\bspikewire_[a-z_]+", rule["expr"]))
        assert used, name
        assert {u.removesuffix("_bucket") for u in used} <= names, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert "{{ $labels." in rule["annotations"]["summary"] + rule["annotations"]["description"], name
    mon = paper_loop.monitor
    assert rules["SpikewireLinkLatencyHigh"]["expr"].endswith(f"> {mon.latency_budget!r}")
    assert f"[{mon.silent_after:g}s]" in rules["SpikewirePopulationSilent"]["expr"]
    assert rules["SpikewireNodeDown"]["for"] == "5s"


def test_dashboard_is_structurally_valid(paper_loop, tmp_path):
    import json

    path = write_dashboard(paper_loop, tmp_path / "dash" / "spikewire.json")
    dash = json.loads(path.read_text())
    assert dash == dashboard(paper_loop)
    assert 36 <= dash["schemaVersion"] <= 41
    (var,) = dash["templating"]["list"]
    assert var["type"] == "datasource" and var["query"] == "prometheus" and var["name"] == "datasource"
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in panels:
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE, p["title"]
            assert t["expr"].strip(), p["title"]
    heatmaps = [p for p in panels if p["type"] == "heatmap"]
    assert len(heatmaps) == len(paper_loop.links)
    for p, link in zip(heatmaps, paper_loop.links):
        (t,) = p["targets"]
        assert t["format"] == "heatmap" and f"{C.LATENCY.name}_bucket" in t["expr"] and link.label in t["expr"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for m in (C.RATE, C.RESISTANCE, C.SEND_DROPS, C.GAPS, C.MALFORMED, C.TICK_COMPUTE, C.OVERRUNS,
              C.PROBE_LATENCY):
        assert m.name in exprs, m.name


def test_metrics_disabled_is_refused(tmp_path):
    from spikewire.config.network import build_network

    net = build_network({"nodes": {"a": {"kind": "biological"}}, "monitor": {"metrics": False}})
    with pytest.raises(ValueError, match="serves no metrics"):
        write_prometheus_config(net, tmp_path)
    assert not (tmp_path / CONFIG_FILE).exists()


@pytest.mark.integration
def test_every_live_node_endpoint_passes_promtool_check_metrics(cli_run, tmp_path):
    require("promtool")
    network_file = paper_loop_copy(tmp_path)
    network = load_network(network_file)
    run = cli_run("run", str(network_file), "--duration", "4")
    run.wait_for("all nodes ready", timeout=60)
    families = {m.name for m in C.CATALOGUE}
    for name, url in endpoints(network).items():
        body = fetch(url)
        r = promtool("check", "metrics", stdin=body)
        assert r.returncode == 0, f"{name}: {(r.stdout + r.stderr).decode()}"
        text = body.decode()
        assert f'{C.NODE_UP.name}{{kind="{network.nodes[name].kind}",node="{name}"' in text, name
        exported = set(re.findall(r"(?m)^# TYPE (\S+)", text))
        assert {f for f in exported if not f.startswith(("process_", "python_"))} <= families, name
    code, text = run.finish(timeout=30)
    assert code == 0, text


def _rule_test(tmp_path: Path, network: Network, series: dict[str, str], evals: list[tuple[str, str, list]]) -> str:
    """Run `promtool test rules` over the network's generated rules: ``series`` (name{labels} -> values in
    promtool's notation, 1 s apart), ``evals`` (eval time, alert name, the alerts firing then as
    (labels, annotations)). Returns promtool's output; fails the test when promtool does."""
    from spikewire.monitor.prometheus_config import to_yaml

    write_prometheus_config(network, tmp_path)
    spec = {"rule_files": [RULES_FILE], "evaluation_interval": "1s", "tests": [{
        "interval": "1s",
        "input_series": [{"series": name, "values": values} for name, values in series.items()],
        "alert_rule_test": [{"eval_time": at, "alertname": alert,
                             "exp_alerts": [{"exp_labels": labels, "exp_annotations": notes} for labels, notes in fired]}
                            for at, alert, fired in evals]}]}
    path = tmp_path / "rig-tests.yml"
    path.write_text("\n".join(to_yaml(spec)) + "\n")
    r = promtool("test", "rules", str(path))
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 0, out
    return out


def _annotations(rule: dict, node: str) -> dict:
    return {k: v.replace("{{ $labels.node }}", node) for k, v in rule["annotations"].items()}


def test_rig_alerts_fire_when_the_rig_is_down_or_uncalibrated(paper_loop, tmp_path):
    require("promtool")
    rules = {r["alert"]: r for r in alert_rules(paper_loop)["groups"][0]["rules"]}
    down, uncal = rules["RigDown"], rules["RigNotCalibrated"]
    assert C.RIG_UP.name in down["expr"] and C.RIG_CALIBRATED.name in uncal["expr"]
    assert down["labels"]["severity"] == "critical" and uncal["labels"]["severity"] == "warning"
    up = 'spikewire_node_up{job="spikewire",node="%s",kind="biological",site="lab"}'
    rig = 'spikewire_rig_up{job="spikewire",node="%s"}'
    cal = 'spikewire_rig_calibrated{job="spikewire",node="%s"}'
    series = {
        up % "padova": "1x40", rig % "padova": "1x4 0x35", cal % "padova": "1x40",  # the rig goes away at 5 s
        up % "milan": "1x40", rig % "milan": "1x40", cal % "milan": "0x40",  # up, never calibrated
        up % "turin": "1x40", rig % "turin": "1x40", cal % "turin": "0x2 1x37",  # calibrated after 3 s: no alert
    }
    fired_down = ({"alertname": "RigDown", "severity": "critical", "job": "spikewire", "node": "padova"},
                  _annotations(down, "padova"))
    fired_uncal = ({"alertname": "RigNotCalibrated", "severity": "warning", "job": "spikewire", "node": "milan"},
                   _annotations(uncal, "milan"))
    _rule_test(tmp_path, paper_loop, series, [
        ("4s", "RigDown", []), ("7s", "RigDown", []),  # down for 2 s: pending, not firing yet
        ("20s", "RigDown", [fired_down]),
        ("5s", "RigNotCalibrated", []), ("30s", "RigNotCalibrated", [fired_uncal]),
    ])


def test_dashboard_has_rig_health_and_aggregates_large_crossbars(tmp_path):
    from spikewire.config.network import build_network
    from spikewire.nodes.figures import AGGREGATE_ABOVE

    panels = {p["title"]: p for p in dashboard(load_network(NETWORKS / "rig_loop.toml"))["panels"]}
    rig = " ".join(t["expr"] for t in panels["Rig health"]["targets"])
    for m in (C.RIG_UP, C.RIG_CALIBRATED, C.STIM_READY, C.STIM_HELD, C.STIM_NO_CONSUMER):
        assert m.name in rig, m.name
    n = AGGREGATE_ABOVE + 1
    table = [[i, 0, i, 0] for i in range(n)]
    net = build_network({"nodes": {"big": {"kind": "memristor", "rows": n, "cols": 1, "persist": False,
                                           "synapses": {"w": {"table": table}}},
                                   "small": {"kind": "memristor", "persist": False}}})
    exprs = [t["expr"] for t in dashboard(net)["panels"][2]["targets"]]
    assert exprs[0].endswith('node!~"big"}') and [e.split(" ")[0] for e in exprs[1:]] == ["avg", "min", "max"]
