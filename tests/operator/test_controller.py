"""The one event path: the cache (what asks for a reconcile, what is only an echo) and the
work queue (one entry per key, never two workers on one key, growing retry delays)."""
from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace
from typing import Any

from bem_operator.controller import Cache, Controller, WorkQueue, parent_of


def child(kind: str = "Deployment", rv: str = "5", owner_uid: str = "p-1") -> dict[str, Any]:
    return {"apiVersion": "apps/v1" if kind == "Deployment" else "v1", "kind": kind,
            "metadata": {"name": "chat", "namespace": "ns", "uid": f"{kind}-uid",
                         "resourceVersion": rv, "generation": 1,
                         "labels": {"bem.ai/service": "chat"},
                         "managedFields": [
                             {"manager": "bem-operator", "operation": "Apply",
                              "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}},
                             {"manager": "kube-controller-manager", "operation": "Update",
                              "fieldsV1": {"f:status": {}}}],
                         "ownerReferences": [{"kind": "BEMService", "uid": owner_uid,
                                              "controller": True}]},
            "spec": {"replicas": 2}, "status": {"readyReplicas": 0}}


def bems(rv: str = "3", replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
            "metadata": {"name": "chat", "namespace": "ns", "uid": "p-1", "generation": 1,
                         "resourceVersion": rv}, "spec": {"replicas": replicas}}


def test_children_are_kept_by_parent_and_kind() -> None:
    cache = Cache()
    assert cache.observe("ADDED", child("Deployment")) == ("ns", "chat")
    assert cache.observe("ADDED", child("Service")) == ("ns", "chat")
    assert parent_of(child()) == ("ns", "chat")
    assert cache.get(("apps/v1", "Deployment"), "ns", "chat", "chat")["spec"]["replicas"] == 2
    # the replicas hand-over reads who holds a Deployment's spec.replicas; nothing else of
    # managedFields is kept, and of a Service none
    assert cache.get(("apps/v1", "Deployment"), "ns", "chat", "chat")["metadata"][
        "managedFields"] == [{"manager": "bem-operator", "operation": "Apply",
                              "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    assert "managedFields" not in cache.get(("v1", "Service"), "ns", "chat", "chat")["metadata"]
    assert cache.observe("DELETED", child("Deployment")) == ("ns", "chat")
    assert [c["kind"] for c in cache.children("ns", "chat")] == ["Service"]


def test_unlabelled_objects_are_ignored() -> None:
    cache = Cache()
    body = child()
    del body["metadata"]["labels"]
    assert cache.observe("ADDED", body) is None and cache.children("ns", "chat") == []


def test_own_writes_and_old_events_ask_for_nothing() -> None:
    cache = Cache()
    cache.store(child(rv="5"))  # what the operator's apply returned
    assert cache.observe("MODIFIED", child(rv="5")) is None  # its echo
    assert cache.observe("MODIFIED", child(rv="4")) is None  # older than what is held
    moved = child(rv="6")
    moved["status"]["readyReplicas"] = 2  # a Deployment's status feeds the BEMService's
    assert cache.observe("MODIFIED", moved) == ("ns", "chat")
    service = child("Service", rv="7")
    cache.observe("ADDED", service)
    status_only = copy.deepcopy(service)
    status_only["metadata"]["resourceVersion"] = "8"
    status_only["status"] = {"loadBalancer": {}}
    assert cache.observe("MODIFIED", status_only) is None  # a Service's status feeds nothing
    edited = copy.deepcopy(status_only)
    edited["metadata"]["resourceVersion"] = "9"
    edited["spec"]["type"] = "NodePort"
    assert cache.observe("MODIFIED", edited) == ("ns", "chat")


def test_watch_events_are_counted_by_kind_and_whether_they_queued_a_reconcile() -> None:
    from bem_operator.k8s import KubeApi
    from bem_operator.settings import OperatorSettings

    controller = Controller(KubeApi(None), OperatorSettings())  # type: ignore[arg-type]
    controller.on_event("ADDED", child("Deployment", rv="5"))
    controller.on_event("MODIFIED", child("Deployment", rv="5"))  # the same version again
    controller.on_event("MODIFIED", child("Deployment", rv="4"))  # an old one
    controller.on_event("ADDED", bems())

    def count(kind: str, outcome: str) -> float | None:
        return controller.metrics.registry.get_sample_value(
            "bem_operator_watch_events_total", {"kind": kind, "outcome": outcome})
    assert (count("Deployment", "queued"), count("Deployment", "dropped")) == (1, 2)
    assert (count("BEMService", "queued"), count("BEMService", "dropped")) == (1, None)


def test_a_bemservice_status_patch_asks_for_nothing_a_spec_change_does() -> None:
    cache = Cache()
    assert cache.observe("ADDED", bems(rv="3")) == ("ns", "chat")
    patched = bems(rv="4")
    patched["status"] = {"phase": "Ready"}
    assert cache.observe("MODIFIED", patched) is None
    assert cache.bemservice(("ns", "chat"))["status"]["phase"] == "Ready"
    assert cache.observe("MODIFIED", bems(rv="5", replicas=3)) == ("ns", "chat")
    assert cache.observe("DELETED", bems(rv="6")) is None and cache.keys() == []


def test_kedas_hpa_is_cached_under_its_scaled_objects_parent() -> None:
    cache = Cache()
    hpa = child(rv="9")
    hpa.update(apiVersion="autoscaling/v2", kind="HorizontalPodAutoscaler")
    hpa["metadata"].update(name="keda-hpa-chat", uid="keda-hpa-uid")
    hpa["metadata"]["ownerReferences"] = [{"kind": "ScaledObject", "uid": "so", "controller": True}]
    assert cache.observe("ADDED", hpa) == ("ns", "chat")
    assert cache.get(("autoscaling/v2", "HorizontalPodAutoscaler"), "ns", "chat",
                     "keda-hpa-chat") is not None


def test_a_key_waits_once_and_is_never_processed_twice_at_once() -> None:
    async def scenario() -> list[tuple[tuple[str, str], str]]:
        queue = WorkQueue()
        queue.add(("ns", "a"), "spec")
        queue.add(("ns", "a"), "child")  # merged: the first reason stays
        queue.add(("ns", "b"), "resync")
        assert len(queue) == 2
        first = await queue.get()
        queue.add(first[0], "child")  # while it is processed: handed out again after
        second = await queue.get()
        assert len(queue) == 1  # a, dirty
        queue.done(first[0])
        third = await asyncio.wait_for(queue.get(), 1)
        queue.done(second[0])
        queue.done(third[0])
        assert len(queue) == 0
        return [first, second, third]

    assert asyncio.run(scenario()) == [(("ns", "a"), "spec"), (("ns", "b"), "resync"),
                                       (("ns", "a"), "child")]


def test_failures_wait_longer_each_time_until_one_succeeds() -> None:
    async def scenario() -> list[float]:
        queue = WorkQueue(base_delay=0.01, max_delay=0.04)
        delays = [queue.retry(("ns", "a")) for _ in range(4)]
        key = await asyncio.wait_for(queue.get(), 1)  # one timer: the key waits once
        queue.done(key[0])
        queue.forget(key[0])
        delays.append(queue.retry(("ns", "a")))
        queue.close()
        return delays

    assert asyncio.run(scenario()) == [0.01, 0.02, 0.04, 0.04, 0.01]


def test_a_delayed_add_merges_a_burst_and_an_immediate_add_wins() -> None:
    async def scenario() -> tuple[str, int]:
        queue = WorkQueue()
        for _ in range(5):
            queue.add(("ns", "a"), "child", delay=10)
        queue.add(("ns", "a"), "spec")
        key, reason = await asyncio.wait_for(queue.get(), 1)
        queue.done(key)
        return reason, len(queue)

    assert asyncio.run(scenario()) == ("spec", 0)


def test_a_fresh_list_drops_what_a_watch_that_was_away_missed() -> None:
    cache = Cache()
    cache.observe("ADDED", child("Deployment", rv="5"))
    cache.observe("ADDED", child("Service", rv="6"))
    cache.observe("ADDED", bems(rv="3"))
    service = ("ns", "chat", "Service-uid")
    # The Deployment was deleted during an outage; the list saw the Service only.
    assert cache.prune(("apps/v1", "Deployment"), {service}, listed_at=10) == {("ns", "chat")}
    assert cache.get(("apps/v1", "Deployment"), "ns", "chat", "chat") is None
    assert cache.prune(("v1", "Service"), {service}, listed_at=10) == set()
    # An object newer than the list (created after it was taken) stays.
    cache.observe("ADDED", child("Deployment", rv="12"))
    assert cache.prune(("apps/v1", "Deployment"), set(), listed_at=10) == set()
    assert cache.prune(("bem.ai/v1alpha1", "BEMService"), set(), listed_at=10) == set()
    assert cache.keys() == []


class _Flaky:
    """A reconciler whose first run of each key hits a bug, and whose second finds the spec
    invalid."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str]] = []

    def reconcile(self, key: tuple[str, str]) -> Any:
        self.runs.append(key)
        if self.runs.count(key) == 1:
            raise KeyError("spec")
        return SimpleNamespace(invalid=True)


def test_a_bug_in_one_reconcile_ends_no_worker_and_results_are_counted() -> None:
    from bem_operator.k8s import KubeApi
    from bem_operator.settings import OperatorSettings

    async def scenario() -> tuple[list[tuple[str, str]], Any]:
        controller = Controller(KubeApi(None), OperatorSettings(workers=1))  # type: ignore[arg-type]
        controller.sync_cache = lambda: None  # type: ignore[method-assign]  # nothing to list
        flaky = _Flaky()
        controller.reconciler = flaky  # type: ignore[assignment]
        await controller.start_leading()
        assert controller.queue is not None
        controller.queue._base_delay = 0.01
        controller.queue.add(("ns", "a"), "spec")
        for _ in range(200):  # bounded: at most 2 s
            if len(flaky.runs) >= 2:
                break
            await asyncio.sleep(0.01)
        controller.queue.add(("ns", "b"), "spec")  # the one worker still takes work
        for _ in range(200):
            if len(flaky.runs) >= 3:
                break
            await asyncio.sleep(0.01)
        await controller.close()
        return flaky.runs, controller.metrics

    runs, metrics = asyncio.run(scenario())
    assert runs == [("ns", "a"), ("ns", "a"), ("ns", "b")]
    def count(result: str) -> float:
        return metrics.registry.get_sample_value(
            "bem_operator_reconciles_total", {"result": result, "trigger": "spec"}) or 0.0
    assert count("error") == 2  # a, then b: each first run hits the bug
    assert metrics.registry.get_sample_value(
        "bem_operator_reconciles_total", {"result": "invalid_spec", "trigger": "retry"}) == 1


def checkpoint(rv: str = "7", uid: str = "ck-1") -> dict[str, Any]:
    return {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMCheckpoint",
            "metadata": {"name": "alpha", "namespace": "ns", "uid": uid, "resourceVersion": rv},
            "spec": {"service": "chat", "path": "checkpoints/alpha"}}


class _ListingApi:
    """The API calls the cache sync makes: lists (items without apiVersion and kind, as the
    API server sends them), the first `failures` of them refused."""

    def __init__(self, objects: list[dict[str, Any]], failures: int = 0) -> None:
        self.objects, self.failures, self.lists = objects, failures, []

    def serves(self, kind: Any) -> bool:
        return not kind.optional_crd

    def list_objects(self, kind: Any, selector: str | None, namespaces: tuple[str, ...]
                     ) -> list[dict[str, Any]]:
        from bem_operator.k8s import ApiError
        self.lists.append((kind.kind, selector))
        if self.failures:
            self.failures -= 1
            raise ApiError(503, "etcd leader changed")
        return [o for o in self.objects if (o["apiVersion"], o["kind"]) == kind.key]


def test_leading_starts_once_the_cache_holds_every_listed_kind() -> None:
    """The first reconcile after a start must see a BEMService's checkpoints: one that ran
    on the BEMService alone would unload them from every pod (the watches list in no
    order). A refused list is retried before any reconcile."""
    from bem_operator.settings import OperatorSettings

    api = _ListingApi([bems(), child("Deployment"), checkpoint()], failures=1)
    seen: list[list[str]] = []

    class _Reads:
        def reconcile(self, key: tuple[str, str]) -> Any:
            seen.append([c["kind"] for c in controller.cache.children(*key)])
            return None

    async def scenario() -> None:
        await controller.start_leading()
        for _ in range(200):  # bounded: at most 2 s
            if seen:
                break
            await asyncio.sleep(0.01)
        await controller.close()

    controller = Controller(api, OperatorSettings(workers=1))  # type: ignore[arg-type]
    controller.reconciler = _Reads()  # type: ignore[assignment]
    asyncio.run(scenario())
    assert seen and sorted(seen[0]) == ["BEMCheckpoint", "Deployment"]
    listed = {kind for kind, _ in api.lists}
    assert {"BEMService", "BEMCheckpoint", "Pod", "Deployment", "Service"} <= listed
    assert ("Pod", "bem.ai/service") in api.lists and ("BEMCheckpoint", None) in api.lists


def test_a_list_read_after_a_deletion_does_not_bring_the_object_back() -> None:
    cache = Cache()
    cache.observe("DELETED", checkpoint(rv="9"))
    cache.fill([checkpoint(rv="7"), checkpoint(rv="7", uid="ck-2")])  # listed before it
    assert [c["metadata"]["uid"] for c in cache.children("ns", "chat")] == ["ck-2"]
    cache.fill([bems(rv="3")])
    cache.fill([bems(rv="2")])  # an older list keeps nothing
    assert cache.bemservice(("ns", "chat"))["metadata"]["resourceVersion"] == "3"
