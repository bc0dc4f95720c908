"""The typed spec: defaults, and SpecError naming the field for specs that break a field's own
rule (type, bound, enum, pattern). Cross-field rules are CEL in the CRD only: the API server
enforces them (tests/e2e/test_crd_validation.py, test_admission.py)."""

from __future__ import annotations

import re

import pytest
from builders_factory import build_deployment, build_pdb, make_bems, with_spec

from bem_operator.builders import BuildOptions, SpecError, build_children, parse_bemservice
from bem_operator.builders.spec_types import MODEL_PATH


def test_defaults_fill_a_minimal_spec():
    spec = parse_bemservice(make_bems(name="chat"))
    assert spec.replicas is None and spec.autoscaling is None
    assert build_deployment(make_bems(name="chat"))["spec"]["replicas"] == 1
    assert build_pdb(make_bems(name="chat"))["spec"]["maxUnavailable"] == 1
    assert (spec.model.source, spec.model.base_path, spec.model.checkpoint_path) == (
        "PersistentVolumeClaim", "base", "bem")
    assert spec.served_name == "chat"
    assert spec.rollout.strategy == "RollingUpdate"
    assert spec.disruption_budget.enabled and spec.disruption_budget.max_unavailable is None
    assert (spec.service.type, spec.service.port) == ("ClusterIP", 8080)
    assert spec.monitoring.service_monitor and spec.monitoring.interval == "30s"
    assert spec.auth is None and spec.cache is None
    assert spec.runtime.log_level == "info" and spec.runtime.startup_timeout_seconds == 600
    assert spec.gpu.count == 0 and spec.gpu.product is None


def test_autoscaling_defaults_and_providers():
    spec = parse_bemservice(with_spec(autoscaling={"maxReplicas": 3}))
    assert spec.replicas is None
    assert spec.autoscaling.min_replicas == 1 and spec.autoscaling.target_requests_per_second == 10.0
    assert spec.autoscaling.provider == "HPA"
    keda = parse_bemservice(with_spec(autoscaling={"maxReplicas": 3, "provider": "KEDA"}))
    assert keda.autoscaling.provider == "KEDA"


BAD_SPECS = [
    ({"autoscaling": {"maxReplicas": 3, "provider": "Knative"}}, "spec.autoscaling.provider", "'HPA' or 'KEDA'"),
    ({"autoscaling": {"minReplicas": 1}}, "spec.autoscaling.maxReplicas", "required"),
    ({"autoscaling": {"maxReplicas": 3, "targetRequestsPerSecond": 0}},
     "spec.autoscaling.targetRequestsPerSecond", "greater than 0"),
    ({"rollout": {"maxSurge": "150%"}}, "spec.rollout.maxSurge", "percentage"),
    ({"rollout": {"maxUnavailable": -1}}, "spec.rollout.maxUnavailable", "integer >= 0"),
    ({"rollout": {"strategy": "BlueGreen"}}, "spec.rollout.strategy", "Recreate"),
    ({"service": {"port": 70000}}, "spec.service.port", "65535"),
    ({"cache": {"ttlSeconds": 5}}, "spec.cache.redisUrlSecretRef", "required"),
    ({"auth": {"apiKeySecretRef": {"key": "k"}}}, "spec.auth.apiKeySecretRef.name", "required"),
    ({"replicas": "3"}, "spec.replicas", "integer"),
    ({"replicas": True}, "spec.replicas", "integer"),
    ({"replicas": -1}, "spec.replicas", "greater than or equal to 0"),
    ({"nodeSelector": {"zone": 1}}, "spec.nodeSelector.zone", "string"),
    ({"nodeSelector": {"disk": "fast ssd"}}, "spec.nodeSelector.disk", "pattern"),
    ({"tolerations": ["nvidia.com/gpu"]}, "spec.tolerations[0]", "dictionary"),
    ({"runtime": {"imagePullSecrets": ["Reg Creds"]}}, "spec.runtime.imagePullSecrets[0]", "pattern"),
    ({"runtime": {"logLevel": "verbose"}}, "spec.runtime.logLevel", "'debug'"),
    ({"model": {"claimName": "m", "basePath": "../etc"}}, "spec.model.basePath", "pattern"),
    ({"model": {"claimName": "m", "checkpointPath": "/abs"}}, "spec.model.checkpointPath", "pattern"),
    ({"model": {"claimName": "m", "checkpointPath": "./base"}}, "spec.model.checkpointPath", "pattern"),
    ({"model": {"claimName": "m", "routing": {"topK": 0}}}, "spec.model.routing.topK", "greater than or equal to 1"),
    ({"model": {"claimName": "m", "routing": {"hysteresis": "0.5"}}}, "spec.model.routing.hysteresis", "number"),
    ({"gpu": {"count": 17}}, "spec.gpu.count", "less than or equal to 16"),
]


@pytest.mark.parametrize("spec_fields, field, hint", BAD_SPECS, ids=[b[1] + ":" + b[2] for b in BAD_SPECS])
def test_invalid_fields_raise_spec_error_naming_the_field(spec_fields, field, hint):
    with pytest.raises(SpecError) as err:
        build_children(with_spec(**spec_fields), BuildOptions())
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")
    assert hint in str(err.value)


@pytest.mark.parametrize(("body", "field"), [
    ({"spec": {}}, "spec.model"),
    ({"metadata": {"name": "a", "namespace": "b"}, "spec": {"model": {}}}, "metadata.uid"),
    ({"metadata": {"name": "a", "namespace": "b", "uid": "c"}}, "spec"),
])
def test_missing_parts_are_spec_errors(body, field):
    bems = {**make_bems({}), **body} if "metadata" not in body else body
    with pytest.raises(SpecError) as err:
        parse_bemservice(bems)
    assert err.value.field == field


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


@pytest.mark.parametrize("path", ["base", "models/llama-3", "a/b/c", ".cache", "..x", "v1.2", "a..b"])
def test_normalised_model_paths_are_accepted(path):
    assert re.match(MODEL_PATH, path)


@pytest.mark.parametrize("path", [".", "..", "./base", "base/.", "a/../b", "/base", "base/", "a//b", ""])
def test_model_paths_with_another_spelling_are_refused(path):
    """Each directory has one spelling, so comparing the strings (the CRD's CEL rules on
    basePath and checkpointPath) compares the directories."""
    assert not re.match(MODEL_PATH, path)


def test_any_mapping_parses_like_a_dict():
    """kopf hands over read-only views, not dicts: the strict parse must take them."""
    from types import MappingProxyType
    spec = {"model": MappingProxyType({"claimName": "m"}), "tolerations": (MappingProxyType({"operator": "Exists"}),)}
    view = MappingProxyType({**make_bems(), "spec": MappingProxyType(spec)})
    parsed = parse_bemservice(view)
    assert parsed.model.claim_name == "m" and parsed.tolerations == [{"operator": "Exists"}]
