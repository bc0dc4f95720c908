"""kopf settings: watch timeouts, no writes of kopf's own. kopf watches only the custom
resources; the children and pods have their own watches (watches.py)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import kopf

from bem_operator.settings import OperatorSettings

class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a diff base (a deep copy of the object) for every event, for change
    handlers; the operator has none (only event handlers), so none is built or kept."""

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    kopf_settings.peering.standalone = True
    # No CRD/namespace watching: the RBAC grants neither. Resources are discovered at start;
    # the reconcile itself re-checks the ServiceMonitor API, so monitoring installed later
    # still gets ServiceMonitors (their drift watch starts with the next operator restart).
    kopf_settings.scanning.disabled = True
    kopf_settings.watching.server_timeout = settings.watch_server_timeout
    kopf_settings.watching.client_timeout = settings.watch_client_timeout
    kopf_settings.watching.connect_timeout = settings.connect_timeout
    kopf_settings.networking.connect_timeout = settings.connect_timeout
    kopf_settings.networking.request_timeout = settings.request_timeout
    # Only event handlers: kopf keeps no diff-base or progress records on the objects and
    # posts no events (the reconcile posts the events of status transitions itself).
    kopf_settings.posting.enabled = False
    kopf_settings.posting.loggers = False
    kopf_settings.persistence.diffbase_storage = NoDiffBase()
    kopf_settings.posting.reporting_component = "bem-operator"
