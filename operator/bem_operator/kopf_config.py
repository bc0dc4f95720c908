"""kopf settings: watch timeouts, small annotations, server-side child filtering."""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any, cast

import kopf

from bem_operator.builders.kinds import CHILD_REGISTRY, READ_REGISTRY
from bem_operator.constants import OWNER_LABEL, STORAGE_PREFIX
from bem_operator.settings import OperatorSettings

# group, version, plural of every child kind the operator watches by its owner label
CHILD_RESOURCES: tuple[tuple[str, str, str], ...] = tuple(
    (child.group, child.version, child.plural) for child in CHILD_REGISTRY)
# group, version, plural of what the operator only reads, by the same owner label: the
# runtime pods, whose container states say whether the model loaded (status.pod_findings).
WATCHED_RESOURCES: tuple[tuple[str, str, str], ...] = tuple(
    (kind.group, kind.version, kind.plural) for kind in READ_REGISTRY if kind.watched)

class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Keeps a digest of the last handled spec instead of the whole object.

    The reconcile is level-based and never reads the old state, so kopf only needs
    to know *whether* something changed; 80 bytes stay far from the 256 KiB limit
    that kopf's default last-handled-configuration annotation can hit.
    """

    def __init__(self) -> None:
        super().__init__(prefix=STORAGE_PREFIX, key="last-handled-digest")

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        essence = cast(dict[str, Any], super().build(body=body, extra_fields=extra_fields))
        annotations = essence.get("metadata", {}).get("annotations", {})
        for key in [k for k in annotations if k.startswith(f"{STORAGE_PREFIX}/")]:
            del annotations[key]  # our own progress records must not look like a change
        self.remove_empty_stanzas(cast(kopf.BodyEssence, essence))
        encoded = json.dumps(essence, sort_keys=True, separators=(",", ":")).encode()
        return cast(kopf.BodyEssence, {"sha256": hashlib.sha256(encoded).hexdigest()})


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
    kopf_settings.persistence.diffbase_storage = DigestDiffBaseStorage()
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=STORAGE_PREFIX)
    # kopf would post an event for every handler retry ("failed temporarily"): a storm while
    # a problem lasts. The bridge posts the events a user needs itself, deduplicated
    # (kopf.event still posts them; only kopf's log-line events are off).
    kopf_settings.posting.level = logging.CRITICAL
    kopf_settings.posting.reporting_component = "bem-operator"
    for group, version, plural in CHILD_RESOURCES + WATCHED_RESOURCES:
        # Filter child watches in the API server: only our labelled objects reach us.
        kopf_settings.watching.label_selectors[group, version, plural] = OWNER_LABEL
