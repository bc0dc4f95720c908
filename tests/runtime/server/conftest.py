"""Fixtures that run the real runtime: `python -m bem_runtime serve` on 127.0.0.1 with the toy
model, in a child process, stopped with SIGTERM at the end."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from devcluster.processes import free_port

START_TIMEOUT_S = 90.0
API_KEY = "test-key-0123456789"
OTHER_KEY = "other-key-9876543210"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path
    key: str | None = API_KEY
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def request(self, method: str, path: str, body: Any = None, *, headers: dict | None = None,
                key: str | None = "default", timeout: float = 30.0, port: int | None = None) -> Reply:
        """One plain HTTP request; `body` may be raw bytes (for malformed input) or JSON; `port`
        another of the server's ports (default: --port)."""
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        key = self.key if key == "default" else key
        if key:
            hdrs["Authorization"] = f"Bearer {key}"
        hdrs.update(headers or {})
        raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            conn.request(method, path, body=raw, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        """Value of one sample of /metrics (0.0 when the series does not exist yet)."""
        text = self.request("GET", "/metrics", key=None).body.decode()
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        prefix = f"{name}{{{want}}} " if labels else f"{name} "
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def toy_assets(tmp_path_factory) -> tuple[Path, Path]:
    """The toy model, written by the CLI itself (so `make-toy` is exercised too), and beside
    it foreign/bem, a checkpoint for another base."""
    out = tmp_path_factory.mktemp("toy")
    subprocess.run([sys.executable, "-m", "bem_runtime", "make-toy", "--out", str(out), "--foreign"],
                   check=True, capture_output=True, timeout=180)
    return out / "base", out / "bem"


@pytest.fixture(scope="session")
def start_server(toy_assets, tmp_path_factory):
    """Factory: start a server with extra flags/env, wait until its GET /ready answer passes
    `until` (default: 200); all stopped at the end."""
    started: list[ServerProcess] = []
    key_file = tmp_path_factory.mktemp("keys") / "api-key"
    key_file.write_text(f"{API_KEY}\n# comment\n{OTHER_KEY}\n", encoding="utf-8")

    def start(*args: str, env: dict[str, str] | None = None, auth: bool = True,
              until: Callable[[Reply], bool] = is_ready) -> ServerProcess:
        port = free_port()
        log_path = tmp_path_factory.mktemp("server") / "server.log"
        cmd = [sys.executable, "-m", "bem_runtime", "serve", "--port", str(port),
               "--model-dir", str(toy_assets[0]), "--bem-dir", str(toy_assets[1]),
               "--model-name", "toy", "--device", "cpu", "--rate-limit", "1000",
               "--rate-limit-burst", "1000", *(["--api-key-file", str(key_file)] if auth else []),
               *args]
        child_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env)
        server = ServerProcess(proc, port, log_path, API_KEY if auth else None)
        started.append(server)
        _wait_ready(server, until)
        return server

    yield start
    for server in started:
        server.stop()


def is_ready(reply: Reply) -> bool:
    return reply.status == 200


def _wait_ready(server: ServerProcess, until: Callable[[Reply], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited with {server.proc.returncode}:\n{server.log()[-3000:]}")
        try:
            if until(server.request("GET", "/ready", key=None, timeout=2)):
                return
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"server not ready after {START_TIMEOUT_S} s:\n{server.log()[-3000:]}")


@pytest.fixture(scope="session")
def server(start_server) -> ServerProcess:
    """The shared server: auth on, small limits so the limit tests stay cheap."""
    return start_server("--max-batch-size", "8", "--max-new-tokens-limit", "64",
                        "--max-prompt-tokens", "100", "--max-body-bytes", "4096")
