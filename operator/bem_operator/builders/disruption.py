"""The PodDisruptionBudget (policy/v1)."""

from __future__ import annotations

from typing import Any

from bem_operator.builders.labels import child_metadata, selector_labels
from bem_operator.builders.spec import DEFAULT_PDB_MAX_UNAVAILABLE
from bem_operator.builders.spec_types import BEMServiceSpec


def pdb_from_spec(spec: BEMServiceSpec) -> dict[str, Any] | None:
    budget = spec.disruption_budget
    if not budget.enabled:
        return None
    body: dict[str, Any] = {"selector": {"matchLabels": selector_labels(spec.name)}}
    if budget.min_available is not None:
        body["minAvailable"] = budget.min_available
    else:
        body["maxUnavailable"] = (DEFAULT_PDB_MAX_UNAVAILABLE if budget.max_unavailable is None
                                  else budget.max_unavailable)
    # A pod whose model never loaded must not block a node drain.
    body["unhealthyPodEvictionPolicy"] = "AlwaysAllow"
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": child_metadata(spec), "spec": body}
