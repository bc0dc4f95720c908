"""Teardown leaves no process and no folder behind: normal stop, a failing
test, Ctrl-C, SIGTERM, and an owner killed outright. Each case owns a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devcluster import processes
from devcluster.cluster import ORDER, DevCluster, sweep_stale

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# Reports what the owner started, then waits to be ended.
REPORT = """
import json, os
from pathlib import Path
from devcluster import processes

def report(state_dir):
    comps = [c.__dict__ for c in processes.recorded(state_dir)]
    out = Path(os.environ["REPORT_FILE"])
    out.with_suffix(".tmp").write_text(json.dumps({"state_dir": str(state_dir), "comps": comps}))
    out.with_suffix(".tmp").rename(out)
"""


def _wait_report(path: Path, proc: subprocess.Popen, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"owner exited early ({proc.returncode}):\n{proc.stdout.read()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the owner never reported its cluster")


def _assert_clean(report: dict, *, dir_removed: bool = True, within: float = 30) -> None:
    comps = [processes.Component(**c) for c in report["comps"]]
    assert sorted(c.name for c in comps) == sorted(ORDER)
    deadline = time.monotonic() + within
    while any(c.is_ours() for c in comps) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [f"{c.name} ({c.pid})" for c in comps if c.is_ours()]
    assert not left, f"processes left behind: {left}"
    if dir_removed:
        assert not Path(report["state_dir"]).exists(), "state folder left behind"


def _owner_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "REPORT_FILE": str(tmp_path / "report.json"),
            "PYTHONPATH": str(REPO)}


def test_stop_removes_processes_and_folder() -> None:
    cluster = DevCluster.start()
    report = {"state_dir": str(cluster.state_dir),
              "comps": [c.__dict__ for c in processes.recorded(cluster.state_dir)]}
    assert all(cluster.running().values())
    cluster.stop()
    _assert_clean(report, within=1)
    cluster.stop()  # idempotent


@pytest.mark.parametrize("how", ["failing-test", "sigint", "sigterm"])
def test_pytest_session_cleans_up(tmp_path: Path, how: str) -> None:
    (tmp_path / "test_owner.py").write_text(REPORT + textwrap.dedent("""
        import time
        def test_uses_cluster(cluster):
            report(cluster.state_dir)
            if os.environ["HOW"] == "failing-test":
                assert False, "deliberate failure"
            time.sleep(300)
    """))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "devcluster.pytest_plugin",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env={**_owner_env(tmp_path), "HOW": how},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        report = _wait_report(tmp_path / "report.json", proc)
        if how != "failing-test":
            time.sleep(0.5)  # let the test reach its sleep
            proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0, out
    _assert_clean(report)


def test_owner_killed_outright_takes_the_processes_along(tmp_path: Path) -> None:
    script = REPORT + textwrap.dedent("""
        import time
        from devcluster.cluster import DevCluster
        c = DevCluster.start()
        report(c.state_dir)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=_owner_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    report = _wait_report(tmp_path / "report.json", proc)
    state_dir = Path(report["state_dir"])
    try:
        proc.send_signal(signal.SIGKILL)  # no Python code runs: the kernel's doing
        proc.wait(30)
        # SIGKILL leaves no chance to delete the folder; the processes must still go.
        _assert_clean(report, dir_removed=False)
        # The next session sweeps such leftovers once they are old enough.
        os.utime(state_dir, (time.time() - 3600, time.time() - 3600))
        assert state_dir in sweep_stale(state_dir.parent)
        assert not state_dir.exists()
    finally:
        proc.kill()
        if state_dir.exists():
            DevCluster.from_state_dir(state_dir).stop()


def test_a_port_taken_meanwhile_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real = processes.free_port
    ports = iter([taken.getsockname()[1]])  # the first probe hands out a busy port
    monkeypatch.setattr(processes, "free_port", lambda: next(ports, None) or real())
    try:
        cluster = DevCluster.start()
    finally:
        taken.close()
    try:
        assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        assert "address already in use" in (cluster.state_dir / "logs" / "etcd.log").read_text()
    finally:
        cluster.stop()
