"""Helpers of the real-pod tier: Service URLs, BEMService waits; the bounded request loops are
devcluster.traffic's (the demo and the autoscaling benchmark use them too)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from devcluster.health import wait_until
from devcluster.realnode import wait_served_here
from devcluster.traffic import GENERATE, Load, post

__all__ = ["BAKED_IMAGE", "GENERATE", "SMALL", "Load", "apply", "baked_service", "bems_ready",
           "figure", "get_json", "post", "rollout_done", "runtime_pods", "service_url"]

BAKED_IMAGE = "bem-runtime-with-model:0.1.0"
SMALL = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def baked_service(name: str, **spec: Any) -> dict[str, Any]:
    """A BEMService of the baked toy model, small enough for a 2-core node, rolled out one pod
    at a time; `spec` adds fields or replaces these."""
    return {
        "apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
        "metadata": {"name": name},
        "spec": {
            "model": {"source": "Image", "basePath": "base", "checkpointPath": "bem"},
            "resources": SMALL,
            "runtime": {"image": BAKED_IMAGE, "imagePullPolicy": "Never",
                        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
            "rollout": {"strategy": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0},
            **spec,
        },
    }


def figure(text: str) -> None:
    """A measured figure: in the test's output, and in $BEM_TEST_FIGURES (scripts/test.sh
    shows them all at the end, passing tests' included)."""
    print(f"[figure] {text}", file=sys.stderr, flush=True)
    if path := os.environ.get("BEM_TEST_FIGURES"):
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]}: {text}\n")


def apply(cluster: Any, namespace: str, obj: dict[str, Any] | str) -> None:
    doc = obj if isinstance(obj, str) else json.dumps(obj)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=doc)


def runtime_pods(cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"bem.ai/service={name}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def get_json(cluster: Any, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def service_url(cluster: Any, namespace: str, name: str) -> str:
    """http://<ClusterIP>:<port>, once kube-proxy serves the ClusterIP on this machine."""
    svc = get_json(cluster, "service", name, "-n", namespace)
    ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]
    wait_served_here(ip)
    return f"http://{ip}:{port}"


def bems_ready(cluster: Any, namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def ready() -> bool:
        seen.update(get_json(cluster, "bemservice", name, "-n", namespace))
        conds = {c["type"]: c for c in seen.get("status", {}).get("conditions", [])}
        return conds.get("Ready", {}).get("status") == "True" and \
            seen["status"].get("observedGeneration") == seen["metadata"]["generation"]
    try:
        wait_until(f"BEMService {namespace}/{name} Ready", ready, timeout=timeout, interval=1)
    except Exception as exc:
        raise AssertionError(f"{exc}; last status: {json.dumps(seen.get('status'))}") from None
    return seen


def rollout_done(cluster: Any, namespace: str, name: str, timeout: float = 300) -> None:
    cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace,
                    f"--timeout={int(timeout)}s", timeout=timeout + 10)
