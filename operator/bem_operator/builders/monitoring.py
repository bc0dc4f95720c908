"""The Prometheus Operator ServiceMonitor (monitoring.coreos.com/v1) for the runtime's /metrics."""

from __future__ import annotations

from typing import Any

from bem_operator.builders.labels import child_metadata, selector_labels
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.spec_types import BEMServiceSpec


def service_monitor_from_spec(spec: BEMServiceSpec, options: BuildOptions) -> dict[str, Any] | None:
    if not spec.monitoring.service_monitor or not options.service_monitor_available:
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": child_metadata(spec),
        "spec": {
            # Selects the Service, which carries the same labels as the pods.
            "selector": {"matchLabels": selector_labels(spec.name)},
            "endpoints": [{"port": "metrics", "path": "/metrics", "scheme": "http",
                           "interval": spec.monitoring.interval}],
        },
    }
