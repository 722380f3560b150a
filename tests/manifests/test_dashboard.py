"""The Grafana dashboard's PromQL is accepted by the real Prometheus of the test suite, with its
template variables substituted as Grafana would, and it reads the metrics the functions export."""

from __future__ import annotations

import json
import re

import requests

from tests.support.servers import ROOT

DASHBOARD = ROOT / "serving" / "grafana-dashboard.json"
VARIABLES = {"namespace": "models", "service": "wine", "datasource": "prometheus",
             "__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


def substitute(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"an unknown template variable in {expr}"
    return expr


def expressions(dashboard: dict) -> list[str]:
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [t["expr"] for t in inner.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # Grafana's label_values(selector, label) runs the selector as a series query
            selector, _label = LABEL_VALUES.match(variable["query"]["query"]).groups()
            found.append(selector)
    return found


def test_every_dashboard_query_parses_on_the_real_prometheus(prometheus_server):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard)
    assert len(exprs) >= 20
    for expr in exprs:
        response = requests.post(f"{prometheus_server.url}/api/v1/query", data={"query": substitute(expr)}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)


def test_the_dashboard_reads_the_exported_metric_names():
    """Every metric family the functions define that a panel needs is spelled as exported."""
    from forecast import metrics as forecast_metrics
    from scale import metrics as scale_metrics

    text = DASHBOARD.read_text()
    exported = {m._name for mod in (forecast_metrics, scale_metrics) for m in vars(mod).values()
                if hasattr(m, "_name") and hasattr(m, "_type")}
    used = set(re.findall(r"\b((?:forecast|scale)_[a-z_]+?)(?:_bucket|_count|_sum|_total|_info)?\b", text))
    assert used and used <= exported | {"scale_warm_pod_budget_pods"}, used - exported
    for title in ("Requests vs forecast", "min-scale set vs ready pods", "Cold-start requests", "Decisions by outcome",
                  "Holds and skips by reason", "Forecast quality (fleet)", "Spend: warm pods",
                  "Forecast skill vs baselines (this service)", "Services the forecast does not help"):
        assert f'"title": "{title}"' in text
