"""BEMService objects and per-kind build helpers for the builder tests (no __init__.py here: a package named `operator`
would shadow the standard library)."""

from __future__ import annotations

import copy
from typing import Any

from bem_operator.builders import BuildOptions, parse_bemservice
from bem_operator.builders.kinds import CHILD_REGISTRY
from bem_operator.builders.runtime_fields import RUNTIME_FIELDS

BASE_SPEC: dict[str, Any] = {"model": {"claimName": "models"}}


def make_bems(spec: dict[str, Any] | None = None, name: str = "demo", namespace: str = "team-a",
              uid: str = "0b1c2d3e-0000-4000-8000-000000000001") -> dict[str, Any]:
    """A BEMService as the API server hands it over (before defaults when spec is partial)."""
    return {
        "apiVersion": "bem.ai/v1alpha1",
        "kind": "BEMService",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": 1},
        "spec": copy.deepcopy(spec if spec is not None else BASE_SPEC),
    }


def with_spec(**fields: Any) -> dict[str, Any]:
    """The base spec plus the given top-level fields."""
    spec = copy.deepcopy(BASE_SPEC)
    spec.update(copy.deepcopy(fields))
    return make_bems(spec)


def with_every_runtime_field(bems: dict[str, Any]) -> dict[str, Any]:
    """`bems` with every field of builders/runtime_fields.py set: 1 where an integer is read,
    0.5 where a number is, one CIDR where a list is."""
    for field in RUNTIME_FIELDS:
        section = bems["spec"]
        for part in field.section:
            section = section.setdefault(part, {})
        section[field.key] = {int: 1, float: 0.5, list: ["10.0.0.0/8"]}[field.kind]
    return bems


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {child["kind"]: child for child in children}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """Env as name -> value (or valueFrom); also checks names are unique (SSA needs that)."""
    items = container(deployment)["env"]
    names = [item["name"] for item in items]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in items}


def build(kind: str, bems: dict[str, Any], options: BuildOptions | None = None) -> dict[str, Any] | None:
    """One child of a BEMService object, by the registry's builder (None when not asked for)."""
    [child] = [c for c in CHILD_REGISTRY if c.kind == kind]
    return child.build(parse_bemservice(bems), options or BuildOptions())


def build_deployment(bems: dict[str, Any], options: BuildOptions | None = None) -> dict[str, Any]:
    deployment = build("Deployment", bems, options)
    assert deployment is not None
    return deployment


def build_service(bems: dict[str, Any], options: BuildOptions | None = None) -> dict[str, Any]:
    service = build("Service", bems, options)
    assert service is not None
    return service


def build_hpa(bems: dict[str, Any], options: BuildOptions | None = None) -> dict[str, Any] | None:
    return build("HorizontalPodAutoscaler", bems, options)


def build_pdb(bems: dict[str, Any], options: BuildOptions | None = None) -> dict[str, Any] | None:
    return build("PodDisruptionBudget", bems, options)


def build_service_monitor(bems: dict[str, Any], options: BuildOptions | None = None) -> dict[str, Any] | None:
    return build("ServiceMonitor", bems, options)


def build_scaled_object(bems: dict[str, Any], options: BuildOptions | None = None) -> dict[str, Any] | None:
    return build("ScaledObject", bems, options)
