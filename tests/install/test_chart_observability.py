"""The chart's optional observability objects speak the runtime's and the operator's names."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from bem_operator.builders import REQUEST_RATE_METRIC
from bem_operator.builders.keda import GENERATION_ENDPOINTS
from bem_runtime.metrics import Metrics

from .support import Helm, by_kind

ENABLE_ALL = ("--set", "dashboards.enabled=true,prometheusRule.enabled=true,"
              "prometheusAdapter.enabled=true")
METRIC_NAME = re.compile(r"\b(bem_[a-z_]+)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Grafana variables are not PromQL: substitute what Grafana would before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$service": ".*"}
# The labels prometheus-operator gives every target of a ServiceMonitor; with honorLabels off
# (ours), a runtime label of the same name is stored as exported_<name>.
TARGET_LABELS = frozenset({"namespace", "service", "pod", "container", "endpoint", "job",
                           "instance"})
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""],
            "summary": ["_count", "_sum", ""]}


def _runtime_series() -> dict[str, frozenset[str]]:
    """Every series the runtime exports (labelled or not yet observed) -> the labels it has in
    Prometheus once our ServiceMonitor scraped it."""
    registry = CollectorRegistry()
    metrics = [m for m in vars(Metrics(registry)).values() if isinstance(m, MetricWrapperBase)]
    assert {m._name for m in metrics} == {f.name for f in registry.collect()}
    series = {}
    for metric in metrics:
        own = {f"exported_{label}" if label in TARGET_LABELS else label
               for label in metric._labelnames}
        for suffix in SUFFIXES[metric._type]:
            series[metric._name + suffix] = frozenset(
                own | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set()))
    return series


def _runtime_metric_names() -> set[str]:
    return set(_runtime_series())


class LabelCheck:
    """Walks a PromQL expression: every runtime series it selects exists, and every label it
    matches, groups or joins by, or shows in its legend, is one those series have. Series of
    other exporters (kube-state-metrics) are not checked: they may carry any label."""

    def __init__(self, series: dict[str, frozenset[str]]) -> None:
        self.series = series
        self.problems: list[str] = []

    def labels(self, node: Any) -> frozenset[str] | None:
        """The labels of the node's result; None when they are not known (another exporter)."""
        p = promql_parser
        if isinstance(node, p.VectorSelector):
            return self._selector(node)
        if isinstance(node, p.MatrixSelector):
            return self._selector(node.vector_selector)
        if isinstance(node, (p.ParenExpr, p.UnaryExpr, p.SubqueryExpr)):
            return self.labels(node.expr)
        if isinstance(node, p.Call):
            return _union([self.labels(a) for a in node.args if isinstance(a, p.Expr)])
        if isinstance(node, p.AggregateExpr):
            inner = self.labels(node.expr)
            if node.modifier is None:
                return frozenset()
            self.need(node.modifier.labels, inner, "grouped by")
            if node.modifier.type == p.AggModifierType.By:
                return frozenset(node.modifier.labels)
            return None if inner is None else inner - set(node.modifier.labels)
        if isinstance(node, p.BinaryExpr):
            return self._binary(node)
        return frozenset()  # a number or a string

    def _selector(self, node: Any) -> frozenset[str] | None:
        if node.name is None or not node.name.startswith("bem_"):
            return None
        have = self.series.get(node.name)
        if have is None:
            self.problems.append(f"{node.name} is not a series of the runtime")
            return None
        matchers = [*node.matchers.matchers, *(m for ms in node.matchers.or_matchers for m in ms)]
        self.need([m.name for m in matchers if m.name != "__name__"], have, f"matched on {node.name}")
        return have

    def _binary(self, node: Any) -> frozenset[str] | None:
        lhs, rhs = self.labels(node.lhs), self.labels(node.rhs)
        both = _union([lhs, rhs])
        modifier = node.modifier
        if modifier is None:
            return both
        if modifier.matching is not None:
            self.need(modifier.matching.labels, both, "joined on")
        group = frozenset(modifier.group_labels or ())
        self.need(group, both, "grouped in a join by")
        card = promql_parser.VectorMatchCardinality
        kept = lhs if modifier.card == card.ManyToOne else rhs if modifier.card == card.OneToMany else both
        return _union([kept, group])

    def need(self, names: Any, have: frozenset[str] | None, how: str) -> None:
        missing = sorted(set(names) - have) if have is not None else []
        if missing:
            self.problems.append(f"labels {missing} {how}: the series have only {sorted(have)}")


