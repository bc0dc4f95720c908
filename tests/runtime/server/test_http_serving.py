"""Serving behaviour of a real server process: batching equivalence, SSE, metrics, ids."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from .conftest import API_KEY

pytestmark = pytest.mark.http
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _body(i: int) -> dict:
    return {"prompt": f"request {i}: the quick brown fox", "max_new_tokens": 6 + i % 5,
            "seed": 1000 + i, "temperature": 0.9, "top_p": 0.95}


async def _post_all(url: str, bodies: list[dict]) -> list[dict]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async def one(body):
            async with session.post(url, json=body) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()
        return await asyncio.gather(*(one(b) for b in bodies))


def test_32_concurrent_seeded_requests_equal_one_by_one(server):
    bodies = [_body(i) for i in range(32)]
    steps_before = server.metric("bem_batch_size_count")
    rows_before = server.metric("bem_batch_size_sum")
    together = asyncio.run(_post_all(server.base_url + "/v1/generate", bodies))
    steps = server.metric("bem_batch_size_count") - steps_before
    rows = server.metric("bem_batch_size_sum") - rows_before
    alone = [server.request("POST", "/v1/generate", b).json() for b in bodies]
    assert [r["text"] for r in together] == [r["text"] for r in alone]
    for a, b in zip(together, alone):  # same decisions; weights differ only by float rounding
        assert [(d["start"], d["end"], d["experts"]) for d in a["routing"]] == \
            [(d["start"], d["end"], d["experts"]) for d in b["routing"]]
        for da, db in zip(a["routing"], b["routing"]):
            assert da["weights"] == pytest.approx(db["weights"], abs=1e-5)
    assert [r["usage"] for r in together] == [r["usage"] for r in alone]
    assert rows / steps > 2, "concurrent requests were not batched"  # rows per decode step
    assert len({r["text"] for r in together}) > 1  # different seeds, different outputs


def test_generate_response_shape_and_profile(server):
    reply = server.request("POST", "/api/generate", {**_body(1), "profile": True})
    assert reply.status == 200
    data = reply.json()
    assert data["model"] == "toy" and isinstance(data["text"], str)
    assert data["usage"]["completion_tokens"] == 7
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + 7
    assert data["routing"] and {"chunk", "start", "end", "experts", "weights",
                                "used_base_only"} <= set(data["routing"][0])
    assert {"queue_s", "inference_s", "total_s"} <= set(data["timings"])
    assert {"validate_s", "engine_prefill_s", "engine_decode_s"} <= set(data["profile"])


def test_route_models_health_ready(server):
    route = server.request("POST", "/v1/route", {"prompt": "route me please"}).json()
    assert route["num_experts"] >= 1 and route["routing"][0]["start"] == 0
    models = server.request("GET", "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["toy"]
    assert server.request("GET", "/health", key=None).json() == {"status": "ok"}
    assert server.request("GET", "/ready", key=None).json()["ready"] is True


def _sse_events(raw: bytes) -> list[str]:
    events = [e for e in raw.decode().split("\n\n") if e.strip()]
    return [line[len("data: "):] for e in events for line in e.splitlines()
            if line.startswith("data: ")]


def test_generate_streams_tokens_then_the_result(server):
    body = _body(3)
    plain = server.request("POST", "/v1/generate", body).json()
    reply = server.request("POST", "/v1/generate", {**body, "stream": True})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(d) for d in _sse_events(reply.body)]
    tokens = [e["text"] for e in events if e["type"] == "token"]
    assert events[-1]["type"] == "done" and len(tokens) >= 1
    assert "".join(tokens) == events[-1]["text"] == plain["text"]


def test_completions_stream_is_openai_shaped(server):
    body = {"model": "toy", "prompt": "once upon a time", "max_tokens": 5, "seed": 7}
    plain = server.request("POST", "/v1/completions", body).json()
    assert plain["object"] == "text_completion" and plain["usage"]["completion_tokens"] == 5
    data = _sse_events(server.request("POST", "/v1/completions", {**body, "stream": True}).body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "text_completion" and c["model"] == "toy" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]


def test_metrics_move_with_traffic(server):
    before = {
        "req": server.metric("bem_requests_total", endpoint="/v1/generate", status="200"),
        "tok": server.metric("bem_tokens_total", checkpoint="toy", kind="completion"),
        "ckpt": server.metric("bem_checkpoint_requests_total", checkpoint="toy",
                              endpoint="/v1/generate", status="200"),
        "inf": server.metric("bem_inference_duration_seconds_count"),
        "bad": server.metric("bem_requests_total", endpoint="/v1/generate", status="400"),
    }
    server.request("POST", "/v1/generate", {**_body(2), "max_new_tokens": 5})
    server.request("POST", "/v1/generate", {"prompt": 1})
    assert server.metric("bem_requests_total", endpoint="/v1/generate",
                         status="200") == before["req"] + 1
    assert server.metric("bem_tokens_total", checkpoint="toy", kind="completion") == before["tok"] + 5
    assert server.metric("bem_checkpoint_requests_total", checkpoint="toy",
                         endpoint="/v1/generate", status="200") == before["ckpt"] + 1
    assert server.metric("bem_inference_duration_seconds_count") >= before["inf"] + 1
    assert server.metric("bem_requests_total", endpoint="/v1/generate",
                         status="400") == before["bad"] + 1
    text = server.request("GET", "/metrics", key=None).body.decode()
    for name in ("bem_request_duration_seconds", "bem_active_connections",
                 "bem_memory_usage_bytes", "bem_gpu_utilization_percent",
                 "bem_safety_violations_total", "bem_routing_decisions_total",
                 "bem_batch_size", "bem_requests_per_second", "bem_checkpoints_resident",
                 "bem_checkpoint_load_duration_seconds", "bem_checkpoint_load_failures_total"):
        assert f"# TYPE {name} " in text, name
    assert server.metric("bem_memory_usage_bytes", kind="rss") > 1e6
    assert server.metric("bem_checkpoints_resident") == 1


def test_request_id_travels_in_and_out_and_into_the_log(server):
    reply = server.request("POST", "/v1/generate", _body(4),
                           headers={"X-Request-ID": "trace-abc-123"})
    assert reply.headers["X-Request-ID"] == "trace-abc-123"
    fresh = server.request("GET", "/health", key=None).headers["X-Request-ID"]
    assert len(fresh) == 32
    bad = server.request("GET", "/health", key=None, headers={"X-Request-ID": "x\ty"})
    assert bad.headers["X-Request-ID"] != "x\ty"  # unsafe ids are replaced, not echoed
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(e.get("request_id") == "trace-abc-123" and e.get("status") == 200 for e in lines)
