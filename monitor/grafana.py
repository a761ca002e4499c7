"""A Grafana dashboard for a network, generated from its file and the metric catalogue.

``dashboard(network)`` returns JSON that imports as is (Dashboards > New > Import): every panel and
query uses the ``datasource`` template variable, so the importer picks a Prometheus data source instead
of a uid baked in here. The panels: nodes up, population rates, memristor resistance, per-link latency
p50/p99 and one latency heatmap per link, drops / sequence gaps / malformed packets, rig health (up,
calibrated, stimulation consumer, stimuli held and refused), tick compute p99, tick overruns, and the
loop probe's round trip.

The catch: rates use Grafana's ``$__rate_interval``, which is right only when the data source's
"Scrape interval" setting matches the network's ``[monitor] scrape_interval`` (Grafana assumes 15 s).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from spikewire.config.network import Network
from spikewire.monitor import catalogue as C
from spikewire.monitor.prometheus_config import JOB, selector
from spikewire.nodes.figures import AGGREGATE_ABOVE

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
WIDTH = 24  # Grafana's grid is 24 columns wide


def _label_value(text: str) -> str:
    """A PromQL string literal (JSON's escapes are PromQL's)."""
    return json.dumps(text)


def _rate(metric: C.Metric, suffix: str = "", match: str = "") -> str:
    series = selector(metric, suffix)
    if match:
        series = series[:-1] + f", {match}}}"
    return f"rate({series}[{RATE}])"


def _quantile(q: float, metric: C.Metric, by: str, match: str = "") -> str:
    return f"histogram_quantile({q:g}, sum by ({by}, le) ({_rate(metric, '_bucket', match)}))"


def _target(expr: str, legend: str, **extra) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True, "instant": False,
            **extra}


class _Layout:
    """Places panels left to right, top to bottom, and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = self.y = self.row_h = 0

    def add(self, panel: dict, w: int, h: int) -> None:
        if self.x + w > WIDTH:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        for i, t in enumerate(panel.get("targets", [])):
            t["refId"] = chr(ord("A") + i)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def _timeseries(title: str, description: str, targets: list[dict], unit: str, bars: bool = False) -> dict:
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 40 if bars else 10,
              "showPoints": "never", "spanNulls": False, "axisPlacement": "auto",
              "scaleDistribution": {"type": "linear"}, "stacking": {"mode": "none", "group": "A"}}
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                    "tooltip": {"mode": "multi", "sort": "none"}},
    }


def _heatmap(title: str, description: str, expr: str) -> dict:
    return {
        "type": "heatmap", "title": title, "description": description, "datasource": DATASOURCE,
        "targets": [_target(expr, "{{le}}", format="heatmap")],
        "fieldConfig": {"defaults": {"custom": {"scaleDistribution": {"type": "linear"},
                                                "hideFrom": {"legend": False, "tooltip": False, "viz": False}}},
                        "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"axisPlacement": "left", "unit": "s", "reverse": False},
            "rowsFrame": {"layout": "le"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark", "scale": "exponential",
                      "exponent": 0.5, "steps": 64, "reverse": False},
            "filterValues": {"le": 1e-9},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
            "legend": {"show": True},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
        },
    }


def _stat_up(expr: str) -> dict:
    return {
        "type": "stat", "title": "Nodes up", "description": "1 while Prometheus can scrape the node.",
        "datasource": DATASOURCE, "targets": [_target(expr, "{{node}} ({{site}})", instant=True, range=False)],
        "fieldConfig": {"defaults": {
            "mappings": [{"type": "value", "options": {"0": {"text": "down", "color": "red"},
                                                       "1": {"text": "up", "color": "green"}}}],
            "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                         {"color": "green", "value": 1}]},
            "unit": "none"}, "overrides": []},
        "options": {"colorMode": "background", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
                    "textMode": "value_and_name",
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


def _resistance_targets(network: Network) -> list[dict]:
    """Each device's resistance, but a node of more than AGGREGATE_ABOVE devices as its mean, min and max (a
    1,000-device crossbar is three lines, not 1,000)."""
    big = [name for name, spec in network.nodes.items() if len(spec.declaration.devices) > AGGREGATE_ABOVE]
    if not big:
        return [_target(selector(C.RESISTANCE), "{{node}} {{device}}")]
    nodes = _label_value("|".join(re.escape(n) for n in big))
    out = [_target(selector(C.RESISTANCE)[:-1] + f", node!~{nodes}}}", "{{node}} {{device}}")]
    for agg in ("avg", "min", "max"):
        out.append(_target(f"{agg} by (node) ({selector(C.RESISTANCE)[:-1]}, node=~{nodes}}})",
                           f"{{{{node}}}} {'mean' if agg == 'avg' else agg}"))
    return out


def _rig_health() -> dict:
    """Every recording rig's health on one panel (no data for a network without rigs): up, calibrated and
    stimulation consumer as 0/1 lines, and stimuli held or refused per scrape window as bars."""
    panel = _timeseries(
        "Rig health",
        f"{C.RIG_UP.help} {C.RIG_CALIBRATED.help} {C.STIM_READY.help} Bars: stimuli held (rig down, or no "
        "stimulation consumer) and refused by the hard limits, per scrape window. No data: no node reads a rig.",
        [_target(selector(C.RIG_UP), "up {{node}}"),
         _target(selector(C.RIG_CALIBRATED), "calibrated {{node}}"),
         _target(selector(C.STIM_READY), "stim consumer {{node}}"),
         _target(f"sum by (node) (increase({selector(C.STIM_HELD)}[{RATE}]))", "held, rig down {{node}}"),
         _target(f"sum by (node) (increase({selector(C.STIM_NO_CONSUMER)}[{RATE}]))", "held, no consumer {{node}}"),
         _target(f"sum by (node) (increase({selector(C.STIM_REFUSED)}[{RATE}]))", "refused {{node}}")],
        "short")
    # The held and refused counts as bars on their own axis, the 0/1 states as lines.
    panel["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byRegexp", "options": "^(held|refused).*"},
         "properties": [{"id": "custom.drawStyle", "value": "bars"}, {"id": "custom.fillOpacity", "value": 40},
                        {"id": "custom.axisPlacement", "value": "right"}]}]
    return panel


