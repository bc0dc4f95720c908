"""Benchmark: how fast the live request-rate autoscaling loop reacts to a load step, side by side
with the sum of its configured intervals (not a test).

    .venv/bin/bem-devcluster up && .venv/bin/python bench/bench_autoscaling.py

On the running local cluster (its real node) it installs what the loop needs: the images, the
add-ons (Prometheus by the Prometheus operator, KEDA) and the operator by Helm, pointed at that
Prometheus. It creates a KEDA-scaled BEMService of the toy model (1..2 pods, 1 request/s per pod,
5 s scrape interval), waits until it is idle, steps the load from nothing to three request loops
(a few requests per second through the Service's ClusterIP) and times, from the step:

  visible   the KEDA trigger's query (the service's generation rate) > 0 in Prometheus
  decision  the HPA that KEDA made wants more replicas (status.desiredReplicas > 1)
  ready     the new pod is Ready
  traffic   the new pod has answered a generation request (its own /metrics)

and the ratio of the reaction time (traffic) to the sum of the configured intervals: scrape
interval + KEDA polling interval + HPA sync period + the new pod's own start (created -> Ready).
Then the load stops and the scale-down is timed the same way (decision: desiredReplicas back to
1; removed: the extra pod taken out of the Service), against rate window + scale-down
stabilization + HPA sync + the pod's termination grace.
Every request goes to an address this machine serves; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bem_operator.builders.pod import METRICS_PORT
from devcluster import addons, images, realnode
from devcluster.cluster import DevCluster, default_state_dir
from devcluster.traffic import Load

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "bem-operator"
NAMESPACE = f"bench-autoscaling-{secrets.token_hex(3)}"  # a fresh one per run
NAME = "stepped"
SCRAPE_SECONDS = 5
# Each loop a few requests a second: several times the target in all, and well under the
# runtime's per-client rate limit (20/s per pod), which would answer 429 to anything faster.
PAUSE = 0.25
KEDA_DEFAULT_POLLING_SECONDS = 30  # KEDA's default; the operator leaves pollingInterval unset
HPA_SYNC_SECONDS = 15  # kube-controller-manager's default; devcluster leaves it
SCALE_DOWN_STABILIZATION = 10


def kubectl_json(cluster: DevCluster, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def service() -> dict[str, Any]:
    return {
        "apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": {"source": "Image", "basePath": "base", "checkpointPath": "bem"},
            "resources": {"requests": {"cpu": "50m", "memory": "256Mi"},
                          "limits": {"memory": "1Gi"}},
            "runtime": {"image": "bem-runtime-with-model:0.1.0", "imagePullPolicy": "Never",
                        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
            "rollout": {"strategy": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0},
            "monitoring": {"serviceMonitor": True, "interval": f"{SCRAPE_SECONDS}s"},
            "autoscaling": {
                "provider": "KEDA", "minReplicas": 1, "maxReplicas": 2,
                "targetRequestsPerSecond": 1,
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0,
                                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 5}]},
                    "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_STABILIZATION,
                                  "policies": [{"type": "Percent", "value": 100,
                                                "periodSeconds": 5}]},
                },
            },
        },
    }


def setup(cluster: DevCluster) -> None:
    lay = realnode.NodeLayout(cluster.state_dir)
    images.ensure_all(lay, (*images.ALL, *addons.IMAGES))
    addons.install(cluster)
    env = {**cluster.env(), **{f"HELM_{k}_HOME": str(cluster.state_dir / "helm" / k.lower())
                               for k in ("CACHE", "CONFIG", "DATA")}}
    subprocess.run([str(cluster.helm_bin), "upgrade", "--install", "bem-operator", str(CHART),
                    "-n", "bem-system", "--create-namespace", "--wait", "--timeout", "5m",
                    "--set", f"autoscaling.keda.prometheusAddress={addons.PROMETHEUS_URL}"],
                   check=True, env=env, capture_output=True, text=True)
    # The operator learns at start which optional APIs are served: KEDA's came just now.
    cluster.kubectl("rollout", "restart", "deployment", "-n", "bem-system",
                    "-l", "app.kubernetes.io/name=bem-operator")
    cluster.kubectl("rollout", "status", "deployment", "-n", "bem-system",
                    "-l", "app.kubernetes.io/name=bem-operator", "--timeout=180s", timeout=200)


def prometheus_value(expr: str) -> float:
    return sum(float(s["value"][1]) for s in addons.query(expr))


def generated(pod_ip: str) -> float:
    """Generation requests a pod has answered, from its own /metrics."""
    with urllib.request.urlopen(f"http://{pod_ip}:{METRICS_PORT}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = re.compile(r'^bem_requests_total\{endpoint="/v1/generate",status="200"\} (\S+)$',
                         re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def pods(cluster: DevCluster) -> list[dict[str, Any]]:
    items = kubectl_json(cluster, "pods", "-n", NAMESPACE, "-l", f"bem.ai/service={NAME}")
    return [p for p in items["items"] if not p["metadata"].get("deletionTimestamp")]


def ready_since(pod: dict[str, Any]) -> str | None:
    for cond in pod.get("status", {}).get("conditions", []):
        if cond["type"] == "Ready" and cond["status"] == "True":
            return cond["lastTransitionTime"]
    return None


def seconds_between(a: str, b: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return time.mktime(time.strptime(b, fmt)) - time.mktime(time.strptime(a, fmt))


def desired(cluster: DevCluster, hpa: str) -> int:
    return int(kubectl_json(cluster, "hpa", hpa, "-n", NAMESPACE).get("status", {})
               .get("desiredReplicas") or 0)


def step_up(cluster: DevCluster, url: str, query: str, hpa: str,
            limit: float) -> tuple[dict[str, float], float, list[Load]]:
    (first,) = pods(cluster)
    loads = [Load(url, max_requests=20_000, max_seconds=limit, pause=PAUSE) for _ in range(3)]
    began = time.monotonic()
    for load in loads:
        load.__enter__()
    marks: dict[str, float] = {}
    pod_start = 0.0
    while len(marks) < 4 and time.monotonic() - began < limit:
        now = time.monotonic() - began
        if "visible" not in marks and prometheus_value(query) > 0:
            marks["visible"] = now
        if "decision" not in marks and desired(cluster, hpa) > 1:
            marks["decision"] = now
        new = [p for p in pods(cluster) if p["metadata"]["name"] != first["metadata"]["name"]]
        if new and "ready" not in marks and ready_since(new[0]):
            marks["ready"] = now
            pod_start = seconds_between(new[0]["metadata"]["creationTimestamp"],
                                        ready_since(new[0]) or "")
        if "ready" in marks and "traffic" not in marks:
            ip = new[0]["status"]["podIP"]
            realnode.wait_served_here(ip)
            if generated(ip) > 0:
                marks["traffic"] = time.monotonic() - began
        time.sleep(0.5)
    return marks, pod_start, loads


def step_down(cluster: DevCluster, url: str, hpa: str, limit: float) -> tuple[dict[str, float], Load]:
    began = time.monotonic()
    marks: dict[str, float] = {}
    with Load(url, max_requests=2000, max_seconds=limit, pause=1.0) as light:
        while len(marks) < 2 and time.monotonic() - began < limit:
            now = time.monotonic() - began
            if "decision" not in marks and desired(cluster, hpa) == 1:
                marks["decision"] = now
            if "decision" in marks and len(pods(cluster)) == 1:
                marks["removed"] = now
            time.sleep(0.5)
    return marks, light


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=float, default=300.0, help="seconds per phase at most")
    args = p.parse_args()
    state = default_state_dir()
    cluster = DevCluster.from_state_dir(state)
    if not cluster.real_node:
        print("needs `bem-devcluster up` with its real node", file=sys.stderr)
        return 1
    setup(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(service()))
    try:
        cluster.kubectl("wait", "--for=condition=Ready", f"bems/{NAME}", "-n", NAMESPACE,
                        "--timeout=300s", timeout=310)
        so = kubectl_json(cluster, "scaledobject", NAME, "-n", NAMESPACE)
        query = so["spec"]["triggers"][0]["metadata"]["query"]
        hpa = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"]
        polling = so["spec"].get("pollingInterval", KEDA_DEFAULT_POLLING_SECONDS)
        window = float(re.search(r"\[(\d+)s\]", query).group(1))
        svc = kubectl_json(cluster, "service", NAME, "-n", NAMESPACE)
        ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]
        realnode.wait_served_here(ip)
        url = f"http://{ip}:{port}"
        # Idle: one pod, scraped, the service's rate at zero.
        deadline = time.monotonic() + args.limit
        while time.monotonic() < deadline and not (
                len(pods(cluster)) == 1 and prometheus_value(
                    f'up{{namespace="{NAMESPACE}"}}') >= 1 and prometheus_value(query) == 0):
            time.sleep(1)

        up, pod_start, loads = step_up(cluster, url, query, hpa, args.limit)
        for load in loads:
            load.stop()
        down, light = step_down(cluster, url, hpa, args.limit)
        grace = kubectl_json(cluster, "deployment", NAME, "-n", NAMESPACE)["spec"]["template"][
            "spec"].get("terminationGracePeriodSeconds", 30)
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)

    configured_up = SCRAPE_SECONDS + polling + HPA_SYNC_SECONDS + pod_start
    configured_down = window + SCALE_DOWN_STABILIZATION + HPA_SYNC_SECONDS + grace
    failed = sum(len(load.failures) for load in [*loads, light])
    sent = sum(len(load.results) for load in [*loads, light])
    print(f"load step 0 -> 3 request loops, KEDA provider, 1 -> 2 pods "
          f"({sent} requests, {failed} failed)")
    print(f"{'scale-up':10} " + "  ".join(f"{k} {v:5.1f}s" for k, v in up.items()))
    print(f"{'':10} configured: scrape {SCRAPE_SECONDS}s + KEDA polling {polling}s + HPA sync "
          f"{HPA_SYNC_SECONDS}s + pod start {pod_start:.0f}s = {configured_up:.0f}s")
    if "traffic" in up:
        print(f"{'':10} reaction/configured = {up['traffic'] / configured_up:.2f}")
    print(f"{'scale-down':10} " + "  ".join(f"{k} {v:5.1f}s" for k, v in down.items()))
    print(f"{'':10} configured: rate window {window:.0f}s + stabilization "
          f"{SCALE_DOWN_STABILIZATION}s + HPA sync {HPA_SYNC_SECONDS}s + grace {grace}s "
          f"= {configured_down:.0f}s")
    if "removed" in down:
        print(f"{'':10} reaction/configured = {down['removed'] / configured_down:.2f}")
    return 0 if len(up) == 4 and len(down) == 2 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