def _union(parts: list[frozenset[str] | None]) -> frozenset[str] | None:
    return None if any(p is None for p in parts) else frozenset().union(*parts)


def _promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _label_problems(expr: str, legend: str = "") -> list[str]:
    """What LabelCheck finds in one expression (a Grafana label_values(selector, label) too) and
    in the labels its legend shows."""
    check = LabelCheck(_runtime_series())
    expr = _promql(expr)
    shown = LEGEND_LABEL.findall(legend)
    if expr.startswith("label_values("):  # a Grafana function: a selector and one label
        expr, _, label = expr.removeprefix("label_values(").removesuffix(")").rpartition(",")
        shown.append(label.strip())
    check.need(shown, check.labels(promql_parser.parse(expr)), "shown")
    return check.problems


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
                           "Routing decisions per expert", "Safety events",
                           "Requests per checkpoint", "Expert usage per checkpoint"}
    assert "histogram_quantile(0.95" in titles["p95 latency"][0]
    assert 'status=~"5.."' in titles["Error rate"][0]
    assert "by (expert)" in titles["Routing decisions per expert"][0]
    [per_checkpoint] = titles["Requests per checkpoint"]
    assert "bem_checkpoint_requests_total" in per_checkpoint and "checkpoint)" in per_checkpoint
    [usage] = titles["Expert usage per checkpoint"]
    assert "bem_routing_decisions_total" in usage and "checkpoint, expert)" in usage
    used = _used_metrics([e for exprs in titles.values() for e in exprs])
    assert used and used <= _runtime_metric_names(), used - _runtime_metric_names()


def test_queries_legends_and_alerts_use_only_labels_the_series_have(helm: Helm) -> None:
    objects = helm.template(*ENABLE_ALL)
    dashboard = json.loads(_config_map(objects, "-dashboard")["data"]["bem-overview.json"])
    queries = [(t["expr"], t.get("legendFormat", "")) for p in dashboard["panels"]
               for t in p["targets"]]
    queries += [(v["query"]["query"], "") for v in dashboard["templating"]["list"]
                if v["type"] == "query"]
    [rule] = by_kind(objects, "PrometheusRule")
    queries += [(r["expr"], "") for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(queries) >= 13
    problems = {expr: found for expr, legend in queries if (found := _label_problems(expr, legend))}
    assert not problems, problems


@pytest.mark.parametrize(("expr", "legend", "wrong"), [
    ('sum by (checkpont) (rate(bem_checkpoint_requests_total[5m]))', "", "checkpont"),
    ('rate(bem_routing_decisions_total{chekpoint="a"}[5m])', "", "chekpoint"),
    ('sum by (checkpoint) (rate(bem_routing_decision_total[5m]))', "", "bem_routing_decision_total"),
    ('sum by (expert) (rate(bem_routing_decisions_total[5m])) / ignoring (exprt) '
     'sum(rate(bem_routing_decisions_total[5m]))', "", "exprt"),
    ('sum by (expert) (rate(bem_routing_decisions_total[5m]))', "{{checkpoint}}", "checkpoint"),
    ("label_values(bem_requests_total, servce)", "", "servce"),
])
def test_the_label_check_catches_a_misspelt_metric_or_label(expr: str, legend: str,
                                                            wrong: str) -> None:
    problems = _label_problems(expr, legend)
    assert problems and wrong in " ".join(problems), problems


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
        expr = _promql(expr)
        if expr.startswith("label_values("):  # a Grafana function around a selector
            expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
        try:
            promql_parser.parse(expr)
        except ValueError as exc:
            pytest.fail(f"invalid PromQL ({exc}): {expr}")
