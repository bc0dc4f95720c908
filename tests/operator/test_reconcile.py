"""The level-based reconcile against an in-memory API whose writes reach the cache as
watch events would: what it applies, deletes, reports and posts, and that a settled object
costs no request.

The fake keeps objects and who applied spec.replicas; server-side apply itself,
validation and garbage collection are covered by the e2e tier.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest
from builders_factory import make_bems

from bem_operator.builders.kinds import HTTP_ROUTE, SCALED_OBJECT, TRAEFIK_MIDDLEWARE, ChildKind
from bem_operator.controller import Cache
from bem_operator.constants import FIELD_MANAGER, HANDOVER_MANAGER
from bem_operator.k8s import ApiError
from bem_operator.reconcile import (Reconciler, Result, RetryableError, difference, holds,
                                    owns_field)

Key = tuple[str, str, str, str]


class FakeApi:
    def __init__(self, monitoring: bool = False, keda: bool = True, gateway: bool = True,
                 traefik: bool = True) -> None:
        self.keda = keda
        self.gateway = gateway
        self.traefik = traefik
        self.objects: dict[Key, dict[str, Any]] = {}
        self.applied: list[tuple[str, str, str]] = []  # kind, name, manager
        self.deleted: list[tuple[str, str]] = []
        self.statuses: list[dict[str, Any]] = []
        self.checkpoint_statuses: list[dict[str, Any]] = []
        self.created: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.monitoring = monitoring
        self.fail_with: ApiError | None = None
        self.cache = Cache()  # what the watches would deliver: every object written here
        self.claim_reads = 0
        self._rv = 0

    @staticmethod
    def key(obj: dict[str, Any]) -> Key:
        meta = obj["metadata"]
        return (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("uid", f"uid-{self._rv}")
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[self.key(obj)] = obj
        self.cache.observe("MODIFIED", copy.deepcopy(obj))
        return copy.deepcopy(obj)

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
        return self.add(live), created

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found else None

    def delete(self, api_version: str, kind: str, namespace: str, name: str,
               uid: str | None = None) -> bool:
        found = self.objects.get((api_version, kind, namespace, name))
        if not found or (uid and found["metadata"]["uid"] != uid):
            return False
        del self.objects[(api_version, kind, namespace, name)]
        self.cache.observe("DELETED", found)
        self.deleted.append((kind, name))
        return True

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.key(obj) in self.objects:
            raise ApiError(409, "already exists")
        self.created.append((obj["kind"], obj["metadata"]["name"]))
        return self.add(obj)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                     kind: tuple[str, str] = ("bem.ai/v1alpha1", "BEMService")) -> dict[str, Any]:
        (self.statuses if kind[1] == "BEMService" else self.checkpoint_statuses).append(
            copy.deepcopy(status))
        found = self.objects.get((*kind, namespace, name))
        if found is None:
            raise ApiError(404, "not found")
        return self.add({**found, "status": copy.deepcopy(status)})

    def post_event(self, about: dict[str, Any], event_type: str, reason: str,
                   message: str) -> None:
        self.events.append((event_type, reason, message))

    def pvc_exists(self, namespace: str, name: str) -> bool:
        self.claim_reads += 1
        return self.get("v1", "PersistentVolumeClaim", namespace, name) is not None

    def serves(self, child: ChildKind) -> bool:
        served = {SCALED_OBJECT: self.keda, HTTP_ROUTE: self.gateway,
                  TRAEFIK_MIDDLEWARE: self.traefik}
        return not child.optional_crd or served.get(child, self.monitoring)


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


class Run:
    """Reconciles BEMServices as a user edits them: each spec is written to the fake (its
    status kept, its generation bumped when the spec moved) and reconciled from the cache."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.rec = Reconciler(api, api.cache, "bem-runtime:test",  # type: ignore[arg-type]
                              clock=lambda: "2026-01-01T00:00:00Z")

    def __call__(self, bems: dict[str, Any]) -> Result:
        key = FakeApi.key(bems)
        held = self.api.objects.get(key)
        body = copy.deepcopy(bems)
        if held is not None:
            body["status"] = held.get("status")
            generation = held["metadata"]["generation"]
            body["metadata"]["generation"] = generation + (held["spec"] != bems["spec"])
        self.api.add(body)
        self.api.events.clear()
        result = self.rec.reconcile(key[2:])
        assert result is not None
        return result


