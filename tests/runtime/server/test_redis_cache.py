"""The Redis response cache against a real redis-server started on a free 127.0.0.1 port."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis

from bem_runtime.model.toy import write_variant
from devcluster.processes import free_port

pytestmark = [pytest.mark.redis, pytest.mark.http]
ADMIN = "admin-token-for-the-cache-tests"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:  # a missing prerequisite is a failure, never a skip
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             str(workdir), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.1)
    yield proc, client, port
    client.close()
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def cached(start_server, redis_server):
    _, _, port = redis_server
    return start_server("--redis-url", f"redis://127.0.0.1:{port}/0", "--cache-ttl", "120")


def test_seeded_request_is_served_from_the_cache(cached, redis_server):
    _, client, _ = redis_server
    body = {"prompt": "cache me", "max_new_tokens": 5, "seed": 42}
    first = cached.request("POST", "/v1/generate", body).json()
    second = cached.request("POST", "/v1/generate", body).json()
    assert first["cached"] is False and second["cached"] is True
    assert second["text"] == first["text"] and second["usage"] == first["usage"]
    keys = client.keys("bem:inference:*")
    assert len(keys) == 1 and len(keys[0]) == len("bem:inference:") + 64
    assert 0 < client.ttl(keys[0]) <= 120
    assert cached.metric("bem_cache_requests_total", result="hit") == 1


def test_sampled_requests_without_seed_are_not_cached(cached, redis_server):
    _, client, _ = redis_server
    before = len(client.keys("bem:inference:*"))
    body = {"prompt": "random please", "max_new_tokens": 3, "temperature": 1.0}
    replies = [cached.request("POST", "/v1/generate", body).json() for _ in range(2)]
    assert [r["cached"] for r in replies] == [False, False]
    assert len(client.keys("bem:inference:*")) == before
    greedy = {"prompt": "greedy", "max_new_tokens": 3, "temperature": 0.0}
    cached.request("POST", "/v1/generate", greedy)
    assert cached.request("POST", "/v1/generate", greedy).json()["cached"] is True


@pytest.fixture(scope="module")
def cached_multi(start_server, redis_server, toy_assets, tmp_path_factory):
    """A cached server with the admin API and two other checkpoints in its root: a twin of the
    start checkpoint (same files) and a shuffled one."""
    _, _, port = redis_server
    root = tmp_path_factory.mktemp("cache-ckpts")
    shutil.copytree(toy_assets[1], root / "twin")
    write_variant(toy_assets[1], root / "shuffled", seed=1)
    token = root / "admin-token"
    token.write_text(ADMIN, encoding="utf-8")
    return start_server("--redis-url", f"redis://127.0.0.1:{port}/0", "--cache-ttl", "120",
                        "--admin-token-file", str(token), "--checkpoint-root", str(root))


def test_an_answer_is_never_replayed_for_another_checkpoint(cached_multi):
    server = cached_multi
    assert server.request("PUT", "/v1/checkpoints/twin", {"path": "twin"}, key=ADMIN).status == 201
    body = {"prompt": "one answer per checkpoint", "max_new_tokens": 5, "seed": 3}
    first = server.request("POST", "/v1/generate", {**body, "model": "toy"}).json()
    assert server.request("POST", "/v1/generate", {**body, "model": "toy"}).json()["cached"] is True
    # Same files under another name: still its own entry (the name is part of the identity).
    other = server.request("POST", "/v1/generate", {**body, "model": "twin"}).json()
    assert other["cached"] is False and other["model"] == "twin" and other["text"] == first["text"]
    completion = {"model": "twin", "prompt": "one answer per checkpoint", "max_tokens": 5, "seed": 3}
    server.request("POST", "/v1/completions", completion)
    assert server.request("POST", "/v1/completions", completion).status == 200


def test_an_answer_is_never_replayed_after_a_replacement_under_the_same_name(cached_multi, redis_server):
    server, (_, client, _) = cached_multi, redis_server
    assert server.request("PUT", "/v1/checkpoints/swap", {"path": "twin"}, key=ADMIN).status == 201
    body = {"prompt": "replaced under me", "max_new_tokens": 6, "temperature": 0, "model": "swap"}
    before = server.request("POST", "/v1/generate", body).json()
    assert server.request("POST", "/v1/generate", body).json()["cached"] is True
    assert server.request("PUT", "/v1/checkpoints/swap", {"path": "shuffled"}, key=ADMIN).status == 200
    after = server.request("POST", "/v1/generate", body).json()
    assert after["cached"] is False
    assert after["routing"] != before["routing"]  # the new checkpoint really answered
    assert server.request("POST", "/v1/generate", body).json()["cached"] is True
    keys = client.keys("bem:inference:*")
    assert len(keys) >= 2


def test_serving_continues_when_redis_is_down(cached, redis_server):
    proc, _, _ = redis_server
    proc.terminate()
    proc.wait(10)
    errors_before = cached.metric("bem_cache_requests_total", result="error")
    reply = cached.request("POST", "/v1/generate",
                           {"prompt": "still here", "max_new_tokens": 3, "seed": 5})
    assert reply.status == 200 and reply.json()["cached"] is False
    assert cached.metric("bem_cache_requests_total", result="error") > errors_before
    assert "Redis cache" in cached.log()
