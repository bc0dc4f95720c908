"""One source of truth: the RBAC rules and the operator pod spec agree (the CRD and its copies are
generated: tests/operator/test_crd_generated.py)."""

from __future__ import annotations

import pytest

from .support import MANIFESTS, Helm, by_kind, load_yaml_docs, rule_set

LEASE_ROLE = "bem-operator-leader-election"


def test_chart_cluster_role_grants_exactly_the_manifest_rules(helm: Helm) -> None:
    manifest_role = by_kind(load_yaml_docs(MANIFESTS / "rbac.yaml"), "ClusterRole")
    chart_role = by_kind(helm.template(), "ClusterRole")
    assert len(manifest_role) == 1 and len(chart_role) == 1
    expected = rule_set(manifest_role[0]["rules"])
    assert expected, "manifests/rbac.yaml grants nothing"
    assert rule_set(chart_role[0]["rules"]) == expected


def test_chart_namespaced_roles_grant_exactly_the_manifest_rules(helm: Helm) -> None:
    expected = rule_set(by_kind(load_yaml_docs(MANIFESTS / "rbac.yaml"), "ClusterRole")[0]["rules"])
    roles = [r for r in by_kind(helm.template("--set", "watchNamespaces={team-a,team-b}"), "Role")
             if r["metadata"]["name"] != LEASE_ROLE]
    assert [r["metadata"]["namespace"] for r in roles] == ["team-a", "team-b"]
    for role in roles:
        assert rule_set(role["rules"]) == expected


@pytest.mark.parametrize("kind", ["Role", "RoleBinding"])
def test_manifest_leader_election_rbac_equals_the_chart_default_render(helm: Helm,
                                                                       kind: str) -> None:
    [manifest] = by_kind(load_yaml_docs(MANIFESTS / "rbac.yaml"), kind)
    [chart] = [o for o in by_kind(helm.template(), kind) if o["metadata"]["name"] == LEASE_ROLE]
    assert manifest["metadata"]["name"] == LEASE_ROLE
    assert manifest["metadata"]["namespace"] == chart["metadata"]["namespace"]
    for field in ("rules", "roleRef", "subjects"):
        assert manifest.get(field) == chart.get(field), field


def test_manifest_binding_names_the_manifest_service_account() -> None:
    docs = load_yaml_docs(MANIFESTS / "rbac.yaml")
    account = by_kind(docs, "ServiceAccount")[0]["metadata"]
    binding = by_kind(docs, "ClusterRoleBinding")[0]
    assert binding["roleRef"]["name"] == by_kind(docs, "ClusterRole")[0]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                    "namespace": account["namespace"]}]
    namespace = load_yaml_docs(MANIFESTS / "namespace.yaml")[0]
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == account["namespace"]


def test_manifest_operator_matches_the_chart_default_render(helm: Helm) -> None:
    manifest = load_yaml_docs(MANIFESTS / "operator.yaml")
    chart = helm.template()
    manifest_deploy = by_kind(manifest, "Deployment")[0]
    chart_deploy = by_kind(chart, "Deployment")[0]
    # Labels differ on purpose (Helm adds its own); the running operator must not.
    assert manifest_deploy["spec"] == chart_deploy["spec"]
    assert manifest_deploy["metadata"]["name"] == chart_deploy["metadata"]["name"]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        [ours], [theirs] = by_kind(manifest, kind), by_kind(chart, kind)
        assert ours["spec"] == theirs["spec"], kind
        assert ours["metadata"]["name"] == theirs["metadata"]["name"], kind
