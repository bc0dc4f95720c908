"""The runtime Deployment."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bem_operator.builders.labels import child_metadata, selector_labels
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.pod import build_pod_template
from bem_operator.builders.spec import DEFAULT_REPLICAS
from bem_operator.builders.spec_types import BEMServiceSpec

# Extra time after the startup probe's budget before a rollout is reported as stalled.
PROGRESS_MARGIN_SECONDS = 300


def config_hash(spec: BEMServiceSpec, options: BuildOptions) -> str:
    """Hash of what the pods read (model, runtime, auth and cache references, GPU, resources).

    Secrets enter by reference and, when the API layer passes them, by resourceVersion: the
    builders never see Secret contents.
    """
    config = {
        **{part: getattr(spec, part) for part in ("model", "runtime", "auth", "cache", "gpu", "resources")},
        "served_name": spec.served_name,
        "referenced": sorted(list(pair) for pair in options.referenced_versions),
    }
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """JSON for the typed spec's sections (by field name, unset fields included)."""
    return value.model_dump(mode="json")


def _strategy(spec: BEMServiceSpec) -> dict[str, Any]:
    if spec.rollout.strategy == "Recreate":
        return {"type": "Recreate"}
    rolling = {}
    if spec.rollout.max_surge is not None:
        rolling["maxSurge"] = spec.rollout.max_surge
    if spec.rollout.max_unavailable is not None:
        rolling["maxUnavailable"] = spec.rollout.max_unavailable
    strategy: dict[str, Any] = {"type": "RollingUpdate"}
    if rolling:
        strategy["rollingUpdate"] = rolling
    return strategy


def deployment_from_spec(spec: BEMServiceSpec, options: BuildOptions) -> dict[str, Any]:
    body: dict[str, Any] = {}
    # While an HPA owns the replica count the applied object carries no spec.replicas at all,
    # so the operator never writes it back.
    if spec.autoscaling is None:
        body["replicas"] = DEFAULT_REPLICAS if spec.replicas is None else spec.replicas
    body.update({
        "selector": {"matchLabels": selector_labels(spec.name)},
        "strategy": _strategy(spec),
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": spec.runtime.startup_timeout_seconds + PROGRESS_MARGIN_SECONDS,
        "template": build_pod_template(spec, options, config_hash(spec, options)),
    })
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(spec),
        "spec": body,
    }
