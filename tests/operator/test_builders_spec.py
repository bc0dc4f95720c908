"""The typed spec view: defaults, and SpecError naming the field for specs that cannot work."""

from __future__ import annotations

import pytest
from builders_factory import make_bems, with_spec

from bem_operator.builders import BuildOptions, SpecError, build_children, parse_bemservice


def test_defaults_fill_a_minimal_spec():
    spec = parse_bemservice(make_bems(name="chat"))
    assert spec.replicas == 1 and spec.autoscaling is None
    assert (spec.model.source, spec.model.base_path, spec.model.checkpoint_path) == (
        "PersistentVolumeClaim", "base", "bem")
    assert spec.model.served_name == "chat"
    assert spec.rollout.strategy == "RollingUpdate"
    assert spec.disruption_budget.enabled and spec.disruption_budget.max_unavailable == 1
    assert (spec.service.type, spec.service.port) == ("ClusterIP", 8080)
    assert spec.monitoring.service_monitor and spec.monitoring.interval == "30s"
    assert spec.auth is None and spec.cache is None
    assert spec.runtime.log_level == "info" and spec.runtime.startup_timeout_seconds == 600
    assert spec.gpu.count == 0 and spec.gpu.product is None


def test_replicas_are_none_while_autoscaling():
    spec = parse_bemservice(with_spec(autoscaling={"maxReplicas": 3}))
    assert spec.replicas is None
    assert spec.autoscaling.min_replicas == 1 and spec.autoscaling.target_requests_per_second == 10.0
    assert spec.autoscaling.provider == "HPA"
    keda = parse_bemservice(with_spec(autoscaling={"maxReplicas": 3, "provider": "KEDA"}))
    assert keda.autoscaling.provider == "KEDA"


BAD_SPECS = [
    ({"autoscaling": {"maxReplicas": 3, "provider": "Knative"}}, "spec.autoscaling.provider", "HPA or KEDA"),
    ({"autoscaling": {"maxReplicas": 3, "provider": "KEDA"}, "monitoring": {"serviceMonitor": False}},
     "spec.monitoring.serviceMonitor", "provider KEDA"),
    ({"replicas": 2, "autoscaling": {"maxReplicas": 3}}, "spec.replicas", "not both"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}, "spec.autoscaling.minReplicas", "<="),
    ({"autoscaling": {"minReplicas": 1}}, "spec.autoscaling.maxReplicas", "required"),
    ({"autoscaling": {"maxReplicas": 3, "targetRequestsPerSecond": 0}},
     "spec.autoscaling.targetRequestsPerSecond", "greater than 0"),
    ({"autoscaling": {"maxReplicas": 3, "targetCPUUtilization": 50}},
     "spec.autoscaling.targetCPUUtilization", "requests.cpu"),
    ({"autoscaling": {"maxReplicas": 3, "targetMemoryUtilization": 50}, "resources": {"requests": {"cpu": "1"}}},
     "spec.autoscaling.targetMemoryUtilization", "requests.memory"),
    ({"gpu": {"product": "H100"}}, "spec.gpu.product", "count"),
    ({"gpu": {"count": 1}, "resources": {"limits": {"nvidia.com/gpu": 1}}}, "spec.resources.limits", "spec.gpu.count"),
    ({"rollout": {"strategy": "Recreate", "maxSurge": 1}}, "spec.rollout", "RollingUpdate"),
    ({"rollout": {"maxSurge": 0, "maxUnavailable": "0%"}}, "spec.rollout", "both be zero"),
    ({"rollout": {"maxSurge": "150%"}}, "spec.rollout.maxSurge", "percentage"),
    ({"rollout": {"strategy": "BlueGreen"}}, "spec.rollout.strategy", "Recreate"),
    ({"disruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}, "spec.disruptionBudget", "not both"),
    ({"service": {"port": 70000}}, "spec.service.port", "65535"),
    ({"service": {"nodePort": 30080}}, "spec.service.nodePort", "NodePort"),
    ({"cache": {"ttlSeconds": 5}}, "spec.cache.redisUrlSecretRef", "required"),
    ({"auth": {"apiKeySecretRef": {"key": "k"}}}, "spec.auth.apiKeySecretRef.name", "Secret"),
    ({"runtime": {"env": [{"name": "BEM_PORT", "value": "1"}]}}, "spec.runtime.env[0].name", "operator"),
    ({"replicas": "3"}, "spec.replicas", "integer"),
    ({"replicas": True}, "spec.replicas", "integer"),
    ({"nodeSelector": {"zone": 1}}, "spec.nodeSelector.zone", "string"),
    ({"tolerations": ["nvidia.com/gpu"]}, "spec.tolerations[0]", "object"),
    ({"runtime": {"env": [{"value": "1"}]}}, "spec.runtime.env[0].name", "required"),
    ({"model": {"source": "PersistentVolumeClaim"}}, "spec.model.claimName", "required"),
    ({"model": {"source": "Image", "claimName": "m"}}, "spec.model.claimName", "unset"),
    ({"model": {"claimName": "m", "basePath": "../etc"}}, "spec.model.basePath", ".."),
    ({"model": {"claimName": "m", "checkpointPath": "/abs"}}, "spec.model.checkpointPath", "relative"),
    ({"model": {"claimName": "m", "routing": {"topK": 0}}}, "spec.model.routing.topK", ">= 1"),
]


@pytest.mark.parametrize("spec_fields, field, hint", BAD_SPECS, ids=[b[1] + ":" + b[2] for b in BAD_SPECS])
def test_unworkable_specs_raise_spec_error_naming_the_field(spec_fields, field, hint):
    with pytest.raises(SpecError) as err:
        build_children(with_spec(**spec_fields), BuildOptions())
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")
    assert hint in str(err.value)


def test_missing_model_is_a_spec_error():
    with pytest.raises(SpecError) as err:
        build_children(make_bems({}), BuildOptions())
    assert err.value.field == "spec.model"


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


@pytest.mark.parametrize(("spec", "field"), [
    ({"runtime": {"extraArgs": ["--merge-decode", "--port=9000"]}}, "spec.runtime.extraArgs[1]"),
    ({"runtime": {"extraArgs": ["--model-dir", "/x"]}}, "spec.runtime.extraArgs[0]"),
    ({"model": {"source": "Image", "basePath": "m", "checkpointPath": "m/bem"}},
     "spec.model.checkpointPath"),
    ({"model": {"source": "Image", "basePath": "m/base", "checkpointPath": "m"}},
     "spec.model.checkpointPath"),
])
def test_specs_an_older_crd_lets_through_are_refused_by_field(spec, field):
    """The CRD refuses these; the parser names the same field for a cluster with an old CRD."""
    from bem_operator.builders import SpecError, parse_bemservice
    body = make_bems({"model": {"source": "Image"}, **spec})
    with pytest.raises(SpecError) as caught:
        parse_bemservice(body)
    assert caught.value.field == field
