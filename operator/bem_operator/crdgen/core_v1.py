"""Kubernetes types (core/v1 Affinity, Toleration, ResourceRequirements, EnvVar, autoscaling/v2
HorizontalPodAutoscalerBehavior, networking/v1 NetworkPolicyPeer) for the CRD, read from the Kubernetes OpenAPI rather than copied
by hand, with this project's limits on top.

Source: the JSON schemas that the pinned PyPI package kubernetes-validate ships, generated from
the OpenAPI of each Kubernetes release (`KUBERNETES_SCHEMA`, the minor release the devcluster
builds). It installs with pip like any dev dependency, so `make crds` and the unit test that
regenerates the CRD work on a fresh machine with no cluster and no Go build; the OpenAPI file in
the k8s.io/kubernetes module exists only after the devcluster's Go build, and a live API server's
/openapi/v3 needs a cluster (the e2e tier compares our fields with the live one's).

The OpenAPI gives the structure (field names, types, required fields, list and map types,
descriptions). What Kubernetes checks in Go code (label syntax, operators and their values) and
the bounds that keep CEL's cost estimate low are added here as OVERLAYS, keyed by type: a key
that is a schema keyword applies to the type's node, "[]" to the items, "{}" to the map values,
any other key to that property; "pick" keeps only the named properties (fields the operator does
not pass on, such as ResourceRequirements.claims, are refused rather than dropped).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bem_operator.builders.spec_schema import cel
from bem_operator.builders.spec_types import DNS_SUBDOMAIN, LABEL_KEY, LABEL_VALUE, SECRET_KEY
from bem_operator.crdgen.structural import INT_OR_STRING, KUBERNETES_EXTENSIONS, ordered

KUBERNETES_SCHEMA = "v1.34.0-local-strict"
_PREFIXES = ("io.k8s.api.", "io.k8s.apimachinery.pkg.apis.")
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY_PATTERN = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
RESOURCE_NAME = (r"^(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z.]+|"
                 r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/"
                 r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
FIELD_PATH = (r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]|"
              r"spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$")
_KEYWORDS = frozenset({"description", "required", "enum", "pattern", "minimum", "maximum",
                       "minLength", "maxLength", "minItems", "maxItems", "maxProperties",
                       "x-kubernetes-validations"})

_LABEL_KEY = {"maxLength": 317, "pattern": LABEL_KEY}
_LABEL_VALUE = {"description": "A label value (at most 63 characters).", "maxLength": 63,
                "pattern": LABEL_VALUE}
_LABEL_VALUES = {"maxItems": 32, "[]": _LABEL_VALUE}
_LABEL_KEYS = {"maxItems": 16, "[]": {"description": "A pod label key.", **_LABEL_KEY}}
_WEIGHT = {"minimum": 1, "maximum": 100}
_POD_AFFINITY = {"requiredDuringSchedulingIgnoredDuringExecution": {"maxItems": 8},
                 "preferredDuringSchedulingIgnoredDuringExecution": {"maxItems": 8}}
_KEY_SELECTOR = {"required": ["name", "key"], "name": {"maxLength": 253, "pattern": DNS_SUBDOMAIN},
                 "key": {"maxLength": 253, "pattern": SECRET_KEY}}


def _resource_map(part: str) -> dict[str, Any]:
    return {"maxProperties": 8, "x-kubernetes-validations": [
        cel("!('nvidia.com/gpu' in self)", f"set GPUs with spec.gpu.count, not spec.resources.{part}."),
        cel(f"self.all(k, k.matches(r'{RESOURCE_NAME}'))",
            "every key must be a resource name: cpu, memory, ephemeral-storage, hugepages-<size>, "
            "or an extended resource with a domain (example.com/foo).", reason="FieldValueInvalid"),
        cel("self.all(k, !quantity(string(self[k])).isLessThan(quantity('0')))",
            f"spec.resources.{part} values must not be negative.")]}


OVERLAYS: dict[str, dict[str, Any]] = {
    "core.v1.Toleration": {
        "x-kubernetes-validations": [
            cel("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                "a toleration without a key needs operator Exists.", ".operator", "FieldValueInvalid"),
            cel("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "a toleration with operator Exists must have no value.", ".value"),
            cel("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds applies only to effect NoExecute.", ".tolerationSeconds")],
        "key": {"maxLength": 317, "pattern": f"^({LABEL_KEY[1:-1]})?$"},
        "operator": {"enum": ["Exists", "Equal"]},
        "value": {"maxLength": 63, "pattern": LABEL_VALUE},
        "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute", ""]},
    },
    "core.v1.NodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": {"maxItems": 16}},
    "core.v1.NodeSelector": {"nodeSelectorTerms": {"maxItems": 16}},
    "core.v1.NodeSelectorTerm": {
        "matchExpressions": {"maxItems": 16, "[]": {
            "x-kubernetes-validations": [cel(
                "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
                "self.operator in ['Exists', 'DoesNotExist'] ? "
                "(!has(self.values) || size(self.values) == 0) : "
                "(has(self.values) && size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",
                "operators In and NotIn need at least one value, Exists and DoesNotExist take none, "
                "Gt and Lt take exactly one integer.", ".values", "FieldValueInvalid")],
            "key": _LABEL_KEY, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]},
            "values": _LABEL_VALUES}},
        "matchFields": {"maxItems": 16, "[]": {
            "x-kubernetes-validations": [cel(
                "has(self.values) && size(self.values) == 1",
                "a matchFields requirement takes exactly one value (a node name).", ".values",
                "FieldValueInvalid")],
            "key": {"enum": ["metadata.name"]}, "operator": {"enum": ["In", "NotIn"]},
            "values": {"maxItems": 1, "[]": {"description": "A node name.", "maxLength": 253}}}},
    },
    "core.v1.PreferredSchedulingTerm": {"weight": _WEIGHT},
    "core.v1.PodAffinity": _POD_AFFINITY,
    "core.v1.PodAntiAffinity": _POD_AFFINITY,
    "core.v1.WeightedPodAffinityTerm": {"weight": _WEIGHT},
    "core.v1.PodAffinityTerm": {
        "namespaces": {"maxItems": 16, "[]": {"description": "A namespace name.", "maxLength": 63,
                                              "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
        "topologyKey": _LABEL_KEY, "matchLabelKeys": _LABEL_KEYS, "mismatchLabelKeys": _LABEL_KEYS,
    },
    "meta.v1.LabelSelector": {
        "matchLabels": {"maxProperties": 32, "{}": _LABEL_VALUE, "x-kubernetes-validations": [cel(
            f"self.all(k, k.matches(r'{LABEL_KEY}'))",
            "every key must be a label key (an optional DNS prefix and '/', then at most 63 "
            "letters, digits, '-', '_' or '.').", reason="FieldValueInvalid")]},
        "matchExpressions": {"maxItems": 16, "[]": {
            "x-kubernetes-validations": [cel(
                "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
                "(!has(self.values) || size(self.values) == 0)",
                "operators In and NotIn need at least one value; Exists and DoesNotExist take none.",
                ".values", "FieldValueInvalid")],
            "key": _LABEL_KEY, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
            "values": _LABEL_VALUES}},
    },
    "core.v1.ResourceRequirements": {
        "pick": ["requests", "limits"],
        "x-kubernetes-validations": [
            cel("!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || "
                "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
                "every spec.resources.requests value must be at most the matching "
                "spec.resources.limits value.",
                ".requests"),
            cel("!has(self.requests) || self.requests.all(k, !k.contains('/') || (has(self.limits) && "
                "k in self.limits && "
                "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) == 0))",
                "an extended resource (a name with '/') cannot be overcommitted; set the same value in "
                "spec.resources.limits as in spec.resources.requests.", ".limits", "FieldValueInvalid")],
        "requests": _resource_map("requests"), "limits": _resource_map("limits"),
    },
    "core.v1.EnvVar": {
        "x-kubernetes-validations": [
            cel("!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both.")],
        "name": {"minLength": 1, "maxLength": 256, "pattern": "^[-._a-zA-Z][-._a-zA-Z0-9]*$"},
        "value": {"maxLength": 32768},
        "valueFrom": {"pick": ["secretKeyRef", "configMapKeyRef", "fieldRef"], "x-kubernetes-validations": [
            cel("[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)]"
                ".filter(x, x).size() == 1",
                "set exactly one of secretKeyRef, configMapKeyRef and fieldRef.")]},
    },
    "core.v1.SecretKeySelector": _KEY_SELECTOR,
    "core.v1.ConfigMapKeySelector": _KEY_SELECTOR,
    "core.v1.ObjectFieldSelector": {
        "fieldPath": {"maxLength": 256, "x-kubernetes-validations": [cel(
            f'self.matches(r"{FIELD_PATH}")',
            "is not a pod field an environment variable can read; use metadata.name, metadata.namespace, "
            "metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, "
            "spec.serviceAccountName, status.hostIP(s) or status.podIP(s).", reason="FieldValueInvalid")]},
        "apiVersion": {"enum": ["v1"]},
    },
    "networking.v1.NetworkPolicyPeer": {
        "x-kubernetes-validations": [
            cel("has(self.podSelector) || has(self.namespaceSelector) || has(self.ipBlock)",
                "set podSelector, namespaceSelector or ipBlock.", reason="FieldValueRequired"),
            cel("!has(self.ipBlock) || (!has(self.podSelector) && !has(self.namespaceSelector))",
                "ipBlock cannot be combined with podSelector or namespaceSelector.", ".ipBlock",
                "FieldValueForbidden")],
    },
    "networking.v1.IPBlock": {
        "cidr": {"maxLength": 43, "x-kubernetes-validations": [cel(
            "isCIDR(self)", "must be a CIDR such as 10.0.0.0/16 or 2001:db8::/64.",
            reason="FieldValueInvalid")]},
        "except": {"maxItems": 16, "[]": {
            "description": "A CIDR inside cidr that is not admitted.", "maxLength": 43,
            "x-kubernetes-validations": [cel(
            "isCIDR(self)", "must be a CIDR such as 10.0.1.0/24.", reason="FieldValueInvalid")]}},
    },
    "autoscaling.v2.HPAScalingRules": {
        "pick": ["stabilizationWindowSeconds", "selectPolicy", "policies"],
        "stabilizationWindowSeconds": {"minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {"maxItems": 10},
    },
    "autoscaling.v2.HPAScalingPolicy": {
        "type": {"enum": ["Pods", "Percent"]}, "value": {"minimum": 1},
        "periodSeconds": {"minimum": 1, "maximum": 1800},
    },
}


@functools.cache
def _definitions() -> Mapping[str, Any]:
    spec = importlib.util.find_spec("kubernetes_validate")  # its data only; nothing imported
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kubernetes-validate is not installed: pip install '.[dev]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema" / KUBERNETES_SCHEMA
    return json.loads((path / "_definitions.json").read_text(encoding="utf-8"))["$defs"]


def _short(full: str) -> str:
    return next((full.removeprefix(p) for p in _PREFIXES if full.startswith(p)), full)


def kubernetes_type(name: str) -> dict[str, Any]:
    """The structural schema of a Kubernetes type by its short name (e.g. core.v1.Affinity)."""
    defs = _definitions()
    full = next((p + name for p in _PREFIXES if p + name in defs), None)
    if full is None:
        raise KeyError(f"{name} is not a type of Kubernetes {KUBERNETES_SCHEMA}")
    return copy.deepcopy(_expand(full))  # the caller may change it; OVERLAYS must not change


def _expand(full: str) -> dict[str, Any]:
    if full == _QUANTITY:
        return {**INT_OR_STRING, "maxLength": 64, "pattern": QUANTITY_PATTERN}
    if full == _INT_OR_STRING:
        return dict(INT_OR_STRING)
    node = _convert(_definitions()[full])
    return _overlay(node, OVERLAYS.get(_short(full), {}))


def _convert(raw: Mapping[str, Any]) -> dict[str, Any]:
    if "$ref" in raw:
        target = _expand(raw["$ref"].rsplit("/", 1)[-1])
        return ordered({**target, **({"description": raw["description"]} if "description" in raw else {})})
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "type":
            types = [t for t in (value if isinstance(value, list) else [value]) if t != "null"]
            out[key] = types[0]
        elif key == "properties":
            out[key] = {name: _convert(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = _convert(value)
        elif key == "enum":
            out[key] = [v for v in value if v is not None]
        elif key == "description":
            out[key] = " ".join(value.split())
        elif key in ("format", "required") or key in KUBERNETES_EXTENSIONS:
            out[key] = value
    return ordered(out)


def _overlay(node: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    node = dict(node)
    for key, value in overlay.items():
        if key == "pick":
            node["properties"] = {k: v for k, v in node["properties"].items() if k in value}
            if "required" in node:
                node["required"] = [r for r in node["required"] if r in value]
        elif key in _KEYWORDS:
            node[key] = value
        elif key in ("[]", "{}"):
            part = "items" if key == "[]" else "additionalProperties"
            node[part] = _overlay(node[part], value)
        else:
            if key not in node.get("properties", {}):
                raise KeyError(f"overlay names {key!r}, which the Kubernetes type does not have")
            node["properties"] = {**node["properties"], key: _overlay(node["properties"][key], value)}
    return ordered(node)
