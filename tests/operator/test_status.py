"""Status from observed children: phase, conditions, transition times, events."""
from __future__ import annotations

from typing import Any

import pytest

from bem_operator.autoscaler import AutoscalerObserved, parse_quantity
from bem_operator.status import Observed, Problem, compute_status, status_events, status_changed

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def deployment(replicas: int = 2, ready: int = 2, updated: int | None = None,
               total: int | None = None, generation: int = 3, observed: int = 3,
               conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    available = [{"type": "Available", "status": "True" if ready else "False"}]
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "replicas": replicas if total is None else total,
                   "updatedReplicas": replicas if updated is None else updated,
                   "readyReplicas": ready, "availableReplicas": ready,
                   "conditions": available + (conditions or [])},
    }


def observed(**fields: Any) -> Observed:
    base: dict[str, Any] = {"generation": 7, "selector": "a=b", "endpoint": "http://x.ns.svc:8080"}
    base.update(fields)
    return Observed(**base)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_rolled_out_deployment_is_ready() -> None:
    status = compute_status(observed(deployment=deployment()), None, T0)
    assert status["phase"] == "Ready"
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["observedGeneration"] == 7
    assert (status["selector"], status["endpoint"]) == ("a=b", "http://x.ns.svc:8080")
    assert conditions(status) == {"Ready": ("True", "ReplicasReady"),
                                  "Progressing": ("False", "RolloutComplete"),
                                  "Degraded": ("False", "AsExpected")}
    assert all(c["observedGeneration"] == 7 for c in status["conditions"])


@pytest.mark.parametrize(("dep", "phase", "ready_reason"), [
    (None, "Pending", "DeploymentNotFound"),
    (deployment(ready=0), "Pending", "NoReadyReplicas"),
    (deployment(replicas=3, ready=2, updated=1), "Progressing", "ReplicasReady"),
    (deployment(generation=4, observed=3), "Progressing", "ReplicasReady"),
    (deployment(replicas=2, total=3), "Progressing", "ReplicasReady"),  # old pods still there
    (deployment(replicas=0, ready=0), "Pending", "ScaledToZero"),
])
def test_phase_follows_the_rollout(dep: dict[str, Any] | None, phase: str,
                                   ready_reason: str) -> None:
    status = compute_status(observed(deployment=dep), None, T0)
    assert status["phase"] == phase
    assert conditions(status)["Ready"][1] == ready_reason


def test_missing_reference_degrades_and_is_named() -> None:
    problem = Problem("SecretNotFound", "Secret 'keys' not found in namespace ns")
    status = compute_status(observed(deployment=None, problem=problem), None, T0)
    assert status["phase"] == "Degraded"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "SecretNotFound")
    assert "'keys'" in degraded["message"]


def test_invalid_spec_degrades_with_the_message() -> None:
    status = compute_status(observed(spec_error="spec.gpu.count: must be >= 1"), None, T0)
    assert status["phase"] == "Degraded"
    assert conditions(status)["Degraded"] == ("True", "InvalidSpec")
    assert "spec.gpu.count" in status["conditions"][0]["message"]


