"""Names, labels, selectors and owner references shared by every child (docs/architecture.md)."""

from __future__ import annotations

from typing import Any

from bem_operator.builders.spec_types import BEMServiceSpec
from bem_operator.constants import API_VERSION, KIND, OWNER_LABEL

__all__ = ["child_labels", "child_metadata", "owner_reference", "selector_labels", "selector_string"]


def selector_labels(name: str) -> dict[str, str]:
    """The pod selector: fixed for the life of a BEMService (Deployment selectors are immutable)."""
    return {"app.kubernetes.io/instance": name, OWNER_LABEL: name}


def selector_string(name: str) -> str:
    """The selector in label-query form, as the scale subresource wants it in status.selector."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def child_labels(name: str) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "bem-runtime",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/managed-by": "bem-operator",
        OWNER_LABEL: name,
    }
    return dict(sorted(labels.items()))


def owner_reference(spec: BEMServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": spec.name,
        "uid": spec.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(spec: BEMServiceSpec, name: str | None = None) -> dict[str, Any]:
    """Metadata of every child: named after the BEMService (unless `name` is given), labelled,
    owned by it."""
    return {
        "name": name or spec.name,
        "namespace": spec.namespace,
        "labels": child_labels(spec.name),
        "ownerReferences": [owner_reference(spec)],
    }