def reconciler(api: FakeApi) -> Run:
    return Run(api)


def test_creates_children_and_reports_pending() -> None:
    api = FakeApi()
    result = reconciler(api)(image_bems(replicas=2))
    kinds = {kind for kind, _, _ in api.applied}
    assert kinds == {"ConfigMap", "NetworkPolicy", "Deployment", "Service", "PodDisruptionBudget"}
    assert all(manager == FIELD_MANAGER for _, _, manager in api.applied)
    # The pods mount the admin token: the operator creates its Secret (a random token).
    assert api.created == [("Secret", "demo-admin-token")]
    assert result.status["phase"] == "Pending" and api.statuses == [result.status]
    monitor = next(c for c in result.status["conditions"] if c["type"] == "ServiceMonitor")
    assert monitor["reason"] == "CRDNotInstalled"


def test_service_monitor_applied_when_its_api_exists() -> None:
    api = FakeApi(monitoring=True)
    reconciler(api)(image_bems(replicas=1))
    assert "ServiceMonitor" in {kind for kind, _, _ in api.applied}


def test_missing_secret_holds_the_deployment_back_and_names_it() -> None:
    api = FakeApi()
    bems = image_bems(replicas=1, auth={"apiKeySecretRef": {"name": "keys", "key": "api-key"}})
    result = reconciler(api)(bems)
    assert "Deployment" not in {kind for kind, _, _ in api.applied}
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "SecretNotFound")
    assert "Secret 'keys'" in degraded["message"]

    api.add({"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "keys", "namespace": "team-a"}, "data": {"api-key": "eA=="}})
    result = reconciler(api)(bems)
    assert "Deployment" in {kind for kind, _, _ in api.applied}
    assert result.status["phase"] == "Pending"


def test_changed_secret_changes_the_pod_template() -> None:
    api = FakeApi()
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "keys", "namespace": "team-a"}, "data": {"api-key": "eA=="}}
    api.add(secret)
    bems = image_bems(replicas=1, auth={"apiKeySecretRef": {"name": "keys"}})
    rec = reconciler(api)
    rec(bems)
    template = api.get("apps/v1", "Deployment", "team-a", "demo")["spec"]["template"]
    api.add(secret)  # a new resourceVersion, as an update of the Secret gives
    rec(bems)
    assert api.get("apps/v1", "Deployment", "team-a", "demo")["spec"]["template"] != template