def dashboard(network: Network) -> dict:
    """The dashboard JSON (a dict) for ``network``."""
    lay = _Layout()
    lay.add(_stat_up(f'up{{job="{JOB}"}}'), WIDTH, 4)
    lay.add(_timeseries("Population rates", C.RATE.help,
                        [_target(selector(C.RATE), "{{node}} {{population}}")], "hertz"), 12, 8)
    lay.add(_timeseries("Memristor resistance", C.RESISTANCE.help + f" Nodes of more than {AGGREGATE_ABOVE} "
                        "devices: their mean, min and max.", _resistance_targets(network), "ohm"), 12, 8)
    lay.add(_timeseries("Link latency p50 / p99", C.LATENCY.help,
                        [_target(_quantile(0.5, C.LATENCY, "link"), "p50 {{link}}"),
                         _target(_quantile(0.99, C.LATENCY, "link"), "p99 {{link}}")], "s"), WIDTH, 8)
    for link in network.links:
        expr = f"sum by (le) ({_rate(C.LATENCY, '_bucket', 'link=' + _label_value(link.label))})"
        lay.add(_heatmap(f"Latency {link.label}", f"{C.LATENCY.help} Packets per second in each bucket.", expr),
                12, 8)
    lay.add(_timeseries(
        "Send drops, sequence gaps, malformed packets",
        "Packets lost per scrape window: dropped at a full send queue (by output port), missing from a "
        "link's sequence, or dropped as malformed (by reason).",
        [_target(f"sum by (node, port) (increase({selector(C.SEND_DROPS)}[{RATE}]))", "dropped {{node}} {{port}}"),
         _target(f"sum by (link) (increase({selector(C.GAPS)}[{RATE}]))", "gaps {{link}}"),
         _target(f"sum by (link, reason) (increase({selector(C.MALFORMED)}[{RATE}]))",
                 "malformed {{link}} {{reason}}")],
        "short", bars=True), WIDTH, 8)
    if network.sites is not None:  # links between labs: clocks, liveness, security, the interlock
        lay.add(_timeseries("Inter-site clock offset", C.CLOCK_OFFSET.help,
                            [_target(selector(C.CLOCK_OFFSET), "{{link}}")], "s"), 12, 8)
        lay.add(_timeseries("Inter-site round trip", C.RTT.help,
                            [_target(selector(C.RTT), "{{link}}")], "s"), 12, 8)
        lay.add(_timeseries("Links up", C.LINK_UP.help, [_target(selector(C.LINK_UP), "{{link}}")], "short"), 12, 8)
        lay.add(_timeseries(
            "Interlock holds, late packets, refused connections",
            "Per scrape window: interlock holds (by node), packets past their jitter-buffer time (by link and "
            "action), connections refused (by node and reason).",
            [_target(selector(C.INTERLOCK), "held {{node}}"),
             _target(f"sum by (link, action) (increase({selector(C.LATE)}[{RATE}]))", "late {{link}} {{action}}"),
             _target(f"sum by (node, reason) (increase({selector(C.REFUSED)}[{RATE}]))",
                     "refused {{node}} {{reason}}")], "short", bars=True), 12, 8)
    lay.add(_rig_health(), WIDTH, 8)
    lay.add(_timeseries("Tick compute p99", C.TICK_COMPUTE.help,
                        [_target(_quantile(0.99, C.TICK_COMPUTE, "node"), "{{node}}")], "s"), 12, 8)
    lay.add(_timeseries("Tick overruns per second", C.OVERRUNS.help,
                        [_target(_rate(C.OVERRUNS), "{{node}}")], "short"), 12, 8)
    lay.add(_timeseries("Loop probe round trip p50 / p99", C.PROBE_LATENCY.help,
                        [_target(_quantile(0.5, C.PROBE_LATENCY, "node"), "p50 from {{node}}"),
                         _target(_quantile(0.99, C.PROBE_LATENCY, "node"), "p99 from {{node}}")], "s"), WIDTH, 8)
    return {
        "uid": re.sub(r"[^A-Za-z0-9_-]", "-", f"spikewire-{network.name}")[:40],
        "title": f"spikewire: {network.name}",
        "description": network.description,
        "tags": ["spikewire"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-15m", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "refresh": "5s",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": [{
            "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "includeAll": False,
            "multi": False,
        }]},
        "panels": lay.panels,
    }


def write_dashboard(network: Network, path: str | Path) -> Path:
    """Write the dashboard JSON to ``path`` (its directory created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dashboard(network), indent=2) + "\n")
    return path
