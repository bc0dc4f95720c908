"""Abandoned work and shutdown of a real server process: client disconnects and timeouts cancel
their rows, SIGTERM keeps its drain deadline, and a model that fails to load ends the process
with exit code 3 and a termination message."""
from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from devcluster.processes import free_port

from .conftest import API_KEY

pytestmark = pytest.mark.http
AUTH = {"Authorization": f"Bearer {API_KEY}"}


LONG = {"prompt": "a long story", "max_new_tokens": 480, "temperature": 0.0}


@pytest.fixture(scope="module")
def roomy(start_server):
    """Long generations allowed, two rows at a time."""
    return start_server("--max-batch-size", "2", "--max-new-tokens-limit", "512")


@pytest.fixture(scope="module")
def long_seconds(roomy) -> float:
    """How long the greedy LONG request runs; it must not stop early at an EOS token."""
    start = time.monotonic()
    reply = roomy.request("POST", "/v1/generate", LONG, timeout=300)
    seconds = time.monotonic() - start
    assert reply.status == 200 and reply.json()["finish_reason"] == "length", reply.body[:300]
    return seconds


def _wait_metric(server, name: str, above: float, **labels: str) -> float:
    """Poll /metrics (bounded: 50 tries) until the sample exceeds `above`."""
    value = server.metric(name, **labels)
    for _ in range(50):
        if value > above:
            break
        time.sleep(0.1)
        value = server.metric(name, **labels)
    return value


def _post_and_hang_up(port: int, body: dict, after: float) -> None:
    """Send a request on a raw socket and close it before the answer (a client that left)."""
    raw = json.dumps(body).encode()
    head = (f"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(raw)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + raw)
        time.sleep(after)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_cancels_its_row(roomy, long_seconds, stream):
    before = roomy.metric("bem_cancelled_requests_total", reason="disconnect")
    tokens_before = roomy.metric("bem_cancelled_tokens_total")
    _post_and_hang_up(roomy.port, {**LONG, "stream": stream}, after=long_seconds / 4)
    assert _wait_metric(roomy, "bem_cancelled_requests_total", before, reason="disconnect") == before + 1
    assert roomy.metric("bem_cancelled_tokens_total") > tokens_before
    # and the server is fine afterwards
    assert roomy.request("POST", "/v1/generate", {"prompt": "hi", "max_new_tokens": 2}).status == 200


def test_a_request_timeout_answers_504_and_cancels_the_row(start_server, long_seconds):
    timeout = long_seconds / 4
    srv = start_server("--max-new-tokens-limit", "512", "--request-timeout", f"{timeout:.3f}")
    reply = srv.request("POST", "/v1/generate", LONG)
    assert reply.status == 504 and reply.json()["error"]["type"] == "timeout"
    assert _wait_metric(srv, "bem_cancelled_requests_total", 0, reason="timeout") == 1
    assert 0 < srv.metric("bem_cancelled_tokens_total") < 480


def test_sigterm_past_the_drain_deadline_cancels_the_rest_and_exits_1(start_server):
    srv = start_server("--max-batch-size", "2", "--max-new-tokens-limit", "512",
                       "--drain-timeout", "1.5", "--request-timeout", "600")
    url = srv.base_url + "/v1/generate"
    bodies = [{"prompt": f"story {i}", "max_new_tokens": 480, "seed": i} for i in range(12)]

    async def scenario():
        async with aiohttp.ClientSession(headers=AUTH) as s:
            async def one(body):
                async with s.post(url, json=body) as resp:
                    return resp.status, await resp.json()
            calls = asyncio.gather(*(one(b) for b in bodies))
            await asyncio.sleep(0.5)
            srv.proc.send_signal(signal.SIGTERM)
            return await calls

    replies = asyncio.run(scenario())
    assert srv.proc.wait(30) == 1  # 1: the deadline was reached and work was cancelled
    cancelled = [b for status, b in replies if status == 503]
    assert cancelled, "12 requests of 480 tokens at 2 rows should outlast a 1.5 s drain"
    assert all(b["error"]["type"] == "draining" and "drain timeout" in b["error"]["message"]
               for b in cancelled)
    assert {status for status, _ in replies} <= {200, 503}
    stopped = [json.loads(line) for line in srv.log().splitlines() if '"Stopped"' in line][-1]
    print("drain deadline 1.5 s; stopped after", stopped["seconds_since_signal"], "s")
    assert '"Drain deadline reached' in srv.log()


@pytest.mark.parametrize("breakage", ["missing_model_dir", "unwritable_message_path"])  # corrupt: test_load_failure.py
def test_a_model_that_fails_to_load_exits_3_with_a_termination_message(toy_assets, tmp_path, breakage):
    base, bem = toy_assets
    message = tmp_path / "termination-log"
    if breakage == "missing_model_dir":
        base = tmp_path / "no-such-model"
        cause = str(base)
    else:
        bem = tmp_path / "bem"
        shutil.copytree(toy_assets[1], bem)
        (bem / "experts.safetensors").write_bytes(b"not a safetensors file")
        cause = str(bem / "experts.safetensors")
    if breakage == "unwritable_message_path":
        message = tmp_path / "no-such-dir" / "termination-log"
    env = {"BEM_TERMINATION_MESSAGE_PATH": str(message), "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", **{k: v for k, v in __import__("os").environ.items()
                                       if k.startswith(("PYTHON", "HF_", "VIRTUAL_ENV"))}}
    proc = subprocess.run(
        [sys.executable, "-m", "bem_runtime", "serve", "--port", str(free_port()), "--device", "cpu",
         "--model-dir", str(base), "--bem-dir", str(bem)],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    logged = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    failure = next(e for e in logged if e["msg"] == "Failed to load the model")
    assert failure["level"] == "error" and cause in failure["error"]
    if breakage == "unwritable_message_path":
        assert not message.exists()
        return
    text = message.read_text(encoding="utf-8")
    assert text.startswith("model load failed: ") and cause in text
    assert text.count("\n") == 1 and text.endswith("\n")
