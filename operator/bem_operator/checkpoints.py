"""BEMCheckpoints: which of a service's are placed on its pods, what each Ready pod serves (asked
through the runtime's admin API, never assumed), the loads and unloads that bring every Ready
pod to the placed set, and each BEMCheckpoint's status and events.

A pod started by a scale-up or a restart reads the placed set from its start list (the
ConfigMap of builders/checkpoints.py) before it turns Ready; the pods already running get a
change through the admin API (PUT and DELETE /v1/checkpoints/{name}), so applying or deleting
a BEMCheckpoint never changes the pod template. The status says what each pod answered.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import urllib3

from bem_operator.builders.pod import ADMIN_PORT, MODELS_DIR
from bem_operator.status import (MESSAGE_LIMIT, Condition, Problem, Reason, degraded_of,
                                 pod_ready, with_times)

ADMIN_PATH = "/v1/checkpoints"
logger = logging.getLogger(__name__)
Event = tuple[str, str, str]  # type, reason, message


@dataclasses.dataclass(frozen=True)
class Declared:
    """One BEMCheckpoint of a service, as the cache holds it."""

    name: str
    path: str  # spec.path, under /models
    generation: int
    body: Mapping[str, Any]

    @property
    def target(self) -> str:
        """The directory in the pod (what the runtime reports as the entry's path)."""
        return f"{MODELS_DIR}/{self.path}"


def declared_of(bodies: Iterable[Mapping[str, Any]]) -> list[Declared]:
    """The BEMCheckpoints not being deleted, oldest first (the order of placement)."""
    found = []
    for body in bodies:
        meta = body["metadata"]
        path = (body.get("spec") or {}).get("path")
        if meta.get("deletionTimestamp") or not isinstance(path, str):
            continue
        found.append((meta.get("creationTimestamp") or "", meta["name"],
                      Declared(meta["name"], path, meta.get("generation") or 0, body)))
    return [item for _, _, item in sorted(found, key=lambda entry: entry[:2])]


@dataclasses.dataclass(frozen=True)
class Placement:
    placed: tuple[Declared, ...]  # on every pod: in the start list, loaded on the running pods
    refused: Mapping[str, Problem]  # by name: why a BEMCheckpoint is on no pod


def place(declared: Sequence[Declared], service: str, served_name: str,
          max_checkpoints: int) -> Placement:
    """Every pod holds every BEMCheckpoint of its service, up to its slots (the runtime's
    --max-checkpoints, the service's own checkpoint included); the oldest come first."""
    slots = max_checkpoints - 1
    placed: list[Declared] = []
    refused: dict[str, Problem] = {}
    for item in declared:
        if item.name == served_name:
            refused[item.name] = Problem(Reason.NAME_CONFLICT, (
                f"BEMService {service} already serves its own checkpoint (spec.model.checkpointPath) "
                f"as '{served_name}': give this BEMCheckpoint another name"))
        elif len(placed) >= slots:
            refused[item.name] = Problem(Reason.CHECKPOINT_CAPACITY, (
                f"BEMService {service} holds {max_checkpoints} checkpoints per pod "
                f"(spec.runtime.maxCheckpoints, its own included) and {slots} older BEMCheckpoints "
                "use them: raise spec.runtime.maxCheckpoints or delete one; this one waits"))
        else:
            placed.append(item)
    return Placement(tuple(placed), refused)


class AdminError(Exception):
    """A call of the runtime's admin API that did not succeed: the HTTP status (0 when the pod
    did not answer) and the runtime's own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Admin(Protocol):
    """The runtime's checkpoint API on one pod (runtime README: the admin API)."""

    def list(self, address: str, token: str) -> list[Mapping[str, Any]]: ...
    def load(self, address: str, token: str, name: str, path: str) -> Mapping[str, Any]: ...
    def unload(self, address: str, token: str, name: str) -> None: ...


class RuntimeAdmin:
    """The admin API over HTTP to a pod's address (blocking; shared by the worker threads)."""

    def __init__(self, timeout: float = 5.0, load_timeout: float = 300.0) -> None:
        self._http = urllib3.PoolManager(num_pools=256, maxsize=2, retries=False)
        self._timeout = timeout
        self._load_timeout = load_timeout  # a load reads, checks and installs the files

    def _call(self, method: str, address: str, token: str, path: str, body: Any = None,
              timeout: float | None = None) -> tuple[int, Any]:
        host = f"[{address}]" if ":" in address else address
        try:
            response = self._http.request(
                method, f"http://{host}:{ADMIN_PORT}{path}",
                body=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=urllib3.Timeout(connect=2.0, read=timeout or self._timeout))
        except urllib3.exceptions.HTTPError as exc:
            raise AdminError(0, f"no answer from {host}:{ADMIN_PORT} ({type(exc).__name__})") from None
        try:
            data = json.loads(response.data) if response.data else None
        except ValueError:
            data = None
        if response.status >= 300:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise AdminError(response.status, str(message or f"HTTP {response.status}"))
        return response.status, data

    def list(self, address: str, token: str) -> list[Mapping[str, Any]]:
        _, data = self._call("GET", address, token, ADMIN_PATH)
        entries = (data or {}).get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise AdminError(200, f"GET {ADMIN_PATH} answered without a data list")
        return [entry for entry in entries if isinstance(entry, dict)]

    def load(self, address: str, token: str, name: str, path: str) -> Mapping[str, Any]:
        _, data = self._call("PUT", address, token, f"{ADMIN_PATH}/{name}", {"path": path},
                             timeout=self._load_timeout)
        return data if isinstance(data, dict) else {"name": name, "path": path, "state": "loaded"}

    def unload(self, address: str, token: str, name: str) -> None:
        try:
            self._call("DELETE", address, token, f"{ADMIN_PATH}/{name}")
        except AdminError as exc:
            if exc.status != 404:  # already gone: what was asked
                raise


@dataclasses.dataclass(frozen=True)
class ReadyPod:
    name: str
    address: str


@dataclasses.dataclass
class PodReport:
    """What one Ready pod serves after this run, and what could not be done there."""

    name: str
    served: dict[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    failed: dict[str, Problem] = dataclasses.field(default_factory=dict)  # by checkpoint
    unreachable: Problem | None = None  # the pod could not be asked at all
    loaded: list[str] = dataclasses.field(default_factory=list)  # by this run
    unloaded: list[str] = dataclasses.field(default_factory=list)  # by this run


def _problem(error: AdminError, pod: str, what: str) -> Problem:
    reason = {0: Reason.POD_UNREACHABLE, 400: Reason.INVALID_PATH, 401: Reason.ADMIN_TOKEN_REJECTED,
              403: Reason.ADMIN_TOKEN_REJECTED, 409: Reason.CHECKPOINT_CAPACITY,
              422: Reason.INVALID_CHECKPOINT}.get(error.status, Reason.LOAD_FAILED)
    status = f"HTTP {error.status}: " if error.status else ""
    return Problem(reason, f"pod {pod} {what}: {status}{error.message}"[:MESSAGE_LIMIT])


def sync_pod(admin: Admin, token: str, pod: ReadyPod, wanted: Mapping[str, str],
             keep: str) -> PodReport:
    """Brings one pod to `wanted` (name -> directory): unloads what it serves beyond it (never
    `keep`, the service's own checkpoint), then loads what it lacks or serves from another path."""
    report = PodReport(pod.name)
    try:
        entries = admin.list(pod.address, token)
    except AdminError as exc:
        report.unreachable = _problem(exc, pod.name, "did not list its checkpoints")
        return report
    loading = {e.get("name") for e in entries if e.get("state") != "loaded"}
    report.served = {str(e.get("name")): e for e in entries if e.get("state") == "loaded"}
    for name in sorted(set(report.served) - set(wanted) - {keep}):
        try:
            admin.unload(pod.address, token, name)
        except AdminError as exc:
            logger.warning("Failed to unload checkpoint %s from pod %s: %s", name, pod.name, exc)
            continue
        del report.served[name]
        report.unloaded.append(name)
    for name, path in wanted.items():
        entry = report.served.get(name)
        if entry is not None and entry.get("path") == path or name in loading:
            continue  # served from that path, or still loading from the start list
        try:
            report.served[name] = admin.load(pod.address, token, name, path)
        except AdminError as exc:
            report.failed[name] = _problem(exc, pod.name, f"refused to load {path}")
            continue
        report.loaded.append(name)
    return report


def sync(admin: Admin, token: str, pods: Sequence[ReadyPod], wanted: Mapping[str, str],
         keep: str) -> list[PodReport]:
    """sync_pod on every Ready pod at once (a load takes a while on each)."""
    if not pods:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(pods), 8),
                                               thread_name_prefix="checkpoints") as pool:
        return list(pool.map(lambda pod: sync_pod(admin, token, pod, wanted, keep), pods))


