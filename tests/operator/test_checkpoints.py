"""BEMCheckpoints in the operator, without a cluster: placement (capacity, a name the service
serves already), the start list the pods mount, the loads and unloads that bring each Ready
pod to the placed set, and a status that is what the pods answered.

The runtimes here are in-memory stand-ins of the admin API (tests/runtime exercises the real
one; tests/realpods/test_checkpoints.py puts the two together on real pods)."""
from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from builders_factory import by_kind, make_bems
from test_reconcile import FakeApi, image_bems

from bem_operator.builders import BuildOptions, build_children
from bem_operator.builders.kinds import BEMCHECKPOINT
from bem_operator.checkpoints import (AdminError, Declared, PodReport, ReadyPod, checkpoint_status,
                                      declared_of, place, ready_pods, sync_pod)
from bem_operator.constants import OWNER_LABEL
from bem_operator.controller import Cache
from bem_operator.reconcile import Reconciler
from bem_operator.status import Problem, Reason

NOW = "2026-01-01T00:00:00Z"


class FakeRuntime:
    """One pod's admin API: what it serves, its slots, and checkpoints it refuses to load."""

    def __init__(self, token: str = "", capacity: int = 8, own: str = "demo") -> None:
        self.token = token
        self.capacity = capacity
        self.entries: dict[str, dict[str, Any]] = {
            own: {"name": own, "path": "/models/bem", "state": "loaded", "loaded_at": NOW}}
        self.invalid: dict[str, str] = {}  # path -> the runtime's 422 message
        self.calls: list[tuple[str, str]] = []


class FakeAdmin:
    """The runtime admin API of several pods, by address (token read from the fake API)."""

    def __init__(self, runtimes: dict[str, FakeRuntime], token: Any = None) -> None:
        self.runtimes = runtimes
        self.token = token  # a callable giving the token the pods hold

    def _runtime(self, address: str, token: str) -> FakeRuntime:
        runtime = self.runtimes.get(address)
        if runtime is None:
            raise AdminError(0, f"no answer from {address}:8080 (ConnectTimeoutError)")
        if token != (self.token() if self.token else runtime.token):
            raise AdminError(401, "invalid admin token")
        return runtime

    def list(self, address: str, token: str) -> list[dict[str, Any]]:
        runtime = self._runtime(address, token)
        runtime.calls.append(("GET", ""))
        return [copy.deepcopy(e) for e in runtime.entries.values()]

    def load(self, address: str, token: str, name: str, path: str) -> dict[str, Any]:
        runtime = self._runtime(address, token)
        runtime.calls.append(("PUT", name))
        if path in runtime.invalid:
            raise AdminError(422, runtime.invalid[path])
        if name not in runtime.entries and len(runtime.entries) >= runtime.capacity:
            raise AdminError(409, "all slots are in use")
        runtime.entries[name] = {"name": name, "path": path, "state": "loaded",
                                 "loaded_at": "2026-01-01T00:00:05Z"}
        return copy.deepcopy(runtime.entries[name])

    def unload(self, address: str, token: str, name: str) -> None:
        runtime = self._runtime(address, token)
        runtime.calls.append(("DELETE", name))
        runtime.entries.pop(name, None)


def checkpoint(name: str, path: str, service: str = "demo", created: str = "2026-01-01T00:00:01Z",
               namespace: str = "team-a") -> dict[str, Any]:
    return {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMCheckpoint",
            "metadata": {"name": name, "namespace": namespace, "generation": 1,
                         "creationTimestamp": created},
            "spec": {"service": service, "path": path}}


def pod(name: str, ip: str, ready: bool = True, service: str = "demo") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "team-a", "labels": {OWNER_LABEL: service}},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def declared(*bodies: dict[str, Any]) -> list[Declared]:
    return declared_of(bodies)


# Placement and the start list


