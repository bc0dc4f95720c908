"""The KEDA ScaledObject (keda.sh/v1alpha1) for spec.autoscaling.provider KEDA.

KEDA turns it into an HorizontalPodAutoscaler of its own (named by keda_hpa_name, so the status
can read it) on an External metric: the total request rate of this BEMService's pods from
Prometheus, with an AverageValue target, so the HPA divides it by the replica count and scales
on the per-pod rate, as the HPA provider does on bem_requests_per_second.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from bem_operator.builders.autoscaling import scale_target
from bem_operator.builders.labels import child_metadata
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.spec_types import BEMServiceSpec

# The runtime's routes that generate (bem_runtime/routes.py; a cross test checks them): the
# load the autoscaler follows. Probes (/health, /ready), scrapes (/metrics) and the light
# /v1/route and /v1/models calls are counted by the runtime too, and left out here.
GENERATION_ENDPOINTS = ("/v1/generate", "/api/generate", "/v1/completions", "/v1/chat/completions")
# Prometheus keeps at least four samples of each series in a rate() window this long.
RATE_WINDOW_SCRAPES = 4
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_MILLIS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def keda_hpa_name(name: str) -> str:
    """The HPA KEDA creates for a BEMService's ScaledObject (KEDA's own default naming, set
    explicitly; never the BEMService's name, which the HPA provider's HPA has, so switching
    providers never finds the other provider's HPA under the name it applies)."""
    return f"keda-hpa-{name}"


def rate_window(interval: str) -> str:
    """RATE_WINDOW_SCRAPES scrape intervals (spec.monitoring.interval, e.g. 15s or 1m30s)."""
    millis = sum(int(n) * _MILLIS[unit] for n, unit in _DURATION_PART.findall(interval))
    window = max(millis, 1) * RATE_WINDOW_SCRAPES
    return f"{window // 1000}s" if window % 1000 == 0 else f"{window}ms"


def request_rate_query(spec: BEMServiceSpec) -> str:
    """PromQL: requests per second to the generation endpoints of all this service's pods.

    The series are the runtime's bem_requests_total as our ServiceMonitor has Prometheus
    scrape them: prometheus-operator labels every target with namespace and service (the
    Service is named after the BEMService and selects only its pods), and with endpoint (the
    port name, "metrics"), which renames the runtime's own endpoint label to exported_endpoint
    (honorLabels is off)."""
    endpoints = "|".join(GENERATION_ENDPOINTS)
    selector = (f'namespace="{spec.namespace}",service="{spec.name}",'
                f'exported_endpoint=~"{endpoints}"')
    return f"sum(rate(bem_requests_total{{{selector}}}[{rate_window(spec.monitoring.interval)}]))"


def threshold(value: float) -> str:
    """A KEDA threshold: a decimal number (KEDA parses it as a float, not as a quantity)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _utilization(resource: str, percent: int) -> dict[str, Any]:
    return {"type": resource, "metricType": "Utilization", "metadata": {"value": str(percent)}}


def scaled_object_from_spec(spec: BEMServiceSpec, options: BuildOptions) -> dict[str, Any] | None:
    auto = spec.autoscaling
    if auto is None or auto.provider != "KEDA" or not options.keda_available:
        return None
    triggers: list[dict[str, Any]] = [{
        "type": "prometheus",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": options.prometheus_address,
            "query": request_rate_query(spec),
            "threshold": threshold(auto.target_requests_per_second),
        },
    }] if auto.request_rate else []
    triggers += [_utilization(resource, percent) for resource, percent in auto.utilization_targets]
    hpa_config: dict[str, Any] = {"name": keda_hpa_name(spec.name)}
    if auto.behavior:
        hpa_config["behavior"] = copy.deepcopy(dict(auto.behavior))
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": child_metadata(spec),
        "spec": {
            "scaleTargetRef": scale_target(spec),
            "minReplicaCount": auto.min_replicas,
            "maxReplicaCount": auto.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": hpa_config},
            "triggers": triggers,
        },
    }
