"""kopf handlers: declarations only; the bridge (bridge.py) does the work."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

import kopf

from bem_operator.bridge import KopfBridge
from bem_operator.builders.kinds import CHILD_REGISTRY
from bem_operator.constants import GROUP, OWNER_LABEL, PLURAL, VERSION
from bem_operator.kopf_config import WATCHED_RESOURCES, configure

BEMSERVICES = (GROUP, VERSION, PLURAL)


def register(registry: kopf.OperatorRegistry, bridge: KopfBridge,
             unserved_kinds: Collection[str] = ()) -> None:
    """Registers every handler of the operator in `registry`, bound to `bridge`; no watch of a
    child kind in `unserved_kinds`, those whose optional CRD (the ServiceMonitor's) the cluster
    does not serve (kopf would warn about it otherwise)."""
    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, bridge.settings)
        # The periodic drift check is the bridge's own task, not a kopf timer (kopf puts a
        # finalizer on every object that has a timer, and a finalizer with no operator
        # running blocks the deletion of the BEMService, its namespace and the CRD). It
        # starts with the first BEMService event, where kopf's event posting is set up.

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A fresh registry has none of kopf's default login handlers: use the same client.
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await bridge.close()

    @kopf.on.resume(*BEMSERVICES, registry=registry)
    @kopf.on.create(*BEMSERVICES, registry=registry)
    @kopf.on.update(*BEMSERVICES, registry=registry)
    async def reconcile(body: kopf.Body, reason: kopf.Reason, **_: Any) -> None:
        await bridge.reconcile(body, trigger=str(reason.value))

    @kopf.on.event(*BEMSERVICES, registry=registry)
    async def parent_changed(event: kopf.RawEvent, type: str | None, **_: Any) -> None:
        bridge.parent_changed(type, event["object"])

    async def child_changed(event: kopf.RawEvent, type: str | None, **_: Any) -> None:
        bridge.child_changed(type, event["object"])

    for child in CHILD_REGISTRY:
        if child.optional_crd and child.kind in unserved_kinds:
            continue
        kopf.on.event(child.group, child.version, child.plural,
                      labels={OWNER_LABEL: kopf.PRESENT},
                      id=f"watch-{child.plural}", registry=registry)(child_changed)

    async def pod_changed(event: kopf.RawEvent, type: str | None, **_: Any) -> None:
        bridge.pod_changed(type, event["object"])

    for group, version, plural in WATCHED_RESOURCES:
        kopf.on.event(group, version, plural, labels={OWNER_LABEL: kopf.PRESENT},
                      id=f"watch-{plural}", registry=registry)(pod_changed)
