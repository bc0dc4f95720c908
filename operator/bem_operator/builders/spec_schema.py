"""How the typed spec is declared and read: the base class of its sections, the markers the CRD
generator reads (CEL rules, Kubernetes types, runtime settings, builder-only defaults) and walks
over the fields (their paths, values and CRD defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One x-kubernetes-validations entry."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def rules(*entries: dict[str, str], **schema: Any) -> dict[str, Any]:
    """Schema additions for a field or class: CEL rules plus plain keys (maxItems, ...)."""
    return {**schema, **({"x-kubernetes-validations": list(entries)} if entries else {})}


def core(type_name: str, **schema: Any) -> dict[str, Any]:
    """This field's schema is the Kubernetes type `type_name` (e.g. core.v1.Affinity), read
    from the Kubernetes OpenAPI with this project's limits (core_v1.py); `schema` adds keys on
    top (maxItems, a description)."""
    return {"x-bem-core": type_name, **schema}


def BUILDER_DEFAULT(schema: dict[str, Any]) -> None:  # noqa: N802 (a marker, used like a constant)
    """json_schema_extra for a field whose Python default is the builders' only: not in the CRD."""
    schema.pop("default", None)


@dataclass(frozen=True)
class RuntimeEnv:
    """Annotated marker: the field is handed to the runtime as this env var (and its flag)."""
    env: str


class Section(BaseModel):
    """Base of every spec class: camelCase names, no type coercion ("3" is not 3), read-only."""
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, strict=True,
                              frozen=True, extra="ignore")


def walk_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted camelCase path, FieldInfo) of every field under `model`, sections before their
    fields, in declaration order."""
    out: list[tuple[str, Any]] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        out.append((path, info))
        nested = _section_class(info.annotation)
        if nested is not None:
            out += walk_fields(nested, f"{path}.")
    return out


def _section_class(annotation: Any) -> type[Section] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def get_path(spec: Section, path: str) -> Any:
    """The value at a dotted camelCase path (None when a section on the way is unset)."""
    node: Any = spec
    for part in path.split("."):
        if node is None:
            return None
        fields = type(node).model_fields
        node = getattr(node, next(n for n, f in fields.items() if (f.alias or n) == part))
    return node


def crd_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Field path -> the default the CRD gives it (sections defaulted as a whole left out)."""
    return {path: info.default for path, info in walk_fields(model)
            if not info.is_required() and info.default_factory is None and info.default is not None
            and info.json_schema_extra is not BUILDER_DEFAULT}