def test_autoscaling_hands_replicas_over_before_dropping_them() -> None:
    api = FakeApi()
    rec = reconciler(api)
    rec(image_bems(replicas=3))
    assert owns_field(api.get("apps/v1", "Deployment", "team-a", "demo"), FIELD_MANAGER,
                      ("spec", "replicas"))
    api.applied.clear()
    rec(image_bems(autoscaling={"minReplicas": 2, "maxReplicas": 6}))
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
    api = FakeApi()
    rec = reconciler(api)
    bems = image_bems(autoscaling={"minReplicas": 1, "maxReplicas": 3})
    rec(bems)
    hpa = api.get("autoscaling/v2", "HorizontalPodAutoscaler", "team-a", "demo")
    stranger = copy.deepcopy(hpa)
    stranger["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    stranger["metadata"]["uid"] = "other-hpa"

    result = rec(image_bems(replicas=2))
    assert api.deleted == [("HorizontalPodAutoscaler", "demo")]
    assert ("Normal", "Deleted") in {(e[0], e[1]) for e in result.events}

    api.add(stranger)
    rec(image_bems(replicas=2))
    assert api.deleted == [("HorizontalPodAutoscaler", "demo")], "deleted an HPA not ours"


KEDA_AUTOSCALING = {"provider": "KEDA", "minReplicas": 1, "maxReplicas": 3}


def test_switching_provider_deletes_the_other_autoscaler() -> None:
    api = FakeApi()
    rec = reconciler(api)
    rec(image_bems(replicas=2))
    rec(image_bems(autoscaling={"minReplicas": 1, "maxReplicas": 3}))
    assert api.get("autoscaling/v2", "HorizontalPodAutoscaler", "team-a", "demo")

    api.applied.clear()
    result = rec(image_bems(autoscaling=KEDA_AUTOSCALING))
    assert api.deleted == [("HorizontalPodAutoscaler", "demo")]
    assert ("ScaledObject", "demo", FIELD_MANAGER) in api.applied
    assert not any(manager == HANDOVER_MANAGER for _, _, manager in api.applied), \
        "replicas were handed over already: the new provider finds them as they are"
    assert result.status["autoscaling"]["provider"] == "KEDA"

    rec(image_bems(autoscaling={"minReplicas": 1, "maxReplicas": 3}))
    assert api.deleted == [("HorizontalPodAutoscaler", "demo"), ("ScaledObject", "demo")]


def test_keda_hpa_feeds_the_status_and_is_never_deleted() -> None:
    api = FakeApi()
    rec = reconciler(api)
    bems = image_bems(autoscaling=KEDA_AUTOSCALING)
    rec(bems)
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
    result = rec(bems)
    assert result.status["autoscaling"]["desiredReplicas"] == 2
    assert result.status["autoscaling"]["currentRequestsPerSecond"] == 12.0
    rec(image_bems(replicas=2))
    assert ("HorizontalPodAutoscaler", "keda-hpa-demo") not in api.deleted  # KEDA's, not ours


def test_keda_provider_without_keda_degrades_and_says_what_to_do() -> None:
    api = FakeApi(keda=False)
    rec = reconciler(api)
    rec(image_bems(replicas=3))
    api.applied.clear()
    result = rec(image_bems(autoscaling=KEDA_AUTOSCALING))
    kinds = {kind for kind, _, _ in api.applied}
    assert "ScaledObject" not in kinds and "HorizontalPodAutoscaler" not in kinds  # no fallback
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "KEDANotInstalled")
    assert degraded["message"].startswith("KEDA is not installed")
    assert ("Warning", "KEDANotInstalled") in {(e[0], e[1]) for e in api.events}
    # The operator stopped writing replicas all the same: KEDA, once installed, owns them.
    deployment = api.get("apps/v1", "Deployment", "team-a", "demo")
    assert deployment["spec"]["replicas"] == 3
    assert not owns_field(deployment, FIELD_MANAGER, ("spec", "replicas"))

    api.keda = True
    result = rec(image_bems(autoscaling=KEDA_AUTOSCALING))
    assert ("ScaledObject", "demo", FIELD_MANAGER) in api.applied
    assert ("Normal", "Recovered") in {(e[0], e[1]) for e in api.events}


