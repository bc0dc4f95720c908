"""kopf settings: watch timeouts, no writes of kopf's own, server-side child filtering."""
from __future__ import annotations

import kopf

from bem_operator.builders.kinds import CHILD_REGISTRY, READ_REGISTRY
from bem_operator.constants import OWNER_LABEL
from bem_operator.settings import OperatorSettings

# group, version, plural of every child kind the operator watches by its owner label
CHILD_RESOURCES: tuple[tuple[str, str, str], ...] = tuple(
    (child.group, child.version, child.plural) for child in CHILD_REGISTRY)
# group, version, plural of what the operator only reads, by the same owner label: the
# runtime pods, whose container states say whether the model loaded (status.pod_findings).
WATCHED_RESOURCES: tuple[tuple[str, str, str], ...] = tuple(
    (kind.group, kind.version, kind.plural) for kind in READ_REGISTRY if kind.watched)


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
    kopf_settings.posting.reporting_component = "bem-operator"
    for group, version, plural in CHILD_RESOURCES + WATCHED_RESOURCES:
        # Filter child watches in the API server: only our labelled objects reach us.
        kopf_settings.watching.label_selectors[group, version, plural] = OWNER_LABEL
