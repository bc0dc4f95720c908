"""Per-client token bucket (client = API key, or the client address when auth is off) and who
the client address is behind trusted proxies."""
from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Iterable

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


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    """The client address of a request: the peer, unless the peer is a trusted proxy (a
    Gateway's pod); then the right-most X-Forwarded-For hop outside the trusted networks.
    Hops to its left were written by whoever sent the request, so they cannot pick the bucket."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

    def _trusted(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip in net for net in self._networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str]) -> str:
        """`forwarded_for`: every X-Forwarded-For header value, in order."""
        if not self._trusted(_address(peer)):
            return str(peer)
        hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
        client = str(peer)
        for hop in reversed(hops):
            ip = _address(hop)
            if ip is None:
                break  # a malformed hop: keep the last proxy that vouched for the chain
            client = str(ip)
            if not self._trusted(ip):
                break
        return client


def _address(text: str | None) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text or "")
    except ValueError:
        return None
