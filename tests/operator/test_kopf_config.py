"""kopf settings: small diff-base annotations, watch timeouts, server-side child filters."""
from __future__ import annotations

import json
import logging

import kopf

from bem_operator.kopf_config import STORAGE_PREFIX, DigestDiffBaseStorage, configure
from bem_operator.settings import OperatorSettings


def body(spec: dict, annotations: dict | None = None) -> kopf.Body:
    return kopf.Body({"apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
                      "metadata": {"name": "x", "namespace": "ns", "annotations": annotations or {}},
                      "spec": spec, "status": {"phase": "Ready"}})


def test_digest_is_small_and_tracks_spec_changes_only() -> None:
    storage = DigestDiffBaseStorage()
    large = {"runtime": {"env": [{"name": f"V{i}", "value": "x" * 1000} for i in range(300)]}}
    essence = storage.build(body=body(large))
    assert len(json.dumps(essence)) < 100  # the spec itself is ~300 KB
    assert storage.build(body=body(large)) == essence
    assert storage.build(body=body({"replicas": 2})) != storage.build(body=body({"replicas": 3}))
    # kopf's own progress records under our prefix are not a change of the object.
    ours = body({"replicas": 2}, {f"{STORAGE_PREFIX}/reconcile": '{"retries": 1}'})
    assert storage.build(body=ours) == storage.build(body=body({"replicas": 2}))
    patch = kopf.Patch()
    storage.store(body=body({"replicas": 2}), patch=patch, essence=essence)
    stored = {k: v for k, v in patch["metadata"]["annotations"].items()
              if k.endswith("last-handled-digest")}
    assert stored and all(len(v) < 100 for v in stored.values())
    assert storage.fetch(body=body({}, stored)) == essence


def test_configure_sets_timeouts_storages_and_selectors() -> None:
    kopf_settings = kopf.OperatorSettings()
    configure(kopf_settings, OperatorSettings())
    assert kopf_settings.peering.standalone
    assert kopf_settings.watching.server_timeout and kopf_settings.watching.client_timeout
    assert kopf_settings.watching.connect_timeout
    assert kopf_settings.watching.client_timeout > kopf_settings.watching.server_timeout
    assert isinstance(kopf_settings.persistence.diffbase_storage, DigestDiffBaseStorage)
    assert isinstance(kopf_settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    # the six child kinds (KEDA's ScaledObject among them) and the runtime pods, each
    # filtered by the owner label
    assert len(list(kopf_settings.watching.label_selectors)) == 7
    assert kopf_settings.watching.label_selectors["keda.sh", "v1alpha1", "scaledobjects"] == "bem.ai/service"
    assert kopf_settings.watching.label_selectors["", "v1", "pods"] == "bem.ai/service"
    # kopf's own log-line events (one per handler retry) are off; kopf.event stays on
    assert kopf_settings.posting.enabled and kopf_settings.posting.level > logging.ERROR