@pytest.mark.parametrize("dep_condition,reason", [
    ({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
     "ProgressDeadlineExceeded"),
    ({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
      "message": "exceeded quota"}, "ReplicaFailure"),
])
def test_stuck_rollouts_degrade(dep_condition: dict[str, Any], reason: str) -> None:
    dep = deployment(replicas=2, ready=1, updated=1, conditions=[dep_condition])
    status = compute_status(observed(deployment=dep), None, T0)
    assert status["phase"] == "Degraded"
    assert conditions(status)["Degraded"] == ("True", reason)


def test_transition_time_moves_only_when_status_flips() -> None:
    first = compute_status(observed(deployment=deployment(ready=0)), None, T0)
    second = compute_status(observed(deployment=deployment()), first, T1)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times["Ready"] == T1  # False -> True
    assert times["Degraded"] == T0  # stayed False
    third = compute_status(observed(deployment=deployment()), second, "2026-01-01T01:00:00Z")
    assert not status_changed(second, third)


def test_service_monitor_condition_says_when_the_crd_is_missing() -> None:
    status = compute_status(observed(deployment=deployment(), service_monitor="unavailable"),
                            None, T0)
    assert status["phase"] == "Ready"  # not a failure
    assert conditions(status)["ServiceMonitor"] == ("False", "CRDNotInstalled")
    events = status_events(None, status, "chat")
    assert ("Normal", "ServiceMonitorUnavailable") in {(e[0], e[1]) for e in events}
    applied = compute_status(observed(deployment=deployment(), service_monitor="applied"),
                             None, T0)
    assert conditions(applied)["ServiceMonitor"] == ("True", "Applied")
    assert "ServiceMonitor" not in conditions(compute_status(observed(), None, T0))


def test_events_on_phase_changes_only() -> None:
    pending = compute_status(observed(deployment=deployment(ready=0)), None, T0)
    ready = compute_status(observed(deployment=deployment()), pending, T1)
    assert [e[1] for e in status_events(pending, ready, "chat")] == ["Ready"]
    assert status_events(ready, ready, "chat") == []
    degraded = compute_status(observed(problem=Problem("SecretNotFound", "Secret 'k' missing")),
                              ready, T1)
    (event,) = status_events(ready, degraded, "chat")
    assert event[0] == "Warning" and event[1] == "SecretNotFound" and "'k'" in event[2]
    recovered = compute_status(observed(deployment=deployment(ready=0)), degraded, T1)
    assert [e[1] for e in status_events(degraded, recovered, "chat")] == ["Recovered"]


def test_status_changed_ignores_nulls_the_server_drops() -> None:
    status = compute_status(observed(endpoint=None, deployment=deployment()), None, T0)
    stored = {k: v for k, v in status.items() if v is not None}
    assert not status_changed(stored, status)


# ---- one status model: a table of situations, and the rules every row must obey ----

HASH = "abc123"


def pod(name: str = "p-1", *, ready: bool = False, waiting: str | None = None,
        waiting_message: str = "", terminated: dict[str, Any] | None = None,
        last: dict[str, Any] | None = None, restarts: int = 0, scheduled: bool = True,
        unschedulable_message: str = "", config_hash: str = HASH,
        deleting: bool = False) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if waiting:
        state["waiting"] = {"reason": waiting, "message": waiting_message}
    elif terminated:
        state["terminated"] = terminated
    elif scheduled:
        state["running"] = {"startedAt": T0}
    container = {"name": "bem-runtime", "ready": ready, "restartCount": restarts,
                 "state": state, "lastState": {"terminated": last} if last else {}}
    conditions = [{"type": "PodScheduled", "status": "True" if scheduled else "False",
                   **({} if scheduled else {"reason": "Unschedulable",
                                            "message": unschedulable_message})},
                  {"type": "Ready", "status": "True" if ready else "False"}]
    meta: dict[str, Any] = {"name": name, "annotations": {"bem.ai/config-hash": config_hash}}
    if deleting:
        meta["deletionTimestamp"] = T0
    status: dict[str, Any] = {"phase": "Running" if scheduled else "Pending",
                              "conditions": conditions}
    if scheduled:
        status["containerStatuses"] = [container]
    return {"metadata": meta, "status": status}


def hashed(dep: dict[str, Any]) -> dict[str, Any]:
    dep["spec"]["template"] = {"metadata": {"annotations": {"bem.ai/config-hash": HASH}}}
    return dep


LOAD_FAILED = {"exitCode": 3, "reason": "Error",
               "message": "model directory /models/base has no config.json"}

# (id, Observed fields, phase, Ready status, Degraded reason or None, a word the Ready or
#  Degraded message must hold so that a user can act)
SITUATIONS: list[tuple[str, dict[str, Any], str, bool, str | None, str]] = [
    ("all-ready", {"deployment": hashed(deployment()), "pods": (pod(ready=True),)},
     "Ready", True, None, "2 of 2"),
    ("children-missing", {"deployment": None}, "Pending", False, None, "Deployment"),
    ("scaled-to-zero", {"deployment": deployment(replicas=0, ready=0)}, "Pending", False,
     None, "spec.replicas"),
    ("rolling-out", {"deployment": deployment(replicas=3, ready=2, updated=1)},
     "Progressing", True, None, "ready"),
    ("pods-not-ready-loading", {"deployment": hashed(deployment(ready=0)),
                                "pods": (pod(), pod("p-2"))},
     "Pending", False, None, "loading the model"),
    ("pods-unschedulable", {"deployment": hashed(deployment(ready=0)), "pods": (pod(
        scheduled=False, unschedulable_message="0/2 nodes are available: 2 Insufficient "
        "nvidia.com/gpu."),)}, "Pending", False, None, "Insufficient nvidia.com/gpu"),
    ("containers-being-created", {"deployment": hashed(deployment(ready=0)),
                                  "pods": (pod(waiting="ContainerCreating"),)},
     "Pending", False, None, "being created"),
    ("model-fails-to-load", {"deployment": hashed(deployment(ready=0)), "pods": (pod(
        terminated=LOAD_FAILED, restarts=0),)}, "Degraded", False, "ModelLoadFailed",
     "has no config.json"),
    ("model-load-crash-loop", {"deployment": hashed(deployment(ready=0)), "pods": (pod(
        waiting="CrashLoopBackOff", last=LOAD_FAILED, restarts=4),)}, "Degraded", False,
     "ModelLoadFailed", "has no config.json"),
    ("other-crash-loop", {"deployment": hashed(deployment(ready=0)), "pods": (pod(
        waiting="CrashLoopBackOff", last={"exitCode": 1, "message": "boom"}, restarts=3),)},
     "Degraded", False, "CrashLoopBackOff", "exit code 1"),
    ("oom", {"deployment": hashed(deployment(ready=0)), "pods": (pod(
        waiting="CrashLoopBackOff", last={"exitCode": 137, "reason": "OOMKilled"},
        restarts=2),)}, "Degraded", False, "OOMKilled", "limits.memory"),
    ("image-never-pull", {"deployment": hashed(deployment(ready=0)), "pods": (pod(
        waiting="ErrImageNeverPull", waiting_message='image "x:1" is not present'),)},
     "Degraded", False, "ImagePullFailed", "spec.runtime.image"),
    ("image-pull-backoff", {"deployment": hashed(deployment(ready=0)), "pods": (pod(
        waiting="ImagePullBackOff", waiting_message="Back-off pulling image"),)},
     "Degraded", False, "ImagePullFailed", "Back-off pulling"),
    ("container-config-error", {"deployment": hashed(deployment(ready=0)), "pods": (pod(
        waiting="CreateContainerConfigError", waiting_message='secret "k" not found'),)},
     "Degraded", False, "CreateContainerConfigError", 'secret "k" not found'),
    ("one-pod-fails-while-others-serve", {"deployment": hashed(deployment(ready=1)), "pods": (
        pod(ready=True), pod("p-2", terminated=LOAD_FAILED))}, "Degraded", False,
     "ModelLoadFailed", "config.json"),
    ("old-pods-of-a-fixed-spec-do-not-count", {"deployment": hashed(deployment()), "pods": (
        pod(ready=True), pod("old", terminated=LOAD_FAILED, config_hash="old"))},
     "Ready", True, None, "2 of 2"),
    ("terminating-pods-do-not-count", {"deployment": hashed(deployment()), "pods": (
        pod(ready=True), pod("gone", terminated=LOAD_FAILED, deleting=True))},
     "Ready", True, None, "2 of 2"),
    ("secret-missing", {"deployment": None, "problem": Problem(
        "SecretNotFound", "Secret 'keys' not found in namespace ns; create it")},
     "Degraded", False, "SecretNotFound", "Secret 'keys'"),
    ("secret-lost-while-ready", {"deployment": deployment(), "problem": Problem(
        "SecretNotFound", "Secret 'keys' not found in namespace ns; create it")},
     "Degraded", False, "SecretNotFound", "create it"),
    ("child-refused", {"deployment": deployment(), "apply_error": Problem(
        "ApplyRejected", "The API server refused Service demo (HTTP 422): spec.ports[0]")},
     "Degraded", False, "ApplyRejected", "spec.ports[0]"),
    ("apply-server-error", {"deployment": None, "apply_error": Problem(
        "ApplyFailed", "Applying Deployment demo failed (HTTP 500): etcdserver: timeout")},
     "Degraded", False, "ApplyFailed", "etcdserver"),
    ("invalid-spec", {"spec_error": "spec.gpu.product: needs spec.gpu.count"}, "Degraded",
     False, "InvalidSpec", "spec.gpu.count"),
    ("deadline-exceeded", {"deployment": deployment(ready=1, updated=1, conditions=[{
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet demo-1 has timed out progressing."}])}, "Degraded", False,
     "ProgressDeadlineExceeded", "timed out"),
    ("quota", {"deployment": deployment(ready=0, conditions=[{
        "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
        "message": "exceeded quota: gpu"}])}, "Degraded", False, "ReplicaFailure", "quota"),
]


@pytest.mark.parametrize(("fields", "phase", "ready", "degraded_reason", "hint"),
                         [case[1:] for case in SITUATIONS], ids=[case[0] for case in SITUATIONS])
def test_status_table(fields: dict[str, Any], phase: str, ready: bool,
                      degraded_reason: str | None, hint: str) -> None:
    status = compute_status(observed(**fields), None, T0)
    by_type = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == phase
    assert by_type["Ready"]["status"] == ("True" if ready else "False")
    assert (by_type["Degraded"]["status"] == "True") is (degraded_reason is not None)
    if degraded_reason:
        assert by_type["Degraded"]["reason"] == degraded_reason
        assert hint in by_type["Degraded"]["message"]
    else:
        assert hint in by_type["Ready"]["message"]
    assert_conditions_agree(status)


def assert_conditions_agree(status: dict[str, Any]) -> None:
    """The rules of the one status model, for any status it produces."""
    by_type = {c["type"]: c for c in status["conditions"]}
    ready, progressing, degraded = (by_type[t]["status"] == "True"
                                    for t in ("Ready", "Progressing", "Degraded"))
    assert (status["phase"] == "Degraded") is degraded
    assert (status["phase"] == "Ready") is (ready and not progressing and not degraded)
    assert not (ready and degraded), "Ready and Degraded at once"
    if ready:
        assert status["readyReplicas"] > 0
    if degraded:  # Ready says the same thing, so kubectl wait shows why
        assert (by_type["Ready"]["reason"], by_type["Ready"]["message"]) == \
            (by_type["Degraded"]["reason"], by_type["Degraded"]["message"])
    for condition in status["conditions"]:
        assert condition["reason"] and condition["message"], condition
        assert condition["reason"][0].isupper() and " " not in condition["reason"]


def test_a_fixed_spec_recovers_with_events() -> None:
    failing = compute_status(observed(deployment=hashed(deployment(ready=0)),
                                      pods=(pod(terminated=LOAD_FAILED),)), None, T0)
    events = status_events(None, failing, "chat")
    assert [(e[0], e[1]) for e in events] == [("Warning", "ModelLoadFailed")]
    assert "has no config.json" in events[0][2]
    fixed = hashed(deployment())
    fixed["spec"]["template"]["metadata"]["annotations"]["bem.ai/config-hash"] = "new"
    recovered = compute_status(observed(deployment=fixed, pods=(
        pod(terminated=LOAD_FAILED), pod("p-2", ready=True, config_hash="new"))), failing, T1)
    assert recovered["phase"] == "Ready"
    assert [e[1] for e in status_events(failing, recovered, "chat")] == ["Recovered", "Ready"]


def test_a_new_problem_while_degraded_is_a_new_warning() -> None:
    refused = compute_status(observed(apply_error=Problem("ApplyRejected", "Service refused")),
                             None, T0)
    missing = compute_status(observed(problem=Problem("SecretNotFound", "Secret 'k' missing")),
                             refused, T1)
    assert [(e[0], e[1]) for e in status_events(refused, missing, "chat")] == [
        ("Warning", "SecretNotFound")]
    assert status_events(missing, missing, "chat") == []


def test_long_termination_messages_are_clipped() -> None:
    long = {"exitCode": 3, "message": "x" * 5000}
    status = compute_status(observed(deployment=deployment(ready=0), pods=(
        pod(terminated=long),)), None, T0)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ModelLoadFailed" and len(degraded["message"]) < 1300


def hpa(current: int = 2, desired: int = 3, metric: dict[str, Any] | None = None,
        active: str = "True", reason: str = "ValidMetricFound", message: str = "") -> dict[str, Any]:
    return {"metadata": {"name": "x"}, "status": {
        "currentReplicas": current, "desiredReplicas": desired,
        "lastScaleTime": "2026-01-01T00:01:00Z",
        "currentMetrics": [metric] if metric else [],
        "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"},
                       {"type": "ScalingActive", "status": active, "reason": reason,
                        "message": message}]}}


PODS_RATE = {"type": "Pods", "pods": {"metric": {"name": "bem_requests_per_second"},
                                      "current": {"averageValue": "1500m"}}}
KEDA_RATE = {"type": "External", "external": {"metric": {"name": "s0-prometheus"},
                                              "current": {"averageValue": "41500m"}}}
CPU = {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}


def scaled_object(ready: str | None = "True", active: str = "True", reason: str = "ScaledObjectReady",
                  message: str = "ScaledObject is defined correctly and is ready for scaling"
                  ) -> dict[str, Any]:
    conditions = [] if ready is None else [
        {"type": "Ready", "status": ready, "reason": reason, "message": message},
        {"type": "Active", "status": active, "reason": "ScalerActive"}]
    return {"metadata": {"name": "x"}, "status": {"conditions": conditions}}


def scaler(provider: str = "HPA", **fields: Any) -> AutoscalerObserved:
    keda = provider == "KEDA"
    return AutoscalerObserved(provider=provider, hpa_name="keda-hpa-x" if keda else "x",
                              scaled_object_name="x" if keda else None, **fields)


# (id, what the autoscaler shows, phase, Autoscaling condition, part of its message,
#  status.autoscaling keys that must hold these values)
AUTOSCALER_CASES = [
    ("hpa-scaling", scaler(hpa=hpa(metric=PODS_RATE)), "Ready", ("True", "ScalingActive"),
     "HorizontalPodAutoscaler x scales", {"provider": "HPA", "horizontalPodAutoscaler": "x",
                                          "currentReplicas": 2, "desiredReplicas": 3,
                                          "currentRequestsPerSecond": 1.5, "scaledObject": None}),
    ("hpa-without-metrics-adapter", scaler(hpa=hpa(
        desired=2, active="False", reason="FailedGetPodsMetric",
        message="unable to get metric bem_requests_per_second: no custom metrics API")),
     "Ready", ("False", "FailedGetPodsMetric"), "no custom metrics API",
     {"currentRequestsPerSecond": None, "desiredReplicas": 2}),
    ("hpa-not-yet-there", scaler(), "Ready", ("False", "AutoscalerPending"),
     "waiting for HorizontalPodAutoscaler x", {"currentReplicas": None}),
    ("keda-scaling", scaler("KEDA", hpa=hpa(current=3, desired=5, metric=KEDA_RATE),
                            scaled_object=scaled_object()),
     "Ready", ("True", "ScalingActive"), "from KEDA ScaledObject x",
     {"provider": "KEDA", "horizontalPodAutoscaler": "keda-hpa-x", "scaledObject": "x",
      "active": True, "currentReplicas": 3, "desiredReplicas": 5, "currentRequestsPerSecond": 41.5,
      "lastScaleTime": "2026-01-01T00:01:00Z"}),
    ("keda-idle", scaler("KEDA", hpa=hpa(metric=CPU), scaled_object=scaled_object(active="False")),
     "Ready", ("True", "ScalingActive"), "keda-hpa-x", {"active": False,
                                                         "currentRequestsPerSecond": None}),
    ("keda-refuses-the-scaled-object", scaler("KEDA", scaled_object=scaled_object(
        ready="False", reason="ScaledObjectCheckFailed", message="Target resource doesn't exist")),
     "Ready", ("False", "ScaledObjectCheckFailed"), "Target resource doesn't exist", {"active": True}),
    ("keda-operator-silent", scaler("KEDA", scaled_object=scaled_object(ready=None)), "Ready",
     ("False", "ScaledObjectNotReady"), "is the KEDA operator running", {"active": None}),
    ("keda-hpa-not-yet-made", scaler("KEDA", scaled_object=scaled_object()), "Ready",
     ("False", "AutoscalerPending"), "KEDA has not created HorizontalPodAutoscaler keda-hpa-x",
     {"desiredReplicas": None}),
    ("keda-not-installed", scaler("KEDA", served=False), "Degraded", ("False", "KEDANotInstalled"),
     "KEDA is not installed", {"provider": "KEDA", "scaledObject": "x"}),
]


@pytest.mark.parametrize("autoscaler, phase, condition, said, fields",
                         [case[1:] for case in AUTOSCALER_CASES], ids=[c[0] for c in AUTOSCALER_CASES])
def test_autoscaler_status_for_both_providers(autoscaler: AutoscalerObserved, phase: str,
                                              condition: tuple[str, str], said: str,
                                              fields: dict[str, Any]) -> None:
    status = compute_status(observed(deployment=deployment(), autoscaler=autoscaler), None, T0)
    assert status["phase"] == phase
    assert conditions(status)["Autoscaling"] == condition
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Autoscaling")
    assert said in message
    assert {key: status["autoscaling"][key] for key in fields} == fields
    if phase == "Degraded":  # only a provider the cluster lacks degrades, saying what to do
        assert conditions(status)["Degraded"] == ("True", "KEDANotInstalled")
        assert conditions(status)["Ready"] == ("False", "KEDANotInstalled")
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert "install KEDA" in degraded["message"] and "provider to HPA" in degraded["message"]
        events = status_events(None, status, "chat")
        assert ("Warning", "KEDANotInstalled") in {(e[0], e[1]) for e in events}


def test_no_autoscaling_stanza_without_autoscaling_and_stale_keys_are_removed() -> None:
    plain = compute_status(observed(deployment=deployment()), None, T0)
    assert plain["autoscaling"] is None and "Autoscaling" not in conditions(plain)
    keda = compute_status(observed(deployment=deployment(), autoscaler=scaler(
        "KEDA", hpa=hpa(metric=KEDA_RATE), scaled_object=scaled_object())), None, T0)
    switched = compute_status(observed(deployment=deployment(), autoscaler=scaler(
        hpa=hpa(metric=PODS_RATE))), keda, T1)
    # The status is a merge patch: a key KEDA set and HPA does not must be sent as null.
    assert switched["autoscaling"]["scaledObject"] is None and switched["autoscaling"]["active"] is None
    as_stored = {**switched, "autoscaling": {k: v for k, v in switched["autoscaling"].items()
                                             if v is not None}}
    assert not status_changed(as_stored, switched)  # nulls are no change, nested ones too


@pytest.mark.parametrize("value, number", [("1500m", 1.5), ("20", 20.0), ("2k", 2000.0),
                                           ("333333u", 0.333), (None, None), ("x", None)])
def test_metric_quantities_become_numbers(value: Any, number: float | None) -> None:
    assert parse_quantity(value) == number
