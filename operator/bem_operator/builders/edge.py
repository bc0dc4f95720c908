"""The edge in front of the Service: a Gateway API HTTPRoute (spec.gateway) or, for clusters
without Gateway API, a networking.k8s.io/v1 Ingress (spec.ingress). Both send one path prefix
of the named hosts to the BEMService's Service on its API port. The route's rule adds HSTS to
every response and, with spec.gateway.rateLimit, runs the Traefik Middleware that limits each
client address (the runtime behind the Gateway sees only the Gateway's pods)."""

from __future__ import annotations

from typing import Any

from bem_operator.builders.labels import child_metadata
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.spec_types import BEMServiceSpec, GatewayRateLimit, ParentRef

GATEWAY_GROUP = "gateway.networking.k8s.io"
TRAEFIK_GROUP = "traefik.io"
MIDDLEWARE_KIND = "Middleware"
RATE_LIMIT_PERIOD = "1s"  # spec.gateway.rateLimit counts requests per second


def gateway_namespace(spec: BEMServiceSpec, ref: ParentRef) -> str:
    return ref.namespace or spec.namespace


def gateway_namespaces(spec: BEMServiceSpec) -> list[str]:
    """The namespaces of the Gateways the route attaches to, in order, each once."""
    if spec.gateway is None:
        return []
    return list(dict.fromkeys(gateway_namespace(spec, ref) for ref in spec.gateway.parent_refs))


def gateway_url(spec: BEMServiceSpec) -> str | None:
    """The URL clients use through the Gateway: the first host name that is not a wildcard."""
    gateway = spec.gateway
    host = next((h for h in gateway.hostnames if not h.startswith("*")), None) if gateway else None
    return None if host is None else f"https://{host}{gateway.path_prefix}"


def _parent_ref(spec: BEMServiceSpec, ref: ParentRef) -> dict[str, Any]:
    out = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ref.name,
           "namespace": gateway_namespace(spec, ref)}
    if ref.section_name is not None:
        out["sectionName"] = ref.section_name
    return out


def rate_limit_name(spec: BEMServiceSpec) -> str:
    """The Traefik Middleware of spec.gateway.rateLimit, named in the route's ExtensionRef."""
    return f"{spec.name}-ratelimit"


def _rate_limit(spec: BEMServiceSpec, options: BuildOptions) -> GatewayRateLimit | None:
    """The rate limit the route runs: none where the cluster does not serve the Middleware (a
    dangling ExtensionRef would break the whole route; the status says so instead)."""
    served = options.gateway_api_available and options.traefik_middleware_available
    return spec.gateway.rate_limit if spec.gateway is not None and served else None


def _filters(spec: BEMServiceSpec, options: BuildOptions) -> list[dict[str, Any]]:
    """HSTS first: each filter wraps the ones after it, so the rate limit's 429s carry it too."""
    gateway = spec.gateway
    filters: list[dict[str, Any]] = []
    if gateway is not None and gateway.hsts_max_age_seconds:
        filters.append({"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{
            "name": "Strict-Transport-Security",
            "value": f"max-age={gateway.hsts_max_age_seconds}; includeSubDomains"}]}})
    if _rate_limit(spec, options) is not None:
        filters.append({"type": "ExtensionRef", "extensionRef": {
            "group": TRAEFIK_GROUP, "kind": MIDDLEWARE_KIND, "name": rate_limit_name(spec)}})
    return filters


def http_route_from_spec(spec: BEMServiceSpec, options: BuildOptions) -> dict[str, Any] | None:
    gateway = spec.gateway
    if gateway is None or not options.gateway_api_available:
        return None
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": gateway.path_prefix}}],
        "backendRefs": [{"group": "", "kind": "Service", "name": spec.name,
                         "port": spec.service.port}],
        "timeouts": {"request": gateway.timeouts.request,
                     "backendRequest": gateway.timeouts.backend_request},
    }
    filters = _filters(spec, options)
    if filters:
        rule["filters"] = filters
    route: dict[str, Any] = {
        "parentRefs": [_parent_ref(spec, ref) for ref in gateway.parent_refs],
        "rules": [rule],
    }
    if gateway.hostnames:
        route["hostnames"] = list(gateway.hostnames)
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute",
            "metadata": child_metadata(spec), "spec": route}


def rate_limit_middleware_from_spec(spec: BEMServiceSpec,
                                    options: BuildOptions) -> dict[str, Any] | None:
    """Traefik's rateLimit middleware, one token bucket per client address (Traefik's default
    source criterion, the request's remote address)."""
    limit = _rate_limit(spec, options)
    if limit is None:
        return None
    return {"apiVersion": f"{TRAEFIK_GROUP}/v1alpha1", "kind": MIDDLEWARE_KIND,
            "metadata": child_metadata(spec, rate_limit_name(spec)),
            "spec": {"rateLimit": {"average": limit.average,
                                   "burst": limit.burst or limit.average,
                                   "period": RATE_LIMIT_PERIOD}}}


def ingress_from_spec(spec: BEMServiceSpec, _options: BuildOptions) -> dict[str, Any] | None:
    ingress = spec.ingress
    if ingress is None:
        return None
    paths = {"paths": [{"path": ingress.path_prefix, "pathType": "Prefix", "backend": {
        "service": {"name": spec.name, "port": {"number": spec.service.port}}}}]}
    # No hosts: one rule for every host.
    rules = [{"host": host, "http": paths} for host in ingress.hosts] or [{"http": paths}]
    body: dict[str, Any] = {"rules": rules}
    if ingress.ingress_class_name is not None:
        body["ingressClassName"] = ingress.ingress_class_name
    if ingress.tls_secret_name is not None:
        body["tls"] = [{"secretName": ingress.tls_secret_name, **(
            {"hosts": list(ingress.hosts)} if ingress.hosts else {})}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": child_metadata(spec), "spec": body}
