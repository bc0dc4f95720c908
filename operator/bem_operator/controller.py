"""The operator's one event path: a cache of what the watches deliver, a work queue keyed by
BEMService, and the workers that run the level-based reconcile (reconcile.py) off the loop.

The watches (kopf's of the custom resources, handlers.py; the reflectors of the children and
pods, watches.py) hand every event to `Controller.on_event`: the cache takes it
and says which BEMService, if any, it concerns; that key is queued (at most once, never
reconciled by two workers at once, a failure retried with a growing delay). The cache
holds BEMServices by name and their children and runtime pods (owner-labelled, so the
watches filter them in the API server) by parent, as it holds BEMCheckpoints by the service
they name (which may not exist); the reconcile reads everything from it
and keeps nothing of its own between runs. Its own writes go in too (`Cache.store`), so
the next run never mistakes a stale copy for drift; a watch event older than what is held
is ignored. Entries are replaced whole, never changed in place: the worker threads read
them while the loop takes new ones.

Only the leader (leader.py) runs workers and the periodic check; a standby keeps its cache
warm and writes nothing.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from bem_operator.builders.kinds import BEMCHECKPOINT, BEMSERVICE, CHILD_REGISTRY, POD, child_kind
from bem_operator.checkpoints import RuntimeAdmin
from bem_operator.constants import CONFIG_HASH_ANNOTATION, OWNER_LABEL
from bem_operator.k8s import ApiError, KubeApi
from bem_operator.metrics import OperatorMetrics
from bem_operator.outage import ConnectionState
from bem_operator.reconcile import Reconciler, RetryableError
from bem_operator.settings import OperatorSettings
from bem_operator.watches import Watches

Key = tuple[str, str]  # namespace, name
KindKey = tuple[str, str]  # apiVersion, kind
logger = logging.getLogger(__name__)


def parent_of(body: Mapping[str, Any]) -> Key | None:
    """(namespace, BEMService name) a child or pod belongs to, from its owner label; a
    BEMCheckpoint belongs to the BEMService its spec names."""
    meta = body.get("metadata") or {}
    if kind_of(body) == BEMCHECKPOINT.key:
        parent = (body.get("spec") or {}).get("service")
    else:
        parent = (meta.get("labels") or {}).get(OWNER_LABEL)
    namespace = meta.get("namespace")
    return (namespace, parent) if parent and namespace else None


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body["metadata"]
    return meta.get("namespace", ""), meta["name"]


def kind_of(body: Mapping[str, Any]) -> KindKey:
    return body.get("apiVersion", ""), body.get("kind", "")


def _version(body: Mapping[str, Any]) -> int | None:
    value = (body.get("metadata") or {}).get("resourceVersion", "")
    return int(value) if value.isdigit() else None


def _newer_or_equal(held: Mapping[str, Any], incoming: Mapping[str, Any]) -> bool:
    """Whether `held` is at least as new as `incoming` (resourceVersions are etcd revisions
    in every API server this runs against; anything else is never treated as older)."""
    old, new = _version(held), _version(incoming)
    return old is not None and new is not None and old >= new


_DELETED_KEPT = 4096  # tombstones: far more deletions than one list's round trip sees


class Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bemservices: dict[Key, Mapping[str, Any]] = {}
        # parent -> (apiVersion, kind, name) -> body
        self._children: dict[Key, dict[tuple[str, str, str], Mapping[str, Any]]] = {}
        # The uids of the objects last seen deleted (uids are never reused): a list taken
        # before a deletion, and read after it, does not bring the object back.
        self._deleted: collections.OrderedDict[str, None] = collections.OrderedDict()

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> Key | None:
        """Takes one watch event; returns the BEMService whose reconcile it asks for, None
        when it changes nothing (the echo of the operator's own write, an unlabelled object)."""
        if event_type == "DELETED":
            self._remember_deleted(body)
        if kind_of(body) == BEMSERVICE.key:
            return self._observe_bemservice(event_type, body)
        parent = parent_of(body)
        if parent is None:
            return None
        if event_type == "DELETED":
            entry = (*kind_of(body), body["metadata"]["name"])
            with self._lock:
                children = self._children.get(parent, {})
                held = children.get(entry)
                if held is not None and held["metadata"].get("uid") == body["metadata"].get("uid"):
                    del children[entry]
                if not children:
                    self._children.pop(parent, None)
            return parent
        kept, held = self._put(body)
        if not kept:
            return None  # our own write came back, or an old event: nothing new
        if kind_of(body) == BEMCHECKPOINT.key:
            return None if held is not None and _same(held, body, _INTENT) else parent
        kind = child_kind(*kind_of(body))
        if held is not None and kind is not None and not kind.feeds_status \
                and _same(held, body, _DECLARATION):
            return None  # e.g. a Service's status: nothing the BEMService reports
        return parent

    def _observe_bemservice(self, event_type: str | None, body: Mapping[str, Any]) -> Key | None:
        key = key_of(body)
        if event_type == "DELETED":
            with self._lock:
                self._bemservices.pop(key, None)
            # Garbage collection removes the children; its BEMCheckpoints stay, and say so.
            return key if self.children(*key, BEMCHECKPOINT.key) else None
        kept, held = self._put(body)
        if not kept or held is not None and _same(held, body, _INTENT):
            return None  # an old event, or only its status moved (the operator's own patch)
        return key

    def store(self, body: Mapping[str, Any]) -> None:
        """Keeps what one of the operator's own writes returned (the watch repeats it later)."""
        self._put(body)

    def fill(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        """Keeps what a list returned, where nothing newer is held (nor its deletion)."""
        for body in bodies:
            self._put(body)

    def _remember_deleted(self, body: Mapping[str, Any]) -> None:
        uid = (body.get("metadata") or {}).get("uid")
        if uid:
            with self._lock:
                self._deleted[uid] = None
                while len(self._deleted) > _DELETED_KEPT:
                    self._deleted.popitem(last=False)

    def _put(self, body: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any] | None]:
        """Keeps a BEMService, or a child or pod of one, unless what is held is as new;
        returns whether it was kept, and what was held before."""
        bemservice = kind_of(body) == BEMSERVICE.key
        parent = None if bemservice else parent_of(body)
        if not bemservice and parent is None:
            return False, None
        entry: Any = key_of(body) if bemservice else (*kind_of(body), body["metadata"]["name"])
        slim = _slim(body)
        with self._lock:
            if body["metadata"].get("uid") in self._deleted:
                return False, None
            table: dict[Any, Mapping[str, Any]] = self._bemservices if parent is None \
                else self._children.setdefault(parent, {})
            held = table.get(entry)
            if held is not None and _newer_or_equal(held, body):
                return False, held
            table[entry] = slim
        return True, held

    def forget(self, body: Mapping[str, Any]) -> None:
        """Drops a child the operator deleted."""
        parent = parent_of(body)
        if parent is None:
            return
        with self._lock:
            children = self._children.get(parent, {})
            children.pop((*kind_of(body), body["metadata"]["name"]), None)

    def prune(self, kind: KindKey, present: set[tuple[str, str, str]],
              listed_at: int | None, namespace: str | None = None) -> set[Key]:
        """Drops the objects of `kind` (in `namespace`, or in all) a fresh list no longer
        has (deleted while a watch was away: a re-list reports no deletions); an object
        newer than the list stays. Returns the BEMServices whose children went."""
        def gone(body: Mapping[str, Any]) -> bool:
            meta = body["metadata"]
            version = _version(body)
            return (namespace is None or meta.get("namespace") == namespace) \
                and (meta.get("namespace", ""), meta["name"], meta.get("uid", "")) not in present \
                and listed_at is not None and version is not None and version <= listed_at
        touched: set[Key] = set()
        with self._lock:
            if kind == BEMSERVICE.key:
                for key in [k for k, body in self._bemservices.items() if gone(body)]:
                    del self._bemservices[key]
                return touched
            for parent, children in self._children.items():
                for entry in [e for e, body in children.items()
                              if (e[0], e[1]) == kind and gone(body)]:
                    del children[entry]
                    touched.add(parent)
        return touched

    def bemservice(self, key: Key) -> Mapping[str, Any] | None:
        with self._lock:
            return self._bemservices.get(key)

    def keys(self) -> list[Key]:
        """Every BEMService, and every service a BEMCheckpoint names (it may not exist)."""
        with self._lock:
            named = (parent for parent, children in self._children.items()
                     if any((api_version, kind) == BEMCHECKPOINT.key
                            for api_version, kind, _ in children))
            return list(dict.fromkeys([*self._bemservices, *named]))

    def get(self, kind: KindKey, namespace: str, parent: str, name: str
            ) -> Mapping[str, Any] | None:
        """A child (or pod) of `parent` by kind and name, as last watched or written."""
        with self._lock:
            return self._children.get((namespace, parent), {}).get((*kind, name))

    def children(self, namespace: str, parent: str,
                 kind: KindKey | None = None) -> list[Mapping[str, Any]]:
        """Everything labelled for `parent` (of one kind when given), pods included."""
        with self._lock:
            bodies = list(self._children.get((namespace, parent), {}).items())
        return [body for (api_version, kind_name, _), body in bodies
                if kind is None or (api_version, kind_name) == kind]

    def pods(self, namespace: str, parent: str) -> list[Mapping[str, Any]]:
        return self.children(namespace, parent, POD.key)


# The metadata that, with the spec, says what a BEMService asks for (status aside), and what
# a child declares (only its status differs otherwise).
_INTENT = ("generation", "labels", "annotations", "deletionTimestamp", "uid")
_DECLARATION = ("generation", "labels", "annotations", "ownerReferences")


def _same(old: Mapping[str, Any], new: Mapping[str, Any], fields: tuple[str, ...]) -> bool:
    """Whether two versions of an object have the same spec and metadata `fields`."""
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    return old.get("spec") == new.get("spec") and all(
        old_meta.get(field) == new_meta.get(field) for field in fields)


def _slim(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the reconcile reads of an object (about a third of a Deployment): of a pod only
    its name, config hash, deletion mark and status; of managedFields only the operator's
    hold on spec.replicas, where the hand-over reads it (read_back), else none."""
    meta = body.get("metadata") or {}
    if kind_of(body) == POD.key:
        annotations = meta.get("annotations") or {}
        return {
            "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {key: meta[key] for key in ("name", "namespace", "uid", "labels",
                                                    "resourceVersion", "deletionTimestamp")
                         if key in meta}
            | {"annotations": {k: v for k, v in annotations.items()
                               if k == CONFIG_HASH_ANNOTATION}},
            "status": {key: value for key, value in (body.get("status") or {}).items()
                       if key in ("phase", "conditions", "containerStatuses",
                                  "initContainerStatuses", "podIP")},
        }
    if "managedFields" not in meta:
        return body
    kind = child_kind(*kind_of(body))
    kept = [_replicas_hold(entry) for entry in meta["managedFields"]
            if kind is not None and kind.read_back and _holds_replicas(entry)]
    slim_meta = {k: v for k, v in meta.items() if k != "managedFields"}
    if kept:
        slim_meta["managedFields"] = kept
    return {**body, "metadata": slim_meta}


def _holds_replicas(entry: Mapping[str, Any]) -> bool:
    return entry.get("operation") == "Apply" and "f:replicas" in (
        ((entry.get("fieldsV1") or {}).get("f:spec")) or {})


def _replicas_hold(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"manager": entry.get("manager"), "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}}


class WorkQueue:
    """client-go's work queue on one asyncio loop: a key waits at most once, is never handed
    to two workers at once (added while it is processed, it is handed out again after), and
    a key that keeps failing waits a delay that doubles each time, up to `max_delay`."""

    def __init__(self, base_delay: float = 1.0, max_delay: float = 60.0) -> None:
        self._ready: asyncio.Queue[Key] = asyncio.Queue()
        self._waiting: dict[Key, str] = {}  # queued or ready, with the reason it came first
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._processing: set[Key] = set()
        self._dirty: dict[Key, str] = {}  # added while processing
        self._failures: dict[Key, int] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay

    def add(self, key: Key, reason: str, delay: float = 0.0) -> None:
        if delay > 0:
            if key not in self._timers and key not in self._waiting:
                self._timers[key] = asyncio.get_running_loop().call_later(
                    delay, self._fire, key, reason)
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._dirty.setdefault(key, reason)
        elif key not in self._waiting:
            self._waiting[key] = reason
            self._ready.put_nowait(key)

    def _fire(self, key: Key, reason: str) -> None:
        self._timers.pop(key, None)
        self.add(key, reason)

    async def get(self) -> tuple[Key, str]:
        key = await self._ready.get()
        reason = self._waiting.pop(key)
        self._processing.add(key)
        return key, reason

    def done(self, key: Key) -> None:
        self._processing.discard(key)
        reason = self._dirty.pop(key, None)
        if reason is not None:
            self.add(key, reason)

    def retry(self, key: Key) -> float:
        """Queues a failed key again after its backoff; returns the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(self._base_delay * 2 ** (failures - 1), self._max_delay)
        self.add(key, "retry", delay)
        return delay

    def forget(self, key: Key) -> None:
        """A key that succeeded (or will only be retried by the periodic check)."""
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._waiting) + len(self._timers) + len(self._dirty)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


class Controller:
    """One per process: the cache, the queue, the workers and the periodic check."""

    def __init__(self, api: KubeApi, settings: OperatorSettings,
                 metrics: OperatorMetrics | None = None) -> None:
        self.api = api
        self.settings = settings
        self.metrics = metrics or OperatorMetrics()
        self.connection = ConnectionState(
            on_error=lambda kind: self.metrics.api_errors.labels(kind=kind).inc())
        api.connection = self.connection
        api.on_apply = lambda kind: self.metrics.applies.labels(kind=kind).inc()
        self.cache = Cache()
        self.reconciler = Reconciler(api, self.cache, settings.runtime_image,
                                     prometheus_address=settings.prometheus_address,
                                     admin=RuntimeAdmin(), operator_pods=settings.operator_pods)
        self.queue: WorkQueue | None = None  # made on the loop, when leading starts
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="reconcile")
        self._tasks: list[asyncio.Task[None]] = []
        self._warned: dict[Key, str] = {}  # the failure last logged per BEMService
        self._outages_seen = 0
        self._relists_due = 0  # periodic checks that list again after an outage
        self._checks = 0
        self.watches: Watches | None = None  # the children's and pods' (watches.py)

    def watch(self, watches: Watches) -> None:
        """Starts the watches of the children and pods, feeding this controller (called on
        the loop, once, whether or not this replica leads)."""
        self.watches = watches
        watches.start(self, asyncio.get_running_loop())

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event (kopf's handlers, the reflectors; a listed object has no type):
        into the cache, and its BEMService queued."""
        self.connection.ok()  # a watch event: the API server is there
        key = self.cache.observe(event_type, body)
        self.metrics.watch_events.labels(kind=body.get("kind", ""),
                                         outcome="dropped" if key is None else "queued").inc()
        if key is None:
            if event_type == "DELETED" and kind_of(body) == BEMSERVICE.key:
                self._warned.pop(key_of(body), None)
            return
        if self.queue is not None:
            if kind_of(body) == BEMSERVICE.key:
                self.queue.add(key, "spec")
            else:  # a burst of child and pod events (a rollout) is one reconcile
                self.queue.add(key, "child", self.settings.child_event_delay_seconds)

    def on_list(self, kind: KindKey, namespace: str | None, items: list[dict[str, Any]],
                listed_at: str) -> None:
        """A reflector's list: each object as if watched, then what the list lacks dropped
        (deleted while its watch was away), its BEMService queued."""
        for body in items:
            self.on_event(None, body)
        present = {(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""))
                   for meta in (body.get("metadata") or {} for body in items)}
        at = int(listed_at) if listed_at.isdigit() else None
        for key in self.cache.prune(kind, present, at, namespace):
            logger.info("Found a child of BEMService %s/%s deleted while a watch was away", *key)
            if self.queue is not None:
                self.queue.add(key, "child", self.settings.child_event_delay_seconds)

    @property
    def leading(self) -> bool:
        return self.queue is not None

    async def start_leading(self) -> None:
        """Starts the workers and the periodic check once the cache holds what the API
        server has; every cached BEMService is checked."""
        if self.queue is not None:
            return
        await self._sync_cache()
        self.queue = WorkQueue()
        for key in self.cache.keys():
            self.queue.add(key, "resync")
        self._tasks = [asyncio.create_task(self._work(), name=f"worker-{i}")
                       for i in range(self.settings.workers)]
        self._tasks.append(asyncio.create_task(self._resync_forever(), name="resync"))

    async def stop_leading(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.queue is not None:
            self.queue.close()
        self.queue = None

    async def close(self) -> None:
        await self.stop_leading()
        if self.watches is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.watches.stop)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _work(self) -> None:
        assert self.queue is not None
        queue = self.queue
        while True:
            key, reason = await queue.get()
            try:
                await self.reconcile(key, reason, queue)
            finally:
                queue.done(key)
                self.metrics.queue_depth.set(len(queue))

    async def reconcile(self, key: Key, reason: str, queue: WorkQueue) -> None:
        """One reconcile of `key` in a worker thread; failures are queued again, and none
        ends the worker that runs it."""
        loop = asyncio.get_running_loop()
        try:
            with self.metrics.timed(reason) as outcome:
                try:
                    result = await loop.run_in_executor(self.executor,
                                                        self.reconciler.reconcile, key)
                except RetryableError as exc:
                    outcome[0] = "retry"
                    self._warn_once(key, str(exc))
                    if exc.rejected:  # status and event say it; the periodic check retries
                        queue.forget(key)
                    else:
                        queue.retry(key)
                    return
                if result is not None and result.invalid:
                    outcome[0] = "invalid_spec"
        except Exception:  # counted as "error" by timed(); a bug, retried with backoff
            logger.exception("Unexpected failure reconciling BEMService %s/%s", *key)
            queue.retry(key)
            return
        queue.forget(key)
        if self._warned.pop(key, None) is not None:
            logger.info("Reconciled BEMService %s/%s again", *key)

    def _warn_once(self, key: Key, message: str) -> None:
        """One WARNING per BEMService and failure (retries say the same), none in an outage
        (the connection's one WARNING says it)."""
        if self.connection.down or self._warned.get(key) == message:
            logger.debug("Deferred BEMService %s/%s: %s", *key, message)
            return
        self._warned[key] = message
        logger.warning("Deferred BEMService %s/%s: %s; retrying", *key, message)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            await self.resync_once()

    async def resync_once(self) -> None:
        """The periodic level check: every BEMService is queued; a settled one costs no
        request (its children are compared with the cache). One request a period tells an
        outage (and its end) even when nothing changes. After an outage, and every
        `relist_seconds`, the cache is also checked against a list of names (metadata only,
        one request per kind) for kopf's kinds: its watch that was away reports no
        deletions (the reflectors find theirs with each list)."""
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(self.executor, self.api.reachable):
            return  # logged once by the connection state; the next period tries again
        self._checks += 1
        if self.connection.outages != self._outages_seen:
            self._outages_seen = self.connection.outages
            self._relists_due = 2  # now, and once more after kopf's watches are surely back
        every = max(1, round(self.settings.relist_seconds / self.settings.resync_seconds))
        if self._relists_due or self._checks % every == 0:
            self._relists_due = max(0, self._relists_due - 1)
            await loop.run_in_executor(self.executor, self.relist)
        if self.queue is not None:
            for key in self.cache.keys():
                self.queue.add(key, "resync")

    async def _sync_cache(self) -> None:
        """Waits until a list of every kind the reconcile reads is in the cache (client-go's
        WaitForCacheSync). The watches make their first lists beside the start of leading,
        in no order: a reconcile that saw a BEMService but not yet its BEMCheckpoints would
        unload them from every pod and empty the start list its new pods mount. kopf's kinds
        are listed here, retried until the API server answers; each reflector's first list
        is its own (retried by it)."""
        loop = asyncio.get_running_loop()
        delay = 0.5
        while True:
            try:
                await loop.run_in_executor(self.executor, self.sync_cache)
                break
            except ApiError as exc:
                logger.warning("Failed to list what the operator reconciles (%s); "
                               "retrying in %.0fs before reconciling", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        if self.watches is not None:
            await self.watches.wait_synced()

    def _listed_kinds(self) -> list[tuple[Any, str | None]]:
        """Each kind the reconcile reads that no reflector watches (every one without
        reflectors: tests of the controller alone), with its label selector. A reflector
        lists its own kind and finds its deletions itself (watches.py)."""
        reflected = {kind.key for kind in self.watches.kinds} if self.watches else set()
        kinds = [(BEMSERVICE, None), (BEMCHECKPOINT, None), (POD, OWNER_LABEL),
                 *((kind, OWNER_LABEL) for kind in CHILD_REGISTRY if self.api.serves(kind))]
        return [(kind, selector) for kind, selector in kinds if kind.key not in reflected]

    def sync_cache(self) -> None:
        """Lists into the cache the kinds no reflector lists (blocking)."""
        for kind, selector in self._listed_kinds():
            self.cache.fill(self.api.list_objects(kind, selector, self.settings.namespaces))

    def relist(self) -> None:
        """Drops from the cache what the API server no longer has (blocking)."""
        for kind, selector in self._listed_kinds():
            try:
                listed_at, present = self.api.list_present(kind, selector, self.settings.namespaces)
            except ApiError as exc:
                logger.debug("Failed to list %s to check the cache: %s", kind.plural, exc)
                continue
            for key in self.cache.prune(kind.key, present, listed_at):
                logger.info("Found a child of BEMService %s/%s deleted while a watch was "
                            "away", *key)
