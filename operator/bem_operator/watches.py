"""The watches of what the operator owns and reads: every child kind and the runtime pods,
each by the owner label, filtered in the API server. kopf watches only the two custom
resources (handlers.py); these kinds bring nearly all the events (a new BEMService's
rollout is about 17 of them), and kopf gave each its per-object machinery (a stream and a
worker per object, bodies, handler matching). Here an event costs its JSON decoding and the
cache's look. In a burst of 1000 BEMServices the operator's CPU fell from about 34 to 30 s
and its RSS from 179 to 158 MB (bench/bench_operator.py).

One `Reflector` per kind and namespace, in a thread of its own (client-go's reflector):
list, hand the list to the controller, watch from the list's resourceVersion with
bookmarks; a watch the server ends is opened again from the last version seen; a version
the server no longer has (410) means a new list. Every list says what is gone too: the
controller drops what it no longer has (a deletion missed while away). Everything reaches
the controller on its event loop, in the order read. A lost connection is retried with a
growing delay and told once by the connection state (outage.py), never per attempt.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from bem_operator.builders.kinds import CHILD_REGISTRY, READ_REGISTRY
from bem_operator.constants import OWNER_LABEL
from bem_operator.k8s import ApiError, KubeApi

logger = logging.getLogger(__name__)

# Every kind watched here, by the owner label: the children, then the runtime pods (only
# read: their container states say whether the model loaded).
WATCHED_KINDS: tuple[Any, ...] = (*CHILD_REGISTRY, *(k for k in READ_REGISTRY if k.watched))


def served_kinds(unserved: Iterable[str]) -> tuple[Any, ...]:
    """The watched kinds less those whose optional CRD the cluster does not serve."""
    skipped = frozenset(unserved)
    return tuple(kind for kind in WATCHED_KINDS if kind.kind not in skipped)


RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)  # then 8 s each time, until an answer


class Sink(Protocol):
    """What the reflectors tell, on the event loop (the controller)."""

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None: ...

    def on_list(self, kind: tuple[str, str], namespace: str | None,
                items: list[dict[str, Any]], listed_at: str) -> None: ...


class Reflector:
    """list-then-watch of one kind in one namespace (None: all), in its own thread."""

    def __init__(self, api: KubeApi, kind: Any, namespace: str | None, sink: Sink,
                 loop: asyncio.AbstractEventLoop, *, timeout_seconds: int,
                 read_timeout: float, sleep: Callable[[float], bool] | None = None) -> None:
        self.api, self.kind, self.namespace = api, kind, namespace
        self._sink, self._loop = sink, loop
        self._timeout_seconds, self._read_timeout = timeout_seconds, read_timeout
        self._stopping = threading.Event()
        # Waits a retry delay; True when stopped meanwhile.
        self._sleep = sleep or self._stopping.wait
        self._response: Any = None
        self.synced = asyncio.Event()  # set on the loop once the first list is in the cache
        where = f" in {namespace}" if namespace else ""
        self.name = f"watch-{kind.plural}{where}"
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._warned: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # wakes the thread blocked on its read
            except Exception:  # already closed, or an older urllib3
                logger.debug("Closing the %s stream", self.name, exc_info=True)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def run(self) -> None:
        version: str | None = None  # None: list first
        failures = 0
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
                failures = 0
                self._warned = None
            except ApiError as exc:
                if self._stopping.is_set():
                    return
                if exc.status == 410:  # compacted: what follows the version is gone
                    version = None
                    continue
                if exc.status != 0 and exc.status < 500 and exc.status != 429 \
                        and self._warned != exc.message:  # told once; outages by the state
                    self._warned = exc.message
                    logger.warning("Failed to watch %s: %s; retrying", self.kind.plural, exc)
                failures += 1
                if self._sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1]):
                    return
            except Exception:  # a bug: said, and the watch goes on after a pause
                logger.exception("Unexpected failure watching %s", self.kind.plural)
                failures += 1
                version = None
                if self._sleep(RETRY_DELAYS[-1]):
                    return

    def _list(self) -> str:
        version, items = self.api.list_to_watch(self.kind, OWNER_LABEL, self.namespace)
        self._post(self._sink.on_list, self.kind.key, self.namespace, items, version)
        self._post(self.synced.set)
        return version

    def _watch(self, version: str) -> str:
        """Watches from `version` until the server ends the watch; returns the last version
        seen (an event's or a bookmark's)."""
        events = self.api.watch(self.kind, OWNER_LABEL, self.namespace, version,
                                self._timeout_seconds, self._read_timeout,
                                opened=self._opened)
        try:
            for event_type, body in events:
                version = (body.get("metadata") or {}).get("resourceVersion") or version
                if event_type != "BOOKMARK":
                    self._post(self._sink.on_event, event_type, body)
        finally:
            self._response = None
        return version

    def _opened(self, response: Any) -> None:
        self._response = response
        if self._stopping.is_set():
            self.stop()

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed: the process is ending
            self._stopping.set()


class Watches:
    """Every reflector of the process: each kind the cluster serves, in each namespace the
    operator watches (or in all). Started once at startup and kept while the process runs,
    on a standby too (its cache stays warm)."""

    def __init__(self, api: KubeApi, kinds: Iterable[Any], namespaces: tuple[str, ...],
                 *, timeout_seconds: int, read_timeout: float) -> None:
        self.api = api
        self.kinds = tuple(kinds)
        self.namespaces = namespaces
        self._timeouts = {"timeout_seconds": timeout_seconds, "read_timeout": read_timeout}
        self.reflectors: list[Reflector] = []

    def start(self, sink: Sink, loop: asyncio.AbstractEventLoop) -> None:
        self.reflectors = [Reflector(self.api, kind, namespace, sink, loop, **self._timeouts)
                           for kind in self.kinds for namespace in self.namespaces or (None,)]
        for reflector in self.reflectors:
            reflector.start()

    async def wait_synced(self) -> None:
        """Until every reflector's first list is in the cache (retried by each until then)."""
        await asyncio.gather(*(reflector.synced.wait() for reflector in self.reflectors))

    def stop(self) -> None:
        for reflector in self.reflectors:
            reflector.stop()
        for reflector in self.reflectors:
            reflector.join(2.0)
