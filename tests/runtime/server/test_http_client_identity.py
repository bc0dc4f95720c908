"""Who a rate-limit bucket belongs to, on a real server process: the API key when the request
carries a valid one, else the client address, which X-Forwarded-For sets only when the peer is
a trusted proxy (and then only the right-most hop outside the trusted networks)."""
from __future__ import annotations

import pytest

from .conftest import API_KEY, OTHER_KEY

pytestmark = pytest.mark.http

BURST = 3
LIMITS = ("--rate-limit", "0.01", "--rate-limit-burst", str(BURST))


def _statuses(server, n: int, **kwargs) -> list[int]:
    return [server.request("GET", "/v1/models", **kwargs).status for _ in range(n)]


def _xff(value: str) -> dict[str, str]:
    return {"X-Forwarded-For": value}


def test_two_api_keys_behind_one_proxy_are_limited_separately(start_server):
    srv = start_server(*LIMITS, "--trusted-proxies", "127.0.0.1/32")
    assert _statuses(srv, BURST + 1, key=API_KEY) == [200] * BURST + [429]
    # Same peer, same forwarded address: the other key has a bucket of its own.
    assert _statuses(srv, BURST, key=OTHER_KEY) == [200] * BURST
    assert _statuses(srv, 1, key=OTHER_KEY, headers=_xff("203.0.113.9")) == [429]


def test_forwarded_for_from_a_trusted_proxy_picks_the_bucket(start_server):
    srv = start_server(*LIMITS, "--trusted-proxies", "127.0.0.0/8", auth=False)
    assert _statuses(srv, BURST + 1, headers=_xff("198.51.100.1")) == [200] * BURST + [429]
    assert _statuses(srv, 1, headers=_xff("198.51.100.2")) == [200]
    # A client that writes its own left-most entry still lands in the bucket of the address
    # the proxy appended.
    assert _statuses(srv, 1, headers=_xff("198.51.100.3, 198.51.100.1")) == [429]
    # Trusted hops to the right are skipped: the proxy chain 127.0.0.5 forwarded for .1.
    assert _statuses(srv, 1, headers=_xff("198.51.100.1, 127.0.0.5")) == [429]


def test_forwarded_for_from_an_untrusted_peer_is_ignored(start_server):
    srv = start_server(*LIMITS, "--trusted-proxies", "10.0.0.0/8", auth=False)
    assert _statuses(srv, BURST, headers=_xff("198.51.100.1")) == [200] * BURST
    # Every request came from 127.0.0.1, whatever it claimed.
    assert _statuses(srv, 1, headers=_xff("198.51.100.2")) == [429]
    assert _statuses(srv, 1) == [429]
