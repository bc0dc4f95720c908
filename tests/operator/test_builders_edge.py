"""The edge children: the HTTPRoute of spec.gateway, the Ingress of spec.ingress, and what the
NetworkPolicy and the pods learn from them."""
from __future__ import annotations

import pytest
from builders_factory import build, build_deployment, env_of, with_spec

from bem_operator.builders import BuildOptions, SpecError, parse_bemservice
from bem_operator.builders.edge import gateway_url
from bem_operator.builders.spec_types import GatewaySpec

GATEWAY = {"parentRefs": [{"name": "edge", "namespace": "gateways", "sectionName": "https"},
                          {"name": "local"}],
           "hostnames": ["bem.example.com", "*.example.com"], "pathPrefix": "/bem"}


def test_http_route_sends_the_hosts_and_prefix_to_the_service_port():
    route = build("HTTPRoute", with_spec(gateway=GATEWAY, service={"port": 9000}))
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "demo" and route["metadata"]["namespace"] == "team-a"
    assert route["metadata"]["ownerReferences"][0]["name"] == "demo"
    spec = route["spec"]
    assert spec["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge",
         "namespace": "gateways", "sectionName": "https"},
        # No namespace given: the BEMService's own.
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "local",
         "namespace": "team-a"}]
    assert spec["hostnames"] == ["bem.example.com", "*.example.com"]
    [rule] = spec["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/bem"}}]
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "demo", "port": 9000}]
    # A long streamed generation must not be cut by the Gateway's default timeouts.
    assert rule["timeouts"] == {"request": "600s", "backendRequest": "600s"}


def test_http_route_defaults_and_timeouts():
    route = build("HTTPRoute", with_spec(gateway={
        "parentRefs": [{"name": "edge"}], "timeouts": {"request": "30m", "backendRequest": "20m"}}))
    assert "hostnames" not in route["spec"]
    [rule] = route["spec"]["rules"]
    assert rule["matches"][0]["path"]["value"] == "/"
    assert rule["timeouts"] == {"request": "30m", "backendRequest": "20m"}


def test_no_route_without_spec_gateway_or_without_gateway_api():
    assert build("HTTPRoute", with_spec()) is None
    assert build("HTTPRoute", with_spec(gateway=GATEWAY),
                 BuildOptions(gateway_api_available=False)) is None


@pytest.mark.parametrize(("hostnames", "url"), [
    (["bem.example.com"], "https://bem.example.com/bem"),
    (["*.example.com", "bem.example.com"], "https://bem.example.com/bem"),
    (["*.example.com"], None),
    ([], None),
])
def test_gateway_url_is_the_first_plain_host(hostnames, url):
    spec = parse_bemservice(with_spec(gateway={**GATEWAY, "hostnames": hostnames}))
    assert gateway_url(spec) == url


@pytest.mark.parametrize(("gateway", "field"), [
    ({"parentRefs": []}, "spec.gateway.parentRefs"),
    ({"parentRefs": [{"name": "edge"}], "hostnames": ["Bad_Host"]}, "spec.gateway.hostnames[0]"),
    ({"parentRefs": [{"name": "edge"}], "pathPrefix": "bem"}, "spec.gateway.pathPrefix"),
    ({"parentRefs": [{"name": "edge"}], "timeouts": {"request": "ten minutes"}},
     "spec.gateway.timeouts.request"),
])
def test_bad_gateway_fields_are_spec_errors_naming_the_field(gateway, field):
    with pytest.raises(SpecError) as err:
        parse_bemservice(with_spec(gateway=gateway))
    assert err.value.field == field


def test_ingress_with_class_hosts_and_tls():
    ingress = build("Ingress", with_spec(ingress={
        "ingressClassName": "nginx", "hosts": ["a.example.com", "b.example.com"],
        "pathPrefix": "/v1", "tlsSecretName": "bem-tls"}))
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "bem-tls", "hosts": ["a.example.com", "b.example.com"]}]
    paths = {"paths": [{"path": "/v1", "pathType": "Prefix", "backend": {
        "service": {"name": "demo", "port": {"number": 8080}}}}]}
    assert spec["rules"] == [{"host": "a.example.com", "http": paths},
                             {"host": "b.example.com", "http": paths}]


def test_ingress_without_hosts_serves_every_host_in_plain_http():
    spec = build("Ingress", with_spec(ingress={}))["spec"]
    assert [rule.get("host") for rule in spec["rules"]] == [None]
    assert "tls" not in spec and "ingressClassName" not in spec
    assert build("Ingress", with_spec()) is None


def _api_peers(bems: dict) -> list[dict]:
    policy = build("NetworkPolicy", bems)
    return next(rule["from"] for rule in policy["spec"]["ingress"]
                if rule["ports"][0]["port"] == 8080)


def test_network_policy_admits_the_gateways_namespaces_on_the_api_port():
    peers = _api_peers(with_spec(gateway=GATEWAY))
    # The local Gateway is in the BEMService's namespace, which is admitted already.
    assert peers == [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "gateways"}}}]
    assert _api_peers(with_spec()) == [{"podSelector": {}}]


