"""kopf settings: watch timeouts, server-side child filters, nothing written by kopf."""
from __future__ import annotations

import kopf

from bem_operator.kopf_config import configure
from bem_operator.settings import OperatorSettings


def test_configure_sets_timeouts_and_selectors_and_posts_nothing() -> None:
    kopf_settings = kopf.OperatorSettings()
    configure(kopf_settings, OperatorSettings())
    assert kopf_settings.peering.standalone
    assert kopf_settings.watching.server_timeout and kopf_settings.watching.client_timeout
    assert kopf_settings.watching.connect_timeout
    assert kopf_settings.watching.client_timeout > kopf_settings.watching.server_timeout
    # the eight child kinds (the start-list ConfigMap, the NetworkPolicy and KEDA's ScaledObject
    # among them) and
    # the runtime pods, each filtered by the owner label
    assert len(list(kopf_settings.watching.label_selectors)) == 9
    assert kopf_settings.watching.label_selectors["keda.sh", "v1alpha1", "scaledobjects"] == "bem.ai/service"
    assert kopf_settings.watching.label_selectors["", "v1", "pods"] == "bem.ai/service"
    # the reconcile posts the events of status transitions itself (only the leader writes)
    assert not kopf_settings.posting.enabled and not kopf_settings.posting.loggers
