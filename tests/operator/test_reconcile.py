"""The reconcile against an in-memory API: what it applies, deletes and reports.

The fake keeps objects and who applied spec.replicas; server-side apply itself,
validation and garbage collection are covered by the e2e tier.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest
from builders_factory import make_bems

from bem_operator.builders.kinds import SCALED_OBJECT, ChildKind
from bem_operator.children import ChildIndex
from bem_operator.k8s import FIELD_MANAGER, HANDOVER_MANAGER, ApiError
from bem_operator.reconcile import InvalidSpec, Reconciler, RetryableError, owns_field

Key = tuple[str, str, str, str]


class FakeApi:
    def __init__(self, monitoring: bool = False, keda: bool = True) -> None:
        self.keda = keda
        self.objects: dict[Key, dict[str, Any]] = {}
        self.applied: list[tuple[str, str, str]] = []  # kind, name, manager
        self.deleted: list[tuple[str, str]] = []
        self.statuses: list[dict[str, Any]] = []
        self.monitoring = monitoring
        self.fail_with: ApiError | None = None
        self._rv = 0

    @staticmethod
    def key(obj: dict[str, Any]) -> Key:
        meta = obj["metadata"]
        return (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])

    def add(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("uid", f"uid-{self._rv}")
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[self.key(obj)] = obj

    def apply(self, obj: dict[str, Any], *, manager: str = FIELD_MANAGER,
              force: bool = True) -> tuple[dict[str, Any], bool]:
        if self.fail_with:
            raise self.fail_with
        self.applied.append((obj["kind"], obj["metadata"]["name"], manager))
        key = self.key(obj)
        created = key not in self.objects
        live = merged(self.objects.get(key) or {}, obj)  # fields others set stay
        fields = [{"manager": manager, "operation": "Apply",
                   "fieldsV1": {"f:spec": {"f:replicas": {}}}}] \
            if "replicas" in obj.get("spec", {}) else []
        others = [e for e in live["metadata"].get("managedFields", []) if e["manager"] != manager]
        live["metadata"]["managedFields"] = others + fields
        self.add(live)
        return copy.deepcopy(self.objects[key]), created

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found else None

    def delete(self, api_version: str, kind: str, namespace: str, name: str,
               uid: str | None = None) -> bool:
        found = self.objects.get((api_version, kind, namespace, name))
        if not found or (uid and found["metadata"]["uid"] != uid):
            return False
        del self.objects[(api_version, kind, namespace, name)]
        self.deleted.append((kind, name))
        return True

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(copy.deepcopy(status))

    def pvc_exists(self, namespace: str, name: str) -> bool:
        return self.get("v1", "PersistentVolumeClaim", namespace, name) is not None

    def service_monitor_available(self) -> bool:
        return self.monitoring

    def serves(self, child: ChildKind) -> bool:
        return not child.optional_crd or (self.keda if child is SCALED_OBJECT else self.monitoring)


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def image_bems(**spec: Any) -> dict[str, Any]:
    return make_bems({"model": {"source": "Image"}, **spec})


def reconciler(api: FakeApi, index: ChildIndex | None = None) -> Reconciler:
    return Reconciler(api, index or ChildIndex(), "bem-runtime:test",  # type: ignore[arg-type]
                      clock=lambda: "2026-01-01T00:00:00Z")


def test_creates_children_and_reports_pending() -> None:
    api = FakeApi()
    result = reconciler(api).reconcile(image_bems(replicas=2))
    kinds = {kind for kind, _, _ in api.applied}
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget"}
    assert all(manager == FIELD_MANAGER for _, _, manager in api.applied)
    assert result.status["phase"] == "Pending" and api.statuses == [result.status]
    monitor = next(c for c in result.status["conditions"] if c["type"] == "ServiceMonitor")
    assert monitor["reason"] == "CRDNotInstalled"


def test_service_monitor_applied_when_its_api_exists() -> None:
    api = FakeApi(monitoring=True)
    reconciler(api).reconcile(image_bems(replicas=1))
    assert "ServiceMonitor" in {kind for kind, _, _ in api.applied}


def test_missing_secret_holds_the_deployment_back_and_names_it() -> None:
    api = FakeApi()
    bems = image_bems(replicas=1, auth={"apiKeySecretRef": {"name": "keys", "key": "api-key"}})
    result = reconciler(api).reconcile(bems)
    assert "Deployment" not in {kind for kind, _, _ in api.applied}
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "SecretNotFound")
    assert "Secret 'keys'" in degraded["message"]

    api.add({"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "keys", "namespace": "team-a"}, "data": {"api-key": "eA=="}})
    result = reconciler(api).reconcile(bems)
    assert "Deployment" in {kind for kind, _, _ in api.applied}
    assert result.status["phase"] == "Pending"


def test_changed_secret_changes_the_pod_template() -> None:
    api = FakeApi()
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "keys", "namespace": "team-a"}, "data": {"api-key": "eA=="}}
    api.add(secret)
    bems = image_bems(replicas=1, auth={"apiKeySecretRef": {"name": "keys"}})
    rec = reconciler(api)
    rec.reconcile(bems)
    template = api.get("apps/v1", "Deployment", "team-a", "demo")["spec"]["template"]
    api.add(secret)  # a new resourceVersion, as an update of the Secret gives
    rec.reconcile(bems)
    assert api.get("apps/v1", "Deployment", "team-a", "demo")["spec"]["template"] != template


def test_autoscaling_hands_replicas_over_before_dropping_them() -> None:
    api = FakeApi()
    rec = reconciler(api)
    rec.reconcile(image_bems(replicas=3))
    assert owns_field(api.get("apps/v1", "Deployment", "team-a", "demo"), FIELD_MANAGER,
                      ("spec", "replicas"))
    api.applied.clear()
    rec.reconcile(image_bems(autoscaling={"minReplicas": 2, "maxReplicas": 6}))
    handover = [a for a in api.applied if a[2] == HANDOVER_MANAGER]
    assert handover == [("Deployment", "demo", HANDOVER_MANAGER)]
    assert api.applied.index(handover[0]) < api.applied.index(
        ("Deployment", "demo", FIELD_MANAGER))
    deployment = api.get("apps/v1", "Deployment", "team-a", "demo")
    assert deployment["spec"]["replicas"] == 3  # kept, not reset
    assert not owns_field(deployment, FIELD_MANAGER, ("spec", "replicas"))
    assert owns_field(deployment, HANDOVER_MANAGER, ("spec", "replicas"))
    assert "HorizontalPodAutoscaler" in {kind for kind, _, _ in api.applied}


def test_obsolete_children_are_deleted_only_when_ours() -> None:
    api, index = FakeApi(), ChildIndex()
    rec = reconciler(api, index)
    bems = image_bems(autoscaling={"minReplicas": 1, "maxReplicas": 3})
    rec.reconcile(bems)
    hpa = api.get("autoscaling/v2", "HorizontalPodAutoscaler", "team-a", "demo")
    index.observe("ADDED", hpa)
    stranger = copy.deepcopy(hpa)
    stranger["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    stranger["metadata"]["uid"] = "other-hpa"

    result = rec.reconcile(image_bems(replicas=2))
    assert api.deleted == [("HorizontalPodAutoscaler", "demo")]
    assert ("Normal", "Deleted") in {(e[0], e[1]) for e in result.events}

    index.observe("ADDED", stranger)
    api.add(stranger)
    rec.reconcile(image_bems(replicas=2))
    assert api.deleted == [("HorizontalPodAutoscaler", "demo")], "deleted an HPA not ours"


KEDA_AUTOSCALING = {"provider": "KEDA", "minReplicas": 1, "maxReplicas": 3}


def observe_applied(api: FakeApi, index: ChildIndex) -> None:
    """What the owner-label watches deliver: every object the fake holds."""
    for obj in api.objects.values():
        index.observe("ADDED", obj)


def test_switching_provider_deletes_the_other_autoscaler() -> None:
    api, index = FakeApi(), ChildIndex()
    rec = reconciler(api, index)
    rec.reconcile(image_bems(replicas=2))
    observe_applied(api, index)
    rec.reconcile(image_bems(autoscaling={"minReplicas": 1, "maxReplicas": 3}))
    observe_applied(api, index)
    assert api.get("autoscaling/v2", "HorizontalPodAutoscaler", "team-a", "demo")

    api.applied.clear()
    result = rec.reconcile(image_bems(autoscaling=KEDA_AUTOSCALING))
    assert api.deleted == [("HorizontalPodAutoscaler", "demo")]
    assert ("ScaledObject", "demo", FIELD_MANAGER) in api.applied
    assert not any(manager == HANDOVER_MANAGER for _, _, manager in api.applied), \
        "replicas were handed over already: the new provider finds them as they are"
    assert result.status["autoscaling"]["provider"] == "KEDA"
    observe_applied(api, index)

    rec.reconcile(image_bems(autoscaling={"minReplicas": 1, "maxReplicas": 3}))
    assert api.deleted == [("HorizontalPodAutoscaler", "demo"), ("ScaledObject", "demo")]


def test_keda_hpa_feeds_the_status_and_is_never_deleted() -> None:
    api, index = FakeApi(), ChildIndex()
    rec = reconciler(api, index)
    bems = image_bems(autoscaling=KEDA_AUTOSCALING)
    rec.reconcile(bems)
    observe_applied(api, index)
    scaled = api.get("keda.sh/v1alpha1", "ScaledObject", "team-a", "demo")
    keda_hpa = {  # as KEDA makes it: the ScaledObject's labels, KEDA's controller reference
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa-demo", "namespace": "team-a", "uid": "keda-hpa",
                     "labels": scaled["metadata"]["labels"],
                     "ownerReferences": [{"kind": "ScaledObject", "name": "demo",
                                          "uid": scaled["metadata"]["uid"], "controller": True}]},
        "status": {"currentReplicas": 1, "desiredReplicas": 2, "currentMetrics": [
            {"type": "External", "external": {"current": {"averageValue": "12"}}}]}}
    api.add(keda_hpa)
    index.observe("ADDED", keda_hpa)
    result = rec.reconcile(bems)
    assert result.status["autoscaling"]["desiredReplicas"] == 2
    assert result.status["autoscaling"]["currentRequestsPerSecond"] == 12.0
    rec.reconcile(image_bems(replicas=2))
    assert ("HorizontalPodAutoscaler", "keda-hpa-demo") not in api.deleted  # KEDA's, not ours


def test_keda_provider_without_keda_degrades_and_says_what_to_do() -> None:
    api = FakeApi(keda=False)
    rec = reconciler(api)
    rec.reconcile(image_bems(replicas=3))
    api.applied.clear()
    result = rec.reconcile(image_bems(autoscaling=KEDA_AUTOSCALING))
    kinds = {kind for kind, _, _ in api.applied}
    assert "ScaledObject" not in kinds and "HorizontalPodAutoscaler" not in kinds  # no fallback
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "KEDANotInstalled")
    assert degraded["message"].startswith("KEDA is not installed")
    assert ("Warning", "KEDANotInstalled") in {(e[0], e[1]) for e in result.events}
    # The operator stopped writing replicas all the same: KEDA, once installed, owns them.
    deployment = api.get("apps/v1", "Deployment", "team-a", "demo")
    assert deployment["spec"]["replicas"] == 3
    assert not owns_field(deployment, FIELD_MANAGER, ("spec", "replicas"))

    api.keda = True
    result = rec.reconcile(image_bems(autoscaling=KEDA_AUTOSCALING))
    assert ("ScaledObject", "demo", FIELD_MANAGER) in api.applied
    assert ("Normal", "Recovered") in {(e[0], e[1]) for e in result.events}


def test_invalid_spec_is_permanent_and_reported() -> None:
    api = FakeApi()
    with pytest.raises(InvalidSpec, match="spec.gpu.product"):
        reconciler(api).reconcile(image_bems(gpu={"product": "H100"}))
    assert api.applied == []
    degraded = next(c for c in api.statuses[-1]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec" and "spec.gpu.count" in degraded["message"]


@pytest.mark.parametrize("status", [500, 409, 0])
def test_api_failures_are_retryable(status: int) -> None:
    api = FakeApi()
    api.fail_with = ApiError(status, "etcd is unhappy")
    with pytest.raises(RetryableError, match="etcd is unhappy"):
        reconciler(api).reconcile(image_bems(replicas=1))
    if status:  # the server answered: the status says what failed, with its message
        assert "etcd is unhappy" in str(api.statuses[-1]["conditions"])
    else:  # no answer: no status can be written either
        assert api.statuses == []


def test_rejected_child_degrades_the_service() -> None:
    api = FakeApi()
    api.fail_with = ApiError(422, "spec.template.spec.containers[0].env[0].name: Invalid value")
    with pytest.raises(RetryableError):
        reconciler(api).reconcile(image_bems(replicas=1))
    degraded = next(c for c in api.statuses[-1]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ApplyRejected" and "env[0].name" in degraded["message"]


def test_status_refresh_needs_a_full_reconcile_first() -> None:
    api = FakeApi()
    rec = reconciler(api)
    bems = image_bems(replicas=2)
    live = {"metadata": {"generation": 1}, "spec": {"replicas": 2}, "status": {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
        "availableReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]}}
    assert rec.refresh_status(bems, live) is None
    rec.reconcile(bems)
    result = rec.refresh_status(bems, live)
    assert result is not None and result.status["phase"] == "Ready"
    assert [e[1] for e in result.events] == ["Ready"]
    assert api.statuses[-1]["phase"] == "Ready"
    bumped = copy.deepcopy(bems)
    bumped["metadata"]["generation"] = 2
    assert rec.refresh_status(bumped, live) is None  # a new spec needs a full reconcile


def test_terminating_namespace_is_not_a_failure() -> None:
    api = FakeApi()
    api.fail_with = ApiError(403, 'deployments.apps "demo" is forbidden: unable to create new '
                                  "content in namespace team-a because it is being terminated")
    result = reconciler(api).reconcile(image_bems(replicas=1))
    assert result.events == [] and api.statuses == []


class RefusingApi(FakeApi):
    """Refuses the apply of one kind only, as admission or a broken field would."""

    def __init__(self, kind: str, error: ApiError) -> None:
        super().__init__()
        self.refuse = (kind, error)

    def apply(self, obj: dict[str, Any], *, manager: str = FIELD_MANAGER,
              force: bool = True) -> tuple[dict[str, Any], bool]:
        if obj["kind"] == self.refuse[0] and manager == FIELD_MANAGER:
            raise self.refuse[1]
        return super().apply(obj, manager=manager, force=force)


@pytest.mark.parametrize(("status", "reason"), [(500, "ApplyFailed"), (422, "ApplyRejected"),
                                                (409, "ApplyFailed")])
def test_a_failed_child_apply_writes_status_with_the_api_message(status: int,
                                                                 reason: str) -> None:
    api = RefusingApi("Service", ApiError(status, "spec.ports[0].nodePort: Invalid value"))
    with pytest.raises(RetryableError) as caught:
        reconciler(api).reconcile(image_bems(replicas=1))
    # the other children are still applied; the status says which one failed and why
    assert {"Deployment", "PodDisruptionBudget"} <= {kind for kind, _, _ in api.applied}
    status_written = api.statuses[-1]
    degraded = next(c for c in status_written["conditions"] if c["type"] == "Degraded")
    ready = next(c for c in status_written["conditions"] if c["type"] == "Ready")
    assert (status_written["phase"], degraded["reason"], ready["status"]) == \
        ("Degraded", reason, "False")
    assert "Service demo" in degraded["message"] and "nodePort" in degraded["message"]
    warnings = [e for e in caught.value.events if e[0] == "Warning"]
    assert [e[1] for e in warnings] == [reason] and "nodePort" in warnings[0][2]


def test_runtime_pods_that_fail_to_load_degrade_the_service() -> None:
    api, index = FakeApi(), ChildIndex()
    rec = reconciler(api, index)
    bems = image_bems(replicas=1)
    rec.reconcile(bems)
    deployment = api.get("apps/v1", "Deployment", "team-a", "demo")
    template_hash = deployment["spec"]["template"]["metadata"]["annotations"]["bem.ai/config-hash"]
    index.observe_pod("ADDED", {
        "metadata": {"name": "demo-1", "namespace": "team-a", "labels": {"bem.ai/service": "demo"},
                     "annotations": {"bem.ai/config-hash": template_hash}},
        "spec": {"containers": [{"name": "bem-runtime"}]},
        "status": {"containerStatuses": [{"name": "bem-runtime", "restartCount": 1, "state": {
            "waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {
                "exitCode": 3, "message": "checkpoint bem/experts.safetensors is corrupt"}}}]}})
    deployment["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}
    deployment["metadata"]["generation"] = 1
    result = rec.refresh_status(bems, deployment)
    assert result is not None
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ModelLoadFailed" and "is corrupt" in degraded["message"]
    assert ("Warning", "ModelLoadFailed") in {(e[0], e[1]) for e in result.events}
    index.observe_pod("DELETED", {"metadata": {"name": "demo-1", "namespace": "team-a",
                                               "labels": {"bem.ai/service": "demo"}}})
    assert index.pods("team-a", "demo") == ()
