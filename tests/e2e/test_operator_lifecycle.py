"""The operator against the local control plane: create, update, scale, GPU, delete."""
from __future__ import annotations

import time

import pytest
from operator_support import (
    RESYNC_SECONDS,
    Kube,
    OperatorProcess,
    bemservice,
    condition,
    eventually,
    is_controlled_by,
    running_pods,
    wait_ready,
)

from devcluster.nodes import GPU_NODE, GPU_PRODUCT

pytestmark = pytest.mark.e2e


def child_applies(operator: OperatorProcess) -> float:
    _, text = operator.http_get(operator.metrics_port, "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("bem_operator_child_applies_total{"))


def test_create_builds_owned_children_and_becomes_ready(kube: Kube,
                                                        operator: OperatorProcess) -> None:
    kube.apply(bemservice("chat"))
    bems = wait_ready(kube, "chat")

    for kind in ("deployment", "service", "poddisruptionbudget"):
        child = kube.get(kind, "chat")
        assert child is not None, f"{kind} chat was not created"
        assert is_controlled_by(child, bems), f"{kind} chat has no controller reference"
        assert child["metadata"]["labels"]["bem.ai/service"] == "chat"
    assert kube.get("horizontalpodautoscaler", "chat") is None
    assert len(running_pods(kube, "chat")) == 2

    status = bems["status"]
    assert status["readyReplicas"] == 2 and status["replicas"] == 2
    assert status["endpoint"] == f"http://chat.{kube.namespace}.svc:8080"
    assert status["selector"] == "app.kubernetes.io/instance=chat,bem.ai/service=chat"
    assert condition(bems, "Ready")["status"] == "True"
    assert condition(bems, "Degraded")["status"] == "False"
    # This cluster has no Prometheus Operator: said in a condition, not a failure.
    monitor = condition(bems, "ServiceMonitor")
    assert (monitor["status"], monitor["reason"]) == ("False", "CRDNotInstalled")
    row = kube.kubectl("get", "bems", "chat", "--no-headers").stdout.split()
    assert row[1:4] == ["2", "2", "Ready"], row
    # kopf only watches: it writes no bookkeeping to the object (no annotations, no
    # finalizer), and the only writer of the BEMService is the operator's status patch.
    live = kube.get("bemservices", "chat")
    annotations = set(live["metadata"].get("annotations") or {})
    assert annotations <= {"kubectl.kubernetes.io/last-applied-configuration"}, annotations
    assert not live["metadata"].get("finalizers"), live["metadata"]
    writers = {(e["manager"], e["operation"], e.get("subresource", ""))
               for e in live["metadata"]["managedFields"]}
    assert {w for w in writers if w[0] == "bem-operator"} == {
        ("bem-operator", "Update", "status")}, writers
    # Each child carries the digest of what the operator declared, and a settled service
    # costs no apply: the next periodic checks compare the children with the cache only.
    for kind in ("deployment", "service", "poddisruptionbudget"):
        assert kube.get(kind, "chat")["metadata"]["annotations"].get("bem.ai/applied"), kind
    applies = child_applies(operator)
    assert applies >= 3
    time.sleep(3 * RESYNC_SECONDS)
    assert child_applies(operator) == applies


def test_replica_change_keeps_pods_and_image_change_rolls(kube: Kube) -> None:
    kube.apply(bemservice("roll"))
    wait_ready(kube, "roll")
    before = {p["metadata"]["name"] for p in running_pods(kube, "roll")}

    kube.patch("bemservices", "roll", {"spec": {"replicas": 3}})
    wait_ready(kube, "roll")
    after = eventually("3 running pods", lambda: (
        pods := {p["metadata"]["name"] for p in running_pods(kube, "roll")}) and len(pods) == 3
        and pods)
    assert before <= after, "changing replicas replaced pods that should have stayed"
    assert len(kube.list("replicasets", "bem.ai/service=roll")) == 1

    kube.patch("bemservices", "roll", {"spec": {"runtime": {"image": "bem-runtime:0.2.0"}}})
    eventually("every pod to run the new image", lambda: (
        pods := running_pods(kube, "roll")) and len(pods) == 3 and all(
        p["spec"]["containers"][0]["image"] == "bem-runtime:0.2.0" for p in pods))
    bems = wait_ready(kube, "roll")
    assert condition(bems, "Progressing")["reason"] == "RolloutComplete"
    assert not before & {p["metadata"]["name"] for p in running_pods(kube, "roll")}


def test_kubectl_scale_changes_the_replica_count(kube: Kube) -> None:
    kube.apply(bemservice("scaled"))
    wait_ready(kube, "scaled")
    kube.kubectl("scale", "bems/scaled", "--replicas=3")  # the short name, as users type it
    bems = eventually("3 ready replicas", lambda: (b := kube.get("bemservices", "scaled"))
                      and b["status"]["readyReplicas"] == 3 and b["status"]["phase"] == "Ready"
                      and b)
    assert bems["spec"]["replicas"] == 3
    assert kube.get("deployment", "scaled")["spec"]["replicas"] == 3


def test_gpu_service_lands_on_the_gpu_node(kube: Kube) -> None:
    kube.apply(bemservice("gpu", replicas=1, gpu={"count": 1, "product": GPU_PRODUCT},
                          tolerations=[{"key": "dedicated", "operator": "Equal",
                                        "value": "inference", "effect": "NoSchedule"}]))
    wait_ready(kube, "gpu")
    pod_spec = kube.get("deployment", "gpu")["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] in ("1", 1)
    assert pod_spec["nodeSelector"]["nvidia.com/gpu.product"] == GPU_PRODUCT
    keys = {t.get("key") for t in pod_spec["tolerations"]}
    assert {"nvidia.com/gpu", "dedicated"} <= keys, "the GPU taint or the user's toleration is missing"
    pods = running_pods(kube, "gpu")
    assert [p["spec"]["nodeName"] for p in pods] == [GPU_NODE]


def test_delete_garbage_collects_every_child(kube: Kube) -> None:
    kube.apply(bemservice("gone"))
    wait_ready(kube, "gone")
    kube.kubectl("delete", "bemservices", "gone", "--wait=true", "--timeout=60s")
    for kind in ("deployment", "service", "poddisruptionbudget"):
        eventually(f"{kind} gone to be garbage-collected", lambda k=kind: kube.get(k, "gone") is None)
    eventually("the pods to go", lambda: not kube.list("pods", "bem.ai/service=gone"))


def test_operator_exports_metrics_and_liveness(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(bemservice("observed", replicas=1))
    wait_ready(kube, "observed")
    assert operator.http_get(operator.health_port, "/healthz")[0] == 200
    code, text = operator.http_get(operator.metrics_port, "/metrics")
    assert code == 200
    successes = [line for line in text.splitlines()
                 if line.startswith("bem_operator_reconciles_total{") and 'result="success"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in successes) >= 1
    assert "bem_operator_reconcile_duration_seconds_bucket" in text
    assert "bem_operator_errors_total" in text
