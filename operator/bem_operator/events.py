"""Deduplication of the Kubernetes events the operator posts (pure).

Retries, the periodic check and status refreshes can find the same problem many times a
minute; a user needs one Warning per problem, one Normal event when it clears. An event
equal (type, reason, message) to one posted for the same BEMService within `window`
seconds is dropped; after the window one reminder goes out. A `Recovered` event closes the
problems of its object: the same Warning after it is a new occurrence and is posted.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

Event = tuple[str, str, str]  # type, reason, message


class EventDeduplicator:
    def __init__(self, window: float = 600.0, clock: Callable[[], float] | None = None,
                 limit: int = 10000) -> None:
        import time
        self.window = window
        self._clock = clock or time.monotonic
        self._limit = limit
        self._posted: dict[tuple[str, str, str, str], float] = {}  # (uid, *event) -> when
        self._lock = threading.Lock()

    def admit(self, uid: str, event: Event) -> bool:
        """True when `event` about the object `uid` should be posted now."""
        now = self._clock()
        key = (uid, *event)
        with self._lock:
            if event[:2] == ("Normal", "Recovered"):
                for old in [k for k in self._posted if k[0] == uid and k[1] == "Warning"]:
                    del self._posted[old]
            last = self._posted.get(key)
            if last is not None and now - last < self.window:
                return False
            if len(self._posted) >= self._limit:
                self._expire(now)
            self._posted[key] = now
            return True

    def forget(self, uid: str) -> None:
        with self._lock:
            for key in [k for k in self._posted if k[0] == uid]:
                del self._posted[key]

    def _expire(self, now: float) -> None:
        for key in [k for k, when in self._posted.items() if now - when >= self.window]:
            del self._posted[key]
