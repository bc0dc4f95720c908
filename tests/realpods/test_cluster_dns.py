"""Cluster DNS and resource metrics on the real node, as in any cluster: a runtime pod resolves
the endpoint the operator reports for its BEMService and gets an answer through it, a name
outside the cluster answers NXDOMAIN at once (CoreDNS forwards nothing), `kubectl top` shows
the runtime pods, and an HPA on spec.autoscaling.targetCPUUtilization scales the pods up on the
CPU use metrics-server reads from the kubelet (and wants them down after: see the test).

Requests from this machine go only to a ClusterIP that kube-proxy serves here (checked
first); every load loop is bounded in count and time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bem_operator.builders.pod import CONTAINER_NAME

from devcluster import kubesystem
from devcluster.health import wait_until
from devcluster.network import CLUSTER_DNS_IP
from devcluster.pytest_plugin import fresh_namespace

from .support import (GENERATE, Load, apply, baked_service, bems_ready, figure, get_json,
                      runtime_pods, service_url)

NAME = "dns"
CPU_TARGET = 50  # percent of the 50m request: one request loop is several times that
MAX_REPLICAS = 2
# Up to 10 requests a second: well over the CPU target, under the runtime's per-client rate
# limit (20/s per pod), which would answer 429 to anything faster.
PAUSE = 0.1


def cpu_scaled_service() -> dict[str, Any]:
    """The HPA (provider HPA) of this BEMService targets CPU use alone (requestRate false: no
    custom-metrics adapter serves the request rate here, and an HPA holds its pods while one of
    its metrics cannot be read)."""
    return baked_service(NAME, monitoring={"serviceMonitor": False}, autoscaling={
        "minReplicas": 1, "maxReplicas": MAX_REPLICAS, "targetCPUUtilization": CPU_TARGET,
        "requestRate": False,
        # Short windows so the test sees both directions in about two minutes.
        "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0},
            "scaleDown": {"stabilizationWindowSeconds": 5,
                          "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}]},
        },
    })


@pytest.fixture(scope="module")
def served(real_cluster: Any, operator_release: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(namespace, the BEMService once Ready), shared by this module."""
    with fresh_namespace(real_cluster, "d") as namespace:
        apply(real_cluster, namespace, cpu_scaled_service())
        yield namespace, bems_ready(real_cluster, namespace, NAME)


