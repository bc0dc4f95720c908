"""The edge in front of the Service: a Gateway API HTTPRoute (spec.gateway) or, for clusters
without Gateway API, a networking.k8s.io/v1 Ingress (spec.ingress). Both send one path prefix
of the named hosts to the BEMService's Service on its API port."""

from __future__ import annotations

from typing import Any

from bem_operator.builders.labels import child_metadata
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.spec_types import BEMServiceSpec, ParentRef

GATEWAY_GROUP = "gateway.networking.k8s.io"


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


def http_route_from_spec(spec: BEMServiceSpec, options: BuildOptions) -> dict[str, Any] | None:
    gateway = spec.gateway
    if gateway is None or not options.gateway_api_available:
        return None
    route: dict[str, Any] = {
        "parentRefs": [_parent_ref(spec, ref) for ref in gateway.parent_refs],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": gateway.path_prefix}}],
            "backendRefs": [{"group": "", "kind": "Service", "name": spec.name,
                             "port": spec.service.port}],
            "timeouts": {"request": gateway.timeouts.request,
                         "backendRequest": gateway.timeouts.backend_request},
        }],
    }
    if gateway.hostnames:
        route["hostnames"] = list(gateway.hostnames)
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute",
            "metadata": child_metadata(spec), "spec": route}


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
