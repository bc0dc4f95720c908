"""BEMServices on a real kubelet node: the operator installed by Helm runs as a pod, the
runtime image serves the samples through their Service, rollouts and pod deletions under a
steady request loop lose no request, and the runtime's JSON logs reach `kubectl logs`.

Every request goes to a ClusterIP that kube-proxy serves on this machine, a pod IP behind
the node's bridge, or the node's own address (checked before sending); every load loop is
bounded in count and time. Figures are printed (run with -s to see them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.health import wait_until
from devcluster.nodes import REAL_NODE
from devcluster.realnode import local_addresses, wait_served_here

from .conftest import OPERATOR_NS
from .support import (BAKED_IMAGE, GENERATE, Load, apply, baked_service, bems_ready, figure,
                      get_json, post, rollout_done, runtime_pods, service_url)

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"


def fleet(name: str, strategy: str, replicas: int) -> dict[str, Any]:
    """A BEMService of the baked toy model, small enough for a 2-core node."""
    rollout: dict[str, Any] = {"strategy": strategy}
    if strategy == "RollingUpdate":
        rollout |= {"maxSurge": 1, "maxUnavailable": 0}
    return baked_service(name, replicas=replicas, rollout=rollout,
                         monitoring={"serviceMonitor": False})


def test_operator_runs_as_a_pod_installed_by_helm(real_cluster: Any,
                                                  operator_release: str) -> None:
    pods = get_json(real_cluster, "pods", "-n", OPERATOR_NS, "-l",
                    f"app.kubernetes.io/instance={operator_release}")["items"]
    assert len(pods) == 2, "the chart runs a leader and a standby"
    for pod in pods:  # the standby serves its health endpoint too
        assert pod["spec"]["nodeName"] == REAL_NODE
        assert pod["spec"]["serviceAccountName"] == operator_release
        [container] = pod["spec"]["containers"]
        assert container["image"] == "bem-operator:0.1.0"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        [status] = pod["status"]["containerStatuses"]
        assert status["ready"] and status["restartCount"] == 0, status
        # The process in the container answers the probe's endpoint on its pod IP.
        ip, port = pod["status"]["podIP"], container["livenessProbe"]["httpGet"]["port"]
        if not isinstance(port, int):
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
        wait_served_here(ip)
        with urllib.request.urlopen(f"http://{ip}:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
    # It runs as the chart's ServiceAccount, not as an admin: it may not read Secrets'
    # contents cluster-wide beyond what the chart grants, and may not touch nodes.
    sa = f"system:serviceaccount:{OPERATOR_NS}:{operator_release}"
    can = real_cluster.kubectl("auth", "can-i", "delete", "nodes", f"--as={sa}", check=False)
    assert can.stdout.strip() == "no"


def test_baked_model_sample_answers_through_cluster_ip_and_node_port(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    apply(real_cluster, real_ns, (SAMPLES / "image-model.yaml").read_text())
    obj = bems_ready(real_cluster, real_ns, "bem-baked")
    assert obj["status"]["readyReplicas"] >= 1
    pods = runtime_pods(real_cluster, real_ns, "bem-baked")
    assert pods and all(p["spec"]["nodeName"] == REAL_NODE for p in pods)
    url = service_url(real_cluster, real_ns, "bem-baked")
    status, body = post(f"{url}/v1/generate", GENERATE)
    assert status == 200, body
    assert body["text"] and body["routing"], body
    figure(f"baked sample via ClusterIP: {body['usage'] if 'usage' in body else body.keys()}")
    # NodePort on the node's own address (a local address of this machine).
    svc = get_json(real_cluster, "service", "bem-baked", "-n", real_ns)
    node_port = svc["spec"]["ports"][0]["nodePort"]
    node = get_json(real_cluster, "node", REAL_NODE)
    ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert ip in local_addresses(), f"{ip} is not this machine's: not sending there"
    status, body = post(f"http://{ip}:{node_port}/v1/generate", GENERATE)
    assert status == 200, body


def test_pvc_model_sample_serves_from_a_local_volume(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    models = real_cluster.state_dir / "volumes" / real_ns
    subprocess.run([sys.executable, "-m", "bem_runtime", "make-toy", "--out", str(models)],
                   check=True, capture_output=True, timeout=300)
    subprocess.run(["chmod", "-R", "a+rX", str(models.parent)], check=True)
    pv_name = f"bem-models-{real_ns}"
    volume = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                  "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                  "local": {"path": str(models)},
                  "claimRef": {"namespace": real_ns, "name": "bem-models"},
                  "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                      {"key": "kubernetes.io/hostname", "operator": "In",
                       "values": [REAL_NODE]}]}]}}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "bem-models"},
         "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                  "volumeName": pv_name, "resources": {"requests": {"storage": "1Gi"}}}},
    ]
    try:
        apply(real_cluster, real_ns, {"apiVersion": "v1", "kind": "List", "items": volume})
        sample = yaml.safe_load((SAMPLES / "cpu.yaml").read_text())
        apply(real_cluster, real_ns, sample)
        bems_ready(real_cluster, real_ns, sample["metadata"]["name"], timeout=300)
        pods = runtime_pods(real_cluster, real_ns, sample["metadata"]["name"])
        assert len(pods) == sample["spec"]["replicas"]
        mounts = pods[0]["spec"]["volumes"]
        assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "bem-models"
                   for v in mounts)
        url = service_url(real_cluster, real_ns, sample["metadata"]["name"])
        status, body = post(f"{url}/v1/generate", GENERATE)
        assert status == 200, body
    finally:
        real_cluster.kubectl("delete", "namespace", real_ns, "--wait=true", "--timeout=120s",
                             check=False, timeout=150)
        real_cluster.kubectl("delete", "pv", pv_name, "--ignore-not-found", check=False)


def _roll(cluster: Any, namespace: str, name: str, value: str) -> None:
    patch = {"spec": {"runtime": {"env": [{"name": "OMP_NUM_THREADS", "value": "1"},
                                          {"name": "BEM_TEST_ROLL", "value": value}]}}}
    cluster.kubectl("patch", "bemservice", name, "-n", namespace, "--type=merge",
                    "-p", json.dumps(patch))


def _serving(cluster: Any, namespace: str, name: str, strategy: str,
             replicas: int) -> tuple[set[str], str]:
    """Apply a fleet, wait until it is Ready; its pod names and its Service URL."""
    apply(cluster, namespace, fleet(name, strategy, replicas))
    bems_ready(cluster, namespace, name)
    pods = {p["metadata"]["name"] for p in runtime_pods(cluster, namespace, name)}
    return pods, service_url(cluster, namespace, name)


def test_rolling_update_under_load_loses_no_request(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    before, url = _serving(real_cluster, real_ns, "roll", "RollingUpdate", 2)
    with Load(url, max_requests=3000, max_seconds=240) as load:
        load.wait_for(10)
        _roll(real_cluster, real_ns, "roll", "1")
        wait_until("new pods replace the old ones", lambda: before.isdisjoint(
            p["metadata"]["name"] for p in runtime_pods(real_cluster, real_ns, "roll")),
            timeout=240, interval=1)
        rollout_done(real_cluster, real_ns, "roll")
        bems_ready(real_cluster, real_ns, "roll")
        load.wait_for(len(load.results) + 10)
    figure(f"RollingUpdate (2 replicas, maxSurge 1, maxUnavailable 0): {load.summary()}")
    assert len(load.results) >= 20
    assert not load.failures, load.failures[:5]


def test_recreate_outage_window_is_measured(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    before, url = _serving(real_cluster, real_ns, "recreate", "Recreate", 1)
    with Load(url, max_requests=3000, max_seconds=240, pause=0.1) as load:
        load.wait_for(5)
        _roll(real_cluster, real_ns, "recreate", "1")
        wait_until("the new pod serves", lambda: any(
            p["metadata"]["name"] not in before and all(
                c.get("ready") for c in p["status"].get("containerStatuses", [{}]))
            for p in runtime_pods(real_cluster, real_ns, "recreate")), timeout=240, interval=1)
        load.wait_for(len(load.results) + 10)
    figure(f"Recreate (1 replica): {load.summary()}")
    # Recreate stops the old pod before the new one starts: there is a window, and the
    # service comes back after it.
    assert load.failures, "Recreate left no gap: the measurement saw nothing"
    assert load.results[-1][1] == 200
    assert load.outage_seconds() > 0


def test_pod_deletion_and_scale_down_under_load_lose_no_request(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    _, url = _serving(real_cluster, real_ns, "drain", "RollingUpdate", 3)
    with Load(url, max_requests=3000, max_seconds=240) as load:
        load.wait_for(10)
        victim = runtime_pods(real_cluster, real_ns, "drain")[0]["metadata"]["name"]
        real_cluster.kubectl("delete", "pod", victim, "-n", real_ns, "--wait=false")
        wait_until("the replacement pod is ready", lambda: sum(
            1 for p in runtime_pods(real_cluster, real_ns, "drain")
            if p["metadata"]["name"] != victim and all(
                c.get("ready") for c in p["status"].get("containerStatuses", [{}]))) >= 3,
            timeout=240, interval=1)
        deleted_at = len(load.results)
        real_cluster.kubectl("scale", "bems/drain", "-n", real_ns, "--replicas=1")
        wait_until("scaled down to one pod", lambda: len(
            get_json(real_cluster, "pods", "-n", real_ns, "-l", "bem.ai/service=drain")
            ["items"]) == 1, timeout=240, interval=1)
        load.wait_for(len(load.results) + 10)
    figure(f"pod deletion then scale 3->1: {load.summary()} "
           f"({len(load.results) - deleted_at} during scale-down)")
    assert not load.failures, load.failures[:5]


def test_runtime_logs_are_json_with_request_ids(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    _, url = _serving(real_cluster, real_ns, "logs", "RollingUpdate", 1)
    rid = f"e2e-{real_ns}"
    status, _ = post(f"{url}/v1/generate", GENERATE, headers={"X-Request-ID": rid})
    assert status == 200
    [pod] = runtime_pods(real_cluster, real_ns, "logs")
    lines: list[dict[str, Any]] = []

    def logged() -> bool:
        out = real_cluster.kubectl("logs", pod["metadata"]["name"], "-n", real_ns).stdout
        lines[:] = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
        return any(rid in json.dumps(ln) for ln in lines)
    wait_until(f"a log line with request id {rid}", logged, timeout=30, interval=1)
    raw = real_cluster.kubectl("logs", pod["metadata"]["name"], "-n", real_ns).stdout
    assert all(ln.startswith("{") for ln in raw.splitlines() if ln.strip()), raw[:2000]


@pytest.mark.parametrize("sample", ["gpu.yaml"])
def test_gpu_sample_schedules_on_the_fake_gpu_node(
        real_cluster: Any, operator_release: str, real_ns: str, sample: str) -> None:
    spec = yaml.safe_load((SAMPLES / sample).read_text())
    name = spec["metadata"]["name"]
    # The claim the sample names; kwok runs no container, so an empty volume does.
    pv = f"gpu-models-{real_ns}"
    apply(real_cluster, real_ns, {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                  "storageClassName": "", "hostPath": {"path": "/nonexistent-bem-models"},
                  "claimRef": {"namespace": real_ns, "name": "bem-models"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "bem-models"},
         "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv,
                  "resources": {"requests": {"storage": "1Gi"}}}}]})
    try:
        apply(real_cluster, real_ns, spec)
        wait_until("GPU pods running on the kwok GPU node", lambda: (pods := runtime_pods(
            real_cluster, real_ns, name)) and all(
            p["spec"].get("nodeName") == "kwok-gpu-0" and p["status"].get("phase") == "Running"
            for p in pods), timeout=120, interval=1)
    finally:
        real_cluster.kubectl("delete", "namespace", real_ns, "--wait=true", "--timeout=60s",
                             check=False, timeout=90)
        real_cluster.kubectl("delete", "pv", pv, "--ignore-not-found", check=False)


def _condition(cluster: Any, namespace: str, name: str, kind: str) -> dict[str, Any]:
    obj = get_json(cluster, "bemservice", name, "-n", namespace)
    conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
    return {"phase": obj.get("status", {}).get("phase"), **conds.get(kind, {})}


def test_a_model_that_fails_to_load_degrades_with_the_runtimes_own_error_and_recovers(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    broken = fleet("broken", "RollingUpdate", 1)
    broken["spec"]["model"]["checkpointPath"] = "no-such-checkpoint"
    apply(real_cluster, real_ns, broken)
    seen: dict[str, Any] = {}

    def degraded() -> bool:
        seen.update(_condition(real_cluster, real_ns, "broken", "Degraded"))
        return seen.get("status") == "True" and seen.get("reason") == "ModelLoadFailed"
    began = time.monotonic()
    wait_until("Degraded with ModelLoadFailed", degraded, timeout=180, interval=1)
    figure(f"model load failure -> Degraded in {time.monotonic() - began:.1f}s: "
           f"{seen['message'][:160]}")
    # The runtime's own words (its termination message), and the phase agrees.
    assert "no-such-checkpoint" in seen["message"], seen
    assert seen["phase"] == "Degraded"
    ready = _condition(real_cluster, real_ns, "broken", "Ready")
    assert ready["status"] == "False"
    # Fixing the spec recovers it.
    real_cluster.kubectl("patch", "bemservice", "broken", "-n", real_ns, "--type=merge",
                         "-p", json.dumps({"spec": {"model": {"checkpointPath": "bem"}}}))
    bems_ready(real_cluster, real_ns, "broken", timeout=240)
    assert _condition(real_cluster, real_ns, "broken", "Degraded").get("status") != "True"


def test_more_gpu_pods_than_the_gpu_node_holds_reports_why_it_is_not_ready(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    gpu = {
        "apiVersion": "bem.ai/v1alpha1", "kind": "BEMService", "metadata": {"name": "big"},
        "spec": {"model": {"source": "Image", "basePath": "base", "checkpointPath": "bem"},
                 "replicas": 2, "gpu": {"count": 8},
                 "runtime": {"image": BAKED_IMAGE, "imagePullPolicy": "Never"},
                 "monitoring": {"serviceMonitor": False}},
    }
    apply(real_cluster, real_ns, gpu)
    seen: dict[str, Any] = {}

    def explained() -> bool:
        seen.update(_condition(real_cluster, real_ns, "big", "Ready"))
        return seen.get("status") == "False" and "nvidia.com/gpu" in seen.get("message", "")
    try:
        wait_until("Ready=False naming the GPUs", explained, timeout=120, interval=1)
        figure(f"8-GPU pods x2 on one 8-GPU node: {seen.get('reason')}: "
               f"{seen.get('message', '')[:200]}")
        pods = runtime_pods(real_cluster, real_ns, "big")
        assert sorted(p["spec"].get("nodeName", "") for p in pods) == ["", "kwok-gpu-0"]
    finally:
        real_cluster.kubectl("delete", "namespace", real_ns, "--wait=true", "--timeout=60s",
                             check=False, timeout=90)