def test_invalid_spec_is_reported_not_retried() -> None:
    api = FakeApi()
    result = reconciler(api)(image_bems(gpu={"count": 17}))
    assert result.invalid and api.applied == []
    assert [e[1] for e in api.events] == ["InvalidSpec"] and "spec.gpu.count" in api.events[0][2]
    degraded = next(c for c in api.statuses[-1]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec" and "spec.gpu.count" in degraded["message"]


@pytest.mark.parametrize("status", [500, 409, 0])
def test_api_failures_are_retryable(status: int) -> None:
    api = FakeApi()
    api.fail_with = ApiError(status, "etcd is unhappy")
    with pytest.raises(RetryableError, match="etcd is unhappy"):
        reconciler(api)(image_bems(replicas=1))
    if status:  # the server answered: the status says what failed, with its message
        assert "etcd is unhappy" in str(api.statuses[-1]["conditions"])
    else:  # no answer: no status can be written either
        assert api.statuses == []


def test_rejected_child_degrades_the_service() -> None:
    api = FakeApi()
    api.fail_with = ApiError(422, "spec.template.spec.containers[0].env[0].name: Invalid value")
    with pytest.raises(RetryableError):
        reconciler(api)(image_bems(replicas=1))
    degraded = next(c for c in api.statuses[-1]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ApplyRejected" and "env[0].name" in degraded["message"]


def deployment_rolled_out(api: FakeApi) -> None:
    """The Deployment controller's status update, as its watch delivers it."""
    deployment = api.get("apps/v1", "Deployment", "team-a", "demo")
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
        "availableReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]}
    api.add(deployment)


def test_a_deployment_status_change_is_a_status_patch_and_no_apply() -> None:
    api = FakeApi()
    rec = reconciler(api)
    bems = image_bems(replicas=2)
    assert rec(bems).status["phase"] == "Pending"
    deployment_rolled_out(api)
    api.applied.clear()
    result = rec(bems)
    assert api.applied == [] and result.applied == 0
    assert result.status["phase"] == "Ready" and api.statuses[-1]["phase"] == "Ready"
    assert [e[1] for e in api.events] == ["Ready"]


def test_a_settled_object_costs_no_write() -> None:
    api = FakeApi(monitoring=True)
    rec = reconciler(api)
    bems = image_bems(autoscaling={"minReplicas": 1, "maxReplicas": 3},
                      resources={"limits": {"memory": "1024Mi", "cpu": "2000m"}})
    rec(bems)
    deployment_rolled_out(api)
    rec(bems)
    writes = (len(api.applied), len(api.statuses))
    for _ in range(3):
        result = rec(bems)
        assert result.applied == 0 and api.events == []
    assert (len(api.applied), len(api.statuses)) == writes


def test_a_claim_is_looked_up_before_a_rollout_not_on_every_check() -> None:
    api = FakeApi()
    api.add({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "models", "namespace": "team-a"}})
    rec = reconciler(api)
    bems = make_bems({"model": {"claimName": "models"}, "replicas": 1})
    rec(bems)
    assert api.claim_reads == 1
    for _ in range(3):
        rec(bems)
    assert api.claim_reads == 1 and api.statuses[-1]["phase"] == "Pending"
    rec(make_bems({"model": {"claimName": "models", "basePath": "b2"}, "replicas": 1}))
    assert api.claim_reads == 2  # the Deployment changes: the claim is checked first


def test_drift_and_a_dropped_field_are_applied_again() -> None:
    api = FakeApi()
    rec = reconciler(api)
    rec(image_bems(replicas=1, nodeSelector={"pool": "a"}))
    deployment = api.get("apps/v1", "Deployment", "team-a", "demo")
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else"
    api.add(deployment)  # someone edits a field the operator owns
    api.applied.clear()
    rec(image_bems(replicas=1, nodeSelector={"pool": "a"}))
    assert api.applied == [("Deployment", "demo", FIELD_MANAGER)]
    api.applied.clear()
    rec(image_bems(replicas=1))  # the live object still has the selector: a new digest says so
    assert ("Deployment", "demo", FIELD_MANAGER) in api.applied


@pytest.mark.parametrize(("live", "desired", "expected"), [
    ({"a": 1, "b": {"c": "x", "d": 2}}, {"b": {"c": "x"}}, True),  # defaults added by the server
    ({"a": 1}, {"a": 2}, False),
    ({"a": 1}, {"env": [], "labels": {}, "x": None, "flag": False}, True),  # empties omitted
    ({"replicas": 1}, {"replicas": 0}, False),  # a zero the server holds otherwise is a change
    ({"limits": {"memory": "1Gi", "cpu": "2"}}, {"limits": {"memory": "1024Mi", "cpu": "2000m"}},
     True),  # quantities in canonical form
    ({"limits": {"memory": "1Gi"}}, {"limits": {"memory": "2Gi"}}, False),
    ({"limits": {"nvidia.com/gpu": "1"}}, {"limits": {"nvidia.com/gpu": 1}}, True),
    ({"env": [{"name": "A", "value": "1.0"}]}, {"env": [{"name": "A", "value": "1"}]}, False),
    ({"ports": [{"port": 80, "protocol": "TCP"}]}, {"ports": [{"port": 80}]}, True),
    ({"ports": [{"port": 80}, {"port": 81}]}, {"ports": [{"port": 80}]}, False),
])
def test_holds_compares_after_the_servers_rewriting(live: Any, desired: Any,
                                                     expected: bool) -> None:
    assert holds(live, desired) is expected


def test_difference_names_the_first_field_that_differs() -> None:
    live = {"spec": {"ports": [{"port": 80}, {"port": 81, "name": "b"}]}}
    assert difference(live, {"spec": {"ports": [{"port": 80}, {"port": 82}]}}) == \
        "spec.ports[1].port"
    assert difference(live, {"spec": {"selector": {"app": "x"}}}) == "spec.selector"


def test_terminating_namespace_is_not_a_failure() -> None:
    api = FakeApi()
    api.fail_with = ApiError(403, 'deployments.apps "demo" is forbidden: unable to create new '
                                  "content in namespace team-a because it is being terminated")
    bems = image_bems(replicas=1)
    api.add(bems)
    assert Run(api).rec.reconcile(("team-a", "demo")) is None
    assert api.events == [] and api.statuses == []


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
    with pytest.raises(RetryableError):
        reconciler(api)(image_bems(replicas=1))
    # the other children are still applied; the status says which one failed and why
    assert {"Deployment", "PodDisruptionBudget"} <= {kind for kind, _, _ in api.applied}
    status_written = api.statuses[-1]
    degraded = next(c for c in status_written["conditions"] if c["type"] == "Degraded")
    ready = next(c for c in status_written["conditions"] if c["type"] == "Ready")
    assert (status_written["phase"], degraded["reason"], ready["status"]) == \
        ("Degraded", reason, "False")
    assert "Service demo" in degraded["message"] and "nodePort" in degraded["message"]
    warnings = [e for e in api.events if e[0] == "Warning"]
    assert [e[1] for e in warnings] == [reason] and "nodePort" in warnings[0][2]


def test_runtime_pods_that_fail_to_load_degrade_the_service() -> None:
    api = FakeApi()
    rec = reconciler(api)
    bems = image_bems(replicas=1)
    rec(bems)
    deployment = api.get("apps/v1", "Deployment", "team-a", "demo")
    template_hash = deployment["spec"]["template"]["metadata"]["annotations"]["bem.ai/config-hash"]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "demo-1", "namespace": "team-a", "labels": {"bem.ai/service": "demo"},
                     "annotations": {"bem.ai/config-hash": template_hash}},
        "spec": {"containers": [{"name": "bem-runtime"}]},
        "status": {"containerStatuses": [{"name": "bem-runtime", "restartCount": 1, "state": {
            "waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {
                "exitCode": 3, "message": "checkpoint bem/experts.safetensors is corrupt"}}}]}}
    assert api.cache.observe("ADDED", pod) == ("team-a", "demo")
    assert "spec" not in api.cache.pods("team-a", "demo")[0]  # only what the status reads
    deployment["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}
    deployment["metadata"]["generation"] = 1
    api.add(deployment)
    api.applied.clear()
    result = rec(bems)
    assert api.applied == []
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ModelLoadFailed" and "is corrupt" in degraded["message"]
    assert ("Warning", "ModelLoadFailed") in {(e[0], e[1]) for e in api.events}
    api.cache.observe("DELETED", pod)
    assert api.cache.pods("team-a", "demo") == []


GATEWAY = {"parentRefs": [{"name": "edge", "namespace": "gateways"}],
           "hostnames": ["bem.example.com"], "pathPrefix": "/bem"}


def _route_status(accepted: str, resolved: str, reason: str = "Accepted") -> dict[str, Any]:
    """status.parents as a Gateway controller writes it for the route's one parentRef."""
    return {"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "name": "edge", "namespace": "gateways"},
        "controllerName": "example.com/gateway-controller",
        "conditions": [
            {"type": "Accepted", "status": accepted, "reason": reason, "message": f"said {reason}"},
            {"type": "ResolvedRefs", "status": resolved, "reason": "ResolvedRefs", "message": ""}]}]}