def ready_pods(pods: Iterable[Mapping[str, Any]]) -> list[ReadyPod]:
    """The pods that pass their readiness probe (so the Service sends them requests)."""
    found = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        if pod_ready(pod) and status.get("podIP") and not meta.get("deletionTimestamp"):
            found.append(ReadyPod(meta["name"], status["podIP"]))
    return sorted(found, key=lambda pod: pod.name)


def checkpoint_status(item: Declared, service: str, reports: Sequence[PodReport],
                      refused: Problem | None, previous: Mapping[str, Any] | None,
                      now: str) -> dict[str, Any]:
    """A BEMCheckpoint's status from what the pods said: Ready when every Ready pod serves it
    from its path; Degraded with the first problem (a refusal, or a pod's own answer)."""
    pods, problems = [], []
    for report in reports:
        entry = report.served.get(item.name)
        loaded = entry is not None and entry.get("path") == item.target
        pod: dict[str, Any] = {"name": report.name, "loaded": loaded}
        problem = report.unreachable or report.failed.get(item.name)
        if loaded and entry.get("loaded_at"):
            pod["loadedAt"] = entry["loaded_at"]
        elif not loaded and problem is not None and refused is None:
            pod["message"] = problem.message
            problems.append(problem)
        pods.append(pod)
    count, loaded = len(pods), sum(pod["loaded"] for pod in pods)
    problem = refused or (problems[0] if problems else None)
    if problem is not None:
        ready = Condition("Ready", False, problem.reason, problem.message)
    elif count == 0:
        ready = Condition("Ready", False, Reason.NO_READY_REPLICAS,
                          f"BEMService {service} has no Ready pod to load it on")
    elif loaded < count:
        ready = Condition("Ready", False, Reason.LOADING, f"loaded on {loaded} of {count} Ready pods")
    else:
        ready = Condition("Ready", True, Reason.LOADED,
                          f"served by every Ready pod of BEMService {service} ({count})")
    degraded = Condition("Degraded", problem is not None,
                         problem.reason if problem else Reason.AS_EXPECTED,
                         problem.message if problem else "")
    return {
        "observedGeneration": item.generation, "replicas": count, "loadedReplicas": loaded,
        "loaded": f"{loaded}/{count}", "pods": pods,
        "conditions": with_times([ready, degraded], (previous or {}).get("conditions") or [],
                                 item.generation, now),
    }


