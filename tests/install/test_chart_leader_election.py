"""The chart's high availability: replicas with leader election on a Lease only they may
update, a PodDisruptionBudget, a preference for different nodes, and the downward-API env."""

from __future__ import annotations

from typing import Any

from .support import Helm, by_kind

SELECTOR = {"app.kubernetes.io/name": "bem-operator", "app.kubernetes.io/instance": "bem-operator"}


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = by_kind(objects, "Deployment")
    return deployment["spec"]["template"]["spec"]


def _env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = _pod(objects)["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _lease_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [role] = [r for r in by_kind(objects, "Role")
              if r["metadata"]["name"] == "bem-operator-leader-election"]
    return role


def test_two_replicas_elect_a_leader_through_a_lease(helm: Helm) -> None:
    objects = helm.template()
    assert by_kind(objects, "Deployment")[0]["spec"]["replicas"] == 2
    env = _env(objects)
    assert env["BEM_OPERATOR_LEADER_ELECTION"] == "true"
    assert env["BEM_OPERATOR_LEASE_NAME"] == "bem-operator"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "BEM_OPERATOR_LEASE_NAMESPACE" not in env  # the pod's own namespace


def test_the_lease_role_reaches_one_lease_in_the_release_namespace(helm: Helm) -> None:
    objects = helm.template("--set", "leaderElection.leaseName=ops-lock")
    role = _lease_role(objects)
    assert role["metadata"]["namespace"] == "bem-system"
    # create cannot be limited by name (the object does not exist yet); get and update can.
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["ops-lock"], "verbs": ["get", "update"]},
    ]
    assert _env(objects)["BEM_OPERATOR_LEASE_NAME"] == "ops-lock"
    [binding] = [b for b in by_kind(objects, "RoleBinding")
                 if b["metadata"]["name"] == "bem-operator-leader-election"]
    assert binding["metadata"]["namespace"] == "bem-system"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "bem-operator-leader-election"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bem-operator",
                                    "namespace": "bem-system"}]


def test_namespaced_mode_keeps_the_lease_role_in_the_release_namespace(helm: Helm) -> None:
    objects = helm.template("--set", "watchNamespaces={team-a}")
    assert _lease_role(objects)["metadata"]["namespace"] == "bem-system"


def test_the_disruption_budget_keeps_a_replica_through_a_drain(helm: Helm) -> None:
    objects = helm.template()
    [pdb] = by_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}}
    pod_labels = by_kind(objects, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert SELECTOR.items() <= pod_labels.items()
    assert not by_kind(helm.template("--set", "podDisruptionBudget.enabled=false"),
                       "PodDisruptionBudget")


def test_replicas_prefer_different_nodes_unless_affinity_is_given(helm: Helm) -> None:
    [term] = _pod(helm.template())["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname",
                                       "labelSelector": {"matchLabels": SELECTOR}}
    mine = _pod(helm.template("--set", "affinity.nodeAffinity.x=y"))["affinity"]
    assert mine == {"nodeAffinity": {"x": "y"}}


def test_one_replica_without_election_recreates_and_needs_no_lease(helm: Helm) -> None:
    objects = helm.template("--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    deployment = by_kind(objects, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert _env(objects)["BEM_OPERATOR_LEADER_ELECTION"] == "false"
    assert not [r for r in by_kind(objects, "Role") + by_kind(objects, "RoleBinding")
                if r["metadata"]["name"].endswith("-leader-election")]
