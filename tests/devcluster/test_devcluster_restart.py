"""`bem-devcluster restart-apiserver`: an outage drill from another shell. The API server
comes back with a new pid, the same address and credentials, and exits promptly on SIGTERM."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster import processes

pytestmark = pytest.mark.e2e


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devcluster", "--state-dir", str(state_dir),
                           *args], capture_output=True, text=True, timeout=300)


def _apiserver_pid(state_dir: Path) -> int:
    return next(c.pid for c in processes.recorded(state_dir) if c.name == "kube-apiserver")


def test_restart_apiserver_from_another_process(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"
    up = _cli(state_dir, "up", "--no-real-node")
    try:
        assert up.returncode == 0, up.stderr
        before = _apiserver_pid(state_dir)
        restart = _cli(state_dir, "restart-apiserver", "--down", "1")
        assert restart.returncode == 0, restart.stderr
        away = float(re.search(r"unreachable for ([0-9.]+)s", restart.stderr).group(1))
        assert 1 <= away < 30, restart.stderr  # down 1 s + a prompt exit + a restart
        assert _apiserver_pid(state_dir) != before
        status = _cli(state_dir, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "apiserver /readyz        ok" in status.stdout
    finally:
        _cli(state_dir, "down")
    assert not state_dir.exists()
