"""Benchmark: the operator vs a plain client applying the same objects (not a test).

    python bench/bench_operator.py [--count 100] [--kubeconfig PATH]

On the local control plane (started here, or an existing one with --kubeconfig
or BEM_DEVCLUSTER_KUBECONFIG), in one run:
  direct:   create N BEMServices, render their children with the same pure
            builders and server-side apply them from this process;
  operator: start `python -m bem_operator`, create N BEMServices, let it work.
Each object is timed from its create call until every child exists and it is
ready (direct: Deployment fully rolled out and available; operator: status
phase Ready for its generation, which says the same). Prints p50/p95 per
object, the wall time of the batch, their ratio operator/direct and the
operator's peak RSS (VmHWM). Targets: ratio <= 1.5, RSS <= 150 MB.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster.processes import free_port

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "bemservice.yaml"
CHILD_KINDS = (("apps/v1", "Deployment", "deployments"), ("v1", "Service", "services"),
               ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"))
SUBMITTERS = 8  # concurrent client threads, the same for both runs


def bemservice(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"source": "Image"}, "replicas": 2,
                     "monitoring": {"serviceMonitor": False}}}


def list_items(api: Any, path: str) -> list[dict[str, Any]]:
    return (api.request("GET", path)[1] or {}).get("items", [])


def deployment_ready(dep: dict[str, Any]) -> bool:
    status, want = dep.get("status") or {}, dep["spec"].get("replicas", 1)
    return (status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
            and status.get("updatedReplicas") == want and status.get("replicas") == want
            and status.get("availableReplicas") == want and status.get("readyReplicas") == want)


def bems_ready(bems: dict[str, Any]) -> bool:
    status = bems.get("status") or {}
    return status.get("phase") == "Ready" and \
        status.get("observedGeneration") == bems["metadata"]["generation"]


def wait_all(api: Any, namespace: str, names: list[str], started: dict[str, float],
             ready: Callable[[dict[str, dict[str, Any]]], set[str]], timeout: float
             ) -> dict[str, float]:
    """Polls until every name is ready and has all its children; returns name -> seconds."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(names):
        if time.monotonic() > deadline:
            raise SystemExit(f"Timed out: {len(done)} of {len(names)} ready after {timeout}s")
        now = time.monotonic()
        present: list[set[str]] = []
        listed: dict[str, dict[str, Any]] = {}
        for api_version, _, plural in CHILD_KINDS:
            prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            items = list_items(api, f"{prefix}/namespaces/{namespace}/{plural}")
            present.append({i["metadata"]["name"] for i in items})
            if plural == "deployments":
                listed["deployments"] = {i["metadata"]["name"]: i for i in items}
        listed["bemservices"] = {i["metadata"]["name"]: i for i in list_items(
            api, f"/apis/bem.ai/v1alpha1/namespaces/{namespace}/bemservices")}
        complete = set.intersection(*present) & ready(listed)
        for name in complete - done.keys():
            if name in started:
                done[name] = now - started[name]
        time.sleep(0.2)
    return done


def run_batch(api: Any, namespace: str, names: list[str],
              submit: Callable[[str], None]) -> dict[str, float]:
    started: dict[str, float] = {}

    def one(name: str) -> None:
        started[name] = time.monotonic()
        submit(name)
    with concurrent.futures.ThreadPoolExecutor(SUBMITTERS) as pool:
        list(pool.map(one, names))
    return started


def direct_run(api: Any, namespace: str, names: list[str], timeout: float
               ) -> tuple[dict[str, float], float]:
    from bem_operator.builders import BuildOptions, build_children

    options = BuildOptions(service_monitor_available=False)

    def submit(name: str) -> None:
        live, _ = api.apply(bemservice(namespace, name), manager="bench-direct")
        for child in build_children(live, options):
            api.apply(child, manager="bench-direct")
    t0 = time.monotonic()
    started = run_batch(api, namespace, names, submit)
    times = wait_all(api, namespace, names, started, lambda listed: {
        n for n, d in listed["deployments"].items() if deployment_ready(d)}, timeout)
    return times, time.monotonic() - t0


