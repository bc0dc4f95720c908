"""The add-on manifests as devcluster patches them: every image is one built here (nothing is
pulled), pods are small enough for the 2-core node, names resolve through the cluster DNS as
upstream (no fixed ClusterIP, no host alias), and the versions come from build-addons.sh alone."""

from __future__ import annotations

from typing import Any

import pytest

from devcluster import addons, binaries

# kubectl (kustomize) and the add-ons' module sources come from the Go builds.
pytestmark = pytest.mark.e2e

LOCAL_REFS = {image.ref for image in addons.IMAGES}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kubectl = binaries.ensure(build_if_missing=False).kubectl
    return [*addons.prometheus_operator_manifests(), *addons.prometheus_manifests(),
            *addons.keda_manifests(kubectl)]


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"]
            for d in docs if d["kind"] == "Deployment"}


def test_every_image_is_built_here_and_never_pulled(manifests: list[dict[str, Any]]) -> None:
    pods = _pods(manifests)
    assert set(pods) == {"prometheus-operator", "keda-operator", "keda-metrics-apiserver"}
    for name, pod in pods.items():
        for container in pod["containers"]:
            assert container["image"] in LOCAL_REFS, (name, container["image"])
            assert container["imagePullPolicy"] == "IfNotPresent", name
            assert container["resources"]["requests"]["cpu"] == "20m", name
    (prometheus,) = [d for d in manifests if d["kind"] == "Prometheus"]
    assert prometheus["spec"]["image"] == addons.PROMETHEUS.ref
    assert prometheus["spec"]["version"] == addons.PROMETHEUS_VERSION
    (operator,) = pods["prometheus-operator"]["containers"]
    assert operator["args"] == [f"--prometheus-config-reloader={addons.CONFIG_RELOADER.ref}"]


def test_prometheus_selects_everything_the_operator_and_chart_create(
        manifests: list[dict[str, Any]]) -> None:
    (prometheus,) = [d for d in manifests if d["kind"] == "Prometheus"]
    for selector in ("serviceMonitorSelector", "serviceMonitorNamespaceSelector",
                     "ruleSelector", "ruleNamespaceSelector"):
        assert prometheus["spec"][selector] == {}, selector


def test_names_resolve_through_cluster_dns_as_upstream(manifests: list[dict[str, Any]]) -> None:
    """No fixed ClusterIP, no host alias and no address instead of a name: the cluster's
    CoreDNS (kubesystem.py) resolves them."""
    for doc in manifests:
        if doc["kind"] == "Service":
            assert doc["spec"].get("clusterIP") in (None, "None"), doc["metadata"]  # or headless
    pods = _pods(manifests)
    assert all("hostAliases" not in pod for pod in pods.values())
    args = pods["keda-metrics-apiserver"]["containers"][0].get("args", [])
    assert not any(a.startswith("--metrics-service-") for a in args), args
    assert addons.PROMETHEUS_URL == f"http://{addons.PROMETHEUS_HOST}:9090"


def test_namespaced_objects_move_to_the_add_on_namespaces(manifests: list[dict[str, Any]]) -> None:
    for doc in manifests:
        if doc["kind"] in ("Deployment", "Service", "ServiceAccount", "Prometheus"):
            assert doc["metadata"]["namespace"] in (addons.MONITORING_NS, addons.KEDA_NS), doc
        if doc["kind"] == "ClusterRoleBinding":
            for subject in doc["subjects"]:
                # KEDA lets the HPA controller read external metrics; nothing else leaves.
                assert subject["namespace"] in (addons.MONITORING_NS, addons.KEDA_NS) or \
                    subject == {"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler",
                                "namespace": "kube-system"}, doc


def test_versions_are_written_once_in_the_build_script() -> None:
    script = addons.BUILD_SCRIPT.read_text()
    for value in (addons.KEDA_VERSION, addons.PROMOP_VERSION, addons.PROMETHEUS_VERSION):
        assert value.startswith("v") and script.count(value) == 1, value
    assert (addons.KEDA.tag, addons.PROMETHEUS_OPERATOR.tag, addons.PROMETHEUS.tag) == \
        (addons.KEDA_VERSION, addons.PROMOP_VERSION, addons.PROMETHEUS_VERSION)
