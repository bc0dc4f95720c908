"""One level-based reconcile of a BEMService (blocking; run in a worker thread).

Everything it reads comes from the object and the one cache of what the watches delivered
(controller.py); it keeps nothing between runs. Desired children come from the pure
builders; a child is applied only when the cached live object does not already hold what
is desired (so a settled object costs no request), obsolete children are deleted, and the
status derived from the cache (status.py) is patched when it differs from the object's.
Events are the status's transitions and the actions taken, so each is said once.
"""
from __future__ import annotations

import dataclasses
import datetime
import base64
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bem_operator.autoscaler import AutoscalerObserved, parse_quantity
from bem_operator.builders import (CHILD_KINDS, BuildOptions, SpecError, children_from_spec,
                                   parse_bemservice, selector_string)
from bem_operator.builders import endpoint as service_endpoint
from bem_operator.builders.checkpoints import ADMIN_TOKEN_KEY, admin_secret_name
from bem_operator.builders.keda import keda_hpa_name
from bem_operator.builders.edge import gateway_namespace, gateway_url
from bem_operator.builders.kinds import (BEMCHECKPOINT, CHILD_REGISTRY, DEPLOYMENT, HPA,
                                         HTTP_ROUTE, SCALED_OBJECT, SECRET, SERVICE_MONITOR,
                                         TRAEFIK_MIDDLEWARE)
from bem_operator.builders.labels import child_metadata
from bem_operator.builders.options import OperatorPods
from bem_operator.builders.spec_types import BEMServiceSpec
from bem_operator.checkpoints import (Admin, Declared, Placement, PodReport, RuntimeAdmin,
                                      checkpoint_events, checkpoint_status, declared_of,
                                      orphan_events, place, ready_pods, summary, sync, tracked)
from bem_operator.constants import (APPLIED_ANNOTATION, DEFAULT_PROMETHEUS_ADDRESS,
                                    FIELD_MANAGER, HANDOVER_MANAGER)
from bem_operator.gateway import GatewayObserved
from bem_operator.k8s import ApiError, KubeApi
from bem_operator.references import Reference, required_references
from bem_operator.status import (Observed, Problem, Reason, compute_status, degraded_of,
                                 status_changed, status_events)

Key = tuple[str, str]  # namespace, name


class Cache(Protocol):
    """What the reconcile reads and writes of the controller's cache (controller.Cache)."""

    def bemservice(self, key: Key) -> Mapping[str, Any] | None: ...
    def get(self, kind: tuple[str, str], namespace: str, parent: str,
            name: str) -> Mapping[str, Any] | None: ...
    def children(self, namespace: str, parent: str,
                 kind: tuple[str, str] | None = None) -> list[Mapping[str, Any]]: ...
    def pods(self, namespace: str, parent: str) -> list[Mapping[str, Any]]: ...
    def store(self, body: Mapping[str, Any]) -> None: ...
    def forget(self, body: Mapping[str, Any]) -> None: ...


logger = logging.getLogger(__name__)
Event = tuple[str, str, str]  # type, reason, message


class RetryableError(Exception):
    """A failure worth retrying (API unavailable, conflict, a refused child that another
    change may fix); the status and events already say it."""

    def __init__(self, message: str, rejected: bool = False) -> None:
        super().__init__(message)
        # The API server refused the request (4xx): retrying at once cannot help, only a
        # change of the spec or of the cluster; the periodic check retries.
        self.rejected = rejected


