"""Serialises reconciles per BEMService and coalesces bursts of child events.

kopf runs a parent's handlers one at a time, but child events arrive on other
objects' streams; without this, two reconciles of one parent could race.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bem_operator.outage import is_network_error

logger = logging.getLogger(__name__)
Key = tuple[str, str]  # namespace, name
T = TypeVar("T")


class Coordinator:
    def __init__(self, on_request: Callable[[Key, bool], Awaitable[None]], delay: float) -> None:
        self._on_request = on_request
        self._delay = delay
        self._locks: weakref.WeakValueDictionary[Key, asyncio.Lock] = weakref.WeakValueDictionary()
        self._pending: dict[Key, bool] = {}  # key -> whether a full reconcile was asked for
        self._tasks: set[asyncio.Task[None]] = set()

    def _lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def run(self, key: Key, action: Callable[[], Awaitable[T]]) -> T:
        """Runs `action` for `key` once no other reconcile of the same key is running."""
        lock = self._lock(key)  # held by this frame: the weak entry lives while we wait
        async with lock:
            return await action()

    def request(self, key: Key, full: bool = True) -> None:
        """Asks for a reconcile of `key` soon (`full=False`: a status refresh is enough);
        requests in the same window merge, a full one wins."""
        if key in self._pending:
            self._pending[key] = self._pending[key] or full
            return
        self._pending[key] = full
        task = asyncio.create_task(self._delayed(key), name=f"reconcile {key[0]}/{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delayed(self, key: Key) -> None:
        await asyncio.sleep(self._delay)
        # Leave the pending set before running: events during the run ask again.
        full = self._pending.pop(key, True)
        try:
            await self.run(key, lambda: self._on_request(key, full))
        except Exception as exc:  # the timer retries; one failed child-triggered run is not fatal
            if is_network_error(exc):  # an outage: logged once by the connection state
                logger.debug("Deferred BEMService %s/%s: %s", *key, exc)
            else:
                logger.exception("Failed to reconcile BEMService %s/%s after a child changed",
                                 *key)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
