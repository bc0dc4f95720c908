"""The CRD itself (crds/bemservice.yaml), checked without a cluster: names, subresources,
a description on every field, CEL messages, defaults equal to the builders' defaults, and every
sample buildable. The API server's own checks run in tests/e2e/test_crd_validation.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders_factory import make_bems

from bem_operator.builders import DEFAULTS, RESERVED_ENV, BuildOptions, build_children
from bem_operator.builders.runtime_fields import OPERATOR_FLAGS, RUNTIME_FIELDS
from bem_operator.builders.spec_types import CheckpointSpec
from bem_operator.constants import CHECKPOINT_KIND, GROUP, KIND, VERSION

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "bemservice.yaml"
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))

# DEFAULTS keys whose CRD field lives elsewhere, and those that only the builders apply (a CRD
# default on spec.replicas would break "replicas xor autoscaling").
CRD_PATH_OF = {"auth.key": "auth.apiKeySecretRef.key", "cache.key": "cache.redisUrlSecretRef.key"}
BUILDER_ONLY = {"replicas", "disruptionBudget.maxUnavailable"}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return only


def schema_nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node under `node`, with a dotted path (`[]` for list items)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from schema_nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")


def spec_and_status(version: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    root = version["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        yield from schema_nodes(root["properties"][part], part)


def test_names_follow_the_architecture(crd):
    assert crd["metadata"]["name"] == f"bemservices.{GROUP}"
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == (
        KIND, "bemservices", "bemservice", ["bems"])


def test_one_served_storage_version_with_status_and_scale(version):
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns(version):
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Replicas", "Phase", "Endpoint", "URL", "Autoscaler", "Desired",
                             "RPS/Pod", "Checkpoints", "Waiting", "Age"]
    assert columns["Ready"] == ".status.readyReplicas"
    # The gateway URL and the autoscaler's columns are for -o wide only (priority 1).
    wide = {c["name"] for c in version["additionalPrinterColumns"] if c.get("priority") == 1}
    assert wide == {"URL", "Autoscaler", "Desired", "RPS/Pod", "Checkpoints", "Waiting"}
    assert columns["URL"] == ".status.gateway.url"
    assert columns["Desired"] == ".status.autoscaling.desiredReplicas"
    assert columns["Endpoint"] == ".status.endpoint"


def test_every_field_has_a_description(version):
    missing = [path for path, node in spec_and_status(version)
               if not path.endswith("{}") and not str(node.get("description", "")).strip()]
    assert missing == []


def test_every_field_is_typed_or_explicitly_open(version):
    untyped = [path for path, node in spec_and_status(version)
               if "type" not in node and not node.get("x-kubernetes-int-or-string")
               and not node.get("x-kubernetes-preserve-unknown-fields")]
    assert untyped == []


def test_no_field_keeps_unknown_fields(version):
    open_fields = [p for p, n in spec_and_status(version) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert open_fields == []  # affinity has core/v1's own schema: a typo is refused


def test_every_cel_rule_has_a_message(crd, version):
    root = version["schema"]["openAPIV3Schema"]
    rules = [(path, rule) for path, node in schema_nodes(root, "")
             for rule in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 15
    assert [p for p, r in rules if not (r.get("message") or r.get("messageExpression"))] == []


def test_cross_field_rules_exist_where_the_brief_asks(version):
    root = version["schema"]["openAPIV3Schema"]
    text = {path: " ".join(r["rule"] for r in node.get("x-kubernetes-validations", []))
            for path, node in schema_nodes(root, "")}
    assert "has(self.replicas) && has(self.autoscaling)" in text[".spec"]
    assert "self.minReplicas <= self.maxReplicas" in text[".spec.autoscaling"]
    assert "self.count > 0" in text[".spec.gpu"]
    assert "self.strategy == 'RollingUpdate'" in text[".spec.rollout"]
    assert "has(self.minAvailable) && has(self.maxUnavailable)" in text[".spec.disruptionBudget"]
    assert "has(self.redisUrlSecretRef)" in text[".spec.cache"]


def runtime_schema(version: dict[str, Any]) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["runtime"]["properties"]


def test_reserved_env_names_equal_the_builders(version):
    env_item = runtime_schema(version)["env"]["items"]
    (rule,) = [r["rule"] for r in env_item["x-kubernetes-validations"] if "self.name in" in r["rule"]]
    refused = set(re.findall(r"'(BEM_[A-Z_]+)'", rule))
    assert refused == RESERVED_ENV, (
        f"spec.runtime.env's CEL rule lacks {sorted(RESERVED_ENV - refused)}, "
        f"has extra {sorted(refused - RESERVED_ENV)}")


def test_refused_extra_args_equal_the_builders(version):
    (rule,) = [r["rule"] for r in runtime_schema(version)["extraArgs"]["x-kubernetes-validations"]]
    (names,) = re.findall(r"\^--\(([-a-z|]+)\)", rule)
    refused = {f"--{name}" for name in names.split("|")}
    assert refused == OPERATOR_FLAGS, (
        f"spec.runtime.extraArgs' CEL rule lacks {sorted(OPERATOR_FLAGS - refused)}, "
        f"has extra {sorted(refused - OPERATOR_FLAGS)}")


@pytest.mark.parametrize("field", RUNTIME_FIELDS, ids=lambda f: f.path)
def test_each_runtime_field_is_in_the_crd_with_its_type_and_bound(version, field):
    nodes = dict(spec_and_status(version))
    node = nodes.get(f"spec.{field.path}")
    assert node is not None, f"crds/bemservice.yaml has no spec.{field.path} (builders/runtime_fields.py)"
    assert node["type"] == {int: "integer", float: "number", list: "array"}[field.kind], field.path
    if field.minimum is not None:
        assert node.get("minimum") == field.minimum, field.path


def crd_defaults(version: dict[str, Any]) -> dict[str, Any]:
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    # Sections defaulted to {} so that their own defaults show in kubectl get -o yaml.
    return {path.removeprefix("spec."): node["default"]
            for path, node in schema_nodes(spec, "spec") if "default" in node and node["default"] != {}}


def test_sections_with_defaults_are_defaulted_as_a_whole(version):
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    whole = {name for name, node in spec.items() if node.get("default") == {}}
    assert whole == {"rollout", "disruptionBudget", "service", "monitoring", "networkPolicy",
                     "runtime"}


def test_crd_defaults_equal_the_builders_defaults(version):
    expected = {CRD_PATH_OF.get(k, k): v for k, v in DEFAULTS.items() if k not in BUILDER_ONLY}
    assert crd_defaults(version) == expected


def test_no_default_on_replicas(version):
    # A default there would collide with spec.autoscaling (and with the HPA).
    assert "replicas" not in crd_defaults(version)


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_every_sample_builds(sample):
    for doc in yaml.safe_load_all(sample.read_text()):
        assert (doc["apiVersion"], doc["kind"]) in {(f"{GROUP}/{VERSION}", KIND),
                                                    (f"{GROUP}/{VERSION}", CHECKPOINT_KIND)}
        if doc["kind"] == CHECKPOINT_KIND:
            CheckpointSpec.model_validate(doc["spec"])
            continue
        bems = make_bems(doc["spec"], name=doc["metadata"]["name"])
        children = build_children(bems, BuildOptions())
        assert "Deployment" in {child["kind"] for child in children}


def test_the_required_samples_exist():
    assert {"cpu.yaml", "gpu.yaml", "autoscaled.yaml"} <= {s.name for s in SAMPLES}
