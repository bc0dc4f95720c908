"""One idempotent, level-based reconcile of a BEMService (blocking; run in a thread).

Desired children come from the pure builders; this module compares them with
what exists through the API layer, applies, deletes what is obsolete and writes
the status. It knows nothing of kopf: handlers map its errors to kopf's.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from bem_operator.builders import CHILD_KINDS, BuildOptions, SpecError, children_from_spec
from bem_operator.builders import endpoint as service_endpoint
from bem_operator.builders import parse_bemservice, selector_string
from bem_operator.autoscaler import AutoscalerObserved
from bem_operator.builders.keda import keda_hpa_name
from bem_operator.builders.kinds import DEPLOYMENT as DEPLOYMENT_KIND
from bem_operator.builders.kinds import HPA, SCALED_OBJECT
from bem_operator.builders.spec_types import BEMServiceSpec
from bem_operator.children import ChildIndex
from bem_operator.constants import DEFAULT_PROMETHEUS_ADDRESS, FIELD_MANAGER, HANDOVER_MANAGER
from bem_operator.k8s import ApiError, KubeApi
from bem_operator.references import Reference, required_references
from bem_operator.status import Observed, Problem, compute_status, phase_events, status_changed

logger = logging.getLogger(__name__)
DEPLOYMENT = DEPLOYMENT_KIND.key
Event = tuple[str, str, str]  # type, reason, message


class InvalidSpec(Exception):
    """The spec passed the schema but cannot work; fixing it is up to the user."""


class RetryableError(Exception):
    """A failure worth retrying (API unavailable, conflict, a refused child that another
    change may fix); `events` are what the failed run still has to tell the user."""

    def __init__(self, message: str, events: list[Event] | None = None,
                 rejected: bool = False) -> None:
        super().__init__(message)
        self.events = list(events or [])
        # The API server refused the request (4xx): retrying at once cannot help, only a
        # change of the spec or of the cluster; the periodic check retries.
        self.rejected = rejected


class ApplyFailed(Exception):
    """Internal: a child apply failed after status was written."""

    def __init__(self, error: ApiError, events: list[Event]) -> None:
        super().__init__(str(error))
        self.error = error
        self.events = events


@dataclasses.dataclass
class Result:
    status: dict[str, Any]
    events: list[Event]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, api: KubeApi, index: ChildIndex, default_image: str,
                 clock: Callable[[], str] = _now,
                 prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS) -> None:
        self.api = api
        self.index = index
        self.default_image = default_image
        self.prometheus_address = prometheus_address
        self.clock = clock
        # The last full reconcile's findings per BEMService uid, so a Deployment status
        # change needs only a status refresh, not a new round of applies.
        self._observed: dict[str, Observed] = {}
        self._written: dict[str, dict[str, Any]] = {}  # the status last written, by uid
        self._observed_lock = threading.Lock()

    def reconcile(self, bems: Mapping[str, Any]) -> Result:
        meta = bems["metadata"]
        label = f"{meta['namespace']}/{meta['name']}"
        try:
            return self._reconcile(bems)
        except ApplyFailed as exc:  # status and events already say it; retried later
            raise RetryableError(f"Failed to apply a child of BEMService {label}: "
                                 f"{exc.error}", exc.events,
                                 rejected=not exc.error.retryable) from exc.error
        except SpecError as exc:
            try:
                self._report(bems, Observed(generation=meta.get("generation", 0),
                                            selector=selector_string(meta["name"]),
                                            spec_error=str(exc),
                                            deployment=self._get_deployment(bems)))
            except ApiError as api_exc:
                raise RetryableError(f"Failed to report the invalid spec of BEMService "
                                     f"{label}: {api_exc}") from api_exc
            raise InvalidSpec(f"BEMService {label} has an invalid spec: {exc}") from exc
        except ApiError as exc:
            if _terminating(exc):
                logger.info("Skipped BEMService %s: its namespace is being deleted", label)
                return Result(status=dict(bems.get("status") or {}), events=[])
            if exc.status != 0:  # with no answer at all, no status can be written either
                self._report_failure(bems, exc)
            raise RetryableError(f"Failed to reconcile BEMService {label}: {exc}",
                                 rejected=exc.status != 0 and not exc.retryable) from exc

    def _reconcile(self, bems: Mapping[str, Any]) -> Result:
        meta = bems["metadata"]
        spec = parse_bemservice(bems)  # the only parse of this reconcile: builders take `spec`
        monitor_wanted = spec.monitoring.service_monitor
        monitor_available = monitor_wanted and self.api.service_monitor_available()
        keda_wanted = spec.autoscaling is not None and spec.autoscaling.provider == "KEDA"
        keda_available = keda_wanted and self.api.serves(SCALED_OBJECT)
        options = BuildOptions(service_monitor_available=monitor_available,
                               keda_available=keda_available,
                               prometheus_address=self.prometheus_address,
                               default_runtime_image=self.default_image)
        children = children_from_spec(spec, options)
        deployment = _find(children, DEPLOYMENT)
        missing, versions = self._check_references(meta["namespace"], deployment)
        if versions:  # a changed Secret enters the pod template hash and rolls the pods
            options = dataclasses.replace(options, referenced_versions=tuple(versions))
            children = children_from_spec(spec, options)
            deployment = _find(children, DEPLOYMENT)
        events = self._delete_obsolete(bems, {(c["apiVersion"], c["kind"]) for c in children})
        if spec.autoscaling is not None:
            self._hand_over_replicas(deployment)
        live_deployment = None
        applied: dict[tuple[str, str], Mapping[str, Any]] = {}  # live children, by kind
        failure: tuple[Mapping[str, Any], ApiError] | None = None
        for child in children:
            if child is deployment and missing:
                continue  # never roll pods onto a Secret or PVC that does not exist
            try:
                live, created = self.api.apply(child)
            except ApiError as exc:
                if exc.status == 0 or _terminating(exc):
                    raise
                # Apply the other children anyway (a refused Service must not hold back the
                # Deployment), then say which one failed, and why, in status and an event.
                failure = failure or (child, exc)
                continue
            self.index.note_applied(live)
            applied[(child["apiVersion"], child["kind"])] = live
            if child is deployment:
                live_deployment = live
            if created and _spec_unchanged(bems) and not _was_refused(bems):
                events.append(("Normal", "Recreated",
                               f"Recreated {child['kind']} {child['metadata']['name']}, "
                               "which had been deleted"))
                logger.info("Recreated %s %s/%s", child["kind"], meta["namespace"], meta["name"])
        if live_deployment is None:
            live_deployment = self._get_deployment(bems)
        observed = Observed(
            generation=meta.get("generation", 0),
            selector=selector_string(meta["name"]),
            endpoint=service_endpoint(spec),
            deployment=live_deployment,
            apply_error=None if failure is None else apply_problem(failure[0], failure[1]),
            problem=_missing_problem(meta["namespace"], missing),
            service_monitor=None if not monitor_wanted
            else "applied" if monitor_available else "unavailable",
            autoscaler=self._autoscaler(spec, keda_available or not keda_wanted, applied),
        )
        status, status_events = self._report(bems, observed)
        with self._observed_lock:
            self._observed[meta["uid"]] = observed
        if failure is not None:
            raise ApplyFailed(failure[1], events + status_events)
        return Result(status=status, events=events + status_events)

    def refresh_status(self, bems: Mapping[str, Any],
                       deployment: Mapping[str, Any]) -> Result | None:
        """Status from a newer Deployment with the rest of the last full reconcile's findings;
        None when there are none for this generation (then a full reconcile is due)."""
        meta = bems["metadata"]
        with self._observed_lock:
            observed = self._observed.get(meta["uid"])
        if observed is None or observed.generation != meta.get("generation", 0) \
                or observed.deployment is None:
            return None
        observed = dataclasses.replace(
            observed, deployment=deployment,
            autoscaler=observed.autoscaler and self._live_autoscaler(
                meta["namespace"], meta["name"], observed.autoscaler, watched_first=True))
        try:
            status, events = self._report(bems, observed)
        except ApiError as exc:
            raise RetryableError(f"Failed to update the status of BEMService "
                                 f"{meta['namespace']}/{meta['name']}: {exc}") from exc
        return Result(status=status, events=events)

    def _autoscaler(self, spec: BEMServiceSpec, served: bool,
                    applied: Mapping[tuple[str, str], Mapping[str, Any]]
                    ) -> AutoscalerObserved | None:
        """What scales the Deployment: our HPA (provider HPA), or KEDA's HPA and our
        ScaledObject (provider KEDA); the live objects as just applied, else as watched."""
        if spec.autoscaling is None:
            return None
        keda = spec.autoscaling.provider == "KEDA"
        view = AutoscalerObserved(
            provider=spec.autoscaling.provider, served=served,
            hpa_name=keda_hpa_name(spec.name) if keda else spec.name,
            scaled_object_name=spec.name if keda else None,
            hpa=applied.get(HPA.key), scaled_object=applied.get(SCALED_OBJECT.key))
        return self._live_autoscaler(spec.namespace, spec.name, view, watched_first=False)

    def _live_autoscaler(self, namespace: str, parent: str, view: AutoscalerObserved,
                         watched_first: bool) -> AutoscalerObserved:
        """The view with the HPA and ScaledObject the watches delivered: first when a watch
        event asked for the refresh, else only where the view has none (KEDA's HPA, which
        the operator never applies)."""
        hpa = self.index.autoscaler(namespace, parent, HPA.kind, view.hpa_name)
        scaled = None if view.scaled_object_name is None else self.index.autoscaler(
            namespace, parent, SCALED_OBJECT.kind, view.scaled_object_name)
        if watched_first:
            return dataclasses.replace(view, hpa=hpa or view.hpa,
                                       scaled_object=scaled or view.scaled_object)
        return dataclasses.replace(view, hpa=view.hpa or hpa,
                                   scaled_object=view.scaled_object or scaled)

    def forget(self, uid: str) -> None:
        with self._observed_lock:
            self._observed.pop(uid, None)
            self._written.pop(uid, None)

    def _check_references(self, namespace: str, deployment: Mapping[str, Any]
                          ) -> tuple[list[Reference], list[tuple[str, str]]]:
        """Missing references, and (reference, resourceVersion) of those that exist."""
        missing: list[Reference] = []
        versions: dict[str, str] = {}
        secrets: dict[str, dict[str, Any] | None] = {}
        for ref in required_references(deployment):
            if ref.kind == "PersistentVolumeClaim":
                if not self.api.pvc_exists(namespace, ref.name):
                    missing.append(ref)
                continue
            if ref.name not in secrets:
                secrets[ref.name] = self.api.get("v1", "Secret", namespace, ref.name)
            secret = secrets[ref.name]
            if secret is None:
                missing.append(Reference("Secret", ref.name))
            elif ref.key and ref.key not in (secret.get("data") or {}):
                missing.append(ref)
            else:
                versions[f"Secret/{ref.name}"] = secret["metadata"].get("resourceVersion", "")
        return sorted(set(missing)), sorted(versions.items())

    def _delete_obsolete(self, bems: Mapping[str, Any], wanted: set[tuple[str, str]]) -> list[Event]:
        meta = bems["metadata"]
        events: list[Event] = []
        for ref in self.index.owned(meta["namespace"], meta["name"], meta["uid"]):
            if (ref.api_version, ref.kind) in wanted or (ref.api_version, ref.kind) not in CHILD_KINDS:
                continue
            if self.api.delete(ref.api_version, ref.kind, ref.namespace, ref.name, uid=ref.uid):
                logger.info("Deleted %s %s/%s, which the spec no longer asks for",
                            ref.kind, ref.namespace, ref.name)
                events.append(("Normal", "Deleted",
                               f"Deleted {ref.kind} {ref.name}: the spec no longer asks for it"))
        return events

    def _hand_over_replicas(self, deployment: Mapping[str, Any]) -> None:
        """Before dropping spec.replicas from our apply, give the field to another manager,
        so the API server keeps its value (instead of resetting it) until the HPA takes it."""
        meta = deployment["metadata"]
        live = self.api.get(*DEPLOYMENT, meta["namespace"], meta["name"])
        if live is None or not owns_field(live, FIELD_MANAGER, ("spec", "replicas")):
            return
        replicas = live["spec"].get("replicas", 1)
        self.api.apply({"apiVersion": DEPLOYMENT[0], "kind": DEPLOYMENT[1],
                        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                        "spec": {"replicas": replicas}}, manager=HANDOVER_MANAGER)
        logger.info("Handed Deployment %s/%s replicas (%s) over to the autoscaler",
                    meta["namespace"], meta["name"], replicas)

    def _get_deployment(self, bems: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = bems["metadata"]
        try:
            return self.api.get(*DEPLOYMENT, meta["namespace"], meta["name"])
        except ApiError:
            return None

    def _report(self, bems: Mapping[str, Any], observed: Observed
                ) -> tuple[dict[str, Any], list[Event]]:
        meta = bems["metadata"]
        observed = dataclasses.replace(observed, pods=self.index.pods(meta["namespace"],
                                                                      meta["name"]))
        with self._observed_lock:  # only we write the status: what we wrote last is current
            previous = self._written.get(meta["uid"]) or bems.get("status") or {}
        status = compute_status(observed, previous, self.clock())
        if status_changed(previous, status):
            self.api.patch_status(meta["namespace"], meta["name"], status)
            if previous.get("phase") != status["phase"]:
                logger.info("Moved BEMService %s/%s to phase %s", meta["namespace"],
                            meta["name"], status["phase"])
        with self._observed_lock:
            self._written[meta["uid"]] = status
        return status, phase_events(previous, status, meta["name"])

    def _report_failure(self, bems: Mapping[str, Any], exc: ApiError) -> None:
        """A request the API server refused or failed outside the child applies (a read,
        a delete, the replicas hand-over): the status says so while the reconcile is
        retried, with the API server's own message."""
        meta = bems["metadata"]
        reason = "ApplyFailed" if exc.retryable else "ApplyRejected"
        observed = Observed(generation=meta.get("generation", 0),
                            selector=selector_string(meta["name"]),
                            apply_error=Problem(reason, f"The API server answered HTTP "
                                                f"{exc.status}: {exc.message}"),
                            deployment=self._get_deployment(bems))
        try:
            self._report(bems, observed)
        except ApiError:
            logger.debug("Failed to record the failure in BEMService %s/%s status",
                         meta["namespace"], meta["name"])


