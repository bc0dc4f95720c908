"""The running control plane does what the e2e tier relies on (session cluster)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devcluster.client import Client
from devcluster.network import KUBERNETES_SERVICE_IP, SERVICE_CIDR
from devcluster.nodes import CPU_NODE, GPU_NODE, GPU_PRODUCT

pytestmark = pytest.mark.e2e


def _eventually(check: Callable[[], object], timeout: float = 60.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s: {what} (last: {last!r})")


def _json(cluster: Client, *args: str) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _pod(name: str, gpu: bool, toleration: bool) -> dict:
    container: dict = {"name": "c", "image": "registry.invalid/none:1"}
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    spec: dict = {"containers": [container]}
    if toleration:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                                "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_api_server_ready_and_nodes_registered(cluster: Client) -> None:
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    nodes = {n["metadata"]["name"]: n for n in _json(cluster, "get", "nodes")["items"]}
    assert {GPU_NODE, CPU_NODE} <= set(nodes)
    gpu = nodes[GPU_NODE]
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.product"] == GPU_PRODUCT
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in \
        gpu["spec"]["taints"]
    assert "nvidia.com/gpu" not in nodes[CPU_NODE]["status"]["allocatable"]


def test_service_range_holds_4000_services(cluster: Client) -> None:
    # The API server's own record of its range (ServiceCIDR, GA in 1.33), not the flag we pass.
    cidrs = _json(cluster, "get", "servicecidr", "kubernetes")["spec"]["cidrs"]
    assert cidrs == [SERVICE_CIDR]
    network = ipaddress.ip_network(cidrs[0])
    assert network.num_addresses - 2 >= 4000 + 1  # the `kubernetes` Service takes one
    kubernetes = _json(cluster, "-n", "default", "get", "service", "kubernetes")
    assert kubernetes["spec"]["clusterIP"] == KUBERNETES_SERVICE_IP


def test_python_api_client_talks_to_the_cluster(cluster: Client) -> None:
    from kubernetes import client

    with cluster.api_client() as api:
        names = {n.metadata.name for n in client.CoreV1Api(api).list_node().items}
    assert {GPU_NODE, CPU_NODE} <= names


def test_deployment_pods_run_on_the_cpu_node(cluster: Client, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "create", "deployment", "web",
                    "--image=registry.invalid/web:1", "--replicas=3")
    cluster.kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=90s")
    pods = _json(cluster, "-n", namespace, "get", "pods", "-l", "app=web")["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
        assert ready == "True"
        assert pod["spec"]["nodeName"] == CPU_NODE  # the GPU node's taint keeps it away
        assert pod["status"]["podIP"]


def test_gpu_pod_needs_the_toleration(cluster: Client, namespace: str) -> None:
    for name, tol in (("with-toleration", True), ("without-toleration", False)):
        cluster.kubectl("-n", namespace, "apply", "-f", "-",
                        input=json.dumps(_pod(name, gpu=True, toleration=tol)))
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/with-toleration",
                    "--timeout=60s")
    placed = _json(cluster, "-n", namespace, "get", "pod", "with-toleration")
    assert placed["spec"]["nodeName"] == GPU_NODE

    def unschedulable() -> bool:
        pod = _json(cluster, "-n", namespace, "get", "pod", "without-toleration")
        conds = {c["type"]: c for c in pod["status"].get("conditions", [])}
        return conds.get("PodScheduled", {}).get("reason") == "Unschedulable"

    _eventually(unschedulable, what="the untolerating GPU pod reported Unschedulable")
    pod = _json(cluster, "-n", namespace, "get", "pod", "without-toleration")
    assert not pod["spec"].get("nodeName")


def test_garbage_collector_and_hpa_controller_run(cluster: Client, namespace: str) -> None:
    ns = ("-n", namespace)
    cluster.kubectl(*ns, "create", "deployment", "app", "--image=registry.invalid/a:1")
    cluster.kubectl(*ns, "set", "resources", "deployment/app", "--requests=cpu=100m")
    cluster.kubectl(*ns, "autoscale", "deployment/app", "--min=1", "--max=3", "--cpu=50%")

    def hpa_seen() -> bool:
        status = _json(cluster, *ns, "get", "hpa", "app").get("status", {})
        return any(c["type"] == "AbleToScale" for c in status.get("conditions", []))

    _eventually(hpa_seen, timeout=90, what="the HPA controller set AbleToScale")
    cluster.kubectl(*ns, "rollout", "status", "deployment/app", "--timeout=90s")
    cluster.kubectl(*ns, "delete", "deployment", "app", "--cascade=background")
    _eventually(
        lambda: not _json(cluster, *ns, "get", "replicasets,pods")["items"],
        timeout=90, what="owned ReplicaSets and Pods garbage-collected",
    )


def test_service_account_kubeconfig_is_least_privilege(cluster: Client, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "robot")
    kubeconfig = cluster.kubeconfig_for_service_account(namespace, "robot")

    def as_robot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cluster.kubectl_bin), f"--kubeconfig={kubeconfig}", *args],
                              capture_output=True, text=True, timeout=60, env=cluster.env())

    whoami = as_robot("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == f"system:serviceaccount:{namespace}:robot", whoami.stderr
    denied = as_robot("get", "configmaps")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    cluster.kubectl("-n", namespace, "create", "role", "cm-reader", "--verb=list",
                    "--resource=configmaps")
    cluster.kubectl("-n", namespace, "create", "rolebinding", "robot-cm", "--role=cm-reader",
                    f"--serviceaccount={namespace}:robot")
    allowed = _eventually(lambda: as_robot("get", "configmaps").returncode == 0,
                          what="RBAC grant took effect")
    assert allowed
    assert as_robot("get", "pods").returncode != 0  # only what was granted


def test_service_account_names_are_validated(cluster: Client) -> None:
    with pytest.raises(ValueError, match="not a DNS label"):
        cluster.kubeconfig_for_service_account("Bad_NS", "robot")


def test_kubectl_failures_say_what_went_wrong(cluster: Client) -> None:
    from devcluster.client import KubectlError

    with pytest.raises(KubectlError, match="doesn't have a resource type \"nosuchkind\""):
        cluster.kubectl("get", "nosuchkind")
    assert cluster.kubectl("get", "nosuchkind", check=False).returncode != 0


def test_helm_installs_a_chart_that_becomes_ready(
    cluster: Client, namespace: str, tmp_path: Path
) -> None:
    def helm(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(cluster.helm_bin), *args], capture_output=True, text=True,
                             timeout=180, env={**cluster.env(), "HELM_CACHE_HOME": str(tmp_path),
                                               "HELM_CONFIG_HOME": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        return out

    helm("create", str(tmp_path / "demo"))
    helm("install", "demo", str(tmp_path / "demo"), "-n", namespace, "--wait", "--timeout=90s")
    releases = json.loads(helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
    deploy = _json(cluster, "-n", namespace, "get", "deployment", "demo")
    assert deploy["status"]["readyReplicas"] == 1


def test_claims_bind_and_pods_mounting_them_run(cluster: Client, namespace: str) -> None:
    # The samples mount a model PVC: it must bind, and its pod must schedule and run.
    pv_name = f"models-{namespace}"
    manifest = f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {pv_name}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  persistentVolumeReclaimPolicy: Delete
  hostPath: {{path: /nonexistent/models}}
  claimRef: {{namespace: {namespace}, name: models}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: models, namespace: {namespace}}}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: {pv_name}
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: {namespace}}}
spec:
  containers: [{{name: c, image: registry.invalid/none:1,
                 volumeMounts: [{{name: m, mountPath: /models, readOnly: true}}]}}]
  volumes: [{{name: m, persistentVolumeClaim: {{claimName: models, readOnly: true}}}}]
"""
    try:
        cluster.kubectl("apply", "-f", "-", input=manifest)
        _eventually(lambda: _json(cluster, "-n", namespace, "get", "pvc", "models")
                    ["status"].get("phase") == "Bound", what="PVC bound")
        cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/reader",
                        "--timeout=60s")
        # The protection finalizer must be released once nothing uses the claim.
        cluster.kubectl("-n", namespace, "delete", "pod/reader", "pvc/models", "--wait=true",
                        "--timeout=60s")
    finally:
        cluster.kubectl("delete", "pv", pv_name, "--ignore-not-found", "--wait=false")
