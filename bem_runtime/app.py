"""App factory. Long-lived resources (engine, scheduler, Redis) are owned by cleanup_ctx
generators, so startup and shutdown order is explicit and tests get a clean app each time."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator

from aiohttp import web

from bem_runtime.auth import ApiKeys
from bem_runtime.metrics import Metrics
from bem_runtime.middlewares import (add_headers, context_middleware, guard_middleware,
                                     port_middleware)
from bem_runtime.ratelimit import TokenBuckets, TrustedProxies
from bem_runtime.routes import setup_routes
from bem_runtime.scheduler import Scheduler
from bem_runtime.registry import Registry
from bem_runtime.settings import (Settings, checkpoint_root, read_admin_token,
                                  read_checkpoints_file)
from bem_runtime.state import STATE, AppState

log = logging.getLogger("bem_runtime.app")
LOAD_TASK = web.AppKey("bem_load_task", asyncio.Task)


def start_list(settings: Settings) -> dict[str, Path]:
    """--checkpoints-file: name -> directory (relative paths under the checkpoint root)."""
    if settings.checkpoints_file is None:
        return {}
    root = checkpoint_root(settings) or Path(".")
    return {name: root / raw for name, raw in read_checkpoints_file(settings.checkpoints_file).items()}


def create_app(settings: Settings, engine: Any = None) -> web.Application:
    """Build the app; pass `engine` to serve an already loaded model (tests, the bench)."""
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[context_middleware, port_middleware,
                                       guard_middleware])
    metrics = Metrics()
    registry = Registry(settings, metrics)
    if settings.bem_dir is not None:
        registry.expect(settings.model_name, settings.bem_dir)
    for name, path in start_list(settings).items():
        registry.expect(name, path)
    admin_token = (read_admin_token(settings.admin_token_file)
                   if settings.admin_token_file is not None else None)
    app[STATE] = AppState(settings=settings, metrics=metrics,
                          keys=ApiKeys(settings.all_api_keys()),
                          buckets=TokenBuckets(settings.rate_limit_rps, settings.rate_limit_burst),
                          registry=registry, admin_token=admin_token, engine=engine,
                          proxies=TrustedProxies(settings.trusted_proxies))
    setup_routes(app)
    app.on_response_prepare.append(add_headers)
    app.cleanup_ctx.append(_cache_ctx)
    app.cleanup_ctx.append(_engine_ctx)
    if not app[STATE].keys.enabled:
        log.warning("Started without API keys: every client may call the API")
    return app


async def _cache_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    if state.settings.redis_url:
        from bem_runtime.cache import ResponseCache  # redis is optional: import only when used

        state.cache = ResponseCache(state.settings.redis_url, state.settings.cache_ttl,
                                    state.metrics)
        log.info("Enabled the Redis response cache", extra={"ttl_s": state.settings.cache_ttl})
    yield
    if state.cache is not None:
        await state.cache.close()


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load in the background so /health answers while a large model loads."""
    state = app[STATE]
    task = asyncio.create_task(_load_and_warm(state), name="bem-load")
    app[LOAD_TASK] = task
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    state.loaded = False
    if state.scheduler is not None:
        await state.scheduler.stop()


async def _load_and_warm(state: AppState) -> None:
    s = state.settings
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    # The model loads on the thread that will run every forward pass (the scheduler's). A second
    # thread running torch gives the process a second OpenMP team, and on a CPU every forward
    # then ran about 2x slower (a 16-token request: 258 ms instead of 127 ms).
    engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bem-engine")
    try:
        if state.engine is None:
            state.engine = await loop.run_in_executor(engine_thread, _load_engine, s)
        state.metrics.observe_load_report(dict(state.engine.load_report))
        state.scheduler = Scheduler(state.engine, max_batch_size=s.max_batch_size,
                                    max_queue=s.max_queue, window_s=s.batch_window_ms / 1000,
                                    metrics=state.metrics, batching=s.batching,
                                    executor=engine_thread)
        state.scheduler.start()
        await state.scheduler.call(state.engine.warmup)
    except Exception as exc:
        if state.scheduler is None:
            engine_thread.shutdown(wait=False)
        state.load_error = exc
        log.error("Failed to load the model", extra={
            "error": str(exc), "error_type": type(exc).__name__,
            "model_dir": str(s.model_dir), "bem_dir": str(s.bem_dir)})
        raise
    state.registry.attach(state.engine, state.scheduler.call)
    state.loaded = True
    log.info("Loaded and warmed up the model", extra={
        "device": str(state.engine.device), "seconds": round(time.perf_counter() - start, 2),
        "load_report": dict(state.engine.load_report)})
    # /ready stays 503 until the start list is in, so a pod of a scale-up takes traffic only
    # with every checkpoint it was started with; the start checkpoint already serves (direct
    # requests, the admin API), and a request naming one still loading gets 503 + Retry-After.
    await state.registry.load_start_list(start_list(s))
    if not state.draining:
        state.metrics.ready.set(1)
    log.info("Became ready", extra={"checkpoints": state.registry.served(),
                                    "seconds": round(time.perf_counter() - start, 2)})


def _load_engine(s: Settings) -> Any:
    from transformers.utils import logging as hf_logging

    from bem_runtime.model import Engine, RoutingOverrides  # torch loads here, in a thread

    hf_logging.disable_progress_bar()  # progress bars would break the JSON log stream

    if s.model_dir is None or s.bem_dir is None:
        raise ValueError("--model-dir and --bem-dir (or BEM_MODEL_DIR, BEM_CHECKPOINT_DIR) "
                         "are required")
    overrides = RoutingOverrides(
        top_k=s.top_k, chunk_size=s.chunk_size, hysteresis=s.hysteresis,
        temperature=s.router_temperature, sigma_max=s.sigma_max, trust_region=s.trust_region,
        min_confidence=s.min_confidence)
    return Engine.load(s.model_dir, s.bem_dir, name=s.model_name, device=s.device,
                       overrides=overrides, merge_decode=s.merge_decode)


async def drain(app: web.Application, deadline: float) -> bool:
    """Stop taking work (503, /ready false) and wait for in-flight requests until `deadline`
    (loop time); True if all ended."""
    state = app[STATE]
    state.draining = True
    state.metrics.ready.set(0)
    log.info("Draining", extra={"inflight": state.inflight})
    if state.inflight == 0:
        return True
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        await asyncio.wait_for(state.idle.wait(), max(remaining, 0.0))
        return True
    except TimeoutError:
        log.warning("Drain timed out with requests in flight", extra={"inflight": state.inflight})
        return False
