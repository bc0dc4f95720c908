"""spec.gateway on a cluster that does not serve Gateway API: the BEMService is Degraded with a
reason that says so and what to install. The module removes the CRDs where an earlier module
(test_operator_gateway.py) or an earlier run on a reused cluster installed them, before its
operator starts; later modules do not use Gateway API."""
from __future__ import annotations

from typing import Any

import pytest
from operator_support import HTTP_ROUTES, Kube, bemservice, condition, eventually, remove_gateway_api

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def gateway_api_absent(cluster: Any) -> None:
    remove_gateway_api(cluster)


def test_gateway_without_gateway_api_is_degraded_with_a_clear_reason(kube: Kube) -> None:
    kube.apply(bemservice("nogw", gateway={"parentRefs": [{"name": "edge"}]}))
    bems = eventually("Degraded: Gateway API not installed", lambda: (
        b := kube.get("bemservices", "nogw")) and (b.get("status") or {}).get("conditions") and
        condition(b, "Degraded")["reason"] == "GatewayAPINotInstalled" and b)
    degraded = condition(bems, "Degraded")
    assert degraded["status"] == "True"
    assert "does not serve gateway.networking.k8s.io/v1 HTTPRoute" in degraded["message"]
    assert "or use spec.ingress" in degraded["message"]
    assert condition(bems, "Gateway")["reason"] == "GatewayAPINotInstalled"
    assert bems["status"]["phase"] == "Degraded"
    assert any(e["reason"] == "GatewayAPINotInstalled" for e in kube.events_for("nogw"))
    # The rest of the service is there all the same.
    assert kube.get("deployment", "nogw") is not None
    assert kube.kubectl("get", HTTP_ROUTES, check=False).returncode != 0
