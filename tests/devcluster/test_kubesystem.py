"""CoreDNS and metrics-server as devcluster installs them: images built here from scratch, no
DNS query can leave the machine (no forward plugin, in the binary or the Corefile), the least
RBAC CoreDNS needs, kube-dns where the kubelet points pods, metrics-server verifying the
kubelet with the cluster CA and reading the real node only."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from devcluster import addons, binaries, images, kubesystem, realnode
from devcluster.network import CLUSTER_DNS_IP, CLUSTER_DOMAIN, static_band

# kubectl (kustomize) and metrics-server's module source come from the Go builds.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    kubectl = binaries.ensure(build_if_missing=False).kubectl
    return {(d["kind"], d["metadata"]["name"]): d for d in kubesystem.manifests(kubectl)}


def _pod(manifests: dict, name: str) -> dict[str, Any]:
    return manifests[("Deployment", name)]["spec"]["template"]["spec"]


def test_corefile_answers_the_cluster_zone_and_nxdomain_for_the_rest(manifests: dict) -> None:
    corefile = manifests[("ConfigMap", "coredns")]["data"]["Corefile"]
    assert "forward" not in corefile and "proxy" not in corefile
    cluster, rest = corefile.split(f".:{kubesystem.DNS_PORT} {{")
    assert cluster.startswith(f"{CLUSTER_DOMAIN}:{kubesystem.DNS_PORT} ")
    assert "kubernetes\n" in cluster
    assert "rcode NXDOMAIN" in rest and "kubernetes" not in rest
    # The binary has no forward plugin to turn on: build-addons.sh trims the plugin list.
    script = addons.BUILD_SCRIPT.read_text()
    plugins = script.split("trim_coredns_plugins() {", 1)[1].split("}", 1)[0]
    assert "kubernetes:kubernetes" in plugins and "forward" not in plugins


def test_kube_dns_is_where_the_kubelet_sends_pods(manifests: dict, tmp_path) -> None:
    service = manifests[("Service", "kube-dns")]
    assert service["metadata"]["namespace"] == "kube-system"
    assert service["spec"]["clusterIP"] == CLUSTER_DNS_IP
    assert ipaddress.ip_address(CLUSTER_DNS_IP) in static_band()
    assert {(p["port"], p["protocol"]) for p in service["spec"]["ports"]} == \
        {(53, "UDP"), (53, "TCP")}
    kubelet = realnode.kubelet_config(realnode.NodeLayout(tmp_path), tmp_path)
    assert kubelet["clusterDNS"] == [CLUSTER_DNS_IP]
    assert kubelet["clusterDomain"] == CLUSTER_DOMAIN
    assert kubelet["resolvConf"] == ""  # the host's resolvers reach no pod
    assert kubelet["tlsCertFile"] == str(tmp_path / "kubelet-serving.crt")


def test_coredns_may_only_list_and_watch_what_it_serves(manifests: dict) -> None:
    role = manifests[("ClusterRole", "system:coredns")]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {(g, r, v) for g, r in (("", "services"), ("", "namespaces"),
                                               ("discovery.k8s.io", "endpointslices"))
                       for v in ("list", "watch")}
    binding = manifests[("ClusterRoleBinding", "system:coredns")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "coredns",
                                    "namespace": "kube-system"}]


def test_metrics_server_verifies_the_kubelet_and_reads_the_real_node_only(
        manifests: dict) -> None:
    (container,) = _pod(manifests, "metrics-server")["containers"]
    args = container["args"]
    assert f"--kubelet-certificate-authority={kubesystem.SA_CA}" in args
    assert "--kubelet-insecure-tls" not in args
    assert f"--node-selector={realnode.NODE_LABEL}=real" in args
    api = manifests[("APIService", "v1beta1.metrics.k8s.io")]
    assert api["spec"]["service"] == {"name": "metrics-server", "namespace": "kube-system"}


def test_pods_run_local_images_non_root_read_only_on_the_real_node(manifests: dict) -> None:
    refs = {image.ref for image in kubesystem.IMAGES}
    for name in ("coredns", "metrics-server"):
        pod = _pod(manifests, name)
        assert pod["nodeSelector"] == {realnode.NODE_LABEL: "real"}, name
        (container,) = pod["containers"]
        assert container["image"] in refs and container["imagePullPolicy"] == "IfNotPresent"
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] and ctx["runAsUser"] != 0, name
        assert ctx["readOnlyRootFilesystem"] and not ctx["allowPrivilegeEscalation"], name
        assert ctx["capabilities"] == {"drop": ["ALL"]}, name
    for image in kubesystem.IMAGES:
        assert image.from_scratch, image.ref


def test_versions_are_written_once_in_the_build_script() -> None:
    script = addons.BUILD_SCRIPT.read_text()
    for value in (kubesystem.COREDNS_VERSION, kubesystem.METRICS_SERVER_VERSION):
        assert value.startswith("v") and script.count(value) == 1, value
    assert (kubesystem.COREDNS.tag, kubesystem.METRICS_SERVER.tag) == \
        (kubesystem.COREDNS_VERSION, kubesystem.METRICS_SERVER_VERSION)
    assert {"coredns", "metrics-server"} <= set(addons.BINARIES)
    assert images.Image("x", "docker/binary.Dockerfile", None).from_scratch is False
