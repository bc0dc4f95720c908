"""The fake nodes kwok keeps alive: one GPU node, one CPU node.

kwok manages only nodes carrying KWOK_ANNOTATION (it runs with
--manage-all-nodes=false), so a real node added by a user is never touched.
Capacities are generous: the fake nodes run no container, and the 1000-object
benchmark (bench/bench_operator.py) schedules 2,000 pods on the CPU node.
"""

from __future__ import annotations

from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_SELECTOR = f"{KWOK_ANNOTATION}=fake"
REAL_NODE = "bem-node-0"  # the kubelet node (devcluster/realnode.py), when it runs
GPU_NODE = "kwok-gpu-0"
CPU_NODE = "kwok-cpu-0"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_COUNT = 8
# What the NVIDIA GPU operator's device plugin and feature discovery put on a node.
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


def _node(
    name: str, ip: str, labels: dict[str, str], resources: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                **labels,
            },
        },
        "spec": {},
        # Nodes may set status on create; kwok keeps capacity/allocatable as given.
        # An address outside loopback: pods get it as hostIP, Endpoints accept it.
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def gpu_node() -> dict[str, Any]:
    node = _node(
        GPU_NODE,
        "10.240.0.2",
        {
            f"{GPU_RESOURCE}.product": GPU_PRODUCT,
            f"{GPU_RESOURCE}.count": str(GPU_COUNT),
            f"{GPU_RESOURCE}.present": "true",
        },
        {"cpu": "128", "memory": "1Ti", "pods": "500", GPU_RESOURCE: str(GPU_COUNT)},
    )
    node["spec"]["taints"] = [dict(GPU_TAINT)]
    return node


def cpu_node() -> dict[str, Any]:
    return _node(CPU_NODE, "10.240.0.1", {}, {"cpu": "256", "memory": "1Ti", "pods": "5000"})


def node_ready(node: dict[str, Any]) -> bool:
    """The node object's Ready condition is True."""
    conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    return conds.get("Ready") == "True"


def manifest(*, real_node: bool = False) -> dict[str, Any]:
    """The fake nodes as one v1 List (for `kubectl apply -f -`).

    With a real node, CPU workloads run there for real: only the GPU node is faked
    (these machines have no GPU)."""
    items = [gpu_node()] if real_node else [gpu_node(), cpu_node()]
    return {"apiVersion": "v1", "kind": "List", "items": items}