def test_trusted_proxies_reach_the_runtime_comma_separated():
    env = env_of(build_deployment(with_spec(runtime={"trustedProxies": ["10.0.0.0/8", "fd00::/8"]})))
    assert env["BEM_TRUSTED_PROXIES"] == "10.0.0.0/8,fd00::/8"
    assert "BEM_TRUSTED_PROXIES" not in env_of(build_deployment(with_spec()))


RATE_LIMITED = {**GATEWAY, "rateLimit": {"average": 20, "burst": 40}}
HSTS = {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [
    {"name": "Strict-Transport-Security", "value": "max-age=31536000; includeSubDomains"}]}}
RATE_LIMIT_REF = {"type": "ExtensionRef", "extensionRef": {
    "group": "traefik.io", "kind": "Middleware", "name": "demo-ratelimit"}}


def _filters(bems: dict, options: BuildOptions = BuildOptions()) -> list[dict] | None:
    return build("HTTPRoute", bems, options)["spec"]["rules"][0].get("filters")


def test_the_route_sends_hsts_for_a_year_by_default_and_none_at_zero():
    assert _filters(with_spec(gateway=GATEWAY)) == [HSTS]
    two_years = _filters(with_spec(gateway={**GATEWAY, "hstsMaxAgeSeconds": 63072000}))
    assert two_years[0]["responseHeaderModifier"]["set"][0]["value"] == \
        "max-age=63072000; includeSubDomains"
    assert _filters(with_spec(gateway={**GATEWAY, "hstsMaxAgeSeconds": 0})) is None


def test_a_rate_limit_is_a_middleware_the_route_names_after_hsts():
    bems = with_spec(gateway=RATE_LIMITED)
    # HSTS wraps the rate limit, so its 429s carry the header too.
    assert _filters(bems) == [HSTS, RATE_LIMIT_REF]
    middleware = build("Middleware", bems)
    assert middleware["apiVersion"] == "traefik.io/v1alpha1"
    assert middleware["metadata"]["name"] == "demo-ratelimit"
    assert middleware["metadata"]["namespace"] == "team-a"
    assert middleware["metadata"]["ownerReferences"][0]["name"] == "demo"
    assert middleware["metadata"]["labels"]["bem.ai/service"] == "demo"
    # No sourceCriterion: Traefik keys on the request's remote address, the client's.
    assert middleware["spec"] == {"rateLimit": {"average": 20, "burst": 40, "period": "1s"}}


def test_burst_defaults_to_the_average():
    middleware = build("Middleware", with_spec(gateway={**GATEWAY, "rateLimit": {"average": 7}}))
    assert middleware["spec"]["rateLimit"] == {"average": 7, "burst": 7, "period": "1s"}


def test_no_middleware_without_a_rate_limit():
    assert build("Middleware", with_spec(gateway=GATEWAY)) is None
    assert build("Middleware", with_spec()) is None


def test_without_the_middleware_crd_the_route_names_no_middleware():
    bems = with_spec(gateway=RATE_LIMITED)
    options = BuildOptions(traefik_middleware_available=False)
    assert build("Middleware", bems, options) is None
    # A dangling ExtensionRef would break the route: written without it, HSTS kept.
    assert _filters(bems, options) == [HSTS]
    # Without Gateway API no route names it either.
    assert build("Middleware", bems, BuildOptions(gateway_api_available=False)) is None


@pytest.mark.parametrize(("gateway", "field"), [
    ({**GATEWAY, "rateLimit": {"average": 0}}, "spec.gateway.rateLimit.average"),
    ({**GATEWAY, "rateLimit": {}}, "spec.gateway.rateLimit.average"),
    ({**GATEWAY, "rateLimit": {"average": 5, "burst": 0}}, "spec.gateway.rateLimit.burst"),
    ({**GATEWAY, "rateLimit": {"average": "5"}}, "spec.gateway.rateLimit.average"),
    ({**GATEWAY, "hstsMaxAgeSeconds": -1}, "spec.gateway.hstsMaxAgeSeconds"),
    ({**GATEWAY, "hstsMaxAgeSeconds": 63072001}, "spec.gateway.hstsMaxAgeSeconds"),
])
def test_bad_rate_limit_and_hsts_are_spec_errors_naming_the_field(gateway, field):
    with pytest.raises(SpecError) as err:
        parse_bemservice(with_spec(gateway=gateway))
    assert err.value.field == field


def test_the_hsts_description_names_every_header_the_runtime_sends():
    """HSTS is the edge's; the rest the runtime sends itself, and the field says which."""
    from bem_runtime.middlewares import SECURITY_HEADERS

    description = GatewaySpec.model_fields["hsts_max_age_seconds"].description
    missing = [name for name in SECURITY_HEADERS if name not in description]
    assert not missing, f"spec.gateway.hstsMaxAgeSeconds does not name {missing}"
    assert "Strict-Transport-Security" not in SECURITY_HEADERS
