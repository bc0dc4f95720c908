"""The HorizontalPodAutoscaler (autoscaling/v2) that owns the Deployment's replica count with
spec.autoscaling.provider HPA (the default; with KEDA, keda.py builds a ScaledObject instead)."""

from __future__ import annotations

import copy
from typing import Any

from bem_operator.builders.labels import child_metadata
from bem_operator.builders.spec_types import BEMServiceSpec

REQUEST_RATE_METRIC = "bem_requests_per_second"


def quantity(value: float) -> str:
    """A Kubernetes quantity for a positive number: whole numbers plain, others in milli-units."""
    if float(value).is_integer():
        return str(int(value))
    milli = round(value * 1000)
    return f"{max(milli, 1)}m"


def scale_target(spec: BEMServiceSpec) -> dict[str, Any]:
    """What either provider's autoscaler scales: the runtime Deployment."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name}


def _utilization(resource: str, percent: int) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}},
    }


def hpa_from_spec(spec: BEMServiceSpec) -> dict[str, Any] | None:
    auto = spec.autoscaling
    if auto is None or auto.provider != "HPA":
        return None
    metrics: list[dict[str, Any]] = [{
        "type": "Pods",
        "pods": {
            "metric": {"name": REQUEST_RATE_METRIC},
            "target": {"type": "AverageValue", "averageValue": quantity(auto.target_requests_per_second)},
        },
    }] if auto.request_rate else []
    metrics += [_utilization(resource, percent) for resource, percent in auto.utilization_targets]
    body: dict[str, Any] = {
        "scaleTargetRef": scale_target(spec),
        "minReplicas": auto.min_replicas,
        "maxReplicas": auto.max_replicas,
        "metrics": metrics,
    }
    if auto.behavior:
        body["behavior"] = copy.deepcopy(dict(auto.behavior))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(spec),
        "spec": body,
    }
