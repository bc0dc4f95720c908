"""The KEDA ScaledObject of spec.autoscaling.provider KEDA: its exact shape, the Prometheus
query (only this service's pods, only the generation endpoints) and the threshold."""

from __future__ import annotations

import pytest
from builders_factory import build_hpa, build_scaled_object, make_bems, with_spec

from bem_operator.builders import BuildOptions
from bem_operator.builders.keda import rate_window, threshold

KEDA = {"provider": "KEDA", "minReplicas": 2, "maxReplicas": 8, "targetRequestsPerSecond": 25}
QUERY = ('sum(rate(bem_requests_total{namespace="team-a",service="demo",'
         'exported_endpoint=~"/v1/generate|/api/generate|/v1/completions|/v1/chat/completions"}[120s]))')


def test_scaled_object_scales_the_deployment_on_the_pods_request_rate():
    so = build_scaled_object(with_spec(autoscaling=KEDA))
    assert (so["apiVersion"], so["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert so["metadata"]["name"] == "demo" and so["metadata"]["labels"]["bem.ai/service"] == "demo"
    assert so["metadata"]["ownerReferences"][0]["kind"] == "BEMService"
    assert so["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"},
        "minReplicaCount": 2,
        "maxReplicaCount": 8,
        "advanced": {"horizontalPodAutoscalerConfig": {"name": "keda-hpa-demo"}},
        "triggers": [{
            "type": "prometheus",
            "metricType": "AverageValue",
            "metadata": {"serverAddress": "http://prometheus-operated.monitoring.svc:9090",
                         "query": QUERY, "threshold": "25"},
        }],
    }
    assert build_hpa(with_spec(autoscaling=KEDA)) is None


def test_cpu_memory_behavior_and_prometheus_address():
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}]}}
    bems = with_spec(
        autoscaling={**KEDA, "targetCPUUtilization": 70, "targetMemoryUtilization": 80,
                     "behavior": behavior},
        resources={"requests": {"cpu": "1", "memory": "1Gi"}})
    spec = build_scaled_object(bems, BuildOptions(prometheus_address="http://10.96.0.90:9090"))["spec"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"] == {"name": "keda-hpa-demo",
                                                                 "behavior": behavior}
    assert spec["triggers"][0]["metadata"]["serverAddress"] == "http://10.96.0.90:9090"
    assert spec["triggers"][1:] == [
        {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}},
        {"type": "memory", "metricType": "Utilization", "metadata": {"value": "80"}},
    ]


def test_query_window_follows_the_scrape_interval():
    bems = with_spec(autoscaling=KEDA, monitoring={"interval": "5s"})
    query = build_scaled_object(bems)["spec"]["triggers"][0]["metadata"]["query"]
    assert query.endswith("[20s]))")
    other = build_scaled_object(make_bems({"model": {"claimName": "m"}, "autoscaling": KEDA},
                                          name="other", namespace="team-b"))
    assert 'namespace="team-b",service="other",' in other["spec"]["triggers"][0]["metadata"]["query"]


@pytest.mark.parametrize("interval, window", [("30s", "120s"), ("15s", "60s"), ("1m30s", "360s"),
                                              ("500ms", "2s"), ("250ms", "1s"),
                                              ("1h", "14400s")])
def test_rate_window_is_four_scrape_intervals(interval, window):
    assert rate_window(interval) == window


@pytest.mark.parametrize("value, expected", [(25, "25"), (2.5, "2.5"), (0.25, "0.25"), (100.0, "100"),
                                             (0.001, "0.001")])
def test_thresholds_are_plain_decimals(value, expected):
    """KEDA parses the threshold as a float: no quantity suffixes such as 2500m."""
    assert threshold(value) == expected
    assert float(expected) == value


def test_threshold_of_a_fractional_target():
    so = build_scaled_object(with_spec(autoscaling={**KEDA, "targetRequestsPerSecond": 2.5}))
    assert so["spec"]["triggers"][0]["metadata"]["threshold"] == "2.5"


def test_no_scaled_object_without_keda_or_with_the_hpa_provider():
    assert build_scaled_object(with_spec(autoscaling=KEDA), BuildOptions(keda_available=False)) is None
    assert build_scaled_object(with_spec(autoscaling={**KEDA, "provider": "HPA"})) is None
    assert build_scaled_object(with_spec(replicas=2)) is None
    assert build_hpa(with_spec(autoscaling={"maxReplicas": 3}))["kind"] == "HorizontalPodAutoscaler"


@pytest.mark.parametrize("provider", ["HPA", "KEDA"])
def test_request_rate_false_scales_on_the_resource_targets_alone(provider):
    """Without a custom-metrics adapter (HPA) or Prometheus (KEDA) the request-rate metric can
    never be read, and an HPA then holds its pods: requestRate false leaves it out."""
    auto = {"maxReplicas": 3, "provider": provider, "targetCPUUtilization": 60}
    on = with_spec(autoscaling=auto, resources={"requests": {"cpu": "1"}})
    off = with_spec(autoscaling={**auto, "requestRate": False}, resources={"requests": {"cpu": "1"}})
    if provider == "HPA":
        kinds = [m["type"] for m in build_hpa(on)["spec"]["metrics"]]
        assert kinds == ["Pods", "Resource"]
        assert [m["type"] for m in build_hpa(off)["spec"]["metrics"]] == ["Resource"]
    else:
        kinds = [t["type"] for t in build_scaled_object(on, BuildOptions())["spec"]["triggers"]]
        assert kinds == ["prometheus", "cpu"]
        off_kinds = [t["type"] for t in build_scaled_object(off, BuildOptions())["spec"]["triggers"]]
        assert off_kinds == ["cpu"]
