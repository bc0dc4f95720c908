"""Autoscaling on and off: the HPA owns replicas while on, the operator never fights it."""
from __future__ import annotations

from typing import Any

import pytest
from operator_support import Kube, bemservice, eventually, is_controlled_by, replica_managers, running_pods, wait_ready

pytestmark = pytest.mark.e2e


def test_autoscaling_on_then_off(kube: Kube) -> None:
    kube.apply(bemservice("auto", replicas=2))
    wait_ready(kube, "auto")
    assert "bem-operator" in replica_managers(kube.get("deployment", "auto"))
    pods = {p["metadata"]["name"] for p in running_pods(kube, "auto")}

    kube.patch("bemservices", "auto", {"spec": {
        "replicas": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}})
    bems = wait_ready(kube, "auto")
    hpa = eventually("the HPA", lambda: kube.get("horizontalpodautoscaler", "auto"))
    assert is_controlled_by(hpa, bems)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "auto"
    deployment = kube.get("deployment", "auto")
    assert "bem-operator" not in replica_managers(deployment), \
        "the operator still owns spec.replicas while the HPA scales"
    # Handing replicas over must not reset them (to 1) and so must not churn pods.
    assert deployment["spec"]["replicas"] == 2
    assert {p["metadata"]["name"] for p in running_pods(kube, "auto")} == pods

    # Someone (the HPA) changes replicas: the operator leaves the value alone.
    kube.kubectl("scale", "deployment/auto", "--replicas=4")
    bems = eventually("4 ready replicas under autoscaling", lambda: (
        b := kube.get("bemservices", "auto")) and b["status"]["readyReplicas"] == 4 and b)
    assert kube.get("deployment", "auto")["spec"]["replicas"] == 4

    kube.patch("bemservices", "auto", {"spec": {"autoscaling": None, "replicas": 3}})
    eventually("the HPA to be deleted",
               lambda: kube.get("horizontalpodautoscaler", "auto") is None, timeout=30)
    bems = eventually("3 ready replicas without autoscaling", lambda: (
        b := wait_ready(kube, "auto")) and b["status"]["readyReplicas"] == 3 and b)
    deployment = kube.get("deployment", "auto")
    assert deployment["spec"]["replicas"] == 3
    assert "bem-operator" in replica_managers(deployment)
    assert any(e["reason"] == "Deleted" for e in kube.events_for("auto"))
