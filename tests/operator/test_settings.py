"""Operator settings from the environment: defaults, parsing, errors that say what to fix."""
from __future__ import annotations

import pytest

from bem_operator.builders.options import OperatorPods
from bem_operator.settings import (DEFAULT_PROMETHEUS_ADDRESS, DEFAULT_RUNTIME_IMAGE, OperatorSettings,
                                   SettingsError)


def test_defaults_watch_every_namespace() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.clusterwide and settings.namespaces == ()
    assert (settings.metrics_port, settings.health_port) == (8000, 8080)
    assert settings.resync_seconds == 30.0
    assert settings.runtime_image == DEFAULT_RUNTIME_IMAGE
    assert settings.prometheus_address == DEFAULT_PROMETHEUS_ADDRESS


def test_values_are_read() -> None:
    settings = OperatorSettings.from_env({
        "BEM_OPERATOR_NAMESPACES": " team-a, team-b ,team-a,", "BEM_OPERATOR_METRICS_PORT": "9100",
        "BEM_OPERATOR_HEALTH_PORT": "9101", "BEM_OPERATOR_RESYNC_SECONDS": "2.5",
        "BEM_RUNTIME_IMAGE": "registry.local/bem-runtime:1.2", "BEM_OPERATOR_LOG_LEVEL": "debug",
        "BEM_OPERATOR_PROMETHEUS_ADDRESS": "http://10.96.0.90:9090/"})
    assert settings.namespaces == ("team-a", "team-b") and not settings.clusterwide
    assert (settings.metrics_port, settings.health_port) == (9100, 9101)
    assert settings.resync_seconds == 2.5
    assert settings.runtime_image == "registry.local/bem-runtime:1.2"
    assert settings.log_level == "DEBUG"
    assert settings.prometheus_address == "http://10.96.0.90:9090"  # KEDA appends the API path


@pytest.mark.parametrize(("name", "value"), [
    ("BEM_OPERATOR_NAMESPACES", "Team_A"),
    ("BEM_OPERATOR_METRICS_PORT", "80000"),
    ("BEM_OPERATOR_HEALTH_PORT", "http"),
    ("BEM_OPERATOR_RESYNC_SECONDS", "0"),
    ("BEM_OPERATOR_RESYNC_SECONDS", "soon"),
    ("BEM_RUNTIME_IMAGE", "bem runtime"),
    ("BEM_OPERATOR_LOG_LEVEL", "loud"),
    ("BEM_OPERATOR_PROMETHEUS_ADDRESS", "prometheus:9090"),
    ("BEM_OPERATOR_PROMETHEUS_ADDRESS", "http://prometheus:9090/?x=1"),
])
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        OperatorSettings.from_env({name: value})


def test_operator_pods_from_the_downward_api_and_the_chart() -> None:
    assert OperatorSettings.from_env({}).operator_pods == OperatorPods(
        None, (("app.kubernetes.io/name", "bem-operator"),))
    pods = OperatorSettings.from_env({
        "POD_NAMESPACE": "bem-system",
        "BEM_OPERATOR_POD_LABELS": " app.kubernetes.io/name=bem-operator, app.kubernetes.io/instance=prod "})
    assert pods.operator_pods == OperatorPods("bem-system", (
        ("app.kubernetes.io/instance", "prod"), ("app.kubernetes.io/name", "bem-operator")))


@pytest.mark.parametrize("env, field", [
    ({"BEM_OPERATOR_POD_LABELS": "app.kubernetes.io/name"}, "BEM_OPERATOR_POD_LABELS"),
    ({"BEM_OPERATOR_POD_LABELS": "a=b c"}, "BEM_OPERATOR_POD_LABELS"),
    ({"BEM_OPERATOR_POD_LABELS": "a=" + "x" * 64}, "BEM_OPERATOR_POD_LABELS"),
    ({"POD_NAMESPACE": "Bem_System"}, "POD_NAMESPACE"),
])
def test_bad_operator_pod_identity_is_refused_naming_the_variable(env, field) -> None:
    with pytest.raises(SettingsError, match=field):
        OperatorSettings.from_env(env)
