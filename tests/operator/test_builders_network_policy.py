"""The runtime pods' NetworkPolicy: each port admits its own clients, nothing else."""
from __future__ import annotations

import pytest
from builders_factory import build, make_bems, with_spec

from bem_operator.builders import BuildOptions, SpecError
from bem_operator.builders.options import OperatorPods

OPERATOR = BuildOptions(operator=OperatorPods("bem-system", (("app.kubernetes.io/instance", "bem"),
                                                             ("app.kubernetes.io/name", "bem-operator"))))
SAME_NAMESPACE = {"podSelector": {}}


def rules_by_port(policy: dict) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for rule in policy["spec"]["ingress"]:
        [port] = rule["ports"]
        assert port["protocol"] == "TCP"
        assert rule["from"], "a rule without peers would admit every source"
        out[port["port"]] = rule["from"]
    return out


def test_default_policy_admits_each_port_from_its_own_clients_only():
    policy = build("NetworkPolicy", make_bems(name="chat"), OPERATOR)
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["name"] == "chat" and policy["metadata"]["namespace"] == "team-a"
    assert policy["metadata"]["ownerReferences"][0]["name"] == "chat"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/instance": "chat",
                                                   "bem.ai/service": "chat"}}
    assert spec["policyTypes"] == ["Ingress"]
    assert rules_by_port(policy) == {
        8080: [SAME_NAMESPACE],
        9090: [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        8081: [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "bem-system"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "bem",
                                                "app.kubernetes.io/name": "bem-operator"}}}],
    }


def test_custom_peers_join_the_api_port_and_the_monitoring_namespace_is_configurable():
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}},
             {"podSelector": {"matchLabels": {"role": "client"}},
              "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In",
                                                          "values": ["a", "b"]}]}},
             {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.1.0/24"]}}]
    bems = with_spec(networkPolicy={"from": peers, "monitoringNamespace": "observability"})
    by_port = rules_by_port(build("NetworkPolicy", bems, OPERATOR))
    assert by_port[8080] == [SAME_NAMESPACE, *peers]
    assert by_port[9090] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "observability"}}}]
    assert set(by_port) == {8080, 9090, 8081}  # the peers reach the API port only


def test_without_the_operators_namespace_no_pod_reaches_the_admin_port():
    assert set(rules_by_port(build("NetworkPolicy", make_bems(), BuildOptions()))) == {8080, 9090}


def test_disabled_builds_no_policy():
    assert build("NetworkPolicy", with_spec(networkPolicy={"enabled": False}), OPERATOR) is None


def test_the_ports_are_the_containers():
    """The policy names the ports the pod template opens, under the same names."""
    container = build("Deployment", make_bems(), OPERATOR)["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert set(rules_by_port(build("NetworkPolicy", make_bems(), OPERATOR))) == set(ports.values())
    assert ports == {"http": 8080, "metrics": 9090, "admin": 8081}


@pytest.mark.parametrize("network_policy, field", [
    ({"enabled": "yes"}, "spec.networkPolicy.enabled"),
    ({"monitoringNamespace": "Not_A_Namespace"}, "spec.networkPolicy.monitoringNamespace"),
    ({"from": "everyone"}, "spec.networkPolicy.from"),
])
def test_bad_input_names_the_field(network_policy, field):
    with pytest.raises(SpecError) as info:
        build("NetworkPolicy", with_spec(networkPolicy=network_policy), OPERATOR)
    assert info.value.field == field
