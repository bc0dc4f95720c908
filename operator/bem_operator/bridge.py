"""Glue between kopf and the blocking reconcile: threads, locking, metrics, events.

kopf's error types are raised here so that handlers.py stays declarations only.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from bem_operator.children import Change, ChildIndex, parent_of
from bem_operator.coordinator import Coordinator, Key
from bem_operator.events import Event, EventDeduplicator
from bem_operator.k8s import ApiError, KubeApi
from bem_operator.metrics import OperatorMetrics
from bem_operator.outage import ConnectionState
from bem_operator.reconcile import InvalidSpec, Reconciler, Result, RetryableError
from bem_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)
RETRY_DELAY_SECONDS = 10


class KopfBridge:
    """The operator's side of kopf: one per process, shared by every handler (handlers.py)."""

    def __init__(self, api: KubeApi, settings: OperatorSettings,
                 metrics: OperatorMetrics | None = None, workers: int = 8) -> None:
        self.api = api
        self.settings = settings
        self.metrics = metrics or OperatorMetrics()
        self.connection = ConnectionState(
            on_error=lambda kind: self.metrics.api_errors.labels(kind=kind).inc())
        if api is not None:
            api.connection = self.connection
        self.events = EventDeduplicator()
        self._resync_task: asyncio.Task[None] | None = None
        self._warned: dict[Key, str] = {}  # the last failure logged per BEMService
        self.index = ChildIndex()
        self.parents: dict[Key, Mapping[str, Any]] = {}  # latest BEMService bodies seen
        self.reconciler = Reconciler(api, self.index, settings.runtime_image,
                                     prometheus_address=settings.prometheus_address)
        self.coordinator = Coordinator(self._reconcile_fetched, settings.child_event_delay_seconds)
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="reconcile")

    async def reconcile(self, body: Mapping[str, Any], trigger: str, *,
                        report_invalid: bool = True) -> None:
        """The one reconcile behind create, update, resume and the timer."""
        snapshot = copy.deepcopy(dict(body))  # kopf may swap the body while a thread reads it
        key = (snapshot["metadata"]["namespace"], snapshot["metadata"]["name"])
        try:
            await self.coordinator.run(key, lambda: self._run(snapshot, trigger))
            self._clear_warning(key)
        except InvalidSpec as exc:
            if report_invalid:  # the status says it already; the event and error say it once
                self.post(snapshot, [("Warning", "InvalidSpec", str(exc))])
                raise kopf.PermanentError(str(exc)) from exc
            logger.debug("Skipped the timer of BEMService %s/%s: %s", *key, exc)
        except RetryableError as exc:
            self.post(snapshot, exc.events)
            self._warn_once(key, str(exc))
            if exc.rejected:  # status and event say it; the periodic check tries again
                return
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS) from exc

    def _warn_once(self, key: Key, message: str) -> None:
        """One WARNING per BEMService and failure (retries say the same), none in an outage
        (the connection's one WARNING says it)."""
        if self.connection.down or self._warned.get(key) == message:
            logger.debug("Deferred BEMService %s/%s: %s", *key, message)
            return
        self._warned[key] = message
        logger.warning("Deferred BEMService %s/%s: %s; retrying", *key, message)

    def _clear_warning(self, key: Key) -> None:
        if self._warned.pop(key, None) is not None:
            logger.info("Reconciled BEMService %s/%s again", *key)

    def post(self, bems: Mapping[str, Any], events: list[Event]) -> None:
        """Posts events about a BEMService, each (type, reason, message) once per window."""
        uid = bems["metadata"].get("uid", "")
        for event_type, reason, message in events:
            if self.events.admit(uid, (event_type, reason, message)):
                kopf.event(bems, type=event_type, reason=reason, message=message)

    def pod_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A runtime pod changed: refresh its BEMService's status (never a full reconcile)."""
        self.connection.ok()
        self.index.observe_pod(event_type, body)
        parent = parent_of(body)
        if parent is not None:
            self.coordinator.request(parent, full=False)

    def start_resync(self) -> None:
        """The periodic level check, as a task of our own: kopf's timers would put a finalizer
        on every BEMService, and then nothing can be deleted while the operator is away."""
        if self._resync_task is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # called outside the operator's loop (tests): nothing to run
                return
            self._resync_task = asyncio.create_task(self._resync_forever(), name="resync")

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            await self.resync_once()

    async def resync_once(self) -> None:
        """Reconciles every known BEMService once (drift correction, retries, API recovery)."""
        if self.connection.down:
            loop = asyncio.get_running_loop()
            if not await loop.run_in_executor(self.executor, self.api.reachable):
                return  # still down: the outage was logged once, nothing to add
        keys = [key for key, body in self.parents.items()
                if not body["metadata"].get("deletionTimestamp")]
        await asyncio.gather(*(self._resync(key) for key in keys))

    async def _resync(self, key: Key) -> None:
        body = self.parents.get(key)
        if body is None:
            return
        try:
            await self.reconcile(body, trigger="timer", report_invalid=False)
        except kopf.TemporaryError as exc:  # logged once by reconcile already
            logger.debug("Retrying BEMService %s/%s at the next check: %s", *key, exc)
        except Exception:  # never let one object stop the periodic check of the others
            logger.exception("Unexpected failure in the periodic check of BEMService %s/%s",
                             *key)

    def parent_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Keeps the latest BEMService bodies, so child events need no GET of the parent."""
        self.connection.ok()  # a watch event: the API server is there
        self.start_resync()  # here, in kopf's context, so that the task can post events
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self._warned.pop(key, None)
            self.parents.pop(key, None)
            self.reconciler.forget(meta.get("uid", ""))
            self.events.forget(meta.get("uid", ""))
        else:
            self.parents[key] = body

    def child_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A labelled child changed: reconcile its parent soon (drift correction), or only
        refresh the parent's status when just the child's status moved."""
        self.connection.ok()
        change = self.index.classify(event_type, body)
        self.index.observe(event_type, body)
        parent = parent_of(body)
        if parent is not None and change is not Change.OWN_WRITE:
            self.coordinator.request(parent, full=change is Change.CHANGED)

    async def close(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()
            await asyncio.gather(self._resync_task, return_exceptions=True)
        await self.coordinator.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, bems: dict[str, Any], trigger: str) -> Result:
        loop = asyncio.get_running_loop()
        with self.metrics.timed(trigger):
            result = await loop.run_in_executor(self.executor, self.reconciler.reconcile, bems)
        self.post(bems, result.events)
        return result

    async def _reconcile_fetched(self, key: Key, full: bool) -> None:
        """Called by the coordinator (lock held) after child events."""
        cached = self.parents.get(key)
        bems = copy.deepcopy(dict(cached)) if cached is not None else await self._fetch(key)
        if bems is None or bems["metadata"].get("deletionTimestamp"):
            return  # gone or going: garbage collection removes the children
        try:
            if not full and await self._refresh(bems):
                return
            await self._run(bems, "child")
        except InvalidSpec:
            pass  # reported in status by the reconcile; a spec change triggers the next one
        except RetryableError as exc:
            self.post(bems, exc.events)
            self._warn_once(key, str(exc))

    async def _refresh(self, bems: dict[str, Any]) -> bool:
        """Status-only update from the watched Deployment; False when a full run is needed."""
        meta = bems["metadata"]
        deployment = self.index.deployment(meta["namespace"], meta["name"])
        if deployment is None:
            return False
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.executor, self.reconciler.refresh_status,
                                            bems, copy.deepcopy(dict(deployment)))
        if result is None:
            return False
        self.post(bems, result.events)
        return True

    async def _fetch(self, key: Key) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, self.api.get_bemservice, *key)
        except ApiError as exc:
            self.metrics.errors.labels(kind="child_event").inc()
            log = logger.debug if self.connection.down else logger.warning
            log("Failed to read BEMService %s/%s after a child changed: %s", *key, exc)
            return None
