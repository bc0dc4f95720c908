"""What every generating endpoint shares: limits, the cache and the scheduler call (the JSON
shapes are in responses.py)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bem_runtime import errors
from bem_runtime.model.errors import ChatTemplateError, NonFiniteLogitsError, PromptTooLongError
from bem_runtime.model.types import GenerationRequest, SamplingParams
from bem_runtime.responses import result_json
from bem_runtime.scheduler import Job, TokenSink
from bem_runtime.settings import cache_identity
from bem_runtime.state import AppState


@dataclass
class Outcome:
    """A finished generation plus where the time went."""

    result: Any  # GenerationResult, or the cached body (a dict)
    cached: bool
    timings: dict[str, float] = field(default_factory=dict)


def require_engine(state: AppState) -> Any:
    if state.draining:
        raise errors.ServiceUnavailable("server is shutting down", type_="draining")
    if not state.loaded or state.engine is None or state.scheduler is None:
        raise errors.ServiceUnavailable("model is still loading; retry when GET /ready is 200",
                                        retry_after=5, type_="not_ready")
    return state.engine


def select_checkpoint(state: AppState, name: str | None) -> Any:
    """The resident checkpoint a request names (None: the start checkpoint, --model-name)."""
    require_engine(state)
    return state.registry.select(state.settings.model_name if name is None else name)


async def build_request(state: AppState, prompt: str, *, checkpoint: Any, max_new_tokens: int,
                        temperature: float, top_p: float, seed: int | None,
                        stop: tuple[str, ...], tokens_field: str,
                        use_bem: bool = True, prompt_field: str = "prompt") -> GenerationRequest:
    """Apply the server's limits (400 naming the field) and build the engine request; it holds
    the checkpoint object, so a replacement under the same name does not reach it."""
    engine = require_engine(state)
    limit = state.settings.max_new_tokens_limit
    if max_new_tokens > limit:
        raise errors.InvalidInput(f"{tokens_field} must be <= {limit} on this server, got "
                                  f"{max_new_tokens}", field=tokens_field)
    await check_prompt(state, engine, prompt, reserve=max_new_tokens,
                       reserve_text=f" with {tokens_field}={max_new_tokens}",
                       hint=f" or lower {tokens_field}", field=prompt_field)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=top_p, seed=seed, stop=stop)
    return GenerationRequest(prompt=prompt, params=params, checkpoint=checkpoint, use_bem=use_bem)


async def check_prompt(state: AppState, engine: Any, prompt: str, *, reserve: int,
                       reserve_text: str = "", hint: str = "", field: str = "prompt") -> int:
    """400 naming the prompt when it does not fit the context (minus `reserve` new tokens) or
    --max-prompt-tokens; checked before any model work. Returns the prompt's token count."""
    # Tokenising is cheap but not free: keep it off the event loop (not on the engine thread).
    n_prompt = await asyncio.get_running_loop().run_in_executor(None, engine.count_tokens, prompt)
    prompt_limit = engine.max_context - reserve
    if state.settings.max_prompt_tokens is not None:
        prompt_limit = min(prompt_limit, state.settings.max_prompt_tokens)
    if n_prompt > prompt_limit:
        raise errors.InvalidInput(
            f"{field} is {n_prompt} tokens long; at most {max(prompt_limit, 0)} fit{reserve_text} "
            f"(context {engine.max_context}); shorten the {field}{hint}", field=field)
    return n_prompt


async def render_chat(state: AppState, engine: Any, messages: list[dict[str, str]]) -> str:
    """The conversation as prompt text (the tokenizer's chat template), off the event loop;
    a template that cannot render these messages is the client's 400."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, engine.render_chat, messages)
    except ChatTemplateError as exc:
        raise errors.InvalidInput(str(exc), field="messages") from None


async def chat_token_limit(state: AppState, engine: Any, prompt: str, asked: int | None) -> int:
    """What the client asked for, else as many tokens as the server allows and the context
    leaves after the conversation."""
    if asked is not None:
        return asked
    n_prompt = await check_prompt(state, engine, prompt, reserve=1, field="messages")
    return max(1, min(state.settings.max_new_tokens_limit, engine.max_context - n_prompt))


CACHE_KEY_PREFIX = "bem:inference:"  # the seed's key scheme


def request_cache_key(state: AppState, req: GenerationRequest) -> str | None:
    """Only deterministic requests (a seed, or greedy) are cached: anything else would replay
    one random sample to every caller. The checkpoint enters by name and by the digest of its
    files, so an answer is never replayed for another checkpoint, nor for one replaced under
    the same name."""
    p = req.params
    if state.cache is None or (p.seed is None and p.temperature != 0.0):
        return None
    ckpt = req.checkpoint
    identity = [ckpt.name, ckpt.digest] if req.use_bem and ckpt is not None else None
    # The settings that change outputs are the ones the settings table marks so.
    return _cache_key({"v": 1, **cache_identity(state.settings), "checkpoint": identity,
                       "prompt": req.prompt, "params": asdict(p), "use_bem": req.use_bem})


def _cache_key(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return CACHE_KEY_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def generate(state: AppState, req: GenerationRequest, *,
                   on_token: TokenSink | None = None) -> Outcome:
    """Serve from the cache when allowed, else queue on the scheduler and wait (with timeout)."""
    start = time.perf_counter()
    key = request_cache_key(state, req) if on_token is None else None
    if key is not None:
        hit = await state.cache.get(key)
        if hit is not None:
            return Outcome(hit, True, {"queue": 0.0, "inference": 0.0,
                                       "total": time.perf_counter() - start})
    assert state.scheduler is not None
    job = state.scheduler.submit(req, on_token=on_token)
    result = await wait_result(state, job)
    timings = job_timings(job, start)
    if key is not None:
        await state.cache.put(key, result_json(result))
    return Outcome(result, False, timings)


async def wait_result(state: AppState, job: Job) -> Any:
    try:
        result = await state.scheduler.result(job, state.settings.request_timeout)
    except PromptTooLongError as exc:
        raise errors.InvalidInput(str(exc), field="prompt") from None
    except NonFiniteLogitsError as exc:
        state.metrics.safety.labels("non_finite").inc()
        raise errors.InferenceError(f"the model produced non-finite logits ({exc}); the "
                                    "request was refused rather than return garbage") from None
    state.metrics.observe_result(result)
    return result


def job_timings(job: Job, start: float) -> dict[str, float]:
    now = time.perf_counter()
    started = job.started or now
    return {"queue": started - job.enqueued, "inference": now - started, "total": now - start}
