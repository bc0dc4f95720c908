"""BEMService status (pure): pod findings, conditions and the events of their transitions.

Inputs are the BEMService's own generation, what this reconcile found (spec error, a
refused or failed apply, a missing reference), and the live Deployment, autoscaler and
runtime pods as the cache holds them. Out come phase and the Ready / Progressing / Degraded
conditions, which always agree:

- Degraded=True  <=> phase Degraded, and then Ready=False with the same reason and message;
- phase Ready    <=> Ready=True, Progressing=False, Degraded=False;
- Ready=True only when every wanted child was applied, the Deployment is Available and at
  least one runtime pod passed its readiness probe (/ready: model loaded and warm);
- every condition that is not the good state carries a reason and a message a user can act on.

lastTransitionTime moves only when a condition's status flips.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from bem_operator.autoscaler import (AutoscalerObserved, autoscaling_condition,
                                    autoscaling_status, not_installed)
from bem_operator.constants import CONFIG_HASH_ANNOTATION
from bem_operator.gateway import GatewayObserved, gateway_condition, gateway_status, refused


class Reason(enum.StrEnum):
    """Every reason the operator itself gives in a condition or an event (the Deployment's,
    the HPA's and the kubelet's own reasons pass through as they are)."""

    INVALID_SPEC = "InvalidSpec"
    APPLY_FAILED = "ApplyFailed"
    APPLY_REJECTED = "ApplyRejected"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
    PVC_NOT_FOUND = "PersistentVolumeClaimNotFound"
    MISSING_REFERENCES = "MissingReferences"
    DEPLOYMENT_NOT_FOUND = "DeploymentNotFound"
    SCALED_TO_ZERO = "ScaledToZero"
    NO_READY_REPLICAS = "NoReadyReplicas"
    REPLICAS_READY = "ReplicasReady"
    NOT_STARTED = "NotStarted"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    ROLLOUT_COMPLETE = "RolloutComplete"
    ROLLING_OUT = "RollingOut"
    REPLICA_FAILURE = "ReplicaFailure"
    AS_EXPECTED = "AsExpected"
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    OOM_KILLED = "OOMKilled"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    CONTAINER_CREATING = "ContainerCreating"
    MODEL_LOADING = "ModelLoading"
    UNSCHEDULABLE = "Unschedulable"
    APPLIED = "Applied"
    CRD_NOT_INSTALLED = "CRDNotInstalled"
    RECOVERED = "Recovered"
    SERVICE_MONITOR_UNAVAILABLE = "ServiceMonitorUnavailable"
    READY = "Ready"
    # BEMCheckpoints (checkpoints.py)
    LOADED = "Loaded"
    LOADING = "Loading"
    UNLOADED = "Unloaded"
    CHECKPOINT_CAPACITY = "CheckpointCapacity"
    NAME_CONFLICT = "NameConflict"
    SERVICE_NOT_FOUND = "ServiceNotFound"
    INVALID_CHECKPOINT = "InvalidCheckpoint"
    INVALID_PATH = "InvalidPath"
    LOAD_FAILED = "LoadFailed"
    POD_UNREACHABLE = "PodUnreachable"
    ADMIN_TOKEN_REJECTED = "AdminTokenRejected"


PENDING, PROGRESSING, READY, DEGRADED = "Pending", "Progressing", "Ready", "Degraded"
# The runtime's contract: a model that cannot be loaded exits with this code, after writing a
# one-line reason to the container's termination-message file (docs/architecture.md).
MODEL_LOAD_EXIT_CODE = 3
MESSAGE_LIMIT = 1024  # a termination message can hold up to 4 KiB of log tail

_IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull",
                            "InvalidImageName"})
_CONTAINER_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError",
                                "RunContainerError"})
_STARTING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})


@dataclasses.dataclass(frozen=True)
class Problem:
    reason: str  # a Reason, or a reason passed through from Kubernetes (CamelCase)
    message: str  # names the object and says what to do


@dataclasses.dataclass(frozen=True)
class Observed:
    """What one reconcile found, from the object, the cache and its own requests; the
    input of `compute_status`."""

    generation: int
    selector: str
    endpoint: str | None = None
    deployment: Mapping[str, Any] | None = None  # the live Deployment, None if absent
    spec_error: str | None = None  # an invalid spec, said so a user can fix it
    apply_error: Problem | None = None  # a child the API server refused or failed to apply
    problem: Problem | None = None  # e.g. a missing Secret: degrades, retried by the timer
    pods: tuple[Mapping[str, Any], ...] = ()  # the runtime pods the pod watch delivered
    service_monitor: str | None = None  # None (not wanted), "applied" or "unavailable"
    autoscaler: AutoscalerObserved | None = None  # None without spec.autoscaling
    checkpoints: Mapping[str, int] | None = None  # status.checkpoints (checkpoints.summary)
    gateway: GatewayObserved | None = None  # None without spec.gateway


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class PodFindings:
    """What the runtime pods say: a failure that degrades, or why they are not ready yet."""

    failure: Problem | None = None
    waiting: Problem | None = None


def compute_status(observed: Observed, previous: Mapping[str, Any] | None,
                   now: str) -> dict[str, Any]:
    """The full status stanza; `now` is an RFC 3339 timestamp for new transitions."""
    dep_status = (observed.deployment or {}).get("status") or {}
    conditions = _conditions(observed)
    by_type = {c.type: c for c in conditions}
    ready_replicas = int(dep_status.get("readyReplicas") or 0)
    status: dict[str, Any] = {
        "observedGeneration": observed.generation,
        "phase": phase_of(by_type["Ready"], by_type["Progressing"], by_type["Degraded"],
                          ready_replicas),
        "replicas": int(dep_status.get("replicas") or 0),
        "readyReplicas": ready_replicas,
        "selector": observed.selector,
        "endpoint": observed.endpoint,
        "conditions": with_times(conditions, (previous or {}).get("conditions") or [],
                                  observed.generation, now),
    }
    # None removes a stanza left from before (the status is written by merge patch).
    status["autoscaling"] = None if observed.autoscaler is None \
        else autoscaling_status(observed.autoscaler)
    status["checkpoints"] = None if observed.checkpoints is None else dict(observed.checkpoints)
    status["gateway"] = None if observed.gateway is None else gateway_status(observed.gateway)
    return status


def phase_of(ready: Condition, progressing: Condition, degraded: Condition,
             ready_replicas: int) -> str:
    """The phase is a summary of the conditions, never a separate judgement."""
    if degraded.status:
        return DEGRADED
    if ready.status and not progressing.status:
        return READY
    if ready_replicas == 0 and not ready.status:
        return PENDING
    return PROGRESSING


def _conditions(observed: Observed) -> list[Condition]:
    dep = observed.deployment
    rollout = _rollout(dep) if dep is not None else None
    pods = pod_findings(observed.pods, _template_hash(dep))
    degraded = _degraded(observed, dep, pods)
    conditions = [
        _ready(observed, dep, rollout, degraded, pods),
        _progressing(observed, dep, rollout, pods),
        degraded,
    ]
    if observed.service_monitor == "applied":
        conditions.append(Condition("ServiceMonitor", True, Reason.APPLIED,
                                    "A ServiceMonitor scrapes the runtime's /metrics"))
    elif observed.service_monitor == "unavailable":
        conditions.append(Condition(
            "ServiceMonitor", False, Reason.CRD_NOT_INSTALLED,
            "monitoring.coreos.com/v1 ServiceMonitor is not served by this cluster; "
            "no ServiceMonitor was created (install the Prometheus Operator CRDs to get one)"))
    if observed.autoscaler is not None:
        conditions.append(Condition("Autoscaling", *autoscaling_condition(observed.autoscaler)))
    if observed.gateway is not None:
        conditions.append(Condition("Gateway", *gateway_condition(observed.gateway)))
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


def _ready(observed: Observed, dep: Mapping[str, Any] | None, rollout: _Rollout | None,
           degraded: Condition, pods: PodFindings) -> Condition:
    if degraded.status:  # never Ready while Degraded: kubectl wait must not pass then
        return Condition("Ready", False, degraded.reason, degraded.message)
    if dep is None or rollout is None:
        return Condition("Ready", False, Reason.DEPLOYMENT_NOT_FOUND,
                         "The Deployment does not exist yet; the operator creates it")
    if rollout.desired == 0:
        return Condition("Ready", False, Reason.SCALED_TO_ZERO,
                         "The service is scaled to 0 replicas: set spec.replicas (or "
                         "kubectl scale) to serve")
    if rollout.ready == 0 or rollout.available == 0 or not _dep_condition(dep, "Available"):
        why = f"0 of {rollout.desired} replicas are ready"
        if pods.waiting:
            why += f": {pods.waiting.message}"
        return Condition("Ready", False, pods.waiting.reason if pods.waiting
                         else "NoReadyReplicas", why)
    return Condition("Ready", True, Reason.REPLICAS_READY,
                     f"{rollout.ready} of {rollout.desired} replicas are ready"
                     + (f" at {observed.endpoint}" if observed.endpoint else ""))


def _progressing(observed: Observed, dep: Mapping[str, Any] | None,
                 rollout: _Rollout | None, pods: PodFindings) -> Condition:
    if observed.spec_error:
        return Condition("Progressing", False, Reason.INVALID_SPEC, observed.spec_error)
    if dep is None or rollout is None:
        return Condition("Progressing", False, Reason.NOT_STARTED,
                         "The Deployment does not exist yet")
    progress = _dep_condition_body(dep, "Progressing")
    if progress and progress.get("reason") == "ProgressDeadlineExceeded":
        return Condition("Progressing", False, Reason.PROGRESS_DEADLINE_EXCEEDED,
                         progress.get("message") or "The rollout made no progress in time")
    if rollout.complete:
        return Condition("Progressing", False, Reason.ROLLOUT_COMPLETE,
                         f"All {rollout.desired} replicas run the latest spec")
    message = f"{rollout.updated} of {rollout.desired} replicas updated, {rollout.ready} ready"
    if pods.waiting:
        return Condition("Progressing", True, pods.waiting.reason,
                         f"{message}; {pods.waiting.message}")
    return Condition("Progressing", True, Reason.ROLLING_OUT, message)


def _degraded(observed: Observed, dep: Mapping[str, Any] | None,
              pods: PodFindings) -> Condition:
    if observed.spec_error:
        return Condition("Degraded", True, Reason.INVALID_SPEC, observed.spec_error)
    missing = not_installed(observed.autoscaler) if observed.autoscaler else None
    autoscaler = Problem(*missing) if missing else None
    route = refused(observed.gateway) if observed.gateway else None
    gateway = Problem(*route) if route else None
    for problem in (observed.apply_error, observed.problem, autoscaler, gateway, pods.failure):
        if problem is not None:
            return Condition("Degraded", True, problem.reason, problem.message)
    if dep is not None:
        failure = _dep_condition_body(dep, "ReplicaFailure")
        if failure and failure.get("status") == "True":
            return Condition("Degraded", True, Reason.REPLICA_FAILURE,
                             failure.get("message") or "Pods could not be created")
        progress = _dep_condition_body(dep, "Progressing")
        if progress and progress.get("reason") == "ProgressDeadlineExceeded":
            return Condition("Degraded", True, Reason.PROGRESS_DEADLINE_EXCEEDED,
                             progress.get("message") or "The rollout made no progress in time")
    return Condition("Degraded", False, Reason.AS_EXPECTED, "No problem found")


def _template_hash(dep: Mapping[str, Any] | None) -> str | None:
    template = ((dep or {}).get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(
        CONFIG_HASH_ANNOTATION)


def pod_findings(pods: Sequence[Mapping[str, Any]], template_hash: str | None) -> PodFindings:
    """Reads the runtime pods' container statuses and scheduling; only pods of the current pod
    template count when there are any (old pods of a fixed spec go away by themselves).

    Degrading: the model failed to load (exit code 3, with the runtime's own message), a crash
    loop, an image that cannot be pulled, a container that cannot be created, OOM kills.
    Waiting (Progressing): unschedulable pods, containers being created, the model loading."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    current = [p for p in live if template_hash and _annotation(p) == template_hash]
    considered = current or live
    failures: list[Problem] = []
    waiting: list[Problem] = []
    for pod in sorted(considered, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        status = pod.get("status") or {}
        for container in [*(status.get("initContainerStatuses") or []),
                          *(status.get("containerStatuses") or [])]:
            failure = _container_failure(container)
            if failure:
                failures.append(failure)
            elif _waiting_reason(container) in _STARTING_REASONS:
                waiting.append(Problem(Reason.CONTAINER_CREATING,
                                       "the runtime containers are being created"))
        scheduled = _pod_condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False":
            waiting.append(Problem(scheduled.get("reason") or Reason.UNSCHEDULABLE,
                                   "a pod cannot be scheduled: "
                                   f"{scheduled.get('message') or 'no node fits it'}"))
        elif status.get("containerStatuses") and not pod_ready(pod) and not any(
                _waiting_reason(c) for c in status.get("containerStatuses") or []):
            waiting.append(Problem(Reason.MODEL_LOADING,
                                   "the runtime is loading the model (waiting for /ready)"))
    order = [Reason.MODEL_LOAD_FAILED, Reason.IMAGE_PULL_FAILED, Reason.OOM_KILLED]
    failures.sort(key=lambda p: order.index(p.reason) if p.reason in order else len(order))
    wait_order = [Reason.UNSCHEDULABLE, Reason.CONTAINER_CREATING, Reason.MODEL_LOADING]
    waiting.sort(key=lambda p: wait_order.index(p.reason) if p.reason in wait_order
                 else len(wait_order))
    return PodFindings(failure=failures[0] if failures else None,
                       waiting=waiting[0] if waiting else None)


def _container_failure(container: Mapping[str, Any]) -> Problem | None:
    state = container.get("state") or {}
    last = container.get("lastState") or {}
    terminated = state.get("terminated") or last.get("terminated")
    waiting = state.get("waiting") or {}
    name = container.get("name", "runtime")
    if terminated and terminated.get("exitCode") == MODEL_LOAD_EXIT_CODE:
        said = _clip(terminated.get("message")) or "no message (exit code 3)"
        return Problem(Reason.MODEL_LOAD_FAILED,
                       f"container {name} could not load the model: {said}; fix "
                       "spec.model (paths, claim or image) and the pods are replaced")
    reason = waiting.get("reason")
    if reason in _IMAGE_REASONS:
        return Problem(Reason.IMAGE_PULL_FAILED,
                       f"container {name} cannot get its image ({reason}): "
                       f"{_clip(waiting.get('message')) or 'no detail'}; check "
                       "spec.runtime.image, imagePullPolicy and imagePullSecrets")
    if reason in _CONTAINER_REASONS:
        return Problem(reason, f"container {name} cannot start: "
                       f"{_clip(waiting.get('message')) or 'no detail'}")
    if terminated and terminated.get("reason") == "OOMKilled" and (
            reason == "CrashLoopBackOff" or container.get("restartCount", 0) > 0):
        return Problem(Reason.OOM_KILLED, f"container {name} ran out of memory: raise "
                       "spec.resources.limits.memory or use a smaller model")
    if reason == "CrashLoopBackOff":
        code = (terminated or {}).get("exitCode")
        said = _clip((terminated or {}).get("message"))
        return Problem(Reason.CRASH_LOOP_BACK_OFF,
                       f"container {name} keeps exiting (exit code {code})"
                       + (f": {said}" if said else "; see kubectl logs --previous"))
    return None


def _clip(message: Any) -> str:
    text = " ".join(str(message or "").split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 3] + "..."


def _waiting_reason(container: Mapping[str, Any]) -> str | None:
    return ((container.get("state") or {}).get("waiting") or {}).get("reason")


def _annotation(pod: Mapping[str, Any]) -> str | None:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)


def _pod_condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """Whether a pod passes its readiness (the Service sends it requests)."""
    condition = _pod_condition(pod, "Ready")
    return bool(condition and condition.get("status") == "True")


def _dep_condition_body(dep: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (dep.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _dep_condition(dep: Mapping[str, Any], kind: str) -> bool:
    condition = _dep_condition_body(dep, kind)
    return bool(condition and condition.get("status") == "True")


def with_times(conditions: list[Condition], previous: Sequence[Mapping[str, Any]],
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
    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items() if v is not None}
        return value
    return clean(old or {}) != clean(new)


def status_events(old: Mapping[str, Any] | None, new: Mapping[str, Any],
                 name: str) -> list[tuple[str, str, str]]:
    """Events (type, reason, message) a user must know about a status change: a Warning for
    each new problem (a refused child, a failed apply, a lost dependency, a model that fails
    to load), a Normal event when it clears and when the service becomes Ready."""
    events = _monitor_events(old, new)
    old_problem, problem = degraded_of(old), degraded_of(new)
    if problem is not None and problem != old_problem:
        events.append(("Warning", problem[0], f"BEMService {name} is degraded: {problem[1]}"))
    elif problem is None and old_problem is not None:
        events.append(("Normal", Reason.RECOVERED,
                       f"BEMService {name} is no longer degraded ({old_problem[0]} cleared)"))
    if new["phase"] == READY and (old or {}).get("phase") != READY:
        events.append(("Normal", Reason.READY, f"BEMService {name} is ready: "
                       f"{new['readyReplicas']} replicas serve {new.get('endpoint')}"))
    return events


def _monitor_events(old: Mapping[str, Any] | None,
                    new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    def reason(status: Mapping[str, Any] | None) -> str | None:
        for condition in (status or {}).get("conditions") or []:
            if condition.get("type") == "ServiceMonitor":
                return condition.get("reason")
        return None
    if reason(new) == "CRDNotInstalled" and reason(old) != "CRDNotInstalled":
        message = next(c["message"] for c in new["conditions"] if c["type"] == "ServiceMonitor")
        return [("Normal", Reason.SERVICE_MONITOR_UNAVAILABLE, message)]
    return []


def degraded_of(status: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(reason, message) of a status whose Degraded condition is True, else None."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return condition.get("reason", ""), condition.get("message", "")
    return None
