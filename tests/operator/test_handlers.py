"""The kopf wiring: which handlers exist for which resources."""
from __future__ import annotations

from typing import Any

import kopf
import pytest

from bem_operator.builders.kinds import CHILD_REGISTRY
from bem_operator.controller import Controller
from bem_operator.handlers import register
from bem_operator.k8s import KubeApi
from bem_operator.settings import OperatorSettings
from bem_operator.watches import served_kinds


async def lead() -> None:
    return None


def controller() -> Controller:
    return Controller(KubeApi(None), OperatorSettings())  # type: ignore[arg-type]


def handler_ids(registry: kopf.OperatorRegistry) -> set[str]:
    handlers: list[Any] = []
    for sub in (registry._changing, registry._watching, registry._spawning):
        handlers.extend(sub.get_all_handlers())
    return {str(h.id) for h in handlers}


def test_kopf_watches_only_the_custom_resources() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, controller(), lead)
    assert handler_ids(registry) == {"watch-bemservices", "watch-bemcheckpoints"}


@pytest.mark.parametrize("monitors", [True, False])
def test_reflectors_cover_every_served_child_kind_and_the_pods(monitors: bool) -> None:
    plurals = {kind.plural for kind in served_kinds(() if monitors else ("ServiceMonitor",))}
    assert {"deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets",
            "configmaps", "networkpolicies"} <= plurals
    assert ("servicemonitors" in plurals) is monitors
    assert "pods" in plurals  # runtime pods say whether the model loaded
    assert len(served_kinds(())) == len(CHILD_REGISTRY) + 1


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