def _spec_unchanged(bems: Mapping[str, Any]) -> bool:
    """Whether the last status describes this very spec: then a child that had to be created
    was deleted by someone (a spec change, such as another autoscaling provider, creates its
    new children as a matter of course)."""
    observed = (bems.get("status") or {}).get("observedGeneration")
    return bool(observed) and observed == bems["metadata"].get("generation")


def _was_refused(bems: Mapping[str, Any]) -> bool:
    """Whether the last status said a child apply failed (then a creation is no re-creation)."""
    for condition in (bems.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return condition.get("reason") in ("ApplyRejected", "ApplyFailed")
    return False


def _terminating(exc: ApiError) -> bool:
    return exc.status == 403 and "being terminated" in exc.message


def apply_problem(child: Mapping[str, Any], exc: ApiError) -> Problem:
    """A failed child apply, said with the API server's own message."""
    what = f"{child['kind']} {child['metadata']['name']}"
    if exc.retryable:
        return Problem("ApplyFailed", f"Applying {what} failed (HTTP {exc.status}): "
                       f"{exc.message}; the operator retries")
    return Problem("ApplyRejected", f"The API server refused {what} (HTTP {exc.status}): "
                   f"{exc.message}")


def _find(children: list[dict[str, Any]], kind: tuple[str, str]) -> dict[str, Any]:
    return next(c for c in children if (c["apiVersion"], c["kind"]) == kind)


def _missing_problem(namespace: str, missing: list[Reference]) -> Problem | None:
    if not missing:
        return None
    kinds = {("SecretKeyNotFound" if ref.key else "SecretNotFound") if ref.kind == "Secret"
             else "PersistentVolumeClaimNotFound" for ref in missing}
    reason = kinds.pop() if len(kinds) == 1 else "MissingReferences"
    names = ", ".join(ref.describe() for ref in missing)
    return Problem(reason, f"{names} not found in namespace {namespace}; the pods need it: "
                   "create it and the operator picks it up on its next check")


def owns_field(obj: Mapping[str, Any], manager: str, path: tuple[str, ...]) -> bool:
    """Whether `manager` holds `path` (e.g. spec.replicas) through an Apply operation."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        fields = entry.get("fieldsV1") or {}
        for part in path:
            fields = fields.get(f"f:{part}")
            if fields is None:
                break
        else:
            return True
    return False