def operator_run(api: Any, kubeconfig: Path, namespace: str, names: list[str],
                 timeout: float) -> tuple[dict[str, float], float, float]:
    log = Path(tempfile.mkdtemp(prefix="bench-operator-")) / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "BEM_OPERATOR_NAMESPACES": namespace,
           "BEM_OPERATOR_BIND_ADDRESS": "127.0.0.1", "BEM_OPERATOR_METRICS_PORT": str(free_port()),
           "BEM_OPERATOR_HEALTH_PORT": str(health := free_port())}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bem_operator"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO)
    try:
        _wait_http(f"http://127.0.0.1:{health}/healthz", proc, log)
        t0 = time.monotonic()
        started = run_batch(api, namespace, names,
                            lambda name: api.apply(bemservice(namespace, name), manager="bench"))
        times = wait_all(api, namespace, names, started, lambda listed: {
            n for n, b in listed["bemservices"].items() if bems_ready(b)}, timeout)
        wall = time.monotonic() - t0
        peak_rss_mb = _peak_rss_kib(proc.pid) / 1024
        print(f"operator CPU time during the run: {_cpu_seconds(proc.pid):.1f}s", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(log.parent, ignore_errors=True)  # kept only when the run failed, for its log
    return times, wall, peak_rss_mb


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"The operator exited:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("The operator did not become live within 60s")


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("No VmHWM in /proc: peak RSS needs Linux")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def summary(label: str, times: dict[str, float], wall: float) -> str:
    values = sorted(times.values())
    p95 = values[min(len(values) - 1, int(round(0.95 * len(values))) - 1)]
    return (f"{label:9s} n={len(values)} wall={wall:7.2f}s  per object: "
            f"p50={statistics.median(values):6.2f}s p95={p95:6.2f}s max={values[-1]:6.2f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--kubeconfig", type=Path,
                        default=os.environ.get("BEM_DEVCLUSTER_KUBECONFIG") or None)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from bem_operator.k8s import KubeApi
    from kubernetes import client, config

    from devcluster.cluster import DevCluster

    cluster = None if args.kubeconfig else DevCluster.start()
    kubeconfig = Path(args.kubeconfig or cluster.kubeconfig)
    try:
        kubectl = cluster.kubectl_bin if cluster else "kubectl"
        run = lambda *a: subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", *a],  # noqa: E731
                                        check=True, capture_output=True, text=True)
        run("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        run("wait", "--for=condition=Established", "crd/bemservices.bem.ai", "--timeout=60s")
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = SUBMITTERS * 2
        api = KubeApi(client.ApiClient(configuration))
        suffix = str(int(time.time()))
        names = [f"svc-{i:03d}" for i in range(args.count)]
        ns_direct, ns_operator = f"bench-direct-{suffix}", f"bench-operator-{suffix}"
        for ns in (ns_direct, ns_operator):
            run("create", "namespace", ns)
            run("wait", "--for=jsonpath={.status.phase}=Active", f"namespace/{ns}")
        time.sleep(2)  # default ServiceAccounts appear, or pod creation is refused
        direct, direct_wall = direct_run(api, ns_direct, names, args.timeout)
        print(summary("direct", direct, direct_wall), flush=True)
        run("delete", "namespace", ns_direct, "--timeout=300s")  # a clean slate for the next run
        operated, operator_wall, rss = operator_run(api, kubeconfig, ns_operator, names,
                                                    args.timeout)
        print(summary("operator", operated, operator_wall))
        p50 = statistics.median(operated.values()) / statistics.median(direct.values())
        print(f"ratio operator/direct: wall {operator_wall / direct_wall:.2f} "
              f"(target <= 1.5), p50 {p50:.2f}")
        print(f"operator peak RSS: {rss:.1f} MB (target <= 150 MB)")
        run("delete", "namespace", ns_operator, "--wait=false")
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
