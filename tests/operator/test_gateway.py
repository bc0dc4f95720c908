"""What the HTTPRoute's Gateways report, read into status.gateway and the Gateway condition."""
from __future__ import annotations

from typing import Any

from bem_operator.gateway import GatewayObserved, gateway_condition, gateway_status, refused

EDGE = ("gateways", "edge", "https")
LOCAL = ("team-a", "local", None)


def _parent(name: str, namespace: str | None, section: str | None,
            **conditions: str) -> dict[str, Any]:
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name,
           **({"namespace": namespace} if namespace else {}),
           **({"sectionName": section} if section else {})}
    return {"parentRef": ref, "controllerName": "example.com/gw", "conditions": [
        {"type": kind, "status": status, "reason": f"R{kind}", "message": f"m{kind}"}
        for kind, status in conditions.items()]}


def _observed(*parents: dict[str, Any]) -> GatewayObserved:
    return GatewayObserved(route_name="demo", route_namespace="team-a", parents=(EDGE, LOCAL),
                           url="https://bem.example.com/",
                           route={"status": {"parents": list(parents)}})


def test_each_gateway_is_matched_by_namespace_name_and_listener():
    observed = _observed(
        _parent("edge", "gateways", "https", Accepted="True", ResolvedRefs="True"),
        # Another listener of the same Gateway is not ours; no namespace means the route's.
        _parent("edge", "gateways", "http", Accepted="False", ResolvedRefs="False"),
        _parent("local", None, None, Accepted="True"))
    assert gateway_status(observed)["parents"] == [
        {"gateway": "gateways/edge (listener https)", "accepted": "True", "resolvedRefs": "True"},
        {"gateway": "team-a/local", "accepted": "True", "resolvedRefs": "Unknown"}]
    assert refused(observed) is None
    status, reason, message = gateway_condition(observed)
    assert (status, reason) == (False, "GatewayPending")
    assert "on team-a/local:" in message and "gateways/edge" not in message


def test_every_gateway_accepting_makes_the_condition_true():
    observed = _observed(_parent("edge", "gateways", "https", Accepted="True", ResolvedRefs="True"),
                         _parent("local", "team-a", None, Accepted="True", ResolvedRefs="True"))
    assert gateway_condition(observed) == (
        True, "RouteAccepted", "HTTPRoute demo is accepted by gateways/edge (listener https), "
        "team-a/local at https://bem.example.com/")


def test_a_refusal_passes_the_controllers_reason_through():
    observed = _observed(_parent("local", "team-a", None, Accepted="False", ResolvedRefs="True"))
    assert refused(observed) == ("RAccepted", "Gateway team-a/local reports Accepted False for "
                                 "HTTPRoute demo: mAccepted")
    assert gateway_condition(observed)[:2] == (False, "RAccepted")


def test_no_route_yet_and_no_gateway_api():
    pending = GatewayObserved("demo", "team-a", (EDGE,))
    assert gateway_status(pending) == {"httpRoute": "demo", "url": None, "parents": [
        {"gateway": "gateways/edge (listener https)", "accepted": "Unknown", "resolvedRefs": "Unknown"}]}
    assert gateway_condition(pending)[1] == "GatewayPending"
    missing = GatewayObserved("demo", "team-a", (EDGE,), served=False)
    assert refused(missing)[0] == "GatewayAPINotInstalled"
    assert gateway_status(missing)["httpRoute"] is None


def test_a_rate_limit_the_cluster_cannot_apply_degrades_naming_the_field():
    unlimited = GatewayObserved("demo", "team-a", (EDGE,), rate_limit_served=False)
    reason, message = refused(unlimited)
    assert reason == "RateLimitUnsupported"
    assert message == (
        "spec.gateway.rateLimit needs Traefik's traefik.io/v1alpha1 Middleware, which this "
        "cluster does not serve, so HTTPRoute demo was written without the rate limit; use "
        "Traefik as the Gateway controller with its CRDs installed (kubernetescrd provider), "
        "or remove spec.gateway.rateLimit")
    assert gateway_condition(unlimited) == (False, reason, message)
    # The route is there: status.gateway names it.
    assert gateway_status(unlimited)["httpRoute"] == "demo"
    # Without Gateway API there is no route at all: that is what the status says.
    neither = GatewayObserved("demo", "team-a", (EDGE,), served=False, rate_limit_served=False)
    assert refused(neither)[0] == "GatewayAPINotInstalled"
