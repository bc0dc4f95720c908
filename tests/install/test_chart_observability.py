"""The chart's optional observability objects speak the runtime's and the operator's names."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry

from bem_operator.builders import REQUEST_RATE_METRIC
from bem_operator.builders.keda import GENERATION_ENDPOINTS
from bem_runtime.metrics import Metrics

from .support import Helm, by_kind

ENABLE_ALL = ("--set", "dashboards.enabled=true,prometheusRule.enabled=true,"
              "prometheusAdapter.enabled=true")
METRIC_NAME = re.compile(r"\b(bem_[a-z_]+)")
# Grafana variables are not PromQL: substitute what Grafana would before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$service": ".*"}


def _runtime_metric_names() -> set[str]:
    """Every series name the runtime exports, labelled or not yet observed."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"],
                "gauge": [""], "summary": ["_count", "_sum", ""]}
    registry = CollectorRegistry()
    Metrics(registry)
    return {family.name + suffix for family in registry.collect()
            for suffix in suffixes.get(family.type, [""])}


def _config_map(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    [found] = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith(suffix)]
    return found


def _used_metrics(expressions: list[str]) -> set[str]:
    return {m for expr in expressions for m in METRIC_NAME.findall(expr)}


def test_dashboard_panels_cover_the_promised_views(helm: Helm) -> None:
    config_map = _config_map(helm.template(*ENABLE_ALL), "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["bem-overview.json"])
    titles = {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"]}
    assert set(titles) == {"Request rate", "p95 latency", "Error rate",
                           "Routing decisions per expert", "Safety events"}
    assert "histogram_quantile(0.95" in titles["p95 latency"][0]
    assert 'status=~"5.."' in titles["Error rate"][0]
    assert "by (expert)" in titles["Routing decisions per expert"][0]
    used = _used_metrics([e for exprs in titles.values() for e in exprs])
    assert used and used <= _runtime_metric_names(), used - _runtime_metric_names()


def test_alerts_cover_errors_latency_safety_and_readiness(helm: Helm) -> None:
    [rule] = by_kind(helm.template(*ENABLE_ALL, "--set", "prometheusRule.p95LatencySeconds=3"),
                     "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {"BEMServiceHighErrorRate", "BEMServiceHighLatencyP95",
                           "BEMServiceSafetyViolations", "BEMServicePodsNotReady"}
    assert alerts["BEMServiceHighLatencyP95"]["expr"].rstrip().endswith("> 3")
    assert "bem-operator" in alerts["BEMServicePodsNotReady"]["expr"]
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    runtime_exprs = [a["expr"] for name, a in alerts.items() if name != "BEMServicePodsNotReady"]
    used = _used_metrics(runtime_exprs)
    assert used and used <= _runtime_metric_names(), used - _runtime_metric_names()


def test_adapter_rule_publishes_the_metric_the_autoscaler_reads(helm: Helm) -> None:
    config_map = _config_map(helm.template(*ENABLE_ALL), "-prometheus-adapter")
    [rule] = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    series = METRIC_NAME.findall(rule["seriesQuery"])
    assert series == ["bem_requests_total"] and "bem_requests_total" in _runtime_metric_names()
    # prometheus-adapter renames a matching series by the rule's regex and template.
    name = re.sub(rule["name"]["matches"], rule["name"]["as"], series[0])
    assert name == REQUEST_RATE_METRIC
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    # The same generation routes as the KEDA provider's query: probes and scrapes left out.
    routes = "|".join(GENERATION_ENDPOINTS)
    assert rule["metricsQuery"].startswith(
        f'sum(rate(<<.Series>>{{<<.LabelMatchers>>,exported_endpoint=~"{routes}"}}[2m]))'), \
        rule["metricsQuery"]


def test_observability_objects_are_off_by_default(helm: Helm) -> None:
    kinds = {o["kind"] for o in helm.template()}
    assert not kinds & {"ConfigMap", "PrometheusRule", "ServiceMonitor"}


def _all_expressions(helm: Helm) -> list[str]:
    objects = helm.template(*ENABLE_ALL)
    dashboard = json.loads(_config_map(objects, "-dashboard")["data"]["bem-overview.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    [rule] = by_kind(objects, "PrometheusRule")
    exprs += [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    return exprs


def test_every_promql_expression_parses(helm: Helm) -> None:
    expressions = _all_expressions(helm)
    assert len(expressions) >= 9
    for expr in expressions:
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        if expr.startswith("label_values("):  # a Grafana function around a selector
            expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
        try:
            promql_parser.parse(expr)
        except ValueError as exc:
            pytest.fail(f"invalid PromQL ({exc}): {expr}")
