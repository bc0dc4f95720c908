"""What the app holds at run time, under one typed AppKey (aiohttp's recommended pattern)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bem_runtime.auth import ApiKeys
from bem_runtime.metrics import Metrics
from bem_runtime.ratelimit import TokenBuckets, TrustedProxies
from bem_runtime.registry import Registry
from bem_runtime.scheduler import Scheduler
from bem_runtime.settings import Settings

if TYPE_CHECKING:  # redis is only imported when a cache is configured
    from bem_runtime.cache import ResponseCache


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    keys: ApiKeys
    buckets: TokenBuckets
    registry: Registry
    admin_token: str | None = None  # None: the admin API is off
    admin_token_read_at: float = 0.0  # monotonic time of the last re-read (admin._reread_token)
    proxies: TrustedProxies = field(default_factory=lambda: TrustedProxies(()))
    engine: Any = None  # bem_runtime.model.Engine once loaded
    scheduler: Scheduler | None = None
    cache: ResponseCache | None = None
    loaded: bool = False  # the base model is loaded and warm: requests may run
    draining: bool = False
    load_error: BaseException | None = None
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def not_ready_reason(self) -> str | None:
        """Why GET /ready is 503, None when it is 200: a pod takes traffic only once its base
        model and every checkpoint of its start list have loaded (or failed and been dropped)."""
        if self.draining:
            return "draining"
        if self.load_error is not None:
            return "failed"
        if not self.loaded or self.registry.loading():
            return "loading"
        return None

    def enter(self) -> None:
        self.inflight += 1
        self.idle.clear()
        self.metrics.active.inc()

    def leave(self) -> None:
        self.inflight -= 1
        self.metrics.active.dec()
        if self.inflight == 0:
            self.idle.set()


STATE = web.AppKey("bem_state", AppState)
