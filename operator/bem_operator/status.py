"""BEMService status from what was observed (pure).

Phase and conditions are derived from the BEMService's own generation and the
live Deployment; lastTransitionTime moves only when a condition's status flips.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

PENDING, PROGRESSING, READY, DEGRADED = "Pending", "Progressing", "Ready", "Degraded"


@dataclasses.dataclass(frozen=True)
class Problem:
    reason: str  # CamelCase, e.g. SecretNotFound
    message: str  # names the object and says what to do


@dataclasses.dataclass(frozen=True)
class Observed:
    """Everything one reconcile learnt; the input of `compute_status`."""

    generation: int
    selector: str
    endpoint: str | None = None
    deployment: Mapping[str, Any] | None = None  # the live Deployment, None if absent
    spec_error: str | None = None  # an invalid spec, said so a user can fix it
    problem: Problem | None = None  # e.g. a missing Secret: degrades, retried by the timer
    service_monitor: str | None = None  # None (not wanted), "applied" or "unavailable"


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def compute_status(observed: Observed, previous: Mapping[str, Any] | None,
                   now: str) -> dict[str, Any]:
    """The full status stanza; `now` is an RFC 3339 timestamp for new transitions."""
    dep_status = (observed.deployment or {}).get("status") or {}
    conditions = _conditions(observed)
    degraded = next(c for c in conditions if c.type == "Degraded")
    ready = next(c for c in conditions if c.type == "Ready")
    progressing = next(c for c in conditions if c.type == "Progressing")
    if degraded.status:
        phase = DEGRADED
    elif ready.status and not progressing.status:
        phase = READY
    elif int(dep_status.get("readyReplicas") or 0) == 0:
        phase = PENDING
    else:
        phase = PROGRESSING
    status: dict[str, Any] = {
        "observedGeneration": observed.generation,
        "phase": phase,
        "replicas": int(dep_status.get("replicas") or 0),
        "readyReplicas": int(dep_status.get("readyReplicas") or 0),
        "selector": observed.selector,
        "endpoint": observed.endpoint,
        "conditions": _with_times(conditions, (previous or {}).get("conditions") or [],
                                  observed.generation, now),
    }
    return status


def _conditions(observed: Observed) -> list[Condition]:
    dep = observed.deployment
    rollout = _rollout(dep) if dep is not None else None
    conditions = [
        _ready(observed, dep, rollout),
        _progressing(observed, dep, rollout),
        _degraded(observed, dep),
    ]
    if observed.service_monitor == "applied":
        conditions.append(Condition("ServiceMonitor", True, "Applied",
                                    "A ServiceMonitor scrapes the runtime's /metrics"))
    elif observed.service_monitor == "unavailable":
        conditions.append(Condition(
            "ServiceMonitor", False, "CRDNotInstalled",
            "monitoring.coreos.com/v1 ServiceMonitor is not served by this cluster; "
            "no ServiceMonitor was created (install the Prometheus Operator CRDs to get one)"))
    return conditions


@dataclasses.dataclass(frozen=True)
class _Rollout:
    desired: int
    updated: int
    ready: int
    available: int
    total: int
    current: bool  # the Deployment controller has seen the latest template

    @property
    def complete(self) -> bool:
        return (self.current and self.updated >= self.desired and self.total == self.desired
                and self.available >= self.desired)


def _rollout(dep: Mapping[str, Any]) -> _Rollout:
    status = dep.get("status") or {}
    spec_replicas = (dep.get("spec") or {}).get("replicas")
    return _Rollout(
        desired=int(spec_replicas if spec_replicas is not None else 1),
        updated=int(status.get("updatedReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        total=int(status.get("replicas") or 0),
        current=int(status.get("observedGeneration") or 0) >= int(
            (dep.get("metadata") or {}).get("generation") or 0),
    )


def _ready(observed: Observed, dep: Mapping[str, Any] | None,
           rollout: _Rollout | None) -> Condition:
    if observed.spec_error:
        return Condition("Ready", False, "InvalidSpec", observed.spec_error)
    if dep is None or rollout is None:
        if observed.problem:
            return Condition("Ready", False, observed.problem.reason, observed.problem.message)
        return Condition("Ready", False, "DeploymentNotFound", "The Deployment does not exist yet")
    if rollout.desired == 0:
        return Condition("Ready", False, "ScaledToZero", "The service is scaled to 0 replicas")
    if rollout.available == 0 or not _dep_condition(dep, "Available"):
        return Condition("Ready", False, "NoReadyReplicas",
                         f"0 of {rollout.desired} replicas are ready")
    return Condition("Ready", True, "ReplicasReady",
                     f"{rollout.ready} of {rollout.desired} replicas are ready"
                     + (f" at {observed.endpoint}" if observed.endpoint else ""))


def _progressing(observed: Observed, dep: Mapping[str, Any] | None,
                 rollout: _Rollout | None) -> Condition:
    if observed.spec_error:
        return Condition("Progressing", False, "InvalidSpec", observed.spec_error)
    if dep is None or rollout is None:
        return Condition("Progressing", False, "NotStarted", "The Deployment does not exist yet")
    progress = _dep_condition_body(dep, "Progressing")
    if progress and progress.get("reason") == "ProgressDeadlineExceeded":
        return Condition("Progressing", False, "ProgressDeadlineExceeded",
                         progress.get("message") or "The rollout made no progress in time")
    if rollout.complete:
        return Condition("Progressing", False, "RolloutComplete",
                         f"All {rollout.desired} replicas run the latest spec")
    return Condition("Progressing", True, "RollingOut",
                     f"{rollout.updated} of {rollout.desired} replicas updated, "
                     f"{rollout.ready} ready")


def _degraded(observed: Observed, dep: Mapping[str, Any] | None) -> Condition:
    if observed.spec_error:
        return Condition("Degraded", True, "InvalidSpec", observed.spec_error)
    if observed.problem:
        return Condition("Degraded", True, observed.problem.reason, observed.problem.message)
    if dep is not None:
        failure = _dep_condition_body(dep, "ReplicaFailure")
        if failure and failure.get("status") == "True":
            return Condition("Degraded", True, "ReplicaFailure",
                             failure.get("message") or "Pods could not be created")
        progress = _dep_condition_body(dep, "Progressing")
        if progress and progress.get("reason") == "ProgressDeadlineExceeded":
            return Condition("Degraded", True, "ProgressDeadlineExceeded",
                             progress.get("message") or "The rollout made no progress in time")
    return Condition("Degraded", False, "AsExpected", "No problem found")


def _dep_condition_body(dep: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (dep.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _dep_condition(dep: Mapping[str, Any], kind: str) -> bool:
    condition = _dep_condition_body(dep, kind)
    return bool(condition and condition.get("status") == "True")


def _with_times(conditions: list[Condition], previous: Sequence[Mapping[str, Any]],
                generation: int, now: str) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    result = []
    for condition in conditions:
        status = "True" if condition.status else "False"
        old = before.get(condition.type)
        changed = old is None or old.get("status") != status
        result.append({
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "observedGeneration": generation,
            "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
        })
    return result


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether a patch is needed (the API server drops nulls, so compare without them)."""
    def clean(value: Mapping[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (value or {}).items() if v is not None}
    return clean(old) != clean(new)


def phase_events(old: Mapping[str, Any] | None, new: Mapping[str, Any],
                 name: str) -> list[tuple[str, str, str]]:
    """Events (type, reason, message) a user must know about a status change."""
    events = _monitor_events(old, new)
    old_phase = (old or {}).get("phase")
    phase = new["phase"]
    if phase == old_phase and _degraded_reason(old) == _degraded_reason(new):
        return events
    return events + _phase_event(old_phase, new, name)


def _phase_event(old_phase: str | None, new: Mapping[str, Any],
                 name: str) -> list[tuple[str, str, str]]:
    phase = new["phase"]
    if phase == DEGRADED:
        condition = next(c for c in new["conditions"] if c["type"] == "Degraded")
        return [("Warning", condition["reason"], f"BEMService {name} is degraded: "
                 f"{condition['message']}")]
    if phase == READY:
        return [("Normal", "Ready", f"BEMService {name} is ready: {new['readyReplicas']} "
                 f"replicas serve {new.get('endpoint')}")]
    if old_phase == DEGRADED:
        return [("Normal", "Recovered", f"BEMService {name} is no longer degraded")]
    return []


def _monitor_events(old: Mapping[str, Any] | None,
                    new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    def reason(status: Mapping[str, Any] | None) -> str | None:
        for condition in (status or {}).get("conditions") or []:
            if condition.get("type") == "ServiceMonitor":
                return condition.get("reason")
        return None
    if reason(new) == "CRDNotInstalled" and reason(old) != "CRDNotInstalled":
        message = next(c["message"] for c in new["conditions"] if c["type"] == "ServiceMonitor")
        return [("Normal", "ServiceMonitorUnavailable", message)]
    return []


def _degraded_reason(status: Mapping[str, Any] | None) -> str | None:
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return condition.get("reason")
    return None
