"""What each kind of write the operator makes costs the API server and etcd, side by side.

A local control plane (devcluster) with nothing else running; one client sends N writes of
each kind in turn, one at a time, and the CPU seconds kube-apiserver and etcd spent are read
from /proc before and after. Printed per write and as a ratio to a ConfigMap apply, the
cheapest write the operator makes. Why: on a saturated machine the operator's burst
(bench_operator.py) is a ratio of total work, and a BEMService status patch is one of the
three writes per object the direct side does not make.

  .venv/bin/python bench/bench_api_writes.py [--writes 400] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "writes"
BEMSERVICE = ("bem.ai/v1alpha1", "BEMService")
BEMCHECKPOINT = ("bem.ai/v1alpha1", "BEMCheckpoint")


def condition(i: int) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": "False", "reason": "Progressing", "message": f"step {i}",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]


def writes(api: Any) -> dict[str, Callable[[int], Any]]:
    """Each write kind of the operator, as the i-th of a run (each one changes something)."""
    def bemservice(i: int) -> dict[str, Any]:
        return {"apiVersion": BEMSERVICE[0], "kind": BEMSERVICE[1],
                "metadata": {"name": "s", "namespace": NAMESPACE},
                "spec": {"model": {"source": "Image"}, "replicas": 2 + i % 2,
                         "monitoring": {"serviceMonitor": False}}}
    return {
        "ConfigMap apply": lambda i: api.apply({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": NAMESPACE}, "data": {"k": f"v{i}"}}),
        "BEMCheckpoint status patch": lambda i: api.patch_status(
            NAMESPACE, "k", {"observedGeneration": 1, "conditions": condition(i)},
            kind=BEMCHECKPOINT),
        "BEMService status patch": lambda i: api.patch_status(
            NAMESPACE, "s", {"phase": "Progressing", "observedGeneration": 1,
                             "conditions": condition(i)}),
        "BEMService spec apply": lambda i: api.apply(bemservice(i), manager="bench"),
        "Event post": lambda i: api.post_event(bemservice(0) | {"metadata": {
            "name": "s", "namespace": NAMESPACE, "uid": "u"}}, "Normal", "Ready", f"step {i}"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=400, help="per kind and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "operator")]
    from bench_operator import install_crds, process_cpu_seconds
    from devcluster import processes
    from devcluster.cluster import DevCluster
    from bem_operator.k8s import KubeApi, Transport, credentials

    cluster = DevCluster.start()
    try:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        api = KubeApi(Transport(credentials()))
        kubectl = install_crds(cluster.kubectl_bin, Path(cluster.kubeconfig))
        kubectl("create", "namespace", NAMESPACE)
        kinds = writes(api)
        kinds["BEMService spec apply"](0)
        api.apply({"apiVersion": BEMCHECKPOINT[0], "kind": BEMCHECKPOINT[1],
                   "metadata": {"name": "k", "namespace": NAMESPACE},
                   "spec": {"service": "s", "path": "checkpoints/a"}}, manager="bench")
        running = {c.name: c.pid for c in processes.recorded(cluster.state_dir)}
        pids = {name: running[name] for name in ("kube-apiserver", "etcd")}  # columns' order
        costs: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for label, write in kinds.items():
                before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
                for i in range(args.writes):
                    write(i)
                costs[label].append(tuple(  # type: ignore[arg-type]
                    1000 * (process_cpu_seconds(pid) - before[name]) / args.writes
                    for name, pid in pids.items()))
        base = sum(a + e for a, e in costs["ConfigMap apply"]) / args.rounds
        print(f"\n{'write':28s}{'apiserver ms':>14s}{'etcd ms':>9s}{'vs ConfigMap':>14s}"
              f"   ({args.writes} writes x {args.rounds} rounds, CPU per write)")
        for label, runs in costs.items():
            api_ms = sum(a for a, _ in runs) / len(runs)
            etcd_ms = sum(e for _, e in runs) / len(runs)
            print(f"{label:28s}{api_ms:14.2f}{etcd_ms:9.2f}{(api_ms + etcd_ms) / base:14.2f}")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
