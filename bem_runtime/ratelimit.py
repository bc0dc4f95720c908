"""Per-client token bucket (client = API key, or the peer address when auth is off)."""
from __future__ import annotations

import time
from collections import OrderedDict

from bem_runtime.errors import RateLimited

MAX_CLIENTS = 10_000  # bounded memory: least recently seen clients are forgotten


class TokenBuckets:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float | None = None) -> None:
        """Spend one token for `client` or raise RateLimited with the wait until the next one."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._remember(client, tokens, now)
            wait = (1.0 - tokens) / self.rate
            raise RateLimited(f"rate limit of {self.rate:g} requests/s (burst {self.burst:g}) "
                              f"exceeded; retry in {wait:.1f} s", retry_after=wait)
        self._remember(client, tokens - 1.0, now)

    def _remember(self, client: str, tokens: float, now: float) -> None:
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
