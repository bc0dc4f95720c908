"""The real kubelet node: it runs a pod for real, and every way of ending it (a normal
`down`, SIGTERM of the owner, the owner killed outright and swept by the next start)
leaves iptables, links, mounts, cgroups, sysctls and host paths as they were before.

One real node per machine: each case here owns it in turn (the real-pod tier, which
shares one for its whole package, runs after this module).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from devcluster import hoststate, processes, realnode
from devcluster.cluster import DevCluster
from devcluster.health import wait_until
from devcluster.nodes import REAL_NODE

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

REPO = Path(__file__).resolve().parents[2]
PAUSE_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "sleeper", "namespace": "default"},
    "spec": {"nodeSelector": {realnode.NODE_LABEL: "real"},
             "terminationGracePeriodSeconds": 1,
             "containers": [{"name": "pause", "image": realnode.PAUSE_IMAGE,
                             "imagePullPolicy": "Never"}]},
}


def _cli(state_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devcluster", "--state-dir", str(state_dir),
                           *args], capture_output=True, text=True, timeout=timeout)


def _run_pod(kubectl) -> str:
    """A pod on the real node (sandbox, veth, netns, cgroups): returns its IP."""
    kubectl("apply", "-f", "-", input=json.dumps(PAUSE_POD))
    ip: list[str] = []

    def running() -> bool:
        pod = json.loads(kubectl("get", "pod", "sleeper", "-o", "json").stdout)
        ip[:] = [pod["status"].get("podIP", "")]
        return pod["status"].get("phase") == "Running" and bool(ip[0])
    wait_until("the pause pod Running on the real node", running, timeout=120, interval=0.5)
    return ip[0]


def _assert_node_changed_the_host(before: dict[str, Any], pod_ip: str) -> None:
    """Proof that the checks below can fail: a running node does change the host."""
    changed = hoststate.diff(before, hoststate.snapshot())
    assert realnode.BRIDGE in changed.get("links", {}).get("added", []), changed.keys()
    assert any(k.startswith("iptables-v4") for k in changed), changed.keys()
    assert changed.get("cgroups", {}).get("added"), "no kubepods cgroups while a pod runs"
    assert realnode.served_here(pod_ip) == f"a pod on {realnode.BRIDGE}"


def _assert_host_restored(before: dict[str, Any]) -> None:
    left = hoststate.diff(before, hoststate.snapshot())
    assert not left, f"the node left host state behind: {json.dumps(left, indent=1)}"
    assert not realnode.owner_file().exists()


def test_up_runs_a_real_pod_and_down_restores_the_host(tmp_path: Path) -> None:
    before = hoststate.snapshot()
    state_dir = tmp_path / "cluster"
    up = _cli(state_dir, "up")
    try:
        assert up.returncode == 0, up.stderr
        cluster = DevCluster.from_state_dir(state_dir)
        assert cluster.real_node
        names = {c.name for c in processes.recorded(state_dir)}
        assert {"containerd", "kubelet", "kube-proxy", "apiserver-bridge"} <= names
        nodes = cluster.kubectl("get", "nodes", "-o", "name").stdout.split()
        # The kwok CPU node goes: CPU pods run on the real node; GPUs stay faked.
        assert sorted(nodes) == [f"node/{REAL_NODE}", "node/kwok-gpu-0"]
        pod_ip = _run_pod(cluster.kubectl)
        _assert_node_changed_the_host(before, pod_ip)
        # kubectl logs/exec reach the kubelet (the API server's kubelet client cert).
        logs = cluster.kubectl("logs", "sleeper", check=False)
        assert logs.returncode == 0, logs.stderr
        # A second real node on this machine is refused, naming the holder.
        other = _cli(tmp_path / "other", "up", timeout=120)
        assert other.returncode == 1 and "in use by the cluster in" in other.stderr
        assert str(state_dir) in other.stderr
    finally:
        down = _cli(state_dir, "down")
    assert down.returncode == 0, down.stderr
    assert not state_dir.exists()
    _assert_host_restored(before)


OWNER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from devcluster.cluster import DevCluster
    sys.path.insert(0, os.environ["TEST_DIR"])
    from test_realnode import _run_pod
    c = DevCluster.start(real_node=True)
    ip = _run_pod(c.kubectl)
    out = Path(os.environ["REPORT_FILE"])
    out.with_suffix(".tmp").write_text(json.dumps({"state_dir": str(c.state_dir), "ip": ip}))
    out.with_suffix(".tmp").rename(out)
    time.sleep(300)
""")


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_owner_ended_by_a_signal_leaves_nothing_behind(tmp_path: Path, how: str) -> None:
    before = hoststate.snapshot()
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO), "REPORT_FILE": str(report),
                        "TEST_DIR": str(Path(__file__).parent)})
    try:
        deadline = time.monotonic() + 240
        while not report.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the owner never reported its cluster"
            time.sleep(0.2)
        info = json.loads(report.read_text())
        _assert_node_changed_the_host(before, info["ip"])
        proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        proc.communicate(timeout=180)
        if how == "sigkill":
            # No Python code ran: the components died with their owner (parent-death
            # signal), but the containers, the bridge and the rules are still there...
            assert realnode.owner_file().exists()
            assert realnode.BRIDGE in hoststate.links()
            # ...until the next start (or `bem-devcluster down`) sweeps them.
            wait_until("the dead owner's components to exit", lambda: not any(
                c.is_ours() for c in processes.recorded(Path(info["state_dir"]))), timeout=60)
            assert realnode.sweep_dead_owner()
    finally:
        proc.kill()
    _assert_host_restored(before)
