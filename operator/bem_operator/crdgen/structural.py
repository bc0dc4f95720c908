"""JSON schema (pydantic's: $ref, anyOf with null, 2020-12 keywords) to a structural CRD schema
(OpenAPI v3 as apiextensions.k8s.io/v1 takes it: everything inlined, one type per node,
int-or-string spelled the Kubernetes way, x-kubernetes-* extensions kept)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Kubernetes extensions a CRD schema may carry; any other x- key is dropped.
KUBERNETES_EXTENSIONS = frozenset({
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource"})
_DROPPED = frozenset({"title", "$schema", "$id", "$defs"})
INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
# Kept on a node that a Kubernetes type replaces (core()): what our field says about its use.
_USE_KEYS = ("description", "default", "maxItems", "maxProperties", "x-kubernetes-validations",
             "x-kubernetes-list-type", "x-kubernetes-list-map-keys")
# The order keys are written in, so the YAML reads top-down (type first, children last).
_ORDER = ("type", "format", "description", "default", "enum", "required", "minimum", "exclusiveMinimum",
          "maximum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems",
          "maxProperties", "anyOf", "x-kubernetes-int-or-string", "x-kubernetes-list-type",
          "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-validations",
          "properties", "items", "additionalProperties")

CoreTypes = Callable[[str], dict[str, Any]]


def from_pydantic(schema: Mapping[str, Any], core: CoreTypes) -> dict[str, Any]:
    """A model's JSON schema (model_json_schema(by_alias=True)) as a structural schema; `core`
    returns the structural schema of a Kubernetes type named by a core() marker."""
    defs = schema.get("$defs", {})
    return _node(schema, defs, core)


def _node(node: Mapping[str, Any], defs: Mapping[str, Any], core: CoreTypes) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:  # the field's own keys (description, default) win over the class's
        node = {**defs[node.pop("$ref").rsplit("/", 1)[-1]], **node}
    options = node.pop("anyOf", None)
    if options is not None:
        kept = [o for o in options if o.get("type") != "null"]
        if sorted(o.get("type", "") for o in kept) == ["integer", "string"]:
            node.update(INT_OR_STRING)
        elif len(kept) == 1:
            return _node({**kept[0], **node}, defs, core)  # X | None is X: absent means None
        else:
            raise ValueError(f"no structural form for anyOf {options}")
    if node.get("default", 0) is None:
        del node["default"]
    if "x-bem-core" in node:
        return _replaced(node, core)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key.startswith("x-") and key not in KUBERNETES_EXTENSIONS):
            continue
        if key == "properties":
            out[key] = {name: _node(child, defs, core) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = _node(value, defs, core)
        elif key == "additionalProperties" or (key == "type" and "anyOf" in node):
            continue  # a boolean: pruning and strict field validation already refuse unknowns
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):  # 2020-12 number to OpenAPI v3 flag
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "description":
            out[key] = " ".join(str(value).split())
        else:
            out[key] = value
    if out.get("type") == "integer" and "format" not in out:
        out["format"] = "int32"
    return ordered(out)


def _replaced(node: Mapping[str, Any], core: CoreTypes) -> dict[str, Any]:
    """A field typed by a Kubernetes type: that type's schema, with our limits on top."""
    use = {k: node[k] for k in _USE_KEYS if k in node}
    if "description" in use:
        use["description"] = " ".join(use["description"].split())
    schema = core(node["x-bem-core"])
    if node.get("type") == "array":
        return ordered({"type": "array", **use, "items": schema})
    return ordered({**schema, **use})


def ordered(node: Mapping[str, Any]) -> dict[str, Any]:
    rank = {key: i for i, key in enumerate(_ORDER)}
    return {k: node[k] for k in sorted(node, key=lambda k: rank.get(k, len(rank)))}
