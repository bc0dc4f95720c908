"""The runtime pods' NetworkPolicy against the local control plane: the API server accepts what
the operator applies (with the least-privilege RBAC of manifests/rbac.yaml), the operator keeps
it in step with spec.networkPolicy, and deletes it when it is turned off."""
from __future__ import annotations

import pytest
from operator_support import Kube, bemservice, eventually, is_controlled_by, wait_ready

pytestmark = pytest.mark.e2e
# As in a pod of the chart: the downward API's namespace and the chart's selector labels.
OPERATOR_ENV = {"POD_NAMESPACE": "bem-system",
                "BEM_OPERATOR_POD_LABELS": "app.kubernetes.io/name=bem-operator,"
                                           "app.kubernetes.io/instance=bem-operator"}
GATEWAY = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}


def ports_and_peers(policy: dict) -> dict[int, list[dict]]:
    return {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}


def test_policy_follows_enabled_and_peers(kube: Kube) -> None:
    kube.apply(bemservice("guarded"))
    bems = wait_ready(kube, "guarded")
    policy = eventually("the NetworkPolicy", lambda: kube.get("networkpolicy", "guarded"))
    assert is_controlled_by(policy, bems)
    assert policy["spec"]["podSelector"]["matchLabels"]["bem.ai/service"] == "guarded"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    peers = ports_and_peers(policy)
    assert peers[8080] == [{"podSelector": {}}]
    assert peers[9090] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    assert peers[8081] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "bem-system"}}, "podSelector": {"matchLabels": {
            "app.kubernetes.io/instance": "bem-operator", "app.kubernetes.io/name": "bem-operator"}}}]
    # The pods open the ports the policy names.
    template = kube.get("deployment", "guarded")["spec"]["template"]["spec"]
    assert {p["name"]: p["containerPort"] for p in template["containers"][0]["ports"]} == {
        "http": 8080, "metrics": 9090, "admin": 8081}

    kube.patch("bemservices", "guarded", {"spec": {"networkPolicy": {"from": [GATEWAY]}}})
    eventually("the listed peer in the policy", lambda: ports_and_peers(
        kube.get("networkpolicy", "guarded"))[8080] == [{"podSelector": {}}, GATEWAY])

    kube.patch("bemservices", "guarded", {"spec": {"networkPolicy": {"enabled": False}}})
    eventually("the NetworkPolicy deleted", lambda: kube.get("networkpolicy", "guarded") is None)
    assert kube.get("deployment", "guarded") is not None  # nothing else went with it

    kube.patch("bemservices", "guarded", {"spec": {"networkPolicy": {"enabled": True}}})
    again = eventually("the NetworkPolicy again", lambda: kube.get("networkpolicy", "guarded"))
    assert ports_and_peers(again)[8080] == [{"podSelector": {}}, GATEWAY]
