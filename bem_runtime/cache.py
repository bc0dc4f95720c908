"""Optional shared response cache in Redis (TTL; keys from inference.request_cache_key).

Redis trouble never reaches the client: it is logged,
counted in bem_cache_requests_total{result="error"}, and the request is served uncached.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("bem_runtime.cache")
ERROR_LOG_INTERVAL_S = 30.0  # a Redis outage must not flood the logs
SOCKET_TIMEOUT_S = 0.5


class ResponseCache:
    def __init__(self, url: str, ttl: int, metrics: Any = None) -> None:
        self.ttl = ttl
        self.metrics = metrics
        self._client = aioredis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S,
                                         socket_connect_timeout=SOCKET_TIMEOUT_S)
        self._last_error_log = 0.0

    async def get(self, key: str) -> dict | None:
        try:
            raw = await self._client.get(key)
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            return None
        self._count("hit" if raw is not None else "miss")
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:  # a foreign or truncated value: treat as a miss
            return None

    async def put(self, key: str, value: dict) -> None:
        try:
            await self._client.set(key, json.dumps(value), ex=self.ttl)
        except (RedisError, OSError) as exc:
            self._failed("write", exc)
            return
        self._count("store")

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache.labels(result).inc()

    def _failed(self, op: str, exc: Exception) -> None:
        self._count("error")
        now = time.monotonic()
        if now - self._last_error_log > ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.warning("Redis cache %s failed, serving uncached: %s", op, exc)
