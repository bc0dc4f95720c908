"""The response shapes (bem_runtime.responses), shared by the plain and the streamed paths."""
from __future__ import annotations

from types import SimpleNamespace

from bem_runtime import responses
from bem_runtime.model.types import GenerationResult, RoutingDecision


def _outcome(cached: bool = False):
    result = GenerationResult(text="hi", finish_reason="stop", prompt_tokens=3,
                              completion_tokens=2, routing=[], timings={"prefill": 0.5},
                              safety_events={})
    if cached:
        result = responses.result_json(result)
    return SimpleNamespace(result=result, cached=cached, timings={"queue": 0.1, "total": 0.25})


def test_generate_body_and_its_stream_events():
    body = responses.generate("r1", "bem", _outcome(), profile=True, t_valid=0.01)
    assert body == {
        "id": "gen-r1", "model": "bem", "text": "hi", "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "routing": [], "timings": {"queue_s": 0.1, "total_s": 0.25}, "cached": False,
        "profile": {"validate_s": 0.01, "engine_prefill_s": 0.5, "queue_s": 0.1, "total_s": 0.25}}
    assert responses.generate_done(body) == {"type": "done", **body}
    assert responses.generate_token("a") == {"type": "token", "text": "a"}
    cached = responses.generate("r1", "bem", _outcome(cached=True), profile=False)
    assert cached["cached"] is True and cached["usage"] == body["usage"] and "profile" not in cached


def test_completion_body_and_chunks_share_head_choice_and_usage():
    head = responses.completion_head("r2", "bem")
    assert list(head) == ["id", "object", "created", "model"] and head["id"] == "cmpl-r2"
    body = responses.completion(head, _outcome())
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert body["choices"] == [{"text": "hi", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert responses.completion_chunk(head, "h")["choices"][0] == {
        "text": "h", "index": 0, "logprobs": None, "finish_reason": None}
    last = responses.completion_last_chunk(head, _outcome())
    assert last["choices"][0]["finish_reason"] == "stop" and last["choices"][0]["text"] == ""
    assert last["usage"] == body["usage"] == responses.usage(3, 2)


def test_result_json_keeps_routing_as_plain_data():
    decision = RoutingDecision(chunk=0, start=0, end=4, experts=[1], weights=[1.0],
                               used_base_only=False)
    r = GenerationResult(text="", finish_reason="length", prompt_tokens=1, completion_tokens=0,
                         routing=[decision], timings={}, safety_events={})
    assert responses.result_json(r)["routing"] == [decision.__dict__]
