"""In-memory index of the children the watches have seen, by parent.

Fed by the owner-labelled child watches; read by the reconcile to find
obsolete children without listing, and to ignore the echo of its own writes.
Shared between the event loop and worker threads, hence the lock.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

OWNER_LABEL = "bem.ai/service"
OWNER_KIND = "BEMService"


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


def controller_uid(body: Mapping[str, Any]) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == OWNER_KIND and ref.get("controller"):
            return ref.get("uid")
    return None


class ChildIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str], dict[tuple[str, str], ChildRef]] = {}
        self._applied: dict[tuple[str, str, str, str], str] = {}  # child -> resourceVersion

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        parent = parent_of(body)
        if parent is None:
            return
        meta = body["metadata"]
        kind_key = (body.get("apiVersion", ""), body.get("kind", ""))
        with self._lock:
            by_kind = self._children.setdefault(parent, {})
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

    def owned(self, namespace: str, parent: str, owner_uid: str) -> list[ChildRef]:
        """Children of one BEMService whose controller is the object with `owner_uid`."""
        with self._lock:
            refs = list(self._children.get((namespace, parent), {}).values())
        return [ref for ref in refs if ref.owner_uid == owner_uid]

    def note_applied(self, live: Mapping[str, Any]) -> None:
        meta = live.get("metadata") or {}
        key = (live.get("apiVersion", ""), live.get("kind", ""), meta.get("namespace", ""),
               meta.get("name", ""))
        with self._lock:
            self._applied[key] = meta.get("resourceVersion", "")

    def is_own_write(self, body: Mapping[str, Any]) -> bool:
        """True for the watch event our own last apply caused: nothing new to react to."""
        meta = body.get("metadata") or {}
        key = (body.get("apiVersion", ""), body.get("kind", ""), meta.get("namespace", ""),
               meta.get("name", ""))
        with self._lock:
            return bool(meta.get("resourceVersion")) and \
                self._applied.get(key) == meta.get("resourceVersion")
