"""Daemonised processes: pid files, group stop, death with the owner."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from devcluster import processes

SLEEP = shutil.which("sleep") or "/bin/sleep"


def _gone(comp: processes.Component, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not comp.is_ours():
            return True
        time.sleep(0.05)
    return False


def test_spawn_records_and_stop_all_ends_the_group(tmp_path: Path) -> None:
    comp = processes.spawn("sleeper", [SLEEP, "300"], tmp_path)
    assert comp.is_ours()
    assert os.getpgid(comp.pid) == comp.pid  # own session and group
    assert processes.recorded(tmp_path) == [comp]
    assert processes.stop_all(tmp_path) == ["sleeper"]
    assert not comp.is_ours()
    assert processes.recorded(tmp_path) == []


def test_a_term_ignoring_process_is_killed(tmp_path: Path) -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    comp = processes.spawn("stubborn", [sys.executable, "-c", script], tmp_path)
    time.sleep(0.5)  # let it install the handler
    started = time.monotonic()
    processes.stop(comp, grace=1.0)
    assert not comp.is_ours()
    assert time.monotonic() - started < 5


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    # Our own pid, but recorded with another executable: never signalled.
    other = processes.Component(name="x", pid=os.getpid(), exe=SLEEP)
    assert not other.is_ours()
    processes.stop(other)  # a no-op, or this test process would be gone


def test_components_die_when_their_owner_is_killed(tmp_path: Path) -> None:
    owner = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from devcluster import processes
        c = processes.spawn("orphan", [{SLEEP!r}, "300"], Path({str(tmp_path)!r}),
                            die_with_parent=True)
        print(json.dumps(c.__dict__), flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", owner], stdout=subprocess.PIPE, text=True)
    try:
        comp = processes.Component(**json.loads(proc.stdout.readline()))
        assert comp.is_ours()
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup code can run
        proc.wait(10)
        assert _gone(comp), f"pid {comp.pid} outlived its owner"
    finally:
        proc.kill()
        processes.stop_all(tmp_path)


def test_tail_reports_missing_logs(tmp_path: Path) -> None:
    assert "no log" in processes.tail(tmp_path / "none.log")
    (tmp_path / "a.log").write_text("\n".join(str(i) for i in range(100)))
    assert processes.tail(tmp_path / "a.log", 3) == "97\n98\n99"
