"""spec.gateway and spec.ingress on a real API server with Gateway API's standard CRDs
(sigs.k8s.io/gateway-api v1.6.3, from its Go module) installed. No Gateway controller runs
here: the API server stores the HTTPRoute the operator writes, and the test writes the route's
status as a controller would (status subresource); the BEMService's status must follow it.
test_operator_gateway_absent.py covers a cluster without the CRDs."""
from __future__ import annotations

import json
from typing import Any

import pytest
from operator_support import (HTTP_ROUTES, Kube, bemservice, condition, eventually,
                              install_gateway_api, is_controlled_by)

from bem_operator.builders import BuildOptions, build_children

pytestmark = pytest.mark.e2e
GATEWAY = {"parentRefs": [{"name": "edge", "namespace": "gateways", "sectionName": "https"}],
           "hostnames": ["bem.example.com"], "pathPrefix": "/bem"}


@pytest.fixture(scope="module", autouse=True)
def gateway_api_served(cluster: Any) -> None:
    """Before the module's operator starts, so that it watches HTTPRoutes from the start."""
    install_gateway_api(cluster)


def _route_status(accepted: str, resolved: str, reason: str) -> dict[str, Any]:
    conditions = [{"type": kind, "status": status, "reason": why, "message": f"{kind}: {why}",
                   "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}
                  for kind, status, why in (("Accepted", accepted, "Accepted"),
                                            ("ResolvedRefs", resolved, reason))]
    return {"status": {"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge",
                      "namespace": "gateways", "sectionName": "https"},
        "controllerName": "example.com/gateway-controller", "conditions": conditions}]}}


def _gateway_condition(kube: Kube, name: str, status: str, reason: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        bems = kube.get("bemservices", name)
        found = [c for c in ((bems or {}).get("status") or {}).get("conditions") or []
                 if c["type"] == "Gateway" and (c["status"], c["reason"]) == (status, reason)]
        return bems if found else None
    return eventually(f"the Gateway condition {status}/{reason}", probe)


def test_gateway_writes_an_http_route_and_reports_what_the_gateway_says(kube: Kube) -> None:
    kube.apply(bemservice("edge", gateway=GATEWAY))
    route = eventually("the HTTPRoute", lambda: kube.get(HTTP_ROUTES, "edge"))
    bems = kube.get("bemservices", "edge")
    assert is_controlled_by(route, bems)
    [built] = [c for c in build_children(bems, BuildOptions()) if c["kind"] == "HTTPRoute"]
    assert route["spec"]["parentRefs"] == built["spec"]["parentRefs"]
    assert route["spec"]["hostnames"] == ["bem.example.com"]
    [rule] = route["spec"]["rules"]
    assert rule["backendRefs"][0]["name"] == "edge" and rule["backendRefs"][0]["port"] == 8080
    assert rule["timeouts"] == {"request": "600s", "backendRequest": "600s"}
    # The Gateway's namespace may reach the pods' API port.
    policy = kube.get("networkpolicy", "edge")
    api_peers = next(r["from"] for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8080)
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}} \
        in api_peers

    # No controller has reported: said, not degraded.
    bems = _gateway_condition(kube, "edge", "False", "GatewayPending")
    assert "no Gateway controller has accepted HTTPRoute edge yet" in \
        condition(bems, "Gateway")["message"]
    assert bems["status"]["gateway"] == {
        "httpRoute": "edge", "url": "https://bem.example.com/bem",
        "parents": [{"gateway": "gateways/edge (listener https)", "accepted": "Unknown",
                     "resolvedRefs": "Unknown"}]}

    def write_route_status(body: dict[str, Any]) -> None:
        kube.kubectl("patch", HTTP_ROUTES, "edge", "--subresource=status", "--type=merge",
                     "-p", json.dumps(body))

    write_route_status(_route_status("True", "True", "ResolvedRefs"))
    bems = _gateway_condition(kube, "edge", "True", "RouteAccepted")
    assert bems["status"]["gateway"]["parents"][0]["accepted"] == "True"
    assert condition(bems, "Degraded")["status"] == "False"

    write_route_status(_route_status("True", "False", "BackendNotFound"))
    bems = eventually("Degraded for the unresolved backend", lambda: (
        b := kube.get("bemservices", "edge")) and condition(b, "Degraded")["reason"] ==
        "BackendNotFound" and b)
    assert "Gateway gateways/edge (listener https) reports ResolvedRefs False" in \
        condition(bems, "Degraded")["message"]
    assert any(e["reason"] == "BackendNotFound" for e in kube.events_for("edge"))

    kube.patch("bemservices", "edge", {"spec": {"gateway": None}})
    eventually("the HTTPRoute deleted", lambda: kube.get(HTTP_ROUTES, "edge") is None, timeout=30)
    bems = eventually("status.gateway cleared", lambda: (
        b := kube.get("bemservices", "edge")) and "gateway" not in b["status"] and b)
    assert condition(bems, "Degraded")["status"] == "False"


def test_ingress_is_written_for_clusters_without_gateway_api(kube: Kube) -> None:
    kube.apply(bemservice("ingress", ingress={
        "hosts": ["bem.example.com"], "pathPrefix": "/", "tlsSecretName": "bem-tls"}))
    ingress = eventually("the Ingress", lambda: kube.get("ingress", "ingress"))
    assert is_controlled_by(ingress, kube.get("bemservices", "ingress"))
    assert ingress["spec"]["tls"] == [{"hosts": ["bem.example.com"], "secretName": "bem-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "bem.example.com"
    assert rule["http"]["paths"][0]["backend"] == {
        "service": {"name": "ingress", "port": {"number": 8080}}}
