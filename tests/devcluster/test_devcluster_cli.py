"""`bem-devcluster up/status/env/down` across separate processes (daemonised)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devcluster import processes

pytestmark = pytest.mark.e2e


def _cli(state_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devcluster", "--state-dir", str(state_dir), *args],
        capture_output=True, text=True, timeout=timeout,
    )


def test_up_status_env_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"
    up = _cli(state_dir, "up", "--no-real-node")
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = state_dir / "kubeconfig"
        assert f"export KUBECONFIG={kubeconfig}" in up.stdout
        # `up` has exited: the components live on, recorded in pid files.
        comps = processes.recorded(state_dir)
        assert {c.name for c in comps} == {"etcd", "kube-apiserver", "kube-controller-manager",
                                           "kube-scheduler", "kwok"}
        status = _cli(state_dir, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "apiserver /readyz        ok" in status.stdout
        assert _cli(state_dir, "env").stdout == up.stdout
        again = _cli(state_dir, "up", "--no-real-node")
        assert again.returncode == 0 and "already running" in again.stderr
        assert {c.pid for c in processes.recorded(state_dir)} == {c.pid for c in comps}
        # The printed exports are enough for a shell user to reach the cluster.
        nodes = subprocess.run(["bash", "-c", up.stdout + "kubectl get nodes -o name"],
                               capture_output=True, text=True, timeout=60)
        assert nodes.stdout.split() == ["node/kwok-cpu-0", "node/kwok-gpu-0"], nodes.stderr
        _tests_reuse_the_running_cluster(tmp_path, kubeconfig)
        assert all(c.is_ours() for c in comps), "a reusing session must not stop the cluster"
    finally:
        down = _cli(state_dir, "down")
    assert down.returncode == 0, down.stderr
    assert not state_dir.exists()
    assert not [c.name for c in comps if c.is_ours()]
    after = _cli(state_dir, "status")
    assert after.returncode == 1 and "not running" in after.stdout


def test_up_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    up = _cli(tmp_path, "up", timeout=60)
    assert up.returncode == 1
    assert "was not made by bem-devcluster" in up.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_env_without_a_cluster_says_what_to_do(tmp_path: Path) -> None:
    env = _cli(tmp_path / "none", "env", timeout=60)
    assert env.returncode == 1
    assert "run `bem-devcluster up`" in env.stderr


def _tests_reuse_the_running_cluster(tmp_path: Path, kubeconfig: Path) -> None:
    """BEM_DEVCLUSTER_KUBECONFIG: fixtures use the running cluster, start nothing."""
    (tmp_path / "test_reuse.py").write_text(textwrap.dedent(f"""
        def test_reuses(cluster, namespace):
            assert str(cluster.kubeconfig) == {str(kubeconfig)!r}
            assert cluster.kubectl("get", "ns", namespace).returncode == 0
    """))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "devcluster.pytest_plugin",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_reuse.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "BEM_DEVCLUSTER_KUBECONFIG": str(kubeconfig)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
