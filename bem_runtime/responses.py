"""The JSON shapes the runtime answers with, for plain and streamed (SSE) responses alike:
/v1/generate (body, token event, done event), /v1/completions and /v1/chat/completions (body,
chunk, last chunk), plus the usage block and the cacheable form of an engine result.

Plain data in, dicts out: no aiohttp here, so handlers.py and sse.py both build on this module
instead of on each other.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any


def result_json(result: Any) -> dict:
    """The cacheable part of a GenerationResult (no per-request timings)."""
    return {
        "text": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "routing": [asdict(d) for d in result.routing],
        "engine_timings": dict(result.timings),
    }


def outcome_json(outcome: Any) -> dict:
    """result_json of an inference.Outcome; a cache hit already holds it."""
    return outcome.result if outcome.cached else result_json(outcome.result)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


# /v1/generate


def generate(request_id: str, model_name: str, outcome: Any, profile: bool,
             t_valid: float = 0.0) -> dict:
    """The /v1/generate body; also the payload of the stream's `done` event."""
    data = outcome_json(outcome)
    out = {
        "id": "gen-" + request_id,
        "model": model_name,
        "text": data["text"],
        "finish_reason": data["finish_reason"],
        "usage": usage(data["prompt_tokens"], data["completion_tokens"]),
        "routing": data["routing"],
        "timings": {k + "_s": round(v, 6) for k, v in outcome.timings.items()},
        "cached": outcome.cached,
    }
    if profile:
        stages = {"validate": t_valid, **{f"engine_{k}": v for k, v in data["engine_timings"].items()},
                  **outcome.timings}
        out["profile"] = {k + "_s": round(v, 6) for k, v in stages.items()}
    return out


def generate_token(text: str) -> dict:
    return {"type": "token", "text": text}


def generate_done(body: dict) -> dict:
    return {"type": "done", **body}


# /v1/completions (the OpenAI text_completion shape)


def completion_head(request_id: str, model_name: str) -> dict:
    """The fields every completion body and chunk starts with."""
    return {"id": "cmpl-" + request_id, "object": "text_completion",
            "created": int(time.time()), "model": model_name}


def completion_choice(text: str, finish_reason: str | None) -> dict:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def completion(head: dict, outcome: Any) -> dict:
    """The plain /v1/completions body."""
    data = outcome_json(outcome)
    return {**head, "choices": [completion_choice(data["text"], data["finish_reason"])],
            "usage": usage(data["prompt_tokens"], data["completion_tokens"])}


def completion_chunk(head: dict, text: str) -> dict:
    """One streamed piece of text."""
    return {**head, "choices": [completion_choice(text, None)]}


def completion_last_chunk(head: dict, outcome: Any) -> dict:
    """The stream's last chunk: no text, the finish reason and the usage."""
    r = outcome.result
    return {**head, "choices": [completion_choice("", r.finish_reason)],
            "usage": usage(r.prompt_tokens, r.completion_tokens)}


# /v1/chat/completions (the OpenAI chat.completion shape)


def chat_head(request_id: str, model_name: str) -> dict:
    return {"id": "chatcmpl-" + request_id, "object": "chat.completion",
            "created": int(time.time()), "model": model_name}


def chat_completion(head: dict, outcome: Any) -> dict:
    """The plain /v1/chat/completions body."""
    data = outcome_json(outcome)
    choice = {"index": 0, "message": {"role": "assistant", "content": data["text"]},
              "logprobs": None, "finish_reason": data["finish_reason"]}
    return {**head, "choices": [choice],
            "usage": usage(data["prompt_tokens"], data["completion_tokens"])}


def chat_chunk(head: dict, delta: dict, finish_reason: str | None = None) -> dict:
    """One streamed piece: the first carries the role, the others content."""
    return {**head, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}]}


def chat_last_chunk(head: dict, outcome: Any) -> dict:
    """The stream's last chunk: an empty delta, the finish reason and the usage."""
    r = outcome.result
    return {**chat_chunk(head, {}, r.finish_reason),
            "usage": usage(r.prompt_tokens, r.completion_tokens)}
