"""The index of watched children: ownership, echo of our own writes, status-only changes."""
from __future__ import annotations

import copy
from typing import Any

from bem_operator.children import Change, ChildIndex, parent_of


def child(kind: str = "Deployment", owner_uid: str = "p-1", rv: str = "5") -> dict[str, Any]:
    return {"apiVersion": "apps/v1" if kind == "Deployment" else "v1", "kind": kind,
            "metadata": {"name": "chat", "namespace": "ns", "uid": f"{kind}-uid",
                         "resourceVersion": rv, "generation": 1,
                         "labels": {"bem.ai/service": "chat"},
                         "ownerReferences": [{"kind": "BEMService", "uid": owner_uid,
                                              "controller": True}]},
            "spec": {"replicas": 2}, "status": {"readyReplicas": 0}}


def test_owned_children_by_parent_and_controller() -> None:
    index = ChildIndex()
    index.observe("ADDED", child("Deployment"))
    index.observe("ADDED", child("Service", owner_uid="other"))
    assert parent_of(child()) == ("ns", "chat")
    assert [(r.kind, r.uid) for r in index.owned("ns", "chat", "p-1")] == [
        ("Deployment", "Deployment-uid")]
    assert index.deployment("ns", "chat")["spec"]["replicas"] == 2
    index.observe("DELETED", child("Deployment"))
    assert index.owned("ns", "chat", "p-1") == [] and index.deployment("ns", "chat") is None


def test_unlabelled_objects_are_ignored() -> None:
    index = ChildIndex()
    body = child()
    del body["metadata"]["labels"]
    index.observe("ADDED", body)
    assert index.owned("ns", "chat", "p-1") == []


def test_classify_events() -> None:
    index = ChildIndex()
    assert index.classify("ADDED", child()) is Change.CHANGED  # never applied by us
    index.note_applied(child(rv="5"))
    assert index.classify("MODIFIED", child(rv="5")) is Change.OWN_WRITE
    status_moved = child(rv="6")
    status_moved["status"]["readyReplicas"] = 2
    assert index.classify("MODIFIED", status_moved) is Change.STATUS_ONLY
    edited = copy.deepcopy(status_moved)
    edited["spec"]["replicas"] = 5
    assert index.classify("MODIFIED", edited) is Change.CHANGED
    relabelled = child(rv="7")
    relabelled["metadata"]["labels"]["team"] = "x"
    assert index.classify("MODIFIED", relabelled) is Change.CHANGED
    assert index.classify("DELETED", child(rv="5")) is Change.CHANGED


def keda_hpa(rv: str = "9") -> dict[str, Any]:
    """The HPA KEDA makes from our ScaledObject: our owner label, KEDA's controller."""
    body = child(rv=rv)
    body.update(apiVersion="autoscaling/v2", kind="HorizontalPodAutoscaler")
    body["metadata"].update(name="keda-hpa-chat", uid="keda-hpa-uid")
    body["metadata"]["ownerReferences"] = [{"kind": "ScaledObject", "uid": "so-uid",
                                            "controller": True}]
    return body


def test_kedas_hpa_is_read_for_status_never_owned() -> None:
    index = ChildIndex()
    ours = child()
    ours.update(apiVersion="autoscaling/v2", kind="HorizontalPodAutoscaler")
    index.observe("ADDED", ours)
    index.observe("ADDED", keda_hpa())
    # Ours stays the one the clean-up knows (the index holds one child per kind and parent).
    assert [(r.name, r.uid) for r in index.owned("ns", "chat", "p-1")] == [("chat", "Deployment-uid")]
    assert index.autoscaler("ns", "chat", "HorizontalPodAutoscaler", "keda-hpa-chat") is not None
    assert index.autoscaler("ns", "chat", "HorizontalPodAutoscaler", "chat") is not None
    # Its status moves every HPA sync: a status refresh, never a full reconcile.
    assert index.classify("MODIFIED", keda_hpa(rv="10")) is Change.STATUS_ONLY
    index.observe("DELETED", keda_hpa())
    assert index.autoscaler("ns", "chat", "HorizontalPodAutoscaler", "keda-hpa-chat") is None
