"""kopf settings: watch timeouts, server-side child filters, nothing written by kopf."""
from __future__ import annotations

import kopf

from bem_operator.builders.kinds import CHILD_REGISTRY, READ_REGISTRY
from bem_operator.kopf_config import configure
from bem_operator.settings import OperatorSettings


def test_configure_sets_timeouts_and_selectors_and_posts_nothing() -> None:
    kopf_settings = kopf.OperatorSettings()
    configure(kopf_settings, OperatorSettings())
    assert kopf_settings.peering.standalone
    assert kopf_settings.watching.server_timeout and kopf_settings.watching.client_timeout
    assert kopf_settings.watching.connect_timeout
    assert kopf_settings.watching.client_timeout > kopf_settings.watching.server_timeout
    # every child kind (the start-list ConfigMap, the NetworkPolicy, KEDA's ScaledObject, the
    # HTTPRoute and Traefik's Middleware among them) and the runtime pods, each filtered by the
    # owner label
    watched = len(CHILD_REGISTRY) + sum(kind.watched for kind in READ_REGISTRY)
    assert watched == 12
    assert len(list(kopf_settings.watching.label_selectors)) == watched
    assert kopf_settings.watching.label_selectors["keda.sh", "v1alpha1", "scaledobjects"] == "bem.ai/service"
    assert kopf_settings.watching.label_selectors["", "v1", "pods"] == "bem.ai/service"
    assert kopf_settings.watching.label_selectors["traefik.io", "v1alpha1", "middlewares"] == \
        "bem.ai/service"
    # the reconcile posts the events of status transitions itself (only the leader writes)
    assert not kopf_settings.posting.enabled and not kopf_settings.posting.loggers
