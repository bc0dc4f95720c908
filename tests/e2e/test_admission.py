"""Admission with Kubernetes' own rules: specs users plausibly get wrong, refused by the API
server at `kubectl apply` (server-side dry-run), each refusal naming the field to fix.

Pass-through fields (affinity, tolerations, nodeSelector, resources, env) carry core/v1's
schema and rules; CEL rules cover what a schema cannot say (label and resource-name syntax,
fieldPath values, model paths that collide, runtime args that override operator flags)."""
from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_support import install_crd

pytestmark = pytest.mark.e2e

CRD = Path(__file__).resolve().parents[2] / "crds" / "bemservice.yaml"
BASE: dict[str, Any] = {"model": {"source": "Image"}, "replicas": 1}
NODE_TERM = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
POD_TERM = "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"


def node_affinity(*expressions: dict[str, Any]) -> dict[str, Any]:
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]}}}}


def anti_affinity(**term: Any) -> dict[str, Any]:
    base = {"topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app": "chat"}}}
    base.update(term)
    return {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [base]}}}


def env(*items: dict[str, Any]) -> dict[str, Any]:
    return {"runtime": {"env": list(items)}}


def field_ref(path: str, **more: Any) -> dict[str, Any]:
    return {"name": "POD_X", "valueFrom": {"fieldRef": {"fieldPath": path, **more}}}


def model(**fields: Any) -> dict[str, Any]:
    return {"model": {"source": "Image", **fields}}


