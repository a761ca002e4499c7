"""Prometheus scrape config and alert rules for a network, generated from its file and the metric catalogue.

``write_prometheus_config`` writes two files into one directory: ``prometheus.yml`` (one scrape job,
every node a static target labelled with its node, kind and site) and ``spikewire-alerts.yml`` (the
rules it loads by relative path). Every metric name comes from ``catalogue``, so the rules cannot drift
from what the exporter serves.

The catches:

- The exporter already labels every series with ``node`` (and ``spikewire_node_up`` with ``kind`` and
  ``site``). A target label of the same name would make Prometheus rename the node's own to
  ``exported_node``; the job sets ``honor_labels: true`` so the node's labels win and the target's fill
  in where a series has none (``up`` gets node, kind and site; ``spikewire_spikes_total`` gets kind and
  site).
- A counter series that first appears with a non-zero value (``spikewire_link_malformed_total``: the
  exporter creates a reason's series at its first bad packet) has no earlier sample, so ``increase()``
  sees nothing; the malformed rule also fires on a series that is new within its window.
- A wildcard bind (``0.0.0.0``) names no host; its target is 127.0.0.1 (Prometheus on the node's machine).
"""

from __future__ import annotations

import json
from pathlib import Path

from spikewire.config.network import Network
from spikewire.monitor import catalogue as C
from spikewire.nodes.runtime import LATE_WARN  # the node logs late links at the same threshold

JOB = "spikewire"
CONFIG_FILE = "prometheus.yml"
RULES_FILE = "spikewire-alerts.yml"

MIN_WINDOW = 10.0
"""Shortest range [s] of the rules' rate() and increase(): it must hold several scrapes."""
OVERRUN_FRACTION = 0.01
"""Share of a node's ticks that may overrun before the overrun alert fires. Not zero: an idle two-core
machine running paper_loop overruns ~2.3 ticks/s per clocked node (0.2 %) from scheduling alone, so an
alert on any increase would never clear."""


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: ``1s``, ``1500ms``, ``30s``."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"a Prometheus duration must be >= 1 ms, got {seconds!r} s")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def window(network: Network) -> float:
    """Range [s] of the rules' rate() and increase(): four scrapes, at least ``MIN_WINDOW``."""
    return max(MIN_WINDOW, 4 * network.monitor.scrape_interval)


def target(network: Network, node: str) -> str:
    """``host:port`` where Prometheus finds a node's /metrics."""
    host = network.nodes[node].settings.bind
    if host in ("0.0.0.0", "*", ""):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{network.metrics_port(node)}"


def selector(metric: C.Metric, suffix: str = "") -> str:
    """The series of one catalogue metric in this job: ``spikewire_ticks_total{job="spikewire"}``."""
    return f'{metric.sample}{suffix}{{job="{JOB}"}}'


def scrape_config(network: Network) -> dict:
    """The content of ``prometheus.yml``."""
    mon = network.monitor
    if not mon.metrics:
        raise ValueError(f"network {network.name!r} serves no metrics ([monitor] metrics = false)")
    interval = duration(mon.scrape_interval)
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": duration(min(mon.scrape_interval, 10.0)),
            "evaluation_interval": interval,
            "external_labels": {"network": network.name},
        },
        "rule_files": [RULES_FILE],
        "scrape_configs": [{
            "job_name": JOB,
            "honor_labels": True,
            "metrics_path": "/metrics",
            "static_configs": [
                {"targets": [target(network, name)],
                 "labels": {"node": name, "kind": spec.kind, "site": spec.settings.site}}
                for name, spec in network.nodes.items()
            ],
        }],
    }


