"""Dynamic batching: one asyncio task collects queued requests into batches and runs each batch
with `engine.generate_batch` in a single executor thread, so torch never runs on the event loop
and concurrent requests share forward passes.

A batch is what is queued when the engine becomes free, topped up for at most `window_s`
(max_batch_size=1 turns batching off). The queue is bounded: a full queue refuses at once
(503 + Retry-After) instead of letting latency grow without limit.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from bem_runtime.errors import RequestTimeout, ServiceUnavailable

log = logging.getLogger("bem_runtime.scheduler")
TokenSink = Callable[[str], None]


@dataclass(eq=False)
class Job:
    request: Any  # bem_runtime.model.GenerationRequest
    use_bem: bool
    future: asyncio.Future
    on_token: TokenSink | None = None
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0


class Scheduler:
    def __init__(self, engine: Any, *, max_batch_size: int, max_queue: int,
                 window_s: float = 0.005, metrics: Any = None) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.window_s = window_s if max_batch_size > 1 else 0.0
        self.metrics = metrics
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bem-engine")
        self._task: asyncio.Task | None = None
        self._batch_seconds = 0.5  # running estimate for Retry-After

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bem-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(ServiceUnavailable("the server is shutting down"))
        self._executor.shutdown(wait=True)

    def submit(self, request: Any, *, use_bem: bool = True,
               on_token: TokenSink | None = None) -> Job:
        """Queue one request; raises ServiceUnavailable at once when the queue is full."""
        job = Job(request, use_bem, asyncio.get_running_loop().create_future(), on_token)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            if self.metrics is not None:
                self.metrics.queue_rejections.inc()
            wait = self._batch_seconds * (1 + self.depth / self.max_batch_size)
            raise ServiceUnavailable(
                f"request queue is full ({self._queue.maxsize} waiting); retry later",
                retry_after=wait, type_="overloaded") from None
        self._set_depth()
        return job

    async def result(self, job: Job, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            job.future.cancel()  # a queued job is then skipped; a running one is discarded
            raise RequestTimeout(f"generation did not finish within {timeout:g} s; lower "
                                 "max_new_tokens or retry") from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self._set_depth()
            for use_bem in (True, False):  # the engine runs one mode per call
                group = [j for j in batch if j.use_bem is use_bem]
                if group:
                    await self._run_batch(loop, group, use_bem)

    async def _collect(self) -> list[Job]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.window_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [j for j in batch if not j.future.done()]  # drop timed-out or cancelled jobs

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, jobs: list[Job],
                         use_bem: bool) -> None:
        sinks = [j.on_token for j in jobs]

        def on_token(index: int, piece: str) -> None:  # called on the engine thread
            sink = sinks[index]
            if sink is not None:
                loop.call_soon_threadsafe(sink, piece)

        callback = on_token if any(sinks) else None
        start = time.perf_counter()
        for job in jobs:
            job.started = start
        try:
            results = await loop.run_in_executor(
                self._executor, self._generate, [j.request for j in jobs], callback, use_bem)
        except Exception as exc:  # the whole batch failed; every caller gets the error
            log.warning("Engine batch of %d failed: %s", len(jobs), exc)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        elapsed = time.perf_counter() - start
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
        if self.metrics is not None:
            self.metrics.inference_duration.observe(elapsed)
            self.metrics.batch_size.observe(len(jobs))
        for job, res in zip(jobs, results):
            if not job.future.done():
                job.future.set_result(res)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run other engine work (routing, warmup) on the engine thread, serialised with batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _generate(self, requests: list[Any], on_token: Any, use_bem: bool) -> list[Any]:
        return self.engine.generate_batch(requests, on_token, use_bem=use_bem)

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.depth)
