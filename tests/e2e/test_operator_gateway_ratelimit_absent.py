"""spec.gateway.rateLimit on a cluster that serves Gateway API but not Traefik's Middleware:
the route is written without the rate limit (a dangling ExtensionRef would break it) and the
BEMService is Degraded with a reason that names the field and what to install. The module
removes the Middleware CRD where an earlier module (or run) installed it, before its operator
starts."""
from __future__ import annotations

from typing import Any

import pytest
from operator_support import (HTTP_ROUTES, MIDDLEWARES, Kube, bemservice, condition, eventually,
                              install_gateway_api, remove_traefik_middleware_crd)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def middleware_crd_absent(cluster: Any) -> None:
    install_gateway_api(cluster)
    remove_traefik_middleware_crd(cluster)


def test_rate_limit_without_the_middleware_crd_is_degraded_naming_the_field(kube: Kube) -> None:
    kube.apply(bemservice("nolimit", gateway={"parentRefs": [{"name": "edge", "namespace": "edge"}],
                                              "rateLimit": {"average": 5}}))
    bems = eventually("Degraded: RateLimitUnsupported", lambda: (
        b := kube.get("bemservices", "nolimit")) and (b.get("status") or {}).get("conditions")
        and condition(b, "Degraded")["reason"] == "RateLimitUnsupported" and b)
    degraded = condition(bems, "Degraded")
    assert degraded["status"] == "True"
    assert degraded["message"].startswith(
        "spec.gateway.rateLimit needs Traefik's traefik.io/v1alpha1 Middleware, which this "
        "cluster does not serve, so HTTPRoute nolimit was written without the rate limit")
    assert condition(bems, "Gateway")["reason"] == "RateLimitUnsupported"
    assert bems["status"]["phase"] == "Degraded"
    assert bems["status"]["gateway"]["httpRoute"] == "nolimit"
    assert any(e["reason"] == "RateLimitUnsupported" for e in kube.events_for("nolimit"))
    # The route is there, with HSTS and without the ExtensionRef.
    route = kube.get(HTTP_ROUTES, "nolimit")
    assert [f["type"] for f in route["spec"]["rules"][0]["filters"]] == ["ResponseHeaderModifier"]
    assert kube.kubectl("get", MIDDLEWARES, check=False).returncode != 0
