"""spec.gateway.rateLimit and HSTS on a real API server with Gateway API's CRDs and Traefik's
own Middleware CRD (from Traefik's Go module) installed. No Traefik runs here: the API server
checks the Middleware and the HTTPRoute the operator writes against the real schemas and
stores them; the real-pod tier sends traffic through Traefik.
test_operator_gateway_ratelimit_absent.py covers a cluster without the Middleware CRD."""
from __future__ import annotations

from typing import Any

import pytest
from operator_support import (HTTP_ROUTES, MIDDLEWARES, Kube, bemservice, condition, eventually,
                              install_gateway_api, install_traefik_middleware_crd,
                              is_controlled_by)

pytestmark = pytest.mark.e2e
GATEWAY = {"parentRefs": [{"name": "edge", "namespace": "edge", "sectionName": "https"}],
           "hostnames": ["bem.example.com"]}
HSTS = {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [
    {"name": "Strict-Transport-Security", "value": "max-age=31536000; includeSubDomains"}]}}
RATE_LIMIT_REF = {"type": "ExtensionRef", "extensionRef": {
    "group": "traefik.io", "kind": "Middleware", "name": "limited-ratelimit"}}


@pytest.fixture(scope="module", autouse=True)
def edge_crds_served(cluster: Any) -> None:
    """Before the module's operator starts, so that it watches both kinds from the start."""
    install_gateway_api(cluster)
    install_traefik_middleware_crd(cluster)


def _filters(kube: Kube, want: list[dict[str, Any]]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        route = kube.get(HTTP_ROUTES, "limited")
        found = route and route["spec"]["rules"][0].get("filters")
        return route if (found or []) == want else None
    return eventually(f"the HTTPRoute's filters {[f['type'] for f in want]}", probe)


def test_rate_limit_middleware_is_written_named_by_the_route_and_removed(kube: Kube) -> None:
    kube.apply(bemservice("limited", gateway={**GATEWAY, "rateLimit": {"average": 20, "burst": 40}}))
    middleware = eventually("the Middleware", lambda: kube.get(MIDDLEWARES, "limited-ratelimit"))
    bems = kube.get("bemservices", "limited")
    assert is_controlled_by(middleware, bems)
    # Stored by Traefik's own schema as written: Traefik keys it on the remote address.
    assert middleware["spec"] == {"rateLimit": {"average": 20, "burst": 40, "period": "1s"}}
    # HSTS (the default year) first, so the rate limit's 429s carry it too.
    route = _filters(kube, [HSTS, RATE_LIMIT_REF])
    assert is_controlled_by(route, bems)
    bems = eventually("the Gateway condition", lambda: (
        b := kube.get("bemservices", "limited")) and any(
            c["type"] == "Gateway" for c in (b.get("status") or {}).get("conditions") or []) and b)
    assert condition(bems, "Gateway")["reason"] == "GatewayPending"
    assert condition(bems, "Degraded")["reason"] != "RateLimitUnsupported"

    # Drift: a deleted Middleware comes back (the operator watches Middlewares).
    uid = middleware["metadata"]["uid"]
    kube.kubectl("delete", MIDDLEWARES, "limited-ratelimit")
    eventually("the Middleware recreated", lambda: (
        m := kube.get(MIDDLEWARES, "limited-ratelimit")) and m["metadata"]["uid"] != uid)

    kube.patch("bemservices", "limited", {"spec": {"gateway": {"rateLimit": None}}})
    eventually("the Middleware deleted",
               lambda: kube.get(MIDDLEWARES, "limited-ratelimit") is None, timeout=30)
    _filters(kube, [HSTS])

    kube.patch("bemservices", "limited", {"spec": {"gateway": {"hstsMaxAgeSeconds": 0}}})
    _filters(kube, [])