# (id, spec fields merged over BASE, the field path the refusal must name)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    # affinity: core/v1's schema, so typos and bad operators are refused, not ignored
    ("affinity-typo", {"affinity": {"nodeAfinity": {}}}, "spec.affinity.nodeAfinity"),
    ("affinity-deep-typo", {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpression": [{"key": "a", "operator": "Exists"}]}]}}}},
     f"{NODE_TERM}.nodeSelectorTerms[0].matchExpression"),
    ("affinity-operator-lower-case", node_affinity({"key": "zone", "operator": "in",
                                                    "values": ["a"]}),
     f"{NODE_TERM}.nodeSelectorTerms[0].matchExpressions[0].operator"),
    ("affinity-in-without-values", node_affinity({"key": "zone", "operator": "In"}),
     f"{NODE_TERM}.nodeSelectorTerms[0].matchExpressions[0].values"),
    ("affinity-exists-with-values", node_affinity({"key": "zone", "operator": "Exists",
                                                   "values": ["a"]}),
     f"{NODE_TERM}.nodeSelectorTerms[0].matchExpressions[0].values"),
    ("affinity-gt-not-a-number", node_affinity({"key": "cores", "operator": "Gt",
                                                "values": ["many"]}),
     f"{NODE_TERM}.nodeSelectorTerms[0].matchExpressions[0].values"),
    ("affinity-bad-label-key", node_affinity({"key": "gpu type", "operator": "Exists"}),
     f"{NODE_TERM}.nodeSelectorTerms[0].matchExpressions[0].key"),
    ("affinity-no-terms", {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {}}}},
     f"{NODE_TERM}.nodeSelectorTerms"),
    ("affinity-match-fields-key", {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.labels", "operator": "In",
                              "values": ["x"]}]}]}}}},
     f"{NODE_TERM}.nodeSelectorTerms[0].matchFields[0].key"),
    ("affinity-weight-zero", {"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "preference": {
            "matchExpressions": [{"key": "zone", "operator": "Exists"}]}}]}}},
     "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight"),
    ("affinity-weight-above-100", {"affinity": {"podAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 500, "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname"}}]}}},
     "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight"),
    ("affinity-preference-missing", {"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10}]}}},
     "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference"),
    ("anti-affinity-no-topology-key", {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "chat"}}}]}}},
     f"{POD_TERM}.topologyKey"),
    ("anti-affinity-bad-topology-key", anti_affinity(topologyKey="kubernetes.io/host name"),
     f"{POD_TERM}.topologyKey"),
    ("anti-affinity-bad-match-label-key", anti_affinity(
        labelSelector={"matchLabels": {"app name": "chat"}}),
     f"{POD_TERM}.labelSelector.matchLabels"),
    ("anti-affinity-bad-match-label-value", anti_affinity(
        labelSelector={"matchLabels": {"app": "chat bot"}}),
     f"{POD_TERM}.labelSelector.matchLabels.app"),
    ("anti-affinity-selector-operator", anti_affinity(labelSelector={"matchExpressions": [
        {"key": "app", "operator": "Gt", "values": ["1"]}]}),
     f"{POD_TERM}.labelSelector.matchExpressions[0].operator"),
    ("anti-affinity-bad-namespace", anti_affinity(namespaces=["Team_A"]),
     f"{POD_TERM}.namespaces[0]"),
    # tolerations
    ("toleration-operator-lower-case", {"tolerations": [{"key": "gpu", "operator": "exists"}]},
     "spec.tolerations[0].operator"),
    ("toleration-effect-typo", {"tolerations": [{"key": "gpu", "operator": "Exists",
                                                 "effect": "NoScheduled"}]},
     "spec.tolerations[0].effect"),
    ("toleration-exists-with-value", {"tolerations": [{"key": "gpu", "operator": "Exists",
                                                       "value": "true"}]},
     "spec.tolerations[0].value"),
    ("toleration-seconds-without-no-execute", {"tolerations": [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}]},
     "spec.tolerations[0].tolerationSeconds"),
    ("toleration-equal-without-key", {"tolerations": [{"operator": "Equal", "value": "x"}]},
     "spec.tolerations[0].operator"),
    ("toleration-bad-key", {"tolerations": [{"key": "gpu type", "operator": "Exists"}]},
     "spec.tolerations[0].key"),
    ("toleration-field-typo", {"tolerations": [{"key": "gpu", "operator": "Exists",
                                                "tolerationSecond": 5}]},
     "spec.tolerations[0].tolerationSecond"),
    # nodeSelector
    ("node-selector-bad-key", {"nodeSelector": {"gpu type": "a100"}}, "spec.nodeSelector"),
    ("node-selector-bad-value", {"nodeSelector": {"disk": "fast ssd"}}, "spec.nodeSelector.disk"),
    # resources
    ("resource-name-unknown", {"resources": {"limits": {"gpu": 1}}}, "spec.resources.limits"),
    ("resource-quantity-with-space", {"resources": {"requests": {"memory": "2 GB"}}},
     "spec.resources.requests.memory"),
    ("resource-request-above-limit", {"resources": {"requests": {"cpu": "4"},
                                                    "limits": {"cpu": "2"}}},
     "spec.resources.requests"),
    ("resource-extended-overcommitted", {"resources": {"requests": {"example.com/fpga": 1}}},
     "spec.resources.limits"),
    ("resources-typo", {"resources": {"request": {"cpu": "1"}}}, "spec.resources.request"),
    # env
    ("env-reserved-name", env({"name": "BEM_MODEL_DIR", "value": "/x"}),
     "spec.runtime.env[0].name"),
    ("env-name-starts-with-digit", env({"name": "1FOO", "value": "x"}),
     "spec.runtime.env[0].name"),
    ("env-field-path-unsupported", env(field_ref("status.phase")),
     "spec.runtime.env[0].valueFrom.fieldRef.fieldPath"),
    ("env-field-path-api-version", env(field_ref("metadata.name", apiVersion="v2")),
     "spec.runtime.env[0].valueFrom.fieldRef.apiVersion"),
    ("env-secret-name-invalid", env({"name": "TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "My_Secret", "key": "token"}}}),
     "spec.runtime.env[0].valueFrom.secretKeyRef.name"),
    ("env-secret-key-missing", env({"name": "TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "tokens"}}}),
     "spec.runtime.env[0].valueFrom.secretKeyRef.key"),
    ("env-duplicate-name", env({"name": "A", "value": "1"}, {"name": "A", "value": "2"}),
     "spec.runtime.env[1]"),
    ("env-value-and-value-from", env({"name": "A", "value": "1", "valueFrom": {
        "fieldRef": {"fieldPath": "metadata.name"}}}), "spec.runtime.env[0]"),
    # runtime arguments and image
    ("args-override-port", {"runtime": {"extraArgs": ["--port=9000"]}},
     "spec.runtime.extraArgs"),
    ("args-override-model-dir", {"runtime": {"extraArgs": ["--model-dir", "/data"]}},
     "spec.runtime.extraArgs"),
    ("args-override-log-level", {"runtime": {"extraArgs": ["--merge-decode", "--log-level=debug"]}},
     "spec.runtime.extraArgs"),
    ("image-with-space", {"runtime": {"image": "bem-runtime: 0.1.0"}}, "spec.runtime.image"),
    ("image-with-scheme", {"runtime": {"image": "https://registry.example.com/bem:1"}},
     "spec.runtime.image"),
    ("pull-secret-invalid", {"runtime": {"imagePullSecrets": ["Reg Creds"]}},
     "spec.runtime.imagePullSecrets[0]"),
    # model paths
    ("model-paths-equal", model(basePath="m", checkpointPath="m"), "spec.model.checkpointPath"),
    ("model-checkpoint-inside-base", model(basePath="m", checkpointPath="m/bem"),
     "spec.model.checkpointPath"),
    ("model-base-inside-checkpoint", model(basePath="bem/base", checkpointPath="bem"),
     "spec.model.checkpointPath"),
    ("model-path-is-models-itself", model(basePath=".", checkpointPath="bem"),
     "spec.model.basePath"),
    ("model-path-absolute", model(basePath="/models/base"), "spec.model.basePath"),
    ("claim-name-upper-case", {"model": {"claimName": "Models"}}, "spec.model.claimName"),
    # ports and the rest
    ("service-port-zero", {"service": {"port": 0}}, "spec.service.port"),
    ("node-port-out-of-range", {"service": {"type": "NodePort", "nodePort": 70000}},
     "spec.service.nodePort"),
    ("service-type-typo", {"service": {"type": "Nodeport"}}, "spec.service.type"),
    ("gpu-count-too-high", {"gpu": {"count": 17}}, "spec.gpu.count"),
    ("scrape-interval-without-unit", {"monitoring": {"interval": "30"}},
     "spec.monitoring.interval"),
    ("replicas-as-word", {"replicas": "two"}, "spec.replicas"),
    ("rollout-strategy-typo", {"rollout": {"strategy": "Rolling"}}, "spec.rollout.strategy"),
    ("pdb-percentage-above-100", {"disruptionBudget": {"maxUnavailable": "120%"}},
     "spec.disruptionBudget.maxUnavailable"),
]


@pytest.fixture(scope="module")
def admission(cluster: Any) -> Iterator[tuple[Any, str]]:
    install_crd(cluster, CRD)
    namespace = f"adm-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        yield cluster, namespace
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def dry_run(cluster: Any, namespace: str, spec: dict[str, Any]) -> Any:
    body = {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
            "metadata": {"name": "svc", "namespace": namespace}, "spec": spec}
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(body),
                           check=False)


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(copy.deepcopy(extra))
    return out


def test_the_cases_are_many_and_distinct() -> None:
    assert len(INVALID) >= 40
    assert len({case[0] for case in INVALID}) == len(INVALID)
    assert len({json.dumps(case[1], sort_keys=True) for case in INVALID}) == len(INVALID)


def test_the_base_spec_and_valid_pass_through_fields_are_accepted(admission) -> None:
    cluster, namespace = admission
    valid = merged(BASE, {
        **node_affinity({"key": "topology.kubernetes.io/zone", "operator": "In",
                         "values": ["a", "b"]}, {"key": "cores", "operator": "Gt",
                                                 "values": ["8"]}),
        "tolerations": [{"operator": "Exists"}, {"key": "example.com/spot", "operator": "Equal",
                                                 "value": "true", "effect": "NoExecute",
                                                 "tolerationSeconds": 60}],
        "nodeSelector": {"kubernetes.io/arch": "amd64", "disk": ""},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi", "example.com/fpga": 1},
                      "limits": {"memory": "2Gi", "example.com/fpga": 1}},
        "runtime": {"extraArgs": ["--merge-decode"], "image": "localhost:5000/bem-runtime:0.1.0",
                    "env": [field_ref("metadata.labels['app']"),
                            {"name": "RATE", "value": "5"}]},
    })
    valid["affinity"]["podAntiAffinity"] = anti_affinity()["affinity"]["podAntiAffinity"]
    out = dry_run(cluster, namespace, valid)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(("extra", "field"), [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_invalid_spec_is_refused_naming_the_field(admission, extra: dict[str, Any],
                                                  field: str) -> None:
    cluster, namespace = admission
    out = dry_run(cluster, namespace, merged(BASE, extra))
    assert out.returncode != 0, f"accepted: {out.stdout}"
    assert field in out.stderr, out.stderr
    assert "Internal error" not in out.stderr, out.stderr


def _resolve(node: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 node with $ref / allOf[$ref] replaced by the referenced schema."""
    ref = node.get("$ref") or next((n["$ref"] for n in node.get("allOf") or [] if "$ref" in n),
                                   None)
    return schemas[ref.rsplit("/", 1)[-1]] if ref else node


def _fields(node: dict[str, Any], schemas: dict[str, Any] | None, depth: int = 0) -> Any:
    """The tree of property names under a schema node (arrays and maps looked through)."""
    if schemas is not None:
        node = _resolve(node, schemas)
    if depth > 8:
        return {}
    if node.get("type") == "array" or "items" in node:
        return _fields(node.get("items") or {}, schemas, depth + 1)
    return {name: _fields(child, schemas, depth + 1)
            for name, child in (node.get("properties") or {}).items()}


def test_pass_through_fields_have_core_v1s_own_fields(admission) -> None:
    """affinity and tolerations carry exactly the fields of the API server's core/v1 schema
    (nothing unknown kept, nothing left out); env items a subset of core/v1 EnvVar's."""
    cluster, _ = admission
    openapi = json.loads(cluster.kubectl("get", "--raw", "/openapi/v3/api/v1").stdout)
    schemas = openapi["components"]["schemas"]
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    ours = spec["properties"]
    assert _fields(ours["affinity"], None) == _fields(
        schemas["io.k8s.api.core.v1.Affinity"], schemas)
    assert _fields(ours["tolerations"], None) == _fields(
        schemas["io.k8s.api.core.v1.Toleration"], schemas)

    def subset(small: Any, big: Any, path: str) -> None:
        for name, child in small.items():
            assert name in big, f"{path}.{name} is not a core/v1 field"
            subset(child, big[name], f"{path}.{name}")
    subset(_fields(ours["runtime"]["properties"]["env"], None),
           _fields(schemas["io.k8s.api.core.v1.EnvVar"], schemas), "spec.runtime.env")
