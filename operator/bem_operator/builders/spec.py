"""Parse a BEMService object into the typed spec (spec_types.py).

The API server has already applied the CRD's defaults and rules, all generated from the same
classes; parsing applies the field-level ones again for objects that never went through an API
server (unit tests, a cluster with an older CRD) and turns the first error into a SpecError that
names the field path. Cross-field rules are the API server's alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from bem_operator.builders.spec_schema import crd_defaults
from bem_operator.builders.spec_types import BEMServiceSpec, Spec

__all__ = ["DEFAULTS", "SpecError", "BEMServiceSpec", "parse_bemservice"]

# The CRD's defaults (from the typed spec) plus the two only the builders apply: a CRD default
# on spec.replicas would collide with spec.autoscaling, and the PDB's maxUnavailable is the
# fallback only when minAvailable is unset.
DEFAULT_REPLICAS = 1
DEFAULT_PDB_MAX_UNAVAILABLE = 1
DEFAULTS: dict[str, Any] = {**crd_defaults(Spec), "replicas": DEFAULT_REPLICAS,
                            "disruptionBudget.maxUnavailable": DEFAULT_PDB_MAX_UNAVAILABLE}


class SpecError(ValueError):
    """A BEMService spec that cannot work.

    `field` is the path of the offending field (e.g. `spec.autoscaling.minReplicas`); the message
    names it and says what to fix.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def parse_bemservice(bems: Mapping[str, Any]) -> BEMServiceSpec:
    """Parses a whole BEMService object (metadata + spec) into the typed, defaulted spec."""
    meta = bems.get("metadata")
    identity = {key: (meta or {}).get(key) if isinstance(meta, Mapping) else None
                for key in ("name", "namespace", "uid")}
    for key, value in identity.items():
        if not isinstance(value, str) or not value:
            raise SpecError(f"metadata.{key}", "is required to build child objects")
    spec = bems.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError("spec", "is required")
    try:
        return BEMServiceSpec.model_validate({**_plain(spec), **identity})
    except ValidationError as exc:
        raise spec_error(exc) from None


def _plain(value: Any) -> Any:
    """Plain dicts and lists (the strict parse refuses other mappings, such as kopf's views)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_UNION_TAGS = frozenset({"int", "str", "float", "bool", "dict", "list", "none"})


def spec_error(exc: ValidationError) -> SpecError:
    """The first of the library's errors, as a SpecError naming the field path."""
    error = exc.errors(include_url=False)[0]
    path = "spec"
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in _UNION_TAGS and "[" not in part:  # a union member's tag is no field
            path += f".{part}"
    problem = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        problem = "is required"
    return SpecError(path, problem)