def _rule(name: str, expr: str, severity: str, summary: str, description: str, for_: str | None = None) -> dict:
    rule = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def alert_rules(network: Network) -> dict:
    """The content of ``spikewire-alerts.yml``: one group, every rule built from catalogue names."""
    mon = network.monitor
    top_bucket = C.HISTOGRAM_BUCKETS[-1]
    if mon.latency_budget >= top_bucket:
        raise ValueError(f"monitor.latency_budget: must be below the largest latency bucket ({top_bucket:g} s) "
                         f"for the latency alert to ever fire, got {mon.latency_budget:g}")
    w = duration(window(network))
    up = f'up{{job="{JOB}"}}'
    node_up = selector(C.NODE_UP)
    down_for = duration(max(5.0, 3 * mon.scrape_interval))
    budget_ms = f"{mon.latency_budget * 1e3:g} ms"
    silent = duration(mon.silent_after)
    malformed = selector(C.MALFORMED)
    # A rig is marked down after its stale_after (0.5 s by default) and recalibrates in its calibration
    # (0.5 s): a few scrapes of either is no blip.
    rig_down_for = duration(max(5.0, 3 * mon.scrape_interval))
    calibrate_for = duration(max(10.0, 5 * mon.scrape_interval))
    rules = [
        _rule("SpikewireNodeDown",
              f"{up} == 0 or on(node) ({up} unless on(node) ({node_up} == 1))",
              "critical",
              "spikewire node {{ $labels.node }} is down",
              "Node {{ $labels.node }} ({{ $labels.kind }} at {{ $labels.site }}, {{ $labels.instance }}) has not "
              f"served {C.NODE_UP.name} = 1 for {down_for}: the process died, hangs, or its loop stopped.",
              down_for),
        _rule("SpikewireLinkLatencyHigh",
              f"histogram_quantile(0.99, sum by (node, link, le) (rate({selector(C.LATENCY, '_bucket')}[{w}]))) "
              f"> {mon.latency_budget!r}",
              "warning",
              "link {{ $labels.link }}: latency p99 over budget",
              "p99 of receive minus send time on link {{ $labels.link }} (into node {{ $labels.node }}) is "
              f"{{{{ $value | humanizeDuration }}}} over the last {w}; the budget is {budget_ms}.",
              duration(max(30.0, 3 * window(network)))),
        _rule("SpikewirePopulationSilent",
              f"increase({selector(C.SPIKES)}[{silent}]) == 0 and on(node) ({node_up} == 1)",
              "warning",
              "population {{ $labels.population }} on node {{ $labels.node }} is silent",
              "Population {{ $labels.population }} on node {{ $labels.node }} (site {{ $labels.site }}) emitted "
              f"no spike in {silent} while its node runs."),
        _rule("SpikewireSendQueueDrops",
              f"increase({selector(C.SEND_DROPS)}[{w}]) > 0",
              "warning",
              "node {{ $labels.node }} drops packets on output {{ $labels.port }}",
              "Node {{ $labels.node }} dropped {{ $value | humanize }} packets at a full send queue on output port "
              f"{{{{ $labels.port }}}} in the last {w}: a subscriber is too slow or gone."),
        _rule("SpikewireSequenceGaps",
              f"increase({selector(C.GAPS)}[{w}]) > 0",
              "warning",
              "packets lost on link {{ $labels.link }}",
              "Node {{ $labels.node }} missed {{ $value | humanize }} packets in the sequence of link "
              f"{{{{ $labels.link }}}} in the last {w}."),
        _rule("SpikewireLinkPacketsLate",
              f"sum by (node, link) (rate({selector(C.LATE)}[{w}])) / sum by (node, link) "
              f"(rate({selector(C.RECEIVED)}[{w}])) > {LATE_WARN!r}",
              "warning",
              "link {{ $labels.link }}: packets arrive after their jitter-buffer delay",
              "{{ $value | humanizePercentage }} of the packets on link {{ $labels.link }} (into node "
              f"{{{{ $labels.node }}}}) arrived after their delivery time over the last {w}: to the model late is "
              "lost (the interlock counts late drops as loss). The run summary's delay_for_p99_s says what delay "
              "would cover the link; or use delay = \"auto\"."),
        _rule("SpikewireImplausibleValues",
              f"increase({selector(C.OUT_OF_RANGE)}[{w}]) > 0",
              "warning",
              "implausible values refused on link {{ $labels.link }}",
              "Node {{ $labels.node }} refused {{ $value | humanize }} events on link {{ $labels.link }} in the last "
              f"{w}: their values lie outside the input port's plausible range (an absurd amplitude or weight, "
              "from a broken or hostile sender). They never reached the model."),
        _rule("SpikewireMalformedPackets",
              f"increase({malformed}[{w}]) > 0 or ({malformed} > 0 unless {malformed} offset {w})",
              "warning",
              "malformed packets on link {{ $labels.link }} ({{ $labels.reason }})",
              "Node {{ $labels.node }} dropped malformed packets ({{ $labels.reason }}) on link "
              f"{{{{ $labels.link }}}} in the last {w}."),
        _rule("SpikewireProbesLost",
              f"increase({selector(C.PROBES_LOST)}[{w}]) > 0",
              "warning",
              "loop probes from node {{ $labels.node }} are lost",
              f"{{{{ $value | humanize }}}} loop probes sent by node {{{{ $labels.node }}}} in the last {w} never "
              "came back: a node or link of the loop is down or dropping."),
        _rule("SpikewireTickOverruns",
              f"rate({selector(C.OVERRUNS)}[{w}]) / rate({selector(C.TICKS)}[{w}]) > {OVERRUN_FRACTION!r}",
              "warning",
              "node {{ $labels.node }} overruns its ticks",
              "Node {{ $labels.node }} published {{ $value | humanizePercentage }} of its ticks more than one tick "
              f"late over the last {w} (alert above {OVERRUN_FRACTION:.0%}): its compute or the machine cannot keep "
              "real time.",
              duration(max(30.0, 3 * window(network)))),
        _rule("SpikewireLinkDown",
              f"{selector(C.LINK_UP)} == 0 and on(node) ({node_up} == 1)",
              "critical",
              "link {{ $labels.link }} is down",
              "Node {{ $labels.node }} has heard nothing, not even a heartbeat, on link {{ $labels.link }} for "
              f"over {network.transport.peer_timeout:g} s: its sender stopped or the network between them is cut."),
        _rule("SpikewireInterlockHeld",
              f"{selector(C.INTERLOCK)} == 1",
              "critical",
              "node {{ $labels.node }}: stimulation and programming held by the safety interlock",
              "The safety interlock of node {{ $labels.node }} holds its stimulation and device programming: one of "
              "its inputs is stale or losing packets beyond the network's [safety] limits. It releases by itself "
              "once the input is healthy again."),
        _rule("RigDown",
              f"{selector(C.RIG_UP)} == 0 and on(node) ({node_up} == 1)",
              "critical",
              "the recording rig of node {{ $labels.node }} is down",
              "Node {{ $labels.node }} has received nothing from its recording rig for over "
              f"{rig_down_for}: the rig's stream closed, its app crashed or its data stopped. Detection stops "
              "and stimuli are held (counted, never sent) until it is back; the node reconnects by itself.",
              rig_down_for),
        _rule("RigNotCalibrated",
              f"{selector(C.RIG_CALIBRATED)} == 0 and on(node) ({selector(C.RIG_UP)} == 1)",
              "warning",
              "the rig of node {{ $labels.node }} streams but its spike detector is not calibrated",
              "Node {{ $labels.node }}'s rig is up, yet its detector has not measured every channel's noise level "
              f"after {calibrate_for}: no spike is detected until it has (each channel needs the rig's "
              "calibration seconds of data; a flat or missing channel never calibrates).",
              calibrate_for),
        _rule("SpikewireConnectionsRefused",
              f"increase({selector(C.REFUSED)}[{w}]) > 0",
              "warning",
              "node {{ $labels.node }} refused connections ({{ $labels.reason }})",
              "Node {{ $labels.node }} refused {{ $value | humanize }} connections in the last "
              f"{w} ({{{{ $labels.reason }}}}): a peer with a key not in the network file, a plaintext peer on a "
              "CURVE link, or something that is not spikewire knocking on its ports."),
    ]
    return {"groups": [{"name": f"spikewire-{network.name}", "rules": rules}]}


def write_prometheus_config(network: Network, out_dir: str | Path) -> list[Path]:
    """Write ``prometheus.yml`` and ``spikewire-alerts.yml`` into ``out_dir`` (created if missing)."""
    out = Path(out_dir)
    config, rules = scrape_config(network), alert_rules(network)
    out.mkdir(parents=True, exist_ok=True)
    head = f"# Generated by spikewire from network {network.name!r}; regenerate rather than edit.\n"
    paths = []
    for name, content in ((CONFIG_FILE, config), (RULES_FILE, rules)):
        path = out / name
        path.write_text(head + "\n".join(to_yaml(content)) + "\n")
        paths.append(path)
    return paths


def to_yaml(value, indent: int = 0) -> list[str]:
    """Block-style YAML lines for dicts, lists, strings, numbers and booleans (enough for these files;
    strings are JSON-quoted, which YAML reads as double-quoted scalars)."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines += [f"{pad}{key}:", *to_yaml(item, indent + 2)]
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                sub = to_yaml(item, indent + 2)
                lines += [f"{pad}- {sub[0][indent + 2:]}", *sub[1:]]
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return lines
    return [pad + _scalar(value)]


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if value == {} or value == []:
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML here: {value!r}")