def _condition(result: Result, kind: str) -> dict[str, Any]:
    return next(c for c in result.status["conditions"] if c["type"] == kind)


def test_gateway_route_reports_what_the_gateway_controller_says() -> None:
    api = FakeApi()
    rec = reconciler(api)
    bems = image_bems(replicas=1, gateway=GATEWAY)
    result = rec(bems)
    assert ("HTTPRoute", "demo", FIELD_MANAGER) in api.applied
    # Nobody reported yet: said in the Gateway condition, not degraded (the pods serve inside).
    gateway = _condition(result, "Gateway")
    assert (gateway["status"], gateway["reason"]) == ("False", "GatewayPending")
    assert "no Gateway controller has accepted HTTPRoute demo yet on gateways/edge" in gateway["message"]
    assert _condition(result, "Degraded")["status"] == "False"
    assert result.status["gateway"] == {
        "httpRoute": "demo", "url": "https://bem.example.com/bem",
        "parents": [{"gateway": "gateways/edge", "accepted": "Unknown", "resolvedRefs": "Unknown"}]}

    route = api.get(HTTP_ROUTE.api_version, "HTTPRoute", "team-a", "demo")
    api.add({**route, "status": _route_status("False", "True", "NotAllowedByListeners")})
    result = rec(bems)
    degraded = _condition(result, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "NotAllowedByListeners")
    assert "Gateway gateways/edge reports Accepted False for HTTPRoute demo: said " \
        "NotAllowedByListeners" == degraded["message"]
    assert result.status["gateway"]["parents"][0]["accepted"] == "False"

    api.add({**route, "status": _route_status("True", "True")})
    result = rec(bems)
    gateway = _condition(result, "Gateway")
    assert (gateway["status"], gateway["reason"]) == ("True", "RouteAccepted")
    assert _condition(result, "Degraded")["status"] == "False"
    assert result.status["gateway"]["parents"][0] == {
        "gateway": "gateways/edge", "accepted": "True", "resolvedRefs": "True"}

    result = rec(image_bems(replicas=1))
    assert ("HTTPRoute", "demo") in api.deleted
    assert result.status["gateway"] is None
    assert "Gateway" not in {c["type"] for c in result.status["conditions"]}


