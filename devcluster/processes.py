"""Daemonised component processes tracked by pid files.

Each component runs in its own session (so its process group id is its pid and
a terminal's Ctrl-C does not reach it directly: the owner decides the order of
shutdown). A pid file records the pid and the executable so that `down` in
another shell stops exactly the processes we started, never a reused pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the component binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Component:
    name: str
    pid: int
    exe: str

    def is_ours(self) -> bool:
        """True while the pid is alive and still runs our executable."""
        _reap(self.pid)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        with contextlib.suppress(OSError):
            return os.path.realpath(f"/proc/{self.pid}/exe") == os.path.realpath(self.exe)
        return True  # no /proc (not Linux): trust the pid file


def _reap(pid: int) -> None:
    """Collect a child of this process that has exited (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _die_with_parent() -> None:
    # Runs in the child before exec: if the owner (a test session) is killed
    # without a chance to clean up, the kernel sends SIGTERM to the component.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    name: str,
    argv: list[str],
    state_dir: Path,
    *,
    env: dict[str, str] | None = None,
    die_with_parent: bool = False,
) -> Component:
    """Start one component in the background, logging to logs/<name>.log."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # An absolute executable: is_ours() compares it with /proc/<pid>/exe.
    argv = [shutil.which(argv[0]) or argv[0], *argv[1:]]
    pids = state_dir / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    preexec = _die_with_parent if die_with_parent and sys.platform == "linux" else None
    with open(log_path(state_dir, name), "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 - only prctl, async-signal-safe
        )
    comp = Component(name=name, pid=proc.pid, exe=argv[0])
    (pids / f"{name}.json").write_text(json.dumps(comp.__dict__))
    return comp


def log_path(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def recorded(state_dir: Path) -> list[Component]:
    """Components recorded in the state dir, in start order."""
    pids = state_dir / "pids"
    if not pids.is_dir():
        return []
    comps = [Component(**json.loads(p.read_text())) for p in pids.glob("*.json")]
    order = (pids / "order").read_text().split() if (pids / "order").exists() else []
    return sorted(comps, key=lambda c: order.index(c.name) if c.name in order else len(order))


def record_order(state_dir: Path, names: list[str]) -> None:
    (state_dir / "pids").mkdir(parents=True, exist_ok=True)
    (state_dir / "pids" / "order").write_text("\n".join(names))


def stop(comp: Component, *, grace: float = 10.0) -> None:
    """SIGTERM the component's process group, SIGKILL it after `grace` seconds."""
    if not comp.is_ours():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(comp.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not comp.is_ours():
            break
        time.sleep(0.05)
    if not comp.is_ours():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(comp.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while comp.is_ours() and time.monotonic() < deadline:
        time.sleep(0.05)
    if comp.is_ours():
        raise RuntimeError(f"{comp.name} (pid {comp.pid}) survived SIGKILL")


def stop_many(comps: list[Component], *, grace: float = 10.0) -> list[str]:
    """SIGTERM all at once, wait for all (each takes seconds to exit: in turn they add
    up), SIGKILL what is left after `grace`; returns the names that were running."""
    alive = [c for c in comps if c.is_ours()]
    for comp in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(comp.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(c.is_ours() for c in alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    for comp in alive:
        stop(comp, grace=0)  # SIGKILL the stragglers, raise if one survives
    return [c.name for c in alive]


def stop_all(state_dir: Path, names: tuple[str, ...] | None = None) -> list[str]:
    """Stop the recorded components (all, or those named) and forget them; returns the
    names that were running."""
    comps = [c for c in recorded(state_dir) if names is None or c.name in names]
    stopped = stop_many(comps)
    for comp in comps:
        (state_dir / "pids" / f"{comp.name}.json").unlink(missing_ok=True)
    return stopped


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, for error messages."""
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
