"""The request-rate autoscaling loop, live: the Prometheus operator runs one Prometheus that
scrapes the runtime pods because of the ServiceMonitor the BEM operator creates, KEDA turns
the ScaledObject the BEM operator writes into an HPA, and the real HPA controller scales the
real runtime pods up under a request loop and back down after it, with no failed request.

The chart's Prometheus pieces are proven on the same data: its PrometheusRule alerts load and
evaluate without error, its prometheus-adapter rule's query returns the per-pod rate an HPA
on the `HPA` provider would read, and every query of its dashboard runs.

Requests go only to ClusterIPs that kube-proxy serves on this machine (checked first); every
load loop is bounded in count and time.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from devcluster import addons, images, realnode
from devcluster.health import wait_until
from devcluster.pytest_plugin import fresh_namespace
from install.support import CHART

from .conftest import OPERATOR_NS
from .support import (Load, apply, baked_service, bems_ready, figure, get_json, post,
                      runtime_pods, service_url)

TARGET_RPS = 1  # per pod; a few request loops make several times that
MAX_REPLICAS = 3
# Each loop a few requests a second: several times the target in all, and well under the
# runtime's per-client rate limit (20/s per pod), which would answer 429 to anything faster.
PAUSE = 0.25
# Chart values the live stack needs: where KEDA's triggers find Prometheus, and the chart's
# Prometheus pieces switched on.
CHART_VALUES = {
    "autoscaling.keda.prometheusAddress": addons.PROMETHEUS_URL,
    "prometheusRule.enabled": "true",
    "prometheusAdapter.enabled": "true",
    "dashboards.enabled": "true",
}


@pytest.fixture(scope="module")
def prometheus(real_cluster: Any, operator_release: str, helm_env: dict) -> None:
    """The add-ons installed (addons.query reaches their Prometheus), the operator release
    pointed at them."""
    report = images.ensure_all(realnode.NodeLayout(real_cluster.state_dir), addons.IMAGES)
    for ref, row in report.items():
        figure(f"image {ref}: {row['bytes'] / 2**20:.0f} MiB, {row['seconds']}s")
    figure(f"add-ons ready in {addons.install(real_cluster):.0f}s")
    # The operator finds out at start which optional APIs (ServiceMonitor, ScaledObject) are
    # served: the upgrade changes its settings, so its pod starts again and sees KEDA's.
    sets = [arg for key, value in CHART_VALUES.items() for arg in ("--set", f"{key}={value}")]
    out = subprocess.run(
        [str(real_cluster.helm_bin), "upgrade", operator_release, str(CHART), "-n", OPERATOR_NS,
         "--reuse-values", "--wait", "--timeout", "4m", *sets],
        capture_output=True, text=True, env=helm_env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    real_cluster.kubectl("rollout", "status", "-n", OPERATOR_NS, "deployment",
                         "-l", "app.kubernetes.io/name=bem-operator", "--timeout=180s")


query = addons.query  # a query Prometheus refuses raises, failing the test


def value(series: list[dict[str, Any]]) -> float:
    return sum(float(s["value"][1]) for s in series)


def keda_service(name: str) -> dict[str, Any]:
    return baked_service(name, monitoring={"serviceMonitor": True, "interval": "5s"}, autoscaling={
        "provider": "KEDA", "minReplicas": 1, "maxReplicas": MAX_REPLICAS,
        "targetRequestsPerSecond": TARGET_RPS,
        # Short windows so the test sees both directions in minutes.
        "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 5}]},
            "scaleDown": {"stabilizationWindowSeconds": 10,
                          "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}]},
        },
    })


def replicas(cluster: Any, namespace: str, name: str) -> tuple[int, int]:
    """(spec.replicas, readyReplicas) of the Deployment."""
    dep = get_json(cluster, "deployment", name, "-n", namespace)
    return dep["spec"].get("replicas", 0), dep["status"].get("readyReplicas", 0)


@pytest.fixture(scope="module")
def scaled(real_cluster: Any, prometheus: None) -> Iterator[tuple[str, str, str]]:
    """(namespace, name, Service URL) of one KEDA-scaled BEMService, shared by this module."""
    name = "scaled"
    with fresh_namespace(real_cluster, "a") as namespace:
        apply(real_cluster, namespace, keda_service(name))
        bems_ready(real_cluster, namespace, name)
        yield namespace, name, service_url(real_cluster, namespace, name)


def test_prometheus_scrapes_the_pods_the_service_monitor_selects(
        real_cluster: Any, prometheus: None, scaled: tuple[str, str, str]) -> None:
    real_ns, name, _ = scaled
    pods = {p["metadata"]["name"] for p in runtime_pods(real_cluster, real_ns, name)}
    up: list[dict[str, Any]] = []

    def scraped() -> bool:
        up[:] = query(f'up{{namespace="{real_ns}"}} == 1')
        return {s["metric"].get("pod") for s in up} == pods
    wait_until(f"Prometheus to scrape {sorted(pods)}", scraped, timeout=120, interval=2)
    assert {s["metric"]["service"] for s in up} == {name}, up


def test_keda_scales_on_request_rate_up_and_down_without_failed_requests(
        real_cluster: Any, prometheus: None, scaled: tuple[str, str, str]) -> None:
    """Scale-up under three request loops, the chart's adapter rule, status and dashboard read
    on the same data while they run, then scale-down under a light loop; no request fails."""
    real_ns, name, url = scaled
    so = get_json(real_cluster, "scaledobject", name, "-n", real_ns)
    assert so["spec"]["maxReplicaCount"] == MAX_REPLICAS, so["spec"]
    wait_until("the ScaledObject to be Ready", lambda: any(
        c["type"] == "Ready" and c["status"] == "True" for c in get_json(
            real_cluster, "scaledobject", name, "-n", real_ns).get("status", {}).get(
            "conditions", [])), timeout=120, interval=2)
    assert replicas(real_cluster, real_ns, name) == (1, 1)

    began = time.monotonic()
    seen: list[tuple[float, int, int]] = []
    loads = [Load(url, max_requests=4000, max_seconds=300, pause=PAUSE) for _ in range(3)]
    try:
        for load in loads:
            load.__enter__()

        def scaled_up() -> bool:
            seen.append((time.monotonic() - began, *replicas(real_cluster, real_ns, name)))
            return seen[-1][1:] == (MAX_REPLICAS, MAX_REPLICAS)
        wait_until(f"{MAX_REPLICAS} ready replicas under load", scaled_up, timeout=240,
                   interval=2)
        up_seconds = time.monotonic() - began
        _check_adapter_rule(real_cluster, real_ns, name, loads)
        _check_status(real_cluster, real_ns, name)
        _check_dashboard(real_cluster, real_ns, name, url)
    finally:
        for load in loads:
            load.stop()
    heavy = sum(len(load.results) for load in loads)
    figure(f"KEDA scale-up 1->{MAX_REPLICAS}: {up_seconds:.0f}s after the load began, "
           f"{heavy} requests, {sum(len(load.failures) for load in loads)} failed")

    # A light loop keeps traffic flowing through the pods that go away.
    down_began = time.monotonic()
    with Load(url, max_requests=1000, max_seconds=300, pause=1.0) as light:
        def scaled_down() -> bool:
            seen.append((time.monotonic() - began, *replicas(real_cluster, real_ns, name)))
            return seen[-1][1:] == (1, 1) and len(runtime_pods(real_cluster, real_ns, name)) == 1
        wait_until("back to one replica after the load", scaled_down, timeout=300, interval=2)
        light.wait_for(len(light.results) + 3)
    figure(f"KEDA scale-down {MAX_REPLICAS}->1: {time.monotonic() - down_began:.0f}s after the "
           f"load stopped; {light.summary()}")
    assert max(r for _, r, _ in seen) == MAX_REPLICAS, seen
    failures = [f for load in [*loads, light] for f in load.failures]
    assert not failures, failures[:5]


def _adapter_rule(real_cluster: Any) -> dict[str, Any]:
    cm = get_json(real_cluster, "configmap", "-n", OPERATOR_NS,
                  "-l", "app.kubernetes.io/name=bem-operator")["items"]
    (adapter,) = [c for c in cm if c["metadata"]["name"].endswith("-prometheus-adapter")]
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    return rule


def _check_adapter_rule(real_cluster: Any, namespace: str, name: str, loads: list[Load]) -> None:
    """The chart's prometheus-adapter rule, expanded the way prometheus-adapter expands it for
    `kubectl get --raw /apis/custom.metrics.k8s.io/.../pods/*/bem_requests_per_second`: one
    value per pod, which the HPA of the `HPA` provider averages and compares to its target."""
    rule = _adapter_rule(real_cluster)
    series = query(rule["seriesQuery"])
    assert any(s["metric"].get("namespace") == namespace for s in series), series[:3]
    pods = sorted(p["metadata"]["name"] for p in runtime_pods(real_cluster, namespace, name))
    metric = rule["seriesQuery"].split("{")[0]
    matchers = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
    expr = rule["metricsQuery"].replace("<<.Series>>", metric) \
        .replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")
    # Every pod's series, once each has the two samples rate() needs.
    per_pod: list[dict[str, Any]] = []

    def every_pod() -> bool:
        per_pod[:] = query(expr)
        return {s["metric"]["pod"] for s in per_pod} == set(pods)
    wait_until(f"the adapter rule's per-pod rate of {pods}", every_pod, timeout=90, interval=2)
    # What the clients sent over the rule's rate window, against what Prometheus says the pods
    # answered over it.
    amount, unit = re.search(r"\[(\d+)([smh])\]", rule["metricsQuery"]).groups()
    window = int(amount) * {"s": 1, "m": 60, "h": 3600}[unit]
    now = time.monotonic()
    sent = sum(1 for load in loads for t, _, _ in load.results if t > now - window) / window
    served = value(per_pod)
    figure(f"prometheus-adapter rule: {len(per_pod)} pods, {served:.2f} req/s in all "
           f"(clients sent {sent:.2f} req/s over the rule's {window}s window)")
    assert all(float(s["value"][1]) > 0 for s in per_pod), per_pod
    assert 0.5 * sent < served < 1.5 * sent, (served, sent)


def _check_status(real_cluster: Any, namespace: str, name: str) -> None:
    """The BEMService says who scales it and what that autoscaler reads."""
    status = get_json(real_cluster, "bemservice", name, "-n", namespace)["status"]
    auto = status["autoscaling"]
    figure(f"status.autoscaling under load: {json.dumps(auto)}")
    assert auto["provider"] == "KEDA", auto
    assert auto["desiredReplicas"] == MAX_REPLICAS, auto


def test_chart_alert_rules_load_and_evaluate(prometheus: None) -> None:
    groups: list[dict[str, Any]] = []

    def evaluated() -> bool:
        groups[:] = [g for g in addons.prometheus_api("rules")["groups"]
                     if g["name"] == "bem-services"]
        return bool(groups) and all(r.get("lastEvaluation", "").startswith("2")
                                    and not r["lastEvaluation"].startswith("0001")
                                    for r in groups[0]["rules"])
    wait_until("the chart's alert rules to be evaluated", evaluated, timeout=120, interval=2)
    rules = groups[0]["rules"]
    assert len(rules) >= 3, rules
    assert all(r["health"] == "ok" and not r.get("lastError") for r in rules), rules


def _check_dashboard(real_cluster: Any, namespace: str, name: str, url: str) -> None:
    """Every query of the chart's Grafana dashboard, for this service, returns data from this
    Prometheus under load; bad requests show in the error-rate panel's 4xx series."""
    cms = get_json(real_cluster, "configmap", "-n", OPERATOR_NS,
                   "-l", "app.kubernetes.io/name=bem-operator")["items"]
    (board,) = [json.loads(text) for cm in cms for key, text in cm.get("data", {}).items()
                if key.endswith(".json")]
    grafana = {"$__rate_interval": "1m", "$namespace": namespace, "$service": name}

    def concrete(expr: str) -> str:
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        return expr
    targets = {(panel["title"], target["refId"]): concrete(target["expr"])
               for panel in board["panels"] for target in panel.get("targets", [])}
    assert len(targets) >= 5, targets
    client_errors = targets[("Error rate", "B")]

    def bad_request_shows() -> bool:
        # One refused request per check, so the 4xx counter grows between scrapes (rate() of a
        # series counts no increase before its first sample).
        status, body = post(f"{url}/v1/generate", {"prompt": 5})
        assert 400 <= status < 500, (status, body)
        return value(query(client_errors)) > 0
    wait_until("the 4xx series of the error-rate panel", bad_request_shows, timeout=90,
               interval=2)
    empty = [key for key, expr in targets.items() if not query(expr)]
    variables = [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    for var in variables:  # label_values(<selector>, <label>): the selector has series
        selector = concrete(var.removeprefix("label_values(").rsplit(",", 1)[0])
        if not query(selector):
            empty.append(var)
    figure(f"dashboard: {len(targets)} panel queries and {len(variables)} variables evaluated "
           f"under load, {len(empty)} empty")
    assert not empty, empty


def test_the_operator_applies_every_child_once_the_live_stack_settles(
        real_cluster: Any, operator_release: str, prometheus: None,
        scaled: tuple[str, str, str]) -> None:
    """With KEDA's ScaledObject and the Prometheus operator's ServiceMonitor served, every
    child the API server answered for holds what the operator declared: no field is rewritten
    in a way that would make each periodic check apply it again (the operator says so once
    in its log when it happens), and nothing in its log is a traceback."""
    pods = get_json(real_cluster, "pods", "-n", OPERATOR_NS, "-l",
                    f"app.kubernetes.io/instance={operator_release}")["items"]
    logs = "".join(real_cluster.kubectl("logs", p["metadata"]["name"], "-n", OPERATOR_NS).stdout
                   for p in pods)
    assert "rewrote" not in logs and "Traceback" not in logs, logs[-4000:]
    real_ns, name, _ = scaled
    for kind in ("scaledobject", "servicemonitor", "deployment", "service"):
        annotations = get_json(real_cluster, kind, name, "-n", real_ns)["metadata"].get(
            "annotations") or {}
        assert annotations.get("bem.ai/applied"), f"{kind} {name} lacks the operator's digest"
