"""Server-sent events for /v1/generate, /v1/completions and /v1/chat/completions (stream=true).

The job is queued before the response starts, so overload and validation still answer with a
JSON error and the right status. After that, failures arrive as an SSE `error` event.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator

from aiohttp import web

from bem_runtime import errors, inference, responses
from bem_runtime.state import AppState

log = logging.getLogger("bem_runtime.sse")
_DONE = object()


async def _events(state: AppState, req: Any,
                  request: web.Request) -> tuple[web.StreamResponse, AsyncIterator]:
    pieces: asyncio.Queue = asyncio.Queue()
    start = time.perf_counter()
    job = state.scheduler.submit(req, on_token=pieces.put_nowait)
    # Token callbacks are scheduled before the future resolves, so _DONE always comes last.
    job.future.add_done_callback(lambda _f: pieces.put_nowait(_DONE))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)

    async def iterate() -> AsyncIterator:
        while (item := await pieces.get()) is not _DONE:
            yield item
        result = await inference.wait_result(state, job)
        yield inference.Outcome(result, False, inference.job_timings(job, start))

    async def guarded() -> AsyncIterator:
        try:
            async with asyncio.timeout(state.settings.request_timeout):
                async for item in iterate():
                    yield item
        except TimeoutError:
            state.scheduler.cancel(job, "timeout")
            raise errors.RequestTimeout("generation did not finish within "
                                        f"{state.settings.request_timeout:g} s") from None
        finally:
            if not job.future.done():  # client went away: its row leaves at the next step
                state.scheduler.cancel(job, "disconnect")

    return response, guarded()


async def _send(response: web.StreamResponse, data: Any, event: str | None = None) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    await response.write(f"{prefix}data: {text}\n\n".encode("utf-8"))


async def _run(response: web.StreamResponse, events: AsyncIterator, on_piece, on_end) -> None:
    try:
        async for item in events:
            if isinstance(item, inference.Outcome):
                await on_end(item)
            else:
                await on_piece(item)
    except errors.ApiError as err:
        await _send(response, err.body(), event="error")
    except ConnectionError:
        log.info("Client disconnected during a stream")
        return
    except Exception:  # headers are sent: the error can only travel as an event
        log.exception("Stream failed with an unexpected error")
        await _send(response, errors.ApiError("internal error during generation").body(),
                    event="error")
    await response.write_eof()


async def stream_generate(request: web.Request, state: AppState, req: Any,
                          profile: bool) -> web.StreamResponse:
    response, events = await _events(state, req, request)

    async def piece(text: str) -> None:
        await _send(response, responses.generate_token(text))

    async def end(outcome: inference.Outcome) -> None:
        body = responses.generate(request["request_id"], req.checkpoint.name, outcome,
                                  profile)  # the plain response's shape
        await _send(response, responses.generate_done(body))

    await _run(response, events, piece, end)
    return response


async def stream_completion(request: web.Request, state: AppState,
                            req: Any) -> web.StreamResponse:
    response, events = await _events(state, req, request)
    head = responses.completion_head(request["request_id"], req.checkpoint.name)

    async def piece(text: str) -> None:
        await _send(response, responses.completion_chunk(head, text))

    async def end(outcome: inference.Outcome) -> None:
        await _send(response, responses.completion_last_chunk(head, outcome))
        await _send(response, "[DONE]")

    await _run(response, events, piece, end)
    return response


async def stream_chat(request: web.Request, state: AppState, req: Any) -> web.StreamResponse:
    response, events = await _events(state, req, request)
    head = responses.chat_head(request["request_id"], req.checkpoint.name)
    opened = False

    async def open_turn() -> None:  # OpenAI's first chunk carries the role only
        nonlocal opened
        if not opened:
            opened = True
            await _send(response, responses.chat_chunk(head, {"role": "assistant", "content": ""}))

    async def piece(text: str) -> None:
        await open_turn()
        await _send(response, responses.chat_chunk(head, {"content": text}))

    async def end(outcome: inference.Outcome) -> None:
        await open_turn()
        await _send(response, responses.chat_last_chunk(head, outcome))
        await _send(response, "[DONE]")

    await _run(response, events, piece, end)
    return response
