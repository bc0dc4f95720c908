"""kopf settings: watch timeouts, nothing written by kopf."""
from __future__ import annotations

import kopf

from bem_operator.kopf_config import configure
from bem_operator.settings import OperatorSettings


def test_configure_sets_timeouts_and_posts_nothing() -> None:
    kopf_settings = kopf.OperatorSettings()
    configure(kopf_settings, OperatorSettings())
    assert kopf_settings.peering.standalone
    assert kopf_settings.watching.server_timeout and kopf_settings.watching.client_timeout
    assert kopf_settings.watching.connect_timeout
    assert kopf_settings.watching.client_timeout > kopf_settings.watching.server_timeout
    # kopf watches only the custom resources, whole; the children have their own watches
    assert not list(kopf_settings.watching.label_selectors)
    # the reconcile posts the events of status transitions itself (only the leader writes)
    assert not kopf_settings.posting.enabled and not kopf_settings.posting.loggers
