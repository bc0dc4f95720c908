"""What a rendered pod template needs to exist before it can run (pure).

Read from the rendered Deployment rather than from the spec, so that every
Secret or PVC the builders reference is checked, whatever spec field made it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, order=True)
class Reference:
    kind: str  # "Secret" or "PersistentVolumeClaim"
    name: str
    key: str | None = None  # a Secret key that must be present

    def describe(self) -> str:
        what = f"{self.kind} '{self.name}'"
        return f"{what} (key '{self.key}')" if self.key else what


def required_references(deployment: Mapping[str, Any]) -> list[Reference]:
    """Secrets, Secret keys and PVCs the pod template uses, optional ones left out."""
    pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
    found = set(_volume_references(pod.get("volumes") or []))
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        found.update(_container_references(container))
    return sorted(found)


def _volume_references(volumes: list[Mapping[str, Any]]) -> Iterator[Reference]:
    for volume in volumes:
        secret = volume.get("secret")
        if secret and not secret.get("optional"):
            items = secret.get("items") or []
            if not items:
                yield Reference("Secret", secret["secretName"])
            for item in items:
                yield Reference("Secret", secret["secretName"], item["key"])
        claim = volume.get("persistentVolumeClaim")
        if claim:
            yield Reference("PersistentVolumeClaim", claim["claimName"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            projected = source.get("secret")
            if projected and not projected.get("optional"):
                for item in projected.get("items") or [{"key": None}]:
                    yield Reference("Secret", projected["name"], item.get("key"))


def _container_references(container: Mapping[str, Any]) -> Iterator[Reference]:
    for env in container.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref and not ref.get("optional"):
            yield Reference("Secret", ref["name"], ref["key"])
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef")
        if ref and not ref.get("optional"):
            yield Reference("Secret", ref["name"])
