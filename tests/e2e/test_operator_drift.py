"""Drift correction and crash recovery: the operator keeps children as declared."""
from __future__ import annotations

import time

import pytest
from operator_support import Kube, OperatorProcess, bemservice, eventually, running_pods, wait_ready

pytestmark = pytest.mark.e2e
# No periodic check during these tests: only the owner-labelled child watches can heal.
OPERATOR_RESYNC_SECONDS = 3600


def test_deleted_children_are_recreated(kube: Kube) -> None:
    kube.apply(bemservice("heal"))
    wait_ready(kube, "heal")
    old = {kind: kube.get(kind, "heal")["metadata"]["uid"] for kind in ("deployment", "service")}

    kube.kubectl("delete", "service", "heal", "--wait=false")
    kube.kubectl("delete", "deployment", "heal", "--wait=false")

    for kind, uid in old.items():
        eventually(f"{kind} heal to be recreated", lambda k=kind, u=uid: (
            child := kube.get(k, "heal")) and child["metadata"]["uid"] != u, timeout=30)
    wait_ready(kube, "heal")
    reasons = {e["reason"] for e in kube.events_for("heal")}
    assert "Recreated" in reasons, reasons


def test_edited_field_is_restored_and_foreign_label_survives(kube: Kube) -> None:
    kube.apply(bemservice("edit"))
    wait_ready(kube, "edit")
    original = kube.get("deployment", "edit")["spec"]["template"]["spec"]["containers"][0]
    container = original["name"]

    # Someone else edits a field the operator owns, and adds a label it does not own.
    kube.patch("deployment", "edit", {
        "metadata": {"labels": {"team.example.com/owner": "search"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": container, "image": "someone/else:latest"}]}}},
    }, kind_of="strategic")

    restored = eventually("the image to be restored", lambda: (
        d := kube.get("deployment", "edit"))
        and d["spec"]["template"]["spec"]["containers"][0]["image"] == original["image"]
        and d, timeout=30)
    assert restored["metadata"]["labels"].get("team.example.com/owner") == "search"
    # Later reconciles (a status change triggers one) leave the label alone.
    kube.patch("bemservices", "edit", {"spec": {"replicas": 3}})
    wait_ready(kube, "edit")
    assert kube.get("deployment", "edit")["metadata"]["labels"]["team.example.com/owner"] == "search"


def test_restart_in_the_middle_of_a_reconcile_converges(kube: Kube,
                                                        operator: OperatorProcess) -> None:
    kube.apply(bemservice("crash", replicas=3))
    time.sleep(0.3)  # the create handler is running now, or about to
    operator.kill()
    try:
        kube.patch("bemservices", "crash", {"spec": {"runtime": {"logLevel": "debug"}}})
    finally:
        operator.start()
    bems = wait_ready(kube, "crash")

    assert bems["status"]["readyReplicas"] == 3
    for kind in ("deployments", "services", "poddisruptionbudgets"):
        assert len(kube.list(kind, "bem.ai/service=crash")) == 1, f"duplicate {kind}"
    eventually("exactly 3 running pods from one ReplicaSet", lambda: (
        len(running_pods(kube, "crash")) == 3
        and len([rs for rs in kube.list("replicasets", "bem.ai/service=crash")
                 if rs["status"].get("replicas")]) == 1))
    args = kube.get("deployment", "crash")["spec"]["template"]["spec"]["containers"][0]
    assert "debug" in str(args.get("args", [])) + str(args.get("env", [])), \
        "the change made while the operator was down was not applied"
