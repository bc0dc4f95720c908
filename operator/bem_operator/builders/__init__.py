"""Pure builders: a BEMService object in, the desired child objects out.

No I/O and no API client here (an import-linter contract in pyproject.toml keeps it so). Every
function is deterministic: the same input gives equal output, with no timestamps, so applying the
result again is a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bem_operator.builders.autoscaling import REQUEST_RATE_METRIC, hpa_from_spec
from bem_operator.builders.deployment import config_hash, deployment_from_spec
from bem_operator.builders.disruption import pdb_from_spec
from bem_operator.builders.fields import DEFAULTS, RESERVED_ENV, SpecError
from bem_operator.builders.labels import (
    API_VERSION,
    FIELD_MANAGER,
    GROUP,
    KIND,
    OWNER_LABEL,
    VERSION,
    child_labels,
    owner_reference,
    selector_labels,
    selector_string,
)
from bem_operator.builders.monitoring import service_monitor_from_spec
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.service import endpoint, service_from_spec
from bem_operator.builders.spec import parse_bemservice
from bem_operator.builders.spec_types import BEMServiceSpec

__all__ = [
    "API_VERSION", "CHILD_KINDS", "DEFAULTS", "FIELD_MANAGER", "GROUP", "KIND", "OWNER_LABEL",
    "REQUEST_RATE_METRIC", "RESERVED_ENV", "VERSION", "BEMServiceSpec", "BuildOptions", "SpecError",
    "build_children", "build_deployment", "build_hpa", "build_pdb", "build_service",
    "build_service_monitor", "child_labels", "config_hash", "endpoint", "owner_reference",
    "parse_bemservice", "selector_labels", "selector_string",
]

# Every kind the operator may create, in apply order, as (apiVersion, kind): the API layer
# deletes owned children of these kinds that build_children no longer returns.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
)

_DEFAULT_OPTIONS = BuildOptions()


def build_children(bems: Mapping[str, Any], options: BuildOptions = _DEFAULT_OPTIONS) -> list[dict[str, Any]]:
    """All desired children of one BEMService, in apply order.

    Deployment, Service, then the HPA (only with spec.autoscaling), the PDB (when enabled) and
    the ServiceMonitor (when enabled and its CRD is available). Raises SpecError for a spec
    that cannot work.
    """
    spec = parse_bemservice(bems)
    candidates = (
        deployment_from_spec(spec, options),
        service_from_spec(spec),
        hpa_from_spec(spec),
        pdb_from_spec(spec),
        service_monitor_from_spec(spec, options),
    )
    return [child for child in candidates if child is not None]


def build_deployment(bems: Mapping[str, Any], options: BuildOptions = _DEFAULT_OPTIONS) -> dict[str, Any]:
    return deployment_from_spec(parse_bemservice(bems), options)


def build_service(bems: Mapping[str, Any], options: BuildOptions = _DEFAULT_OPTIONS) -> dict[str, Any]:
    return service_from_spec(parse_bemservice(bems))


def build_hpa(bems: Mapping[str, Any], options: BuildOptions = _DEFAULT_OPTIONS) -> dict[str, Any] | None:
    """The HPA, or None when spec.autoscaling is unset."""
    return hpa_from_spec(parse_bemservice(bems))


def build_pdb(bems: Mapping[str, Any], options: BuildOptions = _DEFAULT_OPTIONS) -> dict[str, Any] | None:
    """The PDB, or None when spec.disruptionBudget.enabled is false."""
    return pdb_from_spec(parse_bemservice(bems))


def build_service_monitor(
    bems: Mapping[str, Any], options: BuildOptions = _DEFAULT_OPTIONS
) -> dict[str, Any] | None:
    """The ServiceMonitor, or None when disabled in the spec or its CRD is not available."""
    return service_monitor_from_spec(parse_bemservice(bems), options)
