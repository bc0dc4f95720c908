"""Service, HorizontalPodAutoscaler, PodDisruptionBudget and ServiceMonitor."""

from __future__ import annotations

import pytest
from builders_factory import build_hpa, build_pdb, build_service, build_service_monitor, make_bems, with_spec

from bem_operator.builders import BuildOptions
from bem_operator.builders.autoscaling import quantity


METRICS = {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}


def test_service_defaults_to_cluster_ip_on_8080_targeting_http_plus_metrics():
    svc = build_service(make_bems(name="chat"))
    assert svc["apiVersion"] == "v1"
    assert svc["spec"] == {
        "type": "ClusterIP",
        "selector": {"app.kubernetes.io/instance": "chat", "bem.ai/service": "chat"},
        "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}, METRICS],
    }


def test_service_type_port_and_node_port():
    svc = build_service(with_spec(service={"type": "NodePort", "port": 80, "nodePort": 30080}))
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080},
        METRICS]


def test_hpa_scales_the_deployment_on_request_rate():
    hpa = build_hpa(with_spec(autoscaling={"minReplicas": 2, "maxReplicas": 8, "targetRequestsPerSecond": 25}))
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
    assert spec["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "bem_requests_per_second"},
        "target": {"type": "AverageValue", "averageValue": "25"}}}]
    assert "behavior" not in spec


def test_hpa_defaults():
    spec = build_hpa(with_spec(autoscaling={"maxReplicas": 3}))["spec"]
    assert spec["minReplicas"] == 1
    assert spec["metrics"][0]["pods"]["target"]["averageValue"] == "10"


def test_hpa_cpu_and_memory_targets_and_behavior():
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 300,
                              "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}}
    bems = with_spec(
        autoscaling={"maxReplicas": 5, "targetCPUUtilization": 70, "targetMemoryUtilization": 80,
                     "behavior": behavior},
        resources={"requests": {"cpu": "1", "memory": "1Gi"}})
    spec = build_hpa(bems)["spec"]
    assert [m["type"] for m in spec["metrics"]] == ["Pods", "Resource", "Resource"]
    assert spec["metrics"][1]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert spec["metrics"][2]["resource"] == {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}
    assert spec["behavior"] == behavior


@pytest.mark.parametrize("value, expected", [(10, "10"), (2.5, "2500m"), (0.25, "250m"), (100.0, "100"),
                                             (0.0001, "1m")])
def test_request_rate_targets_are_quantities(value, expected):
    assert quantity(value) == expected


def test_pdb_defaults_to_max_unavailable_one():
    pdb = build_pdb(make_bems())
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {
        "selector": {"matchLabels": {"app.kubernetes.io/instance": "demo", "bem.ai/service": "demo"}},
        "maxUnavailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


@pytest.mark.parametrize("budget, key, value", [
    ({"minAvailable": 1}, "minAvailable", 1),
    ({"minAvailable": "50%"}, "minAvailable", "50%"),
    ({"maxUnavailable": "25%"}, "maxUnavailable", "25%"),
])
def test_pdb_min_available_or_max_unavailable(budget, key, value):
    spec = build_pdb(with_spec(disruptionBudget=budget))["spec"]
    assert spec[key] == value
    assert {"minAvailable", "maxUnavailable"} & set(spec) == {key}


def test_service_monitor_scrapes_the_metrics_port_at_the_interval():
    sm = build_service_monitor(with_spec(monitoring={"interval": "15s"}), BuildOptions())
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"] == {
        "selector": {"matchLabels": {"app.kubernetes.io/instance": "demo", "bem.ai/service": "demo"}},
        "endpoints": [{"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s"}],
    }


def test_service_monitor_default_interval():
    sm = build_service_monitor(make_bems(), BuildOptions())
    assert sm["spec"]["endpoints"][0]["interval"] == "30s"
