"""In-memory index of the children the watches have seen, by parent.

Fed by the owner-labelled child watches; read by the reconcile to find
obsolete children without listing, and to ignore the echo of its own writes.
Shared between the event loop and worker threads, hence the lock.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from bem_operator.builders.kinds import DEPLOYMENT, HPA, SCALED_OBJECT
from bem_operator.constants import CONFIG_HASH_ANNOTATION
from bem_operator.constants import KIND as OWNER_KIND
from bem_operator.constants import OWNER_LABEL

__all__ = ["OWNER_KIND", "OWNER_LABEL", "Change", "ChildIndex", "ChildRef", "parent_of"]


class Change(enum.Enum):
    OWN_WRITE = "own-write"  # the echo of our own apply: nothing to do
    STATUS_ONLY = "status-only"  # a controller updated status: refresh the parent's status
    CHANGED = "changed"  # created, deleted or edited: reconcile the parent fully


def fingerprint(body: Mapping[str, Any]) -> str:
    """What the operator declares about a child (status excluded), as a digest."""
    meta = body.get("metadata") or {}
    declared = {key: meta.get(key) for key in ("labels", "annotations", "ownerReferences",
                                               "generation")}
    declared["spec"] = body.get("spec")
    return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    owner_uid: str | None  # uid of the controlling BEMService, if any


def parent_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, BEMService name) a child belongs to, from its owner label."""
    meta = body.get("metadata") or {}
    parent = (meta.get("labels") or {}).get(OWNER_LABEL)
    namespace = meta.get("namespace")
    return (namespace, parent) if parent and namespace else None


# Kinds whose status says what the autoscaler does (status.autoscaling): kept by name.
_AUTOSCALER_KINDS = frozenset({HPA.key, SCALED_OBJECT.key})


def controller_uid(body: Mapping[str, Any]) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == OWNER_KIND and ref.get("controller"):
            return ref.get("uid")
    return None


def foreign(body: Mapping[str, Any]) -> bool:
    """Labelled as a child but controlled by another object: the HPA that KEDA makes from our
    ScaledObject carries the ScaledObject's labels. Never ours to apply or delete; read only."""
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("kind") != OWNER_KIND for ref in refs)


class ChildIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str], dict[tuple[str, str], ChildRef]] = {}
        # child -> (resourceVersion, fingerprint) of what our last apply returned
        self._applied: dict[tuple[str, str, str, str], tuple[str, str]] = {}
        self._deployments: dict[tuple[str, str], Mapping[str, Any]] = {}  # by parent
        # HPAs (ours or KEDA's) and ScaledObjects by parent, then by (kind, name)
        self._autoscalers: dict[tuple[str, str], dict[tuple[str, str], Mapping[str, Any]]] = {}
        # runtime pods by parent, then by pod name: only what the status derivation reads
        self._pods: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}

    def observe_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Keeps the status-relevant part of a runtime pod (never written, only read)."""
        parent = parent_of(body)
        if parent is None:
            return
        meta = body["metadata"]
        with self._lock:
            pods = self._pods.setdefault(parent, {})
            if event_type == "DELETED":
                pods.pop(meta["name"], None)
                if not pods:
                    del self._pods[parent]
                return
            pods[meta["name"]] = slim_pod(body)

    def pods(self, namespace: str, parent: str) -> tuple[Mapping[str, Any], ...]:
        with self._lock:
            return tuple(self._pods.get((namespace, parent), {}).values())

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        parent = parent_of(body)
        if parent is None:
            return
        meta = body["metadata"]
        kind_key = (body.get("apiVersion", ""), body.get("kind", ""))
        with self._lock:
            if kind_key in _AUTOSCALER_KINDS:
                self._observe_autoscaler(parent, event_type, body)
            if foreign(body):
                return
            by_kind = self._children.setdefault(parent, {})
            if kind_key == DEPLOYMENT.key:
                if event_type == "DELETED":
                    self._deployments.pop(parent, None)
                else:
                    self._deployments[parent] = body
            if event_type == "DELETED":
                current = by_kind.get(kind_key)
                if current is not None and current.uid == meta.get("uid"):
                    del by_kind[kind_key]
                if not by_kind:
                    del self._children[parent]
                self._applied.pop((*kind_key, meta["namespace"], meta["name"]), None)
                return
            by_kind[kind_key] = ChildRef(kind_key[0], kind_key[1], meta["namespace"],
                                         meta["name"], meta.get("uid", ""), controller_uid(body))

    def _observe_autoscaler(self, parent: tuple[str, str], event_type: str | None,
                            body: Mapping[str, Any]) -> None:
        bodies = self._autoscalers.setdefault(parent, {})
        key = (body.get("kind", ""), body["metadata"]["name"])
        if event_type == "DELETED":
            bodies.pop(key, None)
            if not bodies:
                del self._autoscalers[parent]
        else:
            bodies[key] = body

    def autoscaler(self, namespace: str, parent: str, kind: str,
                   name: str) -> Mapping[str, Any] | None:
        """The latest HPA or ScaledObject of that name the watch delivered for a parent."""
        with self._lock:
            return self._autoscalers.get((namespace, parent), {}).get((kind, name))

    def owned(self, namespace: str, parent: str, owner_uid: str) -> list[ChildRef]:
        """Children of one BEMService whose controller is the object with `owner_uid`."""
        with self._lock:
            refs = list(self._children.get((namespace, parent), {}).values())
        return [ref for ref in refs if ref.owner_uid == owner_uid]

    def deployment(self, namespace: str, parent: str) -> Mapping[str, Any] | None:
        """The latest Deployment of a parent the watch delivered."""
        with self._lock:
            return self._deployments.get((namespace, parent))

    def note_applied(self, live: Mapping[str, Any]) -> None:
        with self._lock:
            self._applied[_key(live)] = ((live.get("metadata") or {}).get("resourceVersion", ""),
                                         fingerprint(live))

    def classify(self, event_type: str | None, body: Mapping[str, Any]) -> Change:
        """How much of the parent a child's watch event asks to reconcile."""
        if foreign(body):  # KEDA's HPA: its status feeds status.autoscaling, nothing more
            return Change.STATUS_ONLY
        if event_type == "DELETED":
            return Change.CHANGED
        with self._lock:
            applied = self._applied.get(_key(body))
        if applied is None:
            return Change.CHANGED
        if applied[0] and applied[0] == (body.get("metadata") or {}).get("resourceVersion"):
            return Change.OWN_WRITE
        return Change.STATUS_ONLY if applied[1] == fingerprint(body) else Change.CHANGED


def slim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """Name, config hash, deletion mark and status of a pod: all status.py needs of it."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {
        "metadata": {key: meta[key] for key in ("name", "deletionTimestamp") if key in meta}
        | {"annotations": {k: v for k, v in annotations.items() if k == CONFIG_HASH_ANNOTATION}},
        "status": {key: value for key, value in (body.get("status") or {}).items()
                   if key in ("phase", "conditions", "containerStatuses",
                              "initContainerStatuses")},
    }


def _key(body: Mapping[str, Any]) -> tuple[str, str, str, str]:
    meta = body.get("metadata") or {}
    return (body.get("apiVersion", ""), body.get("kind", ""), meta.get("namespace", ""),
            meta.get("name", ""))
