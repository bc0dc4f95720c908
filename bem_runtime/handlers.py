"""HTTP handlers: parse, call inference, answer in the shapes of responses.py (streams go
through sse.py). Routes live in routes.py."""
from __future__ import annotations

import time
from dataclasses import asdict

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bem_runtime import inference, responses, sse
from bem_runtime.schemas import (ChatBody, CompletionBody, GenerateBody, RouteBody, parse_body,
                                 stop_tuple)
from bem_runtime.state import STATE


async def _body(request: web.Request, model):
    # read() enforces client_max_size (aiohttp raises 413, mapped in the middleware).
    return parse_body(await request.read(), request.content_type, model)


def _select(request: web.Request, name: str | None, use_bem: bool = True):
    """The checkpoint the body's `model` names; recorded for the per-checkpoint metrics."""
    ckpt = inference.select_checkpoint(request.app[STATE], name)
    request["checkpoint"] = ckpt.name if use_bem else ""
    return ckpt


async def generate(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    t0 = time.perf_counter()
    body: GenerateBody = await _body(request, GenerateBody)
    ckpt = _select(request, body.model, body.use_bem)
    req = await inference.build_request(
        state, body.prompt, checkpoint=ckpt, max_new_tokens=body.max_new_tokens,
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop_tuple(body.stop),
        tokens_field="max_new_tokens", use_bem=body.use_bem)
    t_valid = time.perf_counter() - t0
    if body.stream:
        return await sse.stream_generate(request, state, req, body.profile)
    outcome = await inference.generate(state, req)
    return web.json_response(responses.generate(request["request_id"], ckpt.name, outcome,
                                                body.profile, t_valid))


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body: CompletionBody = await _body(request, CompletionBody)
    ckpt = _select(request, body.model)
    req = await inference.build_request(
        state, body.prompt, checkpoint=ckpt, max_new_tokens=body.max_tokens,
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop_tuple(body.stop),
        tokens_field="max_tokens")
    if body.stream:
        return await sse.stream_completion(request, state, req)
    outcome = await inference.generate(state, req)
    head = responses.completion_head(request["request_id"], ckpt.name)
    return web.json_response(responses.completion(head, outcome))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body: ChatBody = await _body(request, ChatBody)
    asked, tokens_field = body.token_limit()
    ckpt = _select(request, body.model)
    engine = inference.require_engine(state)
    prompt = await inference.render_chat(state, engine, [m.template_input() for m in body.messages])
    req = await inference.build_request(
        state, prompt, checkpoint=ckpt,
        max_new_tokens=await inference.chat_token_limit(state, engine, prompt, asked),
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop_tuple(body.stop),
        tokens_field=tokens_field, prompt_field="messages")
    if body.stream:
        return await sse.stream_chat(request, state, req)
    outcome = await inference.generate(state, req)
    head = responses.chat_head(request["request_id"], ckpt.name)
    return web.json_response(responses.chat_completion(head, outcome))


async def route(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body: RouteBody = await _body(request, RouteBody)
    ckpt = _select(request, body.model)
    engine = inference.require_engine(state)
    await inference.check_prompt(state, engine, body.prompt, reserve=1)  # route needs one slot
    decisions = await state.scheduler.call(engine.route, body.prompt, ckpt)
    return web.json_response({"model": ckpt.name, "num_experts": ckpt.num_experts,
                              "routing": [asdict(d) for d in decisions]})


async def models(request: web.Request) -> web.Response:
    """Every checkpoint of this process (`parent`: the base model), loading ones not ready."""
    state = request.app[STATE]
    parent = state.settings.model_dir.name if state.settings.model_dir is not None else None
    return web.json_response({"object": "list", "data": [{
        "id": entry.name, "object": "model",
        "created": int(entry.checkpoint.loaded_at) if entry.checkpoint is not None else 0,
        "owned_by": "bem-runtime", "parent": parent,
        "ready": state.loaded and entry.checkpoint is not None,
    } for entry in sorted(state.registry.entries.values(), key=lambda e: e.name)]})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    reason = state.not_ready_reason()
    if reason is None:
        return web.json_response({"ready": True, "device": str(state.engine.device)})
    # Which start-list checkpoints hold it back (the pod's readiness probe waits for them).
    return web.json_response({"ready": False, "reason": reason,
                              "loading": state.registry.loading()}, status=503)


async def metrics(request: web.Request) -> web.Response:
    payload = request.app[STATE].metrics.render()
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})
