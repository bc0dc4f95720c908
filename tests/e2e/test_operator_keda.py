"""Autoscaling provider switches on a real API server with KEDA's ScaledObject CRD installed
(KEDA itself does not run here: the ScaledObject is stored, and its status stays empty; the
real-pod tier runs KEDA and scales). Each switch deletes the other provider's autoscaler, and
the operator never takes spec.replicas back while either one owns them."""
from __future__ import annotations

from typing import Any

import pytest
from operator_support import (Kube, bemservice, condition, eventually, install_keda_crd, is_controlled_by,
                              replica_managers, wait_ready)

from bem_operator.builders import BuildOptions, build_children

pytestmark = pytest.mark.e2e
AUTOSCALING = {"minReplicas": 2, "maxReplicas": 5, "targetRequestsPerSecond": 2.5}


@pytest.fixture(scope="module", autouse=True)
def keda_crd_served(cluster: Any) -> None:
    """Before the module's operator starts, so that it watches ScaledObjects from the start."""
    install_keda_crd(cluster)


def test_switching_provider_replaces_the_autoscaler(kube: Kube) -> None:
    body = bemservice("switch", autoscaling=AUTOSCALING)
    del body["spec"]["replicas"]
    kube.apply(body)
    bems = wait_ready(kube, "switch")
    hpa = eventually("the HPA", lambda: kube.get("horizontalpodautoscaler", "switch"))
    assert is_controlled_by(hpa, bems)
    assert bems["status"]["autoscaling"]["provider"] == "HPA"
    replicas = kube.get("deployment", "switch")["spec"]["replicas"]

    kube.patch("bemservices", "switch", {"spec": {"autoscaling": {"provider": "KEDA"}}})
    scaled = eventually("the ScaledObject", lambda: kube.get("scaledobjects.keda.sh", "switch"))
    eventually("the HPA to be deleted",
               lambda: kube.get("horizontalpodautoscaler", "switch") is None, timeout=30)
    bems = kube.get("bemservices", "switch")
    assert is_controlled_by(scaled, bems)
    [built] = [c for c in build_children(bems, BuildOptions()) if c["kind"] == "ScaledObject"]
    assert scaled["spec"]["triggers"] == built["spec"]["triggers"]
    assert scaled["spec"]["triggers"][0]["metadata"]["threshold"] == "2.5"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 5)
    deployment = kube.get("deployment", "switch")
    assert "bem-operator" not in replica_managers(deployment)
    assert deployment["spec"]["replicas"] >= replicas  # the HPA's may have raised it to min
    assert not any(e["reason"] == "Recreated" for e in kube.events_for("switch")), \
        "a provider switch creates the ScaledObject; nobody deleted one"

    # No KEDA operator here: the status says the ScaledObject is not ready, and why; the
    # service itself is not degraded by it.
    def keda_status() -> dict[str, Any] | None:
        b = kube.get("bemservices", "switch")
        auto = (b or {}).get("status", {}).get("autoscaling") or {}
        return b if auto.get("provider") == "KEDA" else None
    bems = eventually("status.autoscaling of provider KEDA", keda_status)
    assert bems["status"]["autoscaling"]["horizontalPodAutoscaler"] == "keda-hpa-switch"
    assert bems["status"]["autoscaling"]["scaledObject"] == "switch"
    autoscaling = condition(bems, "Autoscaling")
    assert (autoscaling["status"], autoscaling["reason"]) == ("False", "ScaledObjectNotReady")
    assert condition(bems, "Degraded")["status"] == "False"
    assert any(e["reason"] == "Deleted" and "HorizontalPodAutoscaler" in e["message"]
               for e in kube.events_for("switch"))

    kube.patch("bemservices", "switch", {"spec": {"autoscaling": {"provider": "HPA"}}})
    eventually("the ScaledObject to be deleted",
               lambda: kube.get("scaledobjects.keda.sh", "switch") is None, timeout=30)
    eventually("the HPA back", lambda: kube.get("horizontalpodautoscaler", "switch"))
    bems = eventually("status.autoscaling of provider HPA", lambda: (
        b := kube.get("bemservices", "switch")) and
        b["status"].get("autoscaling", {}).get("provider") == "HPA" and b)
    assert "scaledObject" not in bems["status"]["autoscaling"]  # cleared by the merge patch
    assert "bem-operator" not in replica_managers(kube.get("deployment", "switch"))
