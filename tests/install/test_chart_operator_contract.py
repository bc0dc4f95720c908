"""The environment the chart gives the operator is what the operator reads and accepts."""

from __future__ import annotations

import dataclasses
from typing import Any

from bem_operator.leader import LeaderSettings
from bem_operator.settings import OperatorSettings

from .support import Helm, by_kind


# What the downward API gives the variables the chart fills from the pod itself.
DOWNWARD = {"metadata.name": "bem-operator-7d9f-abcde", "metadata.namespace": "bem-system"}


def _operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    [deployment] = by_kind(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] if "value" in e
            else DOWNWARD[e["valueFrom"]["fieldRef"]["fieldPath"]] for e in container["env"]}


def _settings(env: dict[str, str]) -> tuple[OperatorSettings, LeaderSettings]:
    return OperatorSettings.from_env(env), LeaderSettings.from_env(env)


def test_default_environment_gives_the_documented_settings(helm: Helm) -> None:
    objects = helm.template()
    settings = OperatorSettings.from_env(_operator_env(objects))
    assert settings.clusterwide
    assert settings.metrics_port == 8000 and settings.health_port == 8080
    assert settings.resync_seconds == 30
    assert settings.log_level == "INFO"
    assert settings.prometheus_address == "http://prometheus-operated.monitoring.svc:9090"
    [deployment] = by_kind(objects, "Deployment")
    # The runtime pods' NetworkPolicies admit their admin port from exactly these pods.
    assert settings.operator_pods.namespace == DOWNWARD["metadata.namespace"]
    assert dict(settings.operator_pods.labels) == deployment["spec"]["selector"]["matchLabels"]
    version = deployment["metadata"]["labels"]["app.kubernetes.io/version"]
    assert settings.runtime_image == f"bem-runtime:{version}"
    # The probes and the metrics Service target the ports the operator listens on.
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": settings.metrics_port, "health": settings.health_port}
    assert settings.bind_address == "0.0.0.0"  # kubelet probes come from outside the pod


def test_every_value_reaches_the_operator(helm: Helm) -> None:
    objects = helm.template(
        "--set", "watchNamespaces={team-a,team-b}", "--set", "operator.metricsPort=9100",
        "--set", "operator.healthPort=9180", "--set", "operator.resyncSeconds=45",
        "--set", "operator.logLevel=debug", "--set", "runtimeImage.repository=example/rt",
        "--set", "runtimeImage.tag=1.2.3-cu128",
        "--set", "autoscaling.keda.prometheusAddress=http://10.96.0.90:9090")
    env = _operator_env(objects)
    settings = OperatorSettings.from_env(env)
    assert settings.namespaces == ("team-a", "team-b")
    assert (settings.metrics_port, settings.health_port) == (9100, 9180)
    assert settings.resync_seconds == 45
    assert settings.log_level == "DEBUG"
    assert settings.runtime_image == "example/rt:1.2.3-cu128"
    assert settings.prometheus_address == "http://10.96.0.90:9090"
    service = by_kind(objects, "Service")[0]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_chart_sets_only_variables_the_operator_reads(helm: Helm) -> None:
    env = _operator_env(helm.template())
    known = {"BEM_OPERATOR_NAMESPACES", "BEM_OPERATOR_METRICS_PORT", "BEM_OPERATOR_HEALTH_PORT",
             "BEM_OPERATOR_RESYNC_SECONDS", "BEM_OPERATOR_LOG_LEVEL", "BEM_RUNTIME_IMAGE",
             "BEM_OPERATOR_PROMETHEUS_ADDRESS", "BEM_OPERATOR_LEADER_ELECTION",
             "BEM_OPERATOR_LEASE_NAME", "BEM_OPERATOR_POD_LABELS", "POD_NAME", "POD_NAMESPACE"}
    assert set(env) == known
    # Each one changes the settings when set alone, so none is silently ignored.
    baseline = _settings({"POD_NAME": "p", "POD_NAMESPACE": "n"})
    probes = {"BEM_OPERATOR_NAMESPACES": "x", "BEM_OPERATOR_METRICS_PORT": "1",
              "BEM_OPERATOR_HEALTH_PORT": "2", "BEM_OPERATOR_RESYNC_SECONDS": "3",
              "BEM_OPERATOR_LOG_LEVEL": "error", "BEM_RUNTIME_IMAGE": "x:1",
              "BEM_OPERATOR_PROMETHEUS_ADDRESS": "http://prometheus:9090",
              "BEM_OPERATOR_LEADER_ELECTION": "true", "BEM_OPERATOR_LEASE_NAME": "other",
              "BEM_OPERATOR_POD_LABELS": "a=b", "POD_NAME": "q", "POD_NAMESPACE": "m"}
    for name in known:
        probe = {"POD_NAME": "p", "POD_NAMESPACE": "n", name: probes[name]}
        operator, leader = _settings(probe)
        # the identity carries a random suffix per process: compare what precedes it
        leader = dataclasses.replace(leader, identity=leader.identity.rsplit("_", 1)[0])
        base_leader = dataclasses.replace(baseline[1],
                                          identity=baseline[1].identity.rsplit("_", 1)[0])
        assert (operator, leader) != (baseline[0], base_leader), name
