"""The kopf wiring: which handlers exist for which resources."""
from __future__ import annotations

from typing import Any

import kopf
import pytest

from bem_operator.controller import Controller
from bem_operator.handlers import register
from bem_operator.k8s import KubeApi
from bem_operator.settings import OperatorSettings


async def lead() -> None:
    return None


def controller() -> Controller:
    return Controller(KubeApi(None), OperatorSettings())  # type: ignore[arg-type]


def handler_ids(registry: kopf.OperatorRegistry) -> set[str]:
    handlers: list[Any] = []
    for sub in (registry._changing, registry._watching, registry._spawning):
        handlers.extend(sub.get_all_handlers())
    return {str(h.id) for h in handlers}


@pytest.mark.parametrize("monitors", [True, False])
def test_handlers_cover_parent_causes_child_and_pod_watches(monitors: bool) -> None:
    registry = kopf.OperatorRegistry()
    register(registry, controller(), lead,
             unserved_kinds=() if monitors else ("ServiceMonitor",))
    ids = handler_ids(registry)
    assert {"watch-deployments", "watch-services", "watch-horizontalpodautoscalers",
            "watch-poddisruptionbudgets"} <= ids
    assert ("watch-servicemonitors" in ids) is monitors
    assert "watch-pods" in ids  # runtime pods say whether the model loaded
    assert "watch-bemservices" in ids


def test_no_handler_asks_kopf_for_a_finalizer() -> None:
    """A finalizer with no operator running blocks deleting the BEMService, its namespace and
    the CRD; kopf adds one for timers and daemons, so the periodic check is the controller's."""
    registry = kopf.OperatorRegistry()
    register(registry, controller(), lead)
    handlers: list[Any] = []
    for sub in (registry._changing, registry._watching, registry._spawning):
        handlers.extend(sub.get_all_handlers())
    assert handlers
    assert [str(h.id) for h in handlers if getattr(h, "requires_finalizer", None)] == []
    assert list(registry._spawning.get_all_handlers()) == []  # no timers, no daemons
    # only event handlers: kopf keeps no diff-base or progress records on the objects
    assert list(registry._changing.get_all_handlers()) == []