def test_gateway_without_gateway_api_degrades_and_says_what_to_do() -> None:
    api = FakeApi(gateway=False)
    result = reconciler(api)(image_bems(replicas=1, gateway=GATEWAY))
    assert "HTTPRoute" not in {kind for kind, _, _ in api.applied}
    degraded = _condition(result, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "GatewayAPINotInstalled")
    assert "does not serve gateway.networking.k8s.io/v1 HTTPRoute" in degraded["message"]
    assert _condition(result, "Gateway")["reason"] == "GatewayAPINotInstalled"
    assert result.status["gateway"]["httpRoute"] is None


def _route_filters(api: FakeApi) -> list[dict[str, Any]]:
    route = api.get(HTTP_ROUTE.api_version, "HTTPRoute", "team-a", "demo")
    return route["spec"]["rules"][0].get("filters") or []


def test_rate_limit_middleware_is_written_named_by_the_route_and_removed_with_it() -> None:
    api = FakeApi()
    rec = reconciler(api)
    limited = {**GATEWAY, "rateLimit": {"average": 20}}
    result = rec(image_bems(replicas=1, gateway=limited))
    applied = [(kind, name) for kind, name, _ in api.applied]
    # The Middleware first: the route that names it resolves at once.
    assert applied.index(("Middleware", "demo-ratelimit")) < applied.index(("HTTPRoute", "demo"))
    middleware = api.get(TRAEFIK_MIDDLEWARE.api_version, "Middleware", "team-a", "demo-ratelimit")
    assert middleware["spec"]["rateLimit"] == {"average": 20, "burst": 20, "period": "1s"}
    assert [f["type"] for f in _route_filters(api)] == ["ResponseHeaderModifier", "ExtensionRef"]
    assert _condition(result, "Degraded")["status"] == "False"

    result = rec(image_bems(replicas=1, gateway=GATEWAY))
    assert ("Middleware", "demo-ratelimit") in api.deleted
    assert [f["type"] for f in _route_filters(api)] == ["ResponseHeaderModifier"]
    assert _condition(result, "Degraded")["status"] == "False"


def test_rate_limit_without_the_middleware_crd_writes_the_route_and_degrades() -> None:
    api = FakeApi(traefik=False)
    result = reconciler(api)(image_bems(replicas=1, gateway={**GATEWAY, "rateLimit": {"average": 5}}))
    kinds = {kind for kind, _, _ in api.applied}
    assert "Middleware" not in kinds and "HTTPRoute" in kinds
    assert [f["type"] for f in _route_filters(api)] == ["ResponseHeaderModifier"]
    degraded = _condition(result, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RateLimitUnsupported")
    assert "spec.gateway.rateLimit" in degraded["message"]
    assert "does not serve" in degraded["message"]
    assert _condition(result, "Gateway")["reason"] == "RateLimitUnsupported"
    assert result.status["gateway"]["httpRoute"] == "demo"
    assert ("Warning", "RateLimitUnsupported") in {(e[0], e[1]) for e in api.events}
    # The same spec without the limit is fine on this cluster.
    result = reconciler(api)(image_bems(replicas=1, gateway=GATEWAY))
    assert _condition(result, "Degraded")["status"] == "False"


def test_ingress_is_written_and_dropped_with_spec_ingress() -> None:
    api = FakeApi()
    rec = reconciler(api)
    rec(image_bems(replicas=1, ingress={"hosts": ["bem.example.com"], "tlsSecretName": "tls"}))
    ingress = api.get("networking.k8s.io/v1", "Ingress", "team-a", "demo")
    assert ingress["spec"]["tls"] == [{"secretName": "tls", "hosts": ["bem.example.com"]}]
    rec(image_bems(replicas=1))
    assert ("Ingress", "demo") in api.deleted
