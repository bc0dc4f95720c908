"""What the HTTPRoute of a BEMService reports (pure): status.gateway and the Gateway condition,
for status.py to put into the status.

Read from the route's status.parents, where each Gateway controller writes, per Gateway the
route names, whether it accepted the route (Accepted) and could resolve its backend
(ResolvedRefs). A Gateway that refused the route, or Gateway API missing from the cluster,
degrades the service: nothing outside the cluster reaches it then. So does a spec.gateway.rateLimit
the cluster cannot apply (no Traefik Middleware CRD): the route is written without it, and each
client is then limited only by the runtime, which sees every request as the Gateway's. A route no controller has
reported on yet (the Gateway does not exist, or its controller has not got to it) only makes
the Gateway condition False: the pods serve inside the cluster meanwhile, and the condition
says what to check.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

_ROUTE_CONDITIONS = ("Accepted", "ResolvedRefs")


class GatewayReason(enum.StrEnum):
    NOT_INSTALLED = "GatewayAPINotInstalled"
    RATE_LIMIT_UNSUPPORTED = "RateLimitUnsupported"
    PENDING = "GatewayPending"
    ACCEPTED = "RouteAccepted"


@dataclasses.dataclass(frozen=True)
class GatewayObserved:
    route_name: str
    route_namespace: str
    parents: tuple[tuple[str, str, str | None], ...]  # (namespace, name, sectionName) per parentRef
    url: str | None = None
    served: bool = True  # False: the cluster does not serve gateway.networking.k8s.io/v1 HTTPRoute
    route: Mapping[str, Any] | None = None  # the live HTTPRoute, None until it exists
    # False: spec.gateway.rateLimit is set, but the cluster does not serve traefik.io/v1alpha1
    # Middleware (the route was written without the rate limit)
    rate_limit_served: bool = True


def not_installed(observed: GatewayObserved) -> tuple[str, str] | None:
    """(reason, message) when the cluster lacks Gateway API, or the Middleware that
    spec.gateway.rateLimit needs: it degrades the service."""
    if not observed.served:
        return (GatewayReason.NOT_INSTALLED,
                "Gateway API is not installed: this cluster does not serve "
                "gateway.networking.k8s.io/v1 HTTPRoute, so no route was written for "
                "spec.gateway; install the Gateway API CRDs and a Gateway controller, or use "
                "spec.ingress")
    if not observed.rate_limit_served:
        return (GatewayReason.RATE_LIMIT_UNSUPPORTED,
                "spec.gateway.rateLimit needs Traefik's traefik.io/v1alpha1 Middleware, which "
                f"this cluster does not serve, so HTTPRoute {observed.route_name} was written "
                "without the rate limit; use Traefik as the Gateway controller with its CRDs "
                "installed (kubernetescrd provider), or remove spec.gateway.rateLimit")
    return None


def _gateway(parent: tuple[str, str, str | None]) -> str:
    namespace, name, section = parent
    return f"{namespace}/{name}" + (f" (listener {section})" if section else "")


def _reports(observed: GatewayObserved, parent: tuple[str, str, str | None]
             ) -> dict[str, Mapping[str, Any]]:
    """The Accepted and ResolvedRefs conditions the controllers wrote for one parentRef."""
    found: dict[str, Mapping[str, Any]] = {}
    for entry in ((observed.route or {}).get("status") or {}).get("parents") or []:
        ref = entry.get("parentRef") or {}
        key = (ref.get("namespace") or observed.route_namespace, ref.get("name"),
               ref.get("sectionName"))
        if key != parent:
            continue
        for condition in entry.get("conditions") or []:
            if condition.get("type") in _ROUTE_CONDITIONS:
                found.setdefault(condition["type"], condition)
    return found


def gateway_status(observed: GatewayObserved) -> dict[str, Any]:
    """status.gateway: the route, the URL, and per Gateway what its controller reported."""
    parents = []
    for parent in observed.parents:
        reports = _reports(observed, parent)
        parents.append({
            "gateway": _gateway(parent),
            "accepted": (reports.get("Accepted") or {}).get("status", "Unknown"),
            "resolvedRefs": (reports.get("ResolvedRefs") or {}).get("status", "Unknown"),
        })
    return {"httpRoute": observed.route_name if observed.served else None,
            "url": observed.url, "parents": parents}


def refused(observed: GatewayObserved) -> tuple[str, str] | None:
    """(reason, message) when Gateway API is missing or a Gateway refused the route or could
    not resolve its backend (in the controller's own words): it degrades the service."""
    missing = not_installed(observed)
    if missing is not None:
        return missing
    for parent in observed.parents:
        reports = _reports(observed, parent)
        for kind in _ROUTE_CONDITIONS:
            condition = reports.get(kind)
            if condition is not None and condition.get("status") == "False":
                return (condition.get("reason") or f"Not{kind}",
                        f"Gateway {_gateway(parent)} reports {kind} False for HTTPRoute "
                        f"{observed.route_name}: {condition.get('message') or 'no message'}")
    return None


def gateway_condition(observed: GatewayObserved) -> tuple[bool, str, str]:
    """(status, reason, message) of the Gateway condition."""
    problem = refused(observed)
    if problem is not None:
        return (False, *problem)
    waiting = [_gateway(p) for p in observed.parents
               if any(_reports(observed, p).get(k, {}).get("status") != "True"
                      for k in _ROUTE_CONDITIONS)]
    if waiting:
        return (False, GatewayReason.PENDING,
                f"no Gateway controller has accepted HTTPRoute {observed.route_name} yet on "
                f"{', '.join(waiting)}: check that the Gateway exists and that its controller "
                "runs (kubectl get gateway -A)")
    where = f" at {observed.url}" if observed.url else ""
    return (True, GatewayReason.ACCEPTED,
            f"HTTPRoute {observed.route_name} is accepted by "
            f"{', '.join(_gateway(p) for p in observed.parents)}{where}")