def checkpoint_events(item: Declared, reports: Sequence[PodReport],
                      previous: Mapping[str, Any] | None, status: Mapping[str, Any]) -> list[Event]:
    """What this run did to one BEMCheckpoint (loads, unloads), and its Degraded transitions."""
    events: list[Event] = []
    loaded = [r.name for r in reports if item.name in r.loaded]
    unloaded = [r.name for r in reports if item.name in r.unloaded]
    if loaded:
        events.append(("Normal", Reason.LOADED, f"Loaded {item.target} on pod(s) {', '.join(loaded)}"))
    if unloaded:
        events.append(("Normal", Reason.UNLOADED, f"Unloaded from pod(s) {', '.join(unloaded)}"))
    old, new = degraded_of(previous), degraded_of(status)
    if new is not None and new != old:
        events.append(("Warning", new[0], new[1]))
    elif new is None and old is not None:
        events.append(("Normal", Reason.RECOVERED, f"no longer degraded ({old[0]} cleared)"))
    return events


def orphan_events(reports: Sequence[PodReport], declared: Iterable[str]) -> list[Event]:
    """Unloads of checkpoints that no BEMCheckpoint declares any more (said on the service)."""
    names = set(declared)
    by_name: dict[str, list[str]] = {}
    for report in reports:
        for name in report.unloaded:
            if name not in names:
                by_name.setdefault(name, []).append(report.name)
    return [("Normal", Reason.UNLOADED, f"Unloaded checkpoint {name} from pod(s) "
             f"{', '.join(pods)}: no BEMCheckpoint declares it any more")
            for name, pods in sorted(by_name.items())]


def summary(declared: Sequence[Declared], placement: Placement, statuses: Mapping[str, Mapping[str, Any]],
            reports: Sequence[PodReport], keep: str) -> dict[str, int] | None:
    """The BEMService's status.checkpoints; None once there is nothing to track (none declared,
    none left on a pod)."""
    resident = {name for report in reports for name in report.served} - {keep}
    if not declared and not resident:
        return None
    ready = sum(1 for s in statuses.values()
                if any(c["type"] == "Ready" and c["status"] == "True" for c in s["conditions"]))
    waiting = sum(1 for p in placement.refused.values() if p.reason == Reason.CHECKPOINT_CAPACITY)
    return {"declared": len(declared), "ready": ready, "waiting": waiting, "resident": len(resident)}


def tracked(previous: Mapping[str, Any] | None) -> bool:
    """Whether the pods may still hold checkpoints of BEMCheckpoints since deleted."""
    return bool((((previous or {}).get("checkpoints")) or {}).get("resident"))