@dataclasses.dataclass
class Result:
    status: dict[str, Any]
    events: list[Event]
    applied: int = 0  # children written by this run (0 for a settled object)
    invalid: bool = False  # the spec cannot work: reported, nothing to retry


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, api: KubeApi, cache: Cache, default_image: str,
                 clock: Callable[[], str] = _now,
                 prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS,
                 admin: Admin | None = None, operator_pods: OperatorPods = OperatorPods()) -> None:
        self.api = api
        self.operator_pods = operator_pods
        self.cache = cache
        self.default_image = default_image
        self.prometheus_address = prometheus_address
        self.clock = clock
        self.admin = admin or RuntimeAdmin()

    def reconcile(self, key: Key) -> Result | None:
        """Brings one BEMService's children and status to what its spec asks; None when the
        object is gone or being deleted (garbage collection removes the children; the
        BEMCheckpoints that name it say it is missing)."""
        bems = self.cache.bemservice(key)
        if bems is None or bems["metadata"].get("deletionTimestamp"):
            self._service_missing(key)
            return None
        label = f"{key[0]}/{key[1]}"
        try:
            return self._reconcile(bems)
        except SpecError as exc:
            observed = self._observed(bems, spec_error=str(exc))
            return self._report(bems, observed, [], invalid=True)
        except ApiError as exc:
            if _terminating(exc):
                logger.info("Skipped BEMService %s: its namespace is being deleted", label)
                return None
            if exc.status != 0:  # with no answer at all, no status can be written either
                problem = Problem(Reason.APPLY_FAILED if exc.retryable else Reason.APPLY_REJECTED,
                                  f"The API server answered HTTP {exc.status}: {exc.message}")
                try:
                    self._report(bems, self._observed(bems, apply_error=problem), [])
                except ApiError:
                    logger.debug("Failed to record the failure in BEMService %s status", label)
            raise RetryableError(f"Failed to reconcile BEMService {label}: {exc}",
                                 rejected=exc.status != 0 and not exc.retryable) from exc

    def _reconcile(self, bems: Mapping[str, Any]) -> Result:
        meta = bems["metadata"]
        spec = parse_bemservice(bems)
        unserved = frozenset(kind.key for kind in CHILD_REGISTRY
                             if kind.optional_crd and not self.api.serves(kind))
        options = BuildOptions(service_monitor_available=SERVICE_MONITOR.key not in unserved,
                               keda_available=SCALED_OBJECT.key not in unserved,
                               gateway_api_available=HTTP_ROUTE.key not in unserved,
                               traefik_middleware_available=TRAEFIK_MIDDLEWARE.key not in unserved,
                               prometheus_address=self.prometheus_address,
                               default_runtime_image=self.default_image,
                               operator=self.operator_pods)
        declared = declared_of(self.cache.children(meta["namespace"], meta["name"],
                                                   BEMCHECKPOINT.key))
        placement = place(declared, spec.name, spec.served_name, spec.runtime.max_checkpoints)
        options = dataclasses.replace(options, checkpoints=tuple(
            (item.name, item.path) for item in placement.placed))
        children = children_from_spec(spec, options)
        missing, versions = self._check_secrets(meta["namespace"],
                                                _find(children, DEPLOYMENT.key))
        if versions:  # a changed Secret enters the pod template hash and rolls the pods
            options = dataclasses.replace(options, referenced_versions=tuple(versions))
            children = children_from_spec(spec, options)
        deployment = _find(children, DEPLOYMENT.key)
        for child in children:
            _mark(child)
        live_deployment = self.cache.get(DEPLOYMENT.key, meta["namespace"], meta["name"],
                                         meta["name"])
        if live_deployment is None or not holds(live_deployment, deployment) \
                or _reports_missing_claim(bems):
            # A claim is looked up only before a rollout (or while one is reported missing):
            # running pods hold theirs, so a settled service costs no request for it.
            missing = sorted(set(missing) | set(self._missing_claims(meta["namespace"],
                                                                     deployment)))
            # The pods mount the admin token: a new service creates it at once (one request),
            # a rollout checks it is still there.
            self._admin_token(spec, created=live_deployment is None)
        events = self._delete_obsolete(bems, {(c["apiVersion"], c["kind"]) for c in children})
        if spec.autoscaling is not None:
            self._hand_over_replicas(deployment)
        failure: tuple[Mapping[str, Any], ApiError] | None = None
        applied = 0
        for child in children:
            if child is deployment and missing:
                continue  # never roll pods onto a Secret or PVC that does not exist
            child_meta = child["metadata"]
            live = self.cache.get((child["apiVersion"], child["kind"]), child_meta["namespace"],
                                  meta["name"], child_meta["name"])
            if live is not None and holds(live, child):
                continue
            try:
                written, created = self.api.apply(child)
            except ApiError as exc:
                if exc.status == 0 or _terminating(exc):
                    raise
                # Apply the other children anyway (a refused Service must not hold back the
                # Deployment), then say which one failed, and why, in status and an event.
                failure = failure or (child, exc)
                continue
            applied += 1
            self.cache.store(written)
            _warn_if_rewritten(written, child)
            if created and _spec_unchanged(bems) and not _was_refused(bems):
                events.append(("Normal", "Recreated",
                               f"Recreated {child['kind']} {child_meta['name']}, "
                               "which had been deleted"))
                logger.info("Recreated %s %s/%s", child["kind"], meta["namespace"],
                            child_meta["name"])
        checkpoints, orphaned = self._checkpoints(bems, spec, declared, placement)
        events += orphaned
        observed = self._observed(
            bems, spec=spec, checkpoints=checkpoints,
            apply_error=None if failure is None else apply_problem(*failure),
            problem=_missing_problem(meta["namespace"], missing),
            service_monitor=None if not spec.monitoring.service_monitor
            else "applied" if SERVICE_MONITOR.key not in unserved else "unavailable",
            autoscaler=self._autoscaler(spec, SCALED_OBJECT.key not in unserved),
            gateway=self._gateway(spec, unserved))
        result = self._report(bems, observed, events)
        result.applied = applied
        if failure is not None:
            child, error = failure
            raise RetryableError(f"Failed to apply {child['kind']} {child['metadata']['name']} "
                                 f"of BEMService {meta['namespace']}/{meta['name']}: {error}",
                                 rejected=not error.retryable)
        return result

    def _observed(self, bems: Mapping[str, Any], spec: BEMServiceSpec | None = None,
                  **found: Any) -> Observed:
        """What the cache says of a BEMService's children and pods, with this run's findings."""
        meta = bems["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        # A run that stopped short (an invalid spec, a failed request) keeps what was known.
        found.setdefault("checkpoints", (bems.get("status") or {}).get("checkpoints"))
        return Observed(
            generation=meta.get("generation", 0), selector=selector_string(name),
            endpoint=service_endpoint(spec) if spec is not None else None,
            deployment=self.cache.get(DEPLOYMENT.key, namespace, name, name),
            pods=tuple(self.cache.pods(namespace, name)), **found)

    def _autoscaler(self, spec: BEMServiceSpec, keda_served: bool) -> AutoscalerObserved | None:
        """What scales the Deployment: our HPA (provider HPA), or KEDA's HPA and our
        ScaledObject (provider KEDA), as the cache holds them."""
        if spec.autoscaling is None:
            return None
        keda = spec.autoscaling.provider == "KEDA"
        hpa_name = keda_hpa_name(spec.name) if keda else spec.name
        return AutoscalerObserved(
            provider=spec.autoscaling.provider, served=keda_served or not keda,
            hpa_name=hpa_name, scaled_object_name=spec.name if keda else None,
            hpa=self.cache.get(HPA.key, spec.namespace, spec.name, hpa_name),
            scaled_object=self.cache.get(SCALED_OBJECT.key, spec.namespace, spec.name,
                                         spec.name) if keda else None)

    def _gateway(self, spec: BEMServiceSpec,
                 unserved: frozenset[tuple[str, str]]) -> GatewayObserved | None:
        """The HTTPRoute of spec.gateway as the cache holds it, with the Gateways it names."""
        if spec.gateway is None:
            return None
        return GatewayObserved(
            route_name=spec.name, route_namespace=spec.namespace, url=gateway_url(spec),
            parents=tuple((gateway_namespace(spec, ref), ref.name, ref.section_name)
                          for ref in spec.gateway.parent_refs),
            served=HTTP_ROUTE.key not in unserved,
            rate_limit_served=spec.gateway.rate_limit is None
            or TRAEFIK_MIDDLEWARE.key not in unserved,
            route=self.cache.get(HTTP_ROUTE.key, spec.namespace, spec.name, spec.name))

    def _report(self, bems: Mapping[str, Any], observed: Observed, events: list[Event],
                invalid: bool = False) -> Result:
        """Patches the status when it moved and posts the events of its transitions."""
        meta = bems["metadata"]
        previous = bems.get("status") or {}
        status = compute_status(observed, previous, self.clock())
        if status_changed(previous, status):
            written = self.api.patch_status(meta["namespace"], meta["name"], status)
            self.cache.store(written)
            if previous.get("phase") != status["phase"]:
                logger.info("Moved BEMService %s/%s to phase %s", meta["namespace"],
                            meta["name"], status["phase"])
        events = events + status_events(previous, status, meta["name"])
        for event_type, reason, message in events:
            self.api.post_event(bems, event_type, reason, message)
        return Result(status=status, events=events, invalid=invalid)

    def _checkpoints(self, bems: Mapping[str, Any], spec: BEMServiceSpec,
                     declared: list[Declared], placement: Placement
                     ) -> tuple[dict[str, int] | None, list[Event]]:
        """Brings every Ready pod to the placed BEMCheckpoints (asking each what it serves,
        loading and unloading through its admin API), writes each BEMCheckpoint's status from
        the answers and says what was done; returns the BEMService's status.checkpoints and
        the events about it. Costs nothing while no BEMCheckpoint names the service and no
        pod was left holding one."""
        if not declared and not tracked(bems.get("status")):
            return None, []
        wanted = {item.name: item.target for item in placement.placed}
        pods = ready_pods(self.cache.pods(spec.namespace, spec.name))
        reports = sync(self.admin, self._admin_token(spec), pods, wanted,
                       spec.served_name) if pods else []
        statuses = {}
        for item in declared:
            statuses[item.name] = self._report_checkpoint(item, spec.name, reports,
                                                          placement.refused.get(item.name))
        return (summary(declared, placement, statuses, reports, spec.served_name),
                orphan_events(reports, (item.name for item in declared)))

    def _report_checkpoint(self, item: Declared, service: str, reports: list[PodReport],
                           refused: Problem | None) -> dict[str, Any]:
        meta = item.body["metadata"]
        previous = item.body.get("status") or {}
        status = checkpoint_status(item, service, reports, refused, previous, self.clock())
        if status_changed(previous, status):
            try:
                self.cache.store(self.api.patch_status(meta["namespace"], meta["name"], status,
                                                       kind=BEMCHECKPOINT.key))
            except ApiError as exc:
                if exc.status != 404:  # deleted meanwhile: nothing to report on
                    raise
                return status
        for event_type, reason, message in checkpoint_events(item, reports, previous, status):
            self.api.post_event(item.body, event_type, reason, message)
        return status

    def _service_missing(self, key: Key) -> None:
        """The BEMCheckpoints that name a BEMService that does not exist (or is going)."""
        problem = Problem(Reason.SERVICE_NOT_FOUND, (
            f"BEMService {key[1]} does not exist in namespace {key[0]}: create it, or set "
            "spec.service to an existing one (a new BEMCheckpoint)"))
        for item in declared_of(self.cache.children(*key, BEMCHECKPOINT.key)):
            self._report_checkpoint(item, key[1], [], problem)

    def _admin_token(self, spec: BEMServiceSpec, created: bool = False) -> str:
        """The token of the pods' admin API, from the Secret the operator creates once per
        service (owned by it, mounted read-only in its pods); created here when missing, at
        once when `created` (a new service: it cannot exist yet, so no read first)."""
        name = admin_secret_name(spec.name)
        secret = None if created else self.api.get(SECRET.api_version, SECRET.kind,
                                                   spec.namespace, name)
        if secret is None:
            token = secrets.token_urlsafe(32)
            try:
                secret = self.api.create({
                    "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": child_metadata(spec, name),
                    "data": {ADMIN_TOKEN_KEY: base64.b64encode(token.encode()).decode()}})
                logger.info("Created the admin token Secret %s/%s", spec.namespace, name)
            except ApiError as exc:
                if exc.status != 409:  # made by a run of a moment ago: read it
                    raise
                secret = self.api.get(SECRET.api_version, SECRET.kind, spec.namespace, name)
        value = ((secret or {}).get("data") or {}).get(ADMIN_TOKEN_KEY)
        if not value:
            raise ApiError(422, f"Secret {spec.namespace}/{name} has no key {ADMIN_TOKEN_KEY}: "
                           "delete it and the operator creates a new one")
        return base64.b64decode(value).decode().strip()

    def _check_secrets(self, namespace: str, deployment: Mapping[str, Any]
                       ) -> tuple[list[Reference], list[tuple[str, str]]]:
        """Missing Secrets (or keys), and the resourceVersions of those that exist: a Secret's
        change must roll the pods, so they are read on every run (only those referenced)."""
        missing: list[Reference] = []
        versions: dict[str, str] = {}
        secrets: dict[str, dict[str, Any] | None] = {}
        admin = admin_secret_name(deployment["metadata"]["name"])
        for ref in required_references(deployment):
            if ref.kind != "Secret" or ref.name == admin:  # the operator's own (_admin_token)
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

    def _missing_claims(self, namespace: str, deployment: Mapping[str, Any]) -> list[Reference]:
        return [ref for ref in required_references(deployment)
                if ref.kind == "PersistentVolumeClaim"
                and not self.api.pvc_exists(namespace, ref.name)]

    def _delete_obsolete(self, bems: Mapping[str, Any], wanted: set[tuple[str, str]]
                         ) -> list[Event]:
        meta = bems["metadata"]
        events: list[Event] = []
        for child in self.cache.children(meta["namespace"], meta["name"]):
            kind = (child["apiVersion"], child["kind"])
            if kind in wanted or kind not in CHILD_KINDS or controller_uid(child) != meta["uid"]:
                continue
            child_meta = child["metadata"]
            if self.api.delete(*kind, child_meta["namespace"], child_meta["name"],
                               uid=child_meta.get("uid")):
                logger.info("Deleted %s %s/%s, which the spec no longer asks for",
                            child["kind"], child_meta["namespace"], child_meta["name"])
                events.append(("Normal", "Deleted", f"Deleted {child['kind']} "
                               f"{child_meta['name']}: the spec no longer asks for it"))
            self.cache.forget(child)
        return events

    def _hand_over_replicas(self, deployment: Mapping[str, Any]) -> None:
        """Before dropping spec.replicas from our apply, give the field to another manager,
        so the API server keeps its value (instead of resetting it) until the HPA takes it."""
        meta = deployment["metadata"]
        live = self.cache.get(DEPLOYMENT.key, meta["namespace"], meta["name"], meta["name"])
        if live is None or not owns_field(live, FIELD_MANAGER, ("spec", "replicas")):
            return
        replicas = live["spec"].get("replicas", 1)
        written, _ = self.api.apply(
            {"apiVersion": DEPLOYMENT.api_version, "kind": DEPLOYMENT.kind,
             "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
             "spec": {"replicas": replicas}}, manager=HANDOVER_MANAGER)
        self.cache.store(written)
        logger.info("Handed Deployment %s/%s replicas (%s) over to the autoscaler",
                    meta["namespace"], meta["name"], replicas)


def _mark(child: dict[str, Any]) -> None:
    """Stamps a child with a digest of what the operator declares, so a field dropped from
    the spec (which `holds` cannot see: the live object still has it) shows as a change."""
    digest = hashlib.sha256(json.dumps(child, sort_keys=True).encode()).hexdigest()[:20]
    annotations = child["metadata"].setdefault("annotations", {})
    annotations[APPLIED_ANNOTATION] = digest


def holds(live: Any, desired: Any) -> bool:
    """Whether the live object already has every field the desired one declares (what server-
    side apply would write), after the API server's own rewriting: defaults it added, empty
    values it omits, quantities in canonical form ("1024Mi" is "1Gi")."""
    return difference(live, desired) is None


def difference(live: Any, desired: Any, path: tuple[str, ...] = ()) -> str | None:
    """The first field (dotted path) where `live` lacks what `desired` declares, or None.
    (On the periodic check's path for every child: plain dict and list checks, and equal
    subtrees compared by C's == at once.)"""
    if live == desired:
        return None
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return ".".join(path) or "."
        for key, value in desired.items():
            if key not in live:
                if not _empty(value):
                    return ".".join((*path, key))
                continue
            found = difference(live[key], value, (*path, key))
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return ".".join(path)
        for index, (item, wanted) in enumerate(zip(live, desired)):
            found = difference(item, wanted, path)
            if found is not None:
                return found.replace(".".join(path), f"{'.'.join(path)}[{index}]", 1)
        return None
    if isinstance(desired, str | int | float) and isinstance(live, str | int | float) \
            and not isinstance(desired, bool) and _quantity_path(path):
        # e.g. nvidia.com/gpu: 1 comes back as "1", memory: 1024Mi as "1Gi"
        wanted = parse_quantity(desired)
        if wanted is not None and wanted == parse_quantity(live):
            return None
    return ".".join(path)


_REWRITTEN: set[tuple[str, str]] = set()  # (kind, field) already warned about


def _warn_if_rewritten(written: Mapping[str, Any], desired: Mapping[str, Any]) -> None:
    """An apply whose answer still lacks what was declared means the API server rewrites that
    field in a way `holds` does not know: every check would apply it again. Said once."""
    field = difference(written, desired)
    if field is not None and (desired["kind"], field) not in _REWRITTEN:
        _REWRITTEN.add((desired["kind"], field))
        logger.warning("The API server rewrote %s of %s %s/%s, so every periodic check "
                       "applies it again; please report this", field, desired["kind"],
                       desired["metadata"]["namespace"], desired["metadata"]["name"])


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value is False or value == ""


def _quantity_path(path: tuple[str, ...]) -> bool:
    """Fields holding resource quantities: resources' limits/requests, sizes, HPA values."""
    parent = path[-2] if len(path) > 1 else ""
    return bool(path) and (parent in ("limits", "requests") or path[-1] == "sizeLimit"
                           or parent == "target" and path[-1] in ("averageValue", "value"))


def controller_uid(body: Mapping[str, Any]) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _spec_unchanged(bems: Mapping[str, Any]) -> bool:
    """Whether the last status describes this very spec: then a child that had to be created
    was deleted by someone (a spec change, such as another autoscaling provider, creates its
    new children as a matter of course)."""
    observed = (bems.get("status") or {}).get("observedGeneration")
    return bool(observed) and observed == bems["metadata"].get("generation")


def _was_refused(bems: Mapping[str, Any]) -> bool:
    """Whether the last status said a child apply failed (then a creation is no re-creation)."""
    return _degraded_reason(bems) in (Reason.APPLY_REJECTED, Reason.APPLY_FAILED)


def _reports_missing_claim(bems: Mapping[str, Any]) -> bool:
    return _degraded_reason(bems) in (Reason.PVC_NOT_FOUND, Reason.MISSING_REFERENCES)


def _degraded_reason(bems: Mapping[str, Any]) -> str | None:
    degraded = degraded_of(bems.get("status"))
    return None if degraded is None else degraded[0]


def _terminating(exc: ApiError) -> bool:
    return exc.status == 403 and "being terminated" in exc.message


def apply_problem(child: Mapping[str, Any], exc: ApiError) -> Problem:
    """A failed child apply, said with the API server's own message."""
    what = f"{child['kind']} {child['metadata']['name']}"
    if exc.retryable:
        return Problem(Reason.APPLY_FAILED, f"Applying {what} failed (HTTP {exc.status}): "
                       f"{exc.message}; the operator retries")
    return Problem(Reason.APPLY_REJECTED, f"The API server refused {what} (HTTP {exc.status}): "
                   f"{exc.message}")


def _find(children: list[dict[str, Any]], kind: tuple[str, str]) -> dict[str, Any]:
    return next(c for c in children if (c["apiVersion"], c["kind"]) == kind)


def _missing_problem(namespace: str, missing: list[Reference]) -> Problem | None:
    if not missing:
        return None
    kinds = {(Reason.SECRET_KEY_NOT_FOUND if ref.key else Reason.SECRET_NOT_FOUND)
             if ref.kind == "Secret" else Reason.PVC_NOT_FOUND for ref in missing}
    reason = kinds.pop() if len(kinds) == 1 else Reason.MISSING_REFERENCES
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
