"""What the autoscaler of a BEMService reports (pure): status.autoscaling and the Autoscaling
condition, for status.py to put into the status.

Read from the HorizontalPodAutoscaler that scales the Deployment (the operator's own with
spec.autoscaling.provider HPA; with KEDA, the one KEDA makes from our ScaledObject, named by
builders.keda.keda_hpa_name) and, with KEDA, from the ScaledObject's Ready and Active
conditions. The Autoscaling condition informs; only a provider the cluster lacks (KEDA not
installed) degrades the service.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from bem_operator.builders.autoscaling import REQUEST_RATE_METRIC

KEDA_NOT_INSTALLED = "KEDANotInstalled"
_QUANTITY = re.compile(r"^([0-9.]+)(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {None: 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9,
           "T": 1e12, "P": 1e15, "E": 1e18, "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30,
           "Ti": 2.0 ** 40, "Pi": 2.0 ** 50, "Ei": 2.0 ** 60}


@dataclasses.dataclass(frozen=True)
class AutoscalerObserved:
    provider: str  # "HPA" or "KEDA"
    hpa_name: str  # the HorizontalPodAutoscaler that scales the Deployment
    scaled_object_name: str | None = None  # KEDA only
    served: bool = True  # False: the provider's API (KEDA's ScaledObject) is not served
    hpa: Mapping[str, Any] | None = None  # the live HPA, None until it exists
    scaled_object: Mapping[str, Any] | None = None  # the live ScaledObject (KEDA)


def not_installed(observed: AutoscalerObserved) -> tuple[str, str] | None:
    """(reason, message) of a provider the cluster lacks: it degrades the service."""
    if observed.served:
        return None
    return (KEDA_NOT_INSTALLED,
            "KEDA is not installed: this cluster does not serve keda.sh/v1alpha1 ScaledObject, "
            "so nothing scales the Deployment (spec.autoscaling.provider is KEDA); install "
            "KEDA (its CRDs and operator), or set spec.autoscaling.provider to HPA")


def autoscaling_status(observed: AutoscalerObserved) -> dict[str, Any]:
    """status.autoscaling: which provider scales, through which HPA, and what it reports.
    Every key is there, None when unknown, so that the merge patch of the status removes a
    value that no longer holds (e.g. scaledObject after a switch to the HPA provider)."""
    hpa_status = (observed.hpa or {}).get("status") or {}
    active = _condition(observed.scaled_object, "Active")
    replicas = {key: None if hpa_status.get(key) is None else int(hpa_status[key])
                for key in ("currentReplicas", "desiredReplicas")}
    return {
        "provider": observed.provider,
        "horizontalPodAutoscaler": observed.hpa_name,
        "scaledObject": observed.scaled_object_name,
        "active": None if active is None else active.get("status") == "True",
        **replicas,
        "currentRequestsPerSecond": _request_rate(observed.provider,
                                                  hpa_status.get("currentMetrics") or []),
        "lastScaleTime": hpa_status.get("lastScaleTime"),
    }


def autoscaling_condition(observed: AutoscalerObserved) -> tuple[bool, str, str]:
    """(status, reason, message) of the Autoscaling condition: whether the autoscaler can
    scale now, else why not, in the words of KEDA or the HPA controller."""
    missing = not_installed(observed)
    if missing is not None:
        return (False, *missing)
    hpa = f"HorizontalPodAutoscaler {observed.hpa_name}"
    if observed.scaled_object_name:
        ready = _condition(observed.scaled_object, "Ready")
        if ready is None or ready.get("status") != "True":
            said = (ready or {}).get("message") or "KEDA has not reported on it yet (is the " \
                "KEDA operator running?)"
            return (False, (ready or {}).get("reason") or "ScaledObjectNotReady",
                    f"ScaledObject {observed.scaled_object_name} is not ready: {said}")
    if observed.hpa is None:
        maker = "KEDA has not created" if observed.scaled_object_name else "waiting for"
        return (False, "AutoscalerPending", f"{maker} {hpa} yet")
    for kind in ("AbleToScale", "ScalingActive"):
        condition = _condition(observed.hpa, kind)
        if condition is not None and condition.get("status") == "False":
            return (False, condition.get("reason") or f"Not{kind}",
                    f"{hpa}: {condition.get('message') or kind + ' is False'}")
    via = f" (from KEDA ScaledObject {observed.scaled_object_name})" \
        if observed.scaled_object_name else ""
    return (True, "ScalingActive", f"{hpa}{via} scales the Deployment on the request rate")


def _request_rate(provider: str, metrics: list[Mapping[str, Any]]) -> float | None:
    """The per-pod request rate the HPA last read: its Pods metric bem_requests_per_second
    (provider HPA), or the External metric of KEDA's prometheus trigger (the only External
    one KEDA makes from our ScaledObject; cpu and memory are Resource metrics)."""
    for metric in metrics:
        if provider == "HPA" and metric.get("type") == "Pods" and \
                (metric.get("pods") or {}).get("metric", {}).get("name") == REQUEST_RATE_METRIC:
            return parse_quantity((metric["pods"].get("current") or {}).get("averageValue"))
        if provider == "KEDA" and metric.get("type") == "External":
            current = (metric.get("external") or {}).get("current") or {}
            return parse_quantity(current.get("averageValue") or current.get("value"))
    return None


def parse_quantity(value: Any) -> float | None:
    """A Kubernetes quantity ("1500m", "20", "1Gi") as a number; None when it is none."""
    match = _QUANTITY.match(str(value)) if value is not None else None
    if match is None:
        return None
    return round(float(match.group(1)) * _SUFFIX[match.group(2)], 3)


def _condition(body: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    for condition in ((body or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None
