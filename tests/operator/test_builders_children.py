"""build_children: which children, in which order, with labels, owners and stable output."""

from __future__ import annotations

import copy
import json

import pytest
from builders_factory import (
    build_deployment,
    build_hpa,
    build_pdb,
    build_service,
    build_service_monitor,
    by_kind,
    make_bems,
    with_spec,
)

from bem_operator.builders import (
    CHILD_KINDS,
    BuildOptions,
    build_children,
    child_labels,
    selector_labels,
    selector_string,
)

AUTOSCALED = {"autoscaling": {"maxReplicas": 4}}


def kinds(children: list[dict]) -> list[str]:
    return [child["kind"] for child in children]


def test_default_spec_gives_policy_deployment_service_pdb_and_service_monitor_in_apply_order():
    children = build_children(make_bems(), BuildOptions())
    assert kinds(children) == ["ConfigMap", "NetworkPolicy", "Deployment", "Service", "PodDisruptionBudget",
                               "ServiceMonitor"]


def test_autoscaling_adds_the_hpa_after_the_service():
    children = build_children(with_spec(**AUTOSCALED), BuildOptions())
    assert kinds(children) == ["ConfigMap", "NetworkPolicy", "Deployment", "Service", "HorizontalPodAutoscaler",
                               "PodDisruptionBudget", "ServiceMonitor"]


# Each edge's spec and the kinds only it writes (the Middleware: spec.gateway.rateLimit).
EDGES = {"HTTPRoute": ({"gateway": {"parentRefs": [{"name": "gw"}], "rateLimit": {"average": 10}}},
                       {"Middleware", "HTTPRoute"}),
         "Ingress": ({"ingress": {"hosts": ["bem.example.com"]}}, {"Ingress"})}


@pytest.mark.parametrize("provider, other, edge", [("HPA", "ScaledObject", "HTTPRoute"),
                                                   ("KEDA", "HorizontalPodAutoscaler", "Ingress")])
def test_apply_order_matches_child_kinds(provider, other, edge):
    """Every kind but the other provider's autoscaler and the other edge, in the registry's order."""
    [other_edge] = [kinds for name, (_, kinds) in EDGES.items() if name != edge]
    bems = with_spec(autoscaling={"maxReplicas": 4, "provider": provider}, **EDGES[edge][0])
    children = build_children(bems, BuildOptions())
    assert [(c["apiVersion"], c["kind"]) for c in children] == [
        k for k in CHILD_KINDS if k[1] != other and k[1] not in other_edge]


def test_keda_provider_builds_a_scaled_object_instead_of_the_hpa():
    bems = with_spec(autoscaling={"maxReplicas": 4, "provider": "KEDA"})
    assert kinds(build_children(bems, BuildOptions())) == [
        "ConfigMap", "NetworkPolicy", "Deployment", "Service", "ScaledObject", "PodDisruptionBudget", "ServiceMonitor"]
    assert build_hpa(bems) is None
    # Without KEDA's CRD there is no ScaledObject, and no HPA in its place either.
    assert kinds(build_children(bems, BuildOptions(keda_available=False))) == [
        "ConfigMap", "NetworkPolicy", "Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"]


def test_no_service_monitor_when_its_crd_is_missing():
    children = build_children(make_bems(), BuildOptions(service_monitor_available=False))
    assert "ServiceMonitor" not in kinds(children)
    assert build_service_monitor(make_bems(), BuildOptions(service_monitor_available=False)) is None


def test_no_service_monitor_when_disabled_in_the_spec():
    bems = with_spec(monitoring={"serviceMonitor": False})
    assert "ServiceMonitor" not in kinds(build_children(bems, BuildOptions()))


def test_no_pdb_when_disabled():
    bems = with_spec(disruptionBudget={"enabled": False})
    assert "PodDisruptionBudget" not in kinds(build_children(bems, BuildOptions()))
    assert build_pdb(bems) is None


def test_every_child_is_named_labelled_and_owned_by_the_bemservice():
    bems = make_bems(name="chat", namespace="ml", uid="uid-123")
    bems["spec"].update(AUTOSCALED)
    for child in build_children(bems, BuildOptions()):
        meta = child["metadata"]
        # The start list is named for what it holds (the Service takes the plain name).
        assert meta["name"] == ("chat-checkpoints" if child["kind"] == "ConfigMap" else "chat")
        assert meta["namespace"] == "ml"
        assert meta["labels"] == child_labels("chat")
        assert meta["ownerReferences"] == [{
            "apiVersion": "bem.ai/v1alpha1", "kind": "BEMService", "name": "chat", "uid": "uid-123",
            "controller": True, "blockOwnerDeletion": True}]
        assert set(child) == {"apiVersion", "kind", "metadata",
                              "data" if child["kind"] == "ConfigMap" else "spec"}


def test_labels_follow_the_architecture_contract():
    assert child_labels("chat") == {
        "app.kubernetes.io/name": "bem-runtime",
        "app.kubernetes.io/instance": "chat",
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/managed-by": "bem-operator",
        "bem.ai/service": "chat",
    }
    assert selector_labels("chat") == {"app.kubernetes.io/instance": "chat", "bem.ai/service": "chat"}
    assert selector_string("chat") == "app.kubernetes.io/instance=chat,bem.ai/service=chat"


def test_selector_is_a_subset_of_the_pod_labels():
    pod_labels = build_deployment(make_bems())["spec"]["template"]["metadata"]["labels"]
    assert selector_labels("demo").items() <= pod_labels.items()


def test_output_is_deterministic_and_json_serialisable():
    bems = with_spec(**AUTOSCALED, gpu={"count": 1, "product": "A100"},
                     nodeSelector={"zone": "b", "arch": "amd64"})
    first = json.dumps(build_children(bems, BuildOptions()), sort_keys=False)
    second = json.dumps(build_children(copy.deepcopy(bems), BuildOptions()), sort_keys=False)
    assert first == second


def test_builders_do_not_mutate_their_input():
    bems = with_spec(tolerations=[{"key": "a", "operator": "Exists"}], gpu={"count": 1},
                     runtime={"env": [{"name": "X", "value": "1"}]}, affinity={"nodeAffinity": {}})
    before = copy.deepcopy(bems)
    children = build_children(bems, BuildOptions())
    assert bems == before
    # Nor does the output alias the input: editing it leaves the input alone.
    by_kind(children)["Deployment"]["spec"]["template"]["spec"]["tolerations"][0]["key"] = "changed"
    assert bems == before


def test_per_kind_builders_match_build_children():
    bems = with_spec(**AUTOSCALED)
    options = BuildOptions()
    got = by_kind(build_children(bems, options))
    assert got["Deployment"] == build_deployment(bems, options)
    assert got["Service"] == build_service(bems, options)
    assert got["HorizontalPodAutoscaler"] == build_hpa(bems, options)
    assert got["PodDisruptionBudget"] == build_pdb(bems, options)
    assert got["ServiceMonitor"] == build_service_monitor(bems, options)


def test_hpa_is_none_without_autoscaling():
    assert build_hpa(make_bems()) is None


@pytest.mark.parametrize("field", ["name", "namespace", "uid"])
def test_missing_metadata_is_refused_with_its_path(field):
    bems = make_bems()
    del bems["metadata"][field]
    with pytest.raises(ValueError, match=f"metadata.{field}"):
        build_children(bems, BuildOptions())