def in_pod(cluster: Any, namespace: str, code: str) -> dict[str, Any]:
    """Run Python in the first runtime pod (its image has no curl); the JSON it prints."""
    pod = runtime_pods(cluster, namespace, NAME)[0]["metadata"]["name"]
    out = cluster.kubectl("exec", "-n", namespace, pod, "-c", CONTAINER_NAME, "--", "python3",
                          "-c", code, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


RESOLVE_AND_ASK = """
import json, socket, time, urllib.parse, urllib.request
url = {endpoint!r}
host = urllib.parse.urlsplit(url).hostname
began = time.monotonic()
ip = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
resolved = time.monotonic() - began
req = urllib.request.Request(url + "/v1/generate", data=json.dumps({body}).encode(),
                             headers={{"Content-Type": "application/json"}})
with urllib.request.urlopen(req, timeout=30) as resp:
    answer = json.loads(resp.read())
print(json.dumps({{"ip": ip, "resolved_s": resolved, "status": resp.status, "answer": answer,
                  "resolv_conf": open("/etc/resolv.conf").read()}}))
"""

OUTSIDE_NAMES = ("example.com", "pypi.org", "bem-no-such-host")
RESOLVE_OUTSIDE = """
import json, socket, time
out = {{}}
for name in {names!r}:
    began = time.monotonic()
    try:
        out[name] = [socket.getaddrinfo(name, 80)[0][4][0]]
    except socket.gaierror as exc:
        out[name] = exc.errno
    out[name + " seconds"] = time.monotonic() - began
print(json.dumps(out))
"""


def test_a_pod_resolves_the_endpoint_the_operator_reports(
        real_cluster: Any, served: tuple[str, dict[str, Any]]) -> None:
    namespace, bems = served
    endpoint = bems["status"]["endpoint"]
    service = get_json(real_cluster, "service", NAME, "-n", namespace)
    assert endpoint == f"http://{NAME}.{namespace}.svc:{service['spec']['ports'][0]['port']}"
    seen = in_pod(real_cluster, namespace,
                  RESOLVE_AND_ASK.format(endpoint=endpoint, body=repr(GENERATE)))
    assert seen["ip"] == service["spec"]["clusterIP"], seen
    assert seen["status"] == 200 and seen["answer"].get("text") is not None, seen
    assert f"nameserver {CLUSTER_DNS_IP}" in seen["resolv_conf"], seen["resolv_conf"]
    assert seen["resolv_conf"].count("nameserver") == 1, seen["resolv_conf"]
    figure(f"{endpoint} resolved in a pod in {seen['resolved_s'] * 1000:.1f} ms")
    # The kubelet had a cluster DNS for every pod of this service.
    events = get_json(real_cluster, "events", "-n", namespace,
                      "--field-selector", "reason=MissingClusterDNS")["items"]
    assert not events, [e["message"] for e in events]


def test_names_outside_the_cluster_answer_nxdomain_at_once(
        real_cluster: Any, served: tuple[str, dict[str, Any]]) -> None:
    namespace, _ = served
    corefile = get_json(real_cluster, "configmap", "coredns", "-n", kubesystem.NS)["data"][
        "Corefile"]
    assert corefile == kubesystem.COREFILE and "forward" not in corefile
    seen = in_pod(real_cluster, namespace, RESOLVE_OUTSIDE.format(names=OUTSIDE_NAMES))
    for name in OUTSIDE_NAMES:
        assert isinstance(seen[name], int), seen  # a gaierror, not an address
        assert seen[f"{name} seconds"] < 2.0, seen  # answered, not timed out upstream


def test_kubectl_top_shows_the_runtime_pods(
        real_cluster: Any, served: tuple[str, dict[str, Any]]) -> None:
    namespace, _ = served
    pods = {p["metadata"]["name"] for p in runtime_pods(real_cluster, namespace, NAME)}
    shown: dict[str, str] = {}

    def listed() -> bool:
        out = real_cluster.kubectl("top", "pods", "-n", namespace, "--no-headers", check=False)
        shown.clear()
        shown.update({line.split()[0]: line.split()[1] for line in out.stdout.splitlines()
                      if out.returncode == 0 and line.strip()})
        return pods <= set(shown)
    wait_until(f"kubectl top to show {sorted(pods)}", listed, timeout=120, interval=3)
    assert all(cpu.endswith("m") for cpu in shown.values()), shown


def _replicas(cluster: Any, namespace: str) -> tuple[int, int]:
    dep = get_json(cluster, "deployment", NAME, "-n", namespace)
    return dep["spec"].get("replicas", 0), dep["status"].get("readyReplicas", 0)


def _cpu_utilization(cluster: Any, namespace: str) -> int | None:
    """The HPA's current CPU use as a percent of the request, as metrics-server reported it."""
    status = get_json(cluster, "hpa", NAME, "-n", namespace).get("status", {})
    for metric in status.get("currentMetrics") or []:
        if metric.get("type") == "Resource" and metric["resource"]["name"] == "cpu":
            return metric["resource"]["current"].get("averageUtilization")
    return None


def test_cpu_target_scales_up_under_load_and_back_down_after(
        real_cluster: Any, served: tuple[str, dict[str, Any]]) -> None:
    """Up on the pods' CPU use under a request loop, read from metrics-server, and back down
    to minReplicas once the loop stops."""
    namespace, _ = served
    hpa = get_json(real_cluster, "hpa", NAME, "-n", namespace)
    assert {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": CPU_TARGET}}} in hpa["spec"]["metrics"]
    wait_until("the HPA to read the pods' CPU use from metrics-server",
               lambda: _cpu_utilization(real_cluster, namespace) is not None,
               timeout=120, interval=3)
    url = service_url(real_cluster, namespace, NAME)
    began = time.monotonic()
    seen: list[tuple[float, int, int, int | None]] = []

    def sample() -> tuple[int, int]:
        replicas = _replicas(real_cluster, namespace)
        seen.append((round(time.monotonic() - began), *replicas,
                     _cpu_utilization(real_cluster, namespace)))
        return replicas
    with Load(url, max_requests=3000, max_seconds=240, pause=PAUSE) as load:
        wait_until(f"{MAX_REPLICAS} ready replicas under CPU load",
                   lambda: sample() == (MAX_REPLICAS, MAX_REPLICAS), timeout=180, interval=3)
    up_seconds = time.monotonic() - began
    assert max(s[3] or 0 for s in seen) > CPU_TARGET, seen
    assert not load.failures, load.failures[:5]
    down_began = time.monotonic()
    wait_until("back to one replica once the load stopped", lambda: sample() == (1, 1),
               timeout=180, interval=3)
    assert [m["type"] for m in get_json(real_cluster, "hpa", NAME, "-n", namespace)["spec"][
        "metrics"]] == ["Resource"]
    figure(f"HPA on CPU 1->{MAX_REPLICAS} in {up_seconds:.0f}s under load ({load.summary()}); "
           f"back to 1 {time.monotonic() - down_began:.0f}s after it stopped; "
           f"samples (s, replicas, ready, cpu%) {seen}")