def test_the_oldest_checkpoints_take_the_slots_and_the_rest_wait_with_a_reason() -> None:
    items = declared(checkpoint("c", "ck/c", created="2026-01-01T00:00:03Z"),
                     checkpoint("a", "ck/a", created="2026-01-01T00:00:01Z"),
                     checkpoint("b", "ck/b", created="2026-01-01T00:00:02Z"))
    placement = place(items, "demo", "demo", max_checkpoints=3)  # 2 slots beside its own
    assert [item.name for item in placement.placed] == ["a", "b"]
    assert placement.refused["c"].reason == Reason.CHECKPOINT_CAPACITY
    assert "spec.runtime.maxCheckpoints" in placement.refused["c"].message


def test_a_checkpoint_named_like_the_services_own_model_is_refused() -> None:
    placement = place(declared(checkpoint("chat", "ck/a")), "demo", "chat", max_checkpoints=8)
    assert placement.placed == ()
    assert placement.refused["chat"].reason == Reason.NAME_CONFLICT


def test_a_checkpoint_being_deleted_is_not_declared() -> None:
    body = checkpoint("a", "ck/a")
    body["metadata"]["deletionTimestamp"] = NOW
    assert declared(body) == []


def test_the_start_list_holds_the_placed_checkpoints_and_the_pod_template_does_not() -> None:
    bems = image_bems(replicas=1)
    plain = by_kind(build_children(bems, BuildOptions()))
    with_two = by_kind(build_children(bems, BuildOptions(
        checkpoints=(("b", "ck/b"), ("a", "ck/a")))))
    assert json.loads(with_two["ConfigMap"]["data"]["checkpoints.json"]) == {"a": "ck/a", "b": "ck/b"}
    assert json.loads(plain["ConfigMap"]["data"]["checkpoints.json"]) == {}
    # Applying or deleting a BEMCheckpoint never rolls the pods.
    assert with_two["Deployment"] == plain["Deployment"]
    container = plain["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["BEM_CHECKPOINTS_FILE"] == "/etc/bem/checkpoints/checkpoints.json"
    assert env["BEM_ADMIN_TOKEN_FILE"] == "/var/run/secrets/bem/admin/token"
    assert env["BEM_CHECKPOINT_ROOT"] == "/models" and env["BEM_MAX_CHECKPOINTS"] == "8"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["admin-token"]["readOnly"] and mounts["checkpoints"]["readOnly"]


# One pod


def test_a_pod_is_brought_to_the_wanted_set_without_touching_its_own_checkpoint() -> None:
    runtime = FakeRuntime("t")
    runtime.entries["stale"] = {"name": "stale", "path": "/models/old", "state": "loaded"}
    runtime.entries["moved"] = {"name": "moved", "path": "/models/v1", "state": "loaded"}
    admin = FakeAdmin({"10.0.0.1": runtime})
    wanted = {"a": "/models/ck/a", "moved": "/models/v2"}
    report = sync_pod(admin, "t", ReadyPod("p1", "10.0.0.1"), wanted, keep="demo")
    assert set(runtime.entries) == {"demo", "a", "moved"}
    assert runtime.entries["moved"]["path"] == "/models/v2"
    assert report.unloaded == ["stale"] and sorted(report.loaded) == ["a", "moved"]
    # Unloads come first, so a full pod has a free slot for the new one.
    assert runtime.calls.index(("DELETE", "stale")) < runtime.calls.index(("PUT", "a"))
    # A second pass changes nothing: only the list is asked for.
    runtime.calls.clear()
    again = sync_pod(admin, "t", ReadyPod("p1", "10.0.0.1"), wanted, keep="demo")
    assert runtime.calls == [("GET", "")] and not again.loaded and not again.unloaded


def test_a_refused_load_is_kept_with_the_runtimes_own_message_and_the_others_load() -> None:
    runtime = FakeRuntime("t")
    runtime.invalid["/models/foreign"] = "'bad' is not a valid checkpoint for this base model: " \
        "A.model.layers.0.q_proj has shape [4, 32, 8], expected [4, 64, 8]"
    report = sync_pod(FakeAdmin({"10.0.0.1": runtime}), "t", ReadyPod("p1", "10.0.0.1"),
                      {"bad": "/models/foreign", "good": "/models/ck/a"}, keep="demo")
    assert "good" in runtime.entries and "bad" not in runtime.entries
    assert report.failed["bad"].reason == Reason.INVALID_CHECKPOINT
    assert "expected [4, 64, 8]" in report.failed["bad"].message
    assert "p1" in report.failed["bad"].message


def test_a_pod_that_does_not_answer_or_refuses_the_token_is_reported() -> None:
    silent = sync_pod(FakeAdmin({}), "t", ReadyPod("p1", "10.0.0.9"), {"a": "/models/a"}, "demo")
    assert silent.unreachable is not None and silent.unreachable.reason == Reason.POD_UNREACHABLE
    refused = sync_pod(FakeAdmin({"10.0.0.1": FakeRuntime("other")}), "t",
                       ReadyPod("p1", "10.0.0.1"), {"a": "/models/a"}, "demo")
    assert refused.unreachable is not None
    assert refused.unreachable.reason == Reason.ADMIN_TOKEN_REJECTED


def test_only_ready_pods_with_an_address_are_asked() -> None:
    deleting = pod("c", "10.0.0.3")
    deleting["metadata"]["deletionTimestamp"] = NOW
    no_ip = pod("d", "")
    pods = [pod("b", "10.0.0.2"), pod("a", "10.0.0.1", ready=False), deleting, no_ip]
    assert ready_pods(pods) == [ReadyPod("b", "10.0.0.2")]


# Status


def test_status_is_what_each_pod_answered() -> None:
    [item] = declared(checkpoint("a", "ck/a"))
    served = {"a": {"name": "a", "path": "/models/ck/a", "state": "loaded", "loaded_at": NOW}}
    reports = [PodReport("p1", served=served), PodReport("p2")]
    status = checkpoint_status(item, "demo", reports, None, None, NOW)
    assert status["loaded"] == "1/2" and status["loadedReplicas"] == 1 and status["replicas"] == 2
    assert status["pods"] == [{"name": "p1", "loaded": True, "loadedAt": NOW},
                              {"name": "p2", "loaded": False}]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Loading")
    # Served from another path is not this checkpoint.
    moved = {"a": {**served["a"], "path": "/models/ck/old"}}
    status = checkpoint_status(item, "demo", [PodReport("p1", served=moved)], None, None, NOW)
    assert status["pods"] == [{"name": "p1", "loaded": False}]
    status = checkpoint_status(item, "demo", [PodReport("p1", served=served)], None, None, NOW)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and status["loaded"] == "1/1"


def test_a_refusal_degrades_with_its_reason_and_no_ready_pod_is_not_ready() -> None:
    [item] = declared(checkpoint("a", "ck/a"))
    refused = Problem(Reason.CHECKPOINT_CAPACITY, "raise spec.runtime.maxCheckpoints")
    status = checkpoint_status(item, "demo", [PodReport("p1")], refused, None, NOW)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "CheckpointCapacity"
    assert conditions["Ready"]["status"] == "False"
    status = checkpoint_status(item, "demo", [], None, None, NOW)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["reason"] == "NoReadyReplicas" and status["loaded"] == "0/0"
    assert conditions["Degraded"]["status"] == "False"


# The reconcile, end to end against the fake API and fake pods


class Cluster:
    def __init__(self, pods: int = 2, **spec: Any) -> None:
        self.api = FakeApi()
        self.runtimes = {f"10.0.0.{i}": FakeRuntime() for i in range(1, pods + 1)}
        self.admin = FakeAdmin(self.runtimes, token=self.token)
        self.rec = Reconciler(self.api, self.api.cache, "bem-runtime:test",  # type: ignore[arg-type]
                              clock=lambda: NOW, admin=self.admin)
        self.bems = self.api.add(image_bems(replicas=pods, **spec))
        for i, address in enumerate(self.runtimes, 1):
            self.api.add(pod(f"demo-{i}", address))

    def token(self) -> str:
        secret = self.api.objects[("v1", "Secret", "team-a", "demo-admin-token")]
        return base64.b64decode(secret["data"]["token"]).decode()

    def reconcile(self) -> None:
        self.api.events.clear()
        self.rec.reconcile(("team-a", "demo"))

    def status(self, name: str) -> dict[str, Any]:
        return self.api.objects[("bem.ai/v1alpha1", "BEMCheckpoint", "team-a", name)]["status"]

    def bems_status(self) -> dict[str, Any]:
        return self.api.objects[("bem.ai/v1alpha1", "BEMService", "team-a", "demo")]["status"]

    def served(self) -> list[set[str]]:
        return [set(runtime.entries) for runtime in self.runtimes.values()]


def test_every_ready_pod_loads_every_checkpoint_and_the_status_says_so() -> None:
    cluster = Cluster(pods=2)
    cluster.api.add(checkpoint("a", "ck/a"))
    cluster.api.add(checkpoint("b", "ck/b", created="2026-01-01T00:00:02Z"))
    cluster.reconcile()
    assert cluster.served() == [{"demo", "a", "b"}] * 2
    status = cluster.status("a")
    assert status["loaded"] == "2/2" and [p["name"] for p in status["pods"]] == ["demo-1", "demo-2"]
    assert json.loads(cluster.api.objects[("v1", "ConfigMap", "team-a", "demo-checkpoints")]
                      ["data"]["checkpoints.json"]) == {"a": "ck/a", "b": "ck/b"}
    assert cluster.bems_status()["checkpoints"] == {"declared": 2, "ready": 2, "waiting": 0,
                                                    "resident": 2}
    assert ("Normal", "Loaded", "Loaded /models/ck/a on pod(s) demo-1, demo-2") in cluster.api.events
    # Settled: the pods are asked, nothing is loaded again, no status is written.
    writes = len(cluster.api.checkpoint_statuses)
    cluster.reconcile()
    assert len(cluster.api.checkpoint_statuses) == writes and not cluster.api.events


def test_a_pod_that_lost_its_checkpoints_counts_as_missing_until_it_has_them_again() -> None:
    cluster = Cluster(pods=2)
    cluster.api.add(checkpoint("a", "ck/a"))
    cluster.reconcile()
    cluster.runtimes["10.0.0.2"].entries.pop("a")  # e.g. its runtime restarted
    # The next pass asks the pod, finds it missing and loads it again.
    cluster.reconcile()
    assert cluster.served() == [{"demo", "a"}] * 2
    assert ("Normal", "Loaded", "Loaded /models/ck/a on pod(s) demo-2") in cluster.api.events


def test_deleting_a_checkpoint_unloads_it_everywhere_and_then_stops_asking() -> None:
    cluster = Cluster(pods=2)
    cluster.api.add(checkpoint("a", "ck/a"))
    cluster.reconcile()
    cluster.api.delete("bem.ai/v1alpha1", "BEMCheckpoint", "team-a", "a")
    cluster.reconcile()
    assert cluster.served() == [{"demo"}] * 2
    assert any(reason == "Unloaded" and "no BEMCheckpoint declares it" in message
               for _, reason, message in cluster.api.events)
    assert cluster.bems_status().get("checkpoints") is None
    for runtime in cluster.runtimes.values():
        runtime.calls.clear()
    cluster.reconcile()
    assert all(not runtime.calls for runtime in cluster.runtimes.values())


def test_capacity_and_bad_checkpoints_degrade_only_themselves() -> None:
    cluster = Cluster(pods=1, runtime={"maxCheckpoints": 3})
    cluster.runtimes["10.0.0.1"].invalid["/models/foreign/bem"] = (
        "'bad' is not a valid checkpoint for this base model: shape [2, 8] vs [2, 16]")
    cluster.api.add(checkpoint("good", "ck/a", created="2026-01-01T00:00:01Z"))
    cluster.api.add(checkpoint("bad", "foreign/bem", created="2026-01-01T00:00:02Z"))
    cluster.api.add(checkpoint("late", "ck/b", created="2026-01-01T00:00:03Z"))
    cluster.reconcile()
    assert cluster.served() == [{"demo", "good"}]
    degraded = {name: next(c for c in cluster.status(name)["conditions"] if c["type"] == "Degraded")
                for name in ("good", "bad", "late")}
    assert degraded["good"]["status"] == "False"
    assert degraded["bad"]["reason"] == "InvalidCheckpoint" and "[2, 16]" in degraded["bad"]["message"]
    assert cluster.status("bad")["pods"][0]["message"].startswith("pod demo-1 refused to load")
    assert degraded["late"]["reason"] == "CheckpointCapacity"
    assert cluster.bems_status()["checkpoints"]["waiting"] == 1
    warnings = [reason for kind, reason, _ in cluster.api.events if kind == "Warning"]
    assert sorted(warnings) == ["CheckpointCapacity", "InvalidCheckpoint"]
    # The start list holds what may load: never a checkpoint beyond the slots.
    start = cluster.api.objects[("v1", "ConfigMap", "team-a", "demo-checkpoints")]
    assert set(json.loads(start["data"]["checkpoints.json"])) == {"good", "bad"}


def test_checkpoints_of_a_missing_service_say_so() -> None:
    api = FakeApi()
    rec = Reconciler(api, api.cache, "bem-runtime:test", clock=lambda: NOW,  # type: ignore[arg-type]
                     admin=FakeAdmin({}))
    api.add(checkpoint("a", "ck/a", service="nope"))
    assert rec.reconcile(("team-a", "nope")) is None
    status = api.objects[("bem.ai/v1alpha1", "BEMCheckpoint", "team-a", "a")]["status"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ServiceNotFound" and "nope" in degraded["message"]


# The cache


def test_the_cache_files_a_checkpoint_under_the_service_it_names() -> None:
    cache = Cache()
    body = checkpoint("a", "ck/a", service="chat")
    body["metadata"]["resourceVersion"] = "5"
    assert cache.observe("ADDED", body) == ("team-a", "chat")
    assert [c["metadata"]["name"] for c in cache.children("team-a", "chat", BEMCHECKPOINT.key)] == ["a"]
    assert ("team-a", "chat") in cache.keys()  # checked periodically though no BEMService exists
    # Its status moving alone (the operator's own patch) asks for nothing.
    echoed = {**body, "status": {"loaded": "1/1"}, "metadata": {**body["metadata"], "resourceVersion": "6"}}
    assert cache.observe("MODIFIED", echoed) is None
    assert cache.observe("DELETED", echoed) == ("team-a", "chat")
    assert cache.children("team-a", "chat", BEMCHECKPOINT.key) == []


@pytest.mark.parametrize("status", [400, 409, 500])
def test_other_refusals_have_their_own_reason(status: int) -> None:
    runtime = FakeRuntime("t")

    class Refusing(FakeAdmin):
        def load(self, address: str, token: str, name: str, path: str) -> dict[str, Any]:
            raise AdminError(status, "the runtime's message")

    report = sync_pod(Refusing({"10.0.0.1": runtime}), "t", ReadyPod("p1", "10.0.0.1"),
                      {"a": "/models/a"}, "demo")
    assert report.failed["a"].reason == {400: Reason.INVALID_PATH, 409: Reason.CHECKPOINT_CAPACITY,
                                         500: Reason.LOAD_FAILED}[status]
    assert report.failed["a"].message.endswith(f"HTTP {status}: the runtime's message")
