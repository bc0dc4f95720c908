"""Status from observed children: phase, conditions, transition times, events."""
from __future__ import annotations

from typing import Any

import pytest

from bem_operator.status import Observed, Problem, compute_status, phase_events, status_changed

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
    events = phase_events(None, status, "chat")
    assert ("Normal", "ServiceMonitorUnavailable") in {(e[0], e[1]) for e in events}
    applied = compute_status(observed(deployment=deployment(), service_monitor="applied"),
                             None, T0)
    assert conditions(applied)["ServiceMonitor"] == ("True", "Applied")
    assert "ServiceMonitor" not in conditions(compute_status(observed(), None, T0))


def test_events_on_phase_changes_only() -> None:
    pending = compute_status(observed(deployment=deployment(ready=0)), None, T0)
    ready = compute_status(observed(deployment=deployment()), pending, T1)
    assert [e[1] for e in phase_events(pending, ready, "chat")] == ["Ready"]
    assert phase_events(ready, ready, "chat") == []
    degraded = compute_status(observed(problem=Problem("SecretNotFound", "Secret 'k' missing")),
                              ready, T1)
    (event,) = phase_events(ready, degraded, "chat")
    assert event[0] == "Warning" and event[1] == "SecretNotFound" and "'k'" in event[2]
    recovered = compute_status(observed(deployment=deployment(ready=0)), degraded, T1)
    assert [e[1] for e in phase_events(degraded, recovered, "chat")] == ["Recovered"]


def test_status_changed_ignores_nulls_the_server_drops() -> None:
    status = compute_status(observed(endpoint=None, deployment=deployment()), None, T0)
    stored = {k: v for k, v in status.items() if v is not None}
    assert not status_changed(stored, status)
