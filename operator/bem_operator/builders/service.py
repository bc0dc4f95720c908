"""The Service in front of the runtime pods (only Ready pods get traffic: readiness on /ready)."""

from __future__ import annotations

from typing import Any

from bem_operator.builders.labels import child_metadata, selector_labels
from bem_operator.builders.pod import METRICS_PORT
from bem_operator.builders.spec_types import BEMServiceSpec


def service_from_spec(spec: BEMServiceSpec) -> dict[str, Any]:
    port: dict[str, Any] = {"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}
    if spec.service.node_port is not None:
        port["nodePort"] = spec.service.node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(spec),
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(spec.name),
            # metrics: what the ServiceMonitor scrapes (Prometheus names the target's endpoint
            # label after it). The admin port stays off the Service: the operator calls each pod.
            "ports": [port, {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics",
                             "protocol": "TCP"}],
        },
    }


def endpoint(spec: BEMServiceSpec) -> str:
    """In-cluster URL of the service, for status.endpoint."""
    return f"http://{spec.name}.{spec.namespace}.svc:{spec.service.port}"
