"""Continuous batching: one asyncio task drives the engine a decode step at a time, in a single
executor thread, so torch never runs on the event loop and concurrent requests share forward
passes.

Each iteration runs one decode step for the rows in flight, then prefills what is queued (up to
max_batch_size rows in flight); admitted rows join the next step. A finished row leaves at once;
a cancelled one (client gone, timeout, drain deadline) leaves before the next step.
batching="static" is the old static batcher (a batch is admitted only when nothing runs, and
its rows stay in the forward pass until the longest ends), kept as the benchmark's baseline;
"static-leave" admits the same way but lets finished rows leave, to tell the two gains apart.
max_batch_size=1 turns batching off. The queue is bounded: a full queue refuses at once
(503 + Retry-After) instead of letting latency grow without limit.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from bem_runtime.errors import ApiError, RequestTimeout, ServiceUnavailable

log = logging.getLogger("bem_runtime.scheduler")
TokenSink = Callable[[str], None]


@dataclass(eq=False)
class Job:
    request: Any  # bem_runtime.model.GenerationRequest (its checkpoint, or the bare base model)
    future: asyncio.Future
    on_token: TokenSink | None = None
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    cancel_reason: str | None = None


class Scheduler:
    def __init__(self, engine: Any, *, max_batch_size: int, max_queue: int,
                 window_s: float = 0.005, metrics: Any = None,
                 batching: str = "continuous", executor: ThreadPoolExecutor | None = None) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.window_s = window_s if max_batch_size > 1 else 0.0
        self.metrics = metrics
        self.continuous = batching == "continuous"
        self.hold = batching == "static"
        self._queue: collections.deque[Job] = collections.deque()
        self._running: set[Job] = set()
        self._wake = asyncio.Event()
        # One thread runs all engine work, and it is best the one that loaded the model: each
        # thread that runs torch ops on a CPU gets its own OpenMP team, and two teams slow both.
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="bem-engine")
        self._task: asyncio.Task | None = None
        self._job_seconds = 0.5  # running estimate for Retry-After
        self._closed = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bem-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Never wait here for a step in progress: the drain deadline is already accounted for.
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, request: Any, *, on_token: TokenSink | None = None) -> Job:
        if self._closed:
            raise ServiceUnavailable("server is shutting down; retry on another replica",
                                     type_="draining")
        if len(self._queue) >= self.max_queue:
            if self.metrics is not None:
                self.metrics.queue_rejections.inc()
            wait = self._job_seconds * (1 + self.depth / self.max_batch_size)
            raise ServiceUnavailable(
                f"request queue is full ({self.max_queue} waiting); retry later",
                retry_after=wait, type_="overloaded")
        job = Job(request, asyncio.get_running_loop().create_future(), on_token)
        self._queue.append(job)
        self._wake.set()
        self._set_depth()
        return job

    async def result(self, job: Job, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            self.cancel(job, "timeout")
            raise RequestTimeout(f"generation did not finish within {timeout:g} s; lower "
                                 "max_new_tokens or retry") from None
        except asyncio.CancelledError:  # the client went away (aiohttp cancels the handler)
            self.cancel(job, "disconnect")
            raise

    def cancel(self, job: Job, reason: str, error: ApiError | None = None) -> None:
        """Drop a job: a queued one now, a running one before the next decode step."""
        if job.cancel_reason is not None or job.future.done():
            return
        job.cancel_reason = reason
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.cancel()
        if job in self._queue:
            self._queue.remove(job)
            self._set_depth()
            self._count_cancel(reason, job.request.params.max_new_tokens)
        self._wake.set()

    def cancel_all(self, reason: str, error: Callable[[], ApiError]) -> int:
        """Cancel everything queued or running and refuse new jobs (drain deadline)."""
        self._closed = True
        jobs = [*self._running, *self._queue]
        for job in jobs:
            self.cancel(job, reason, error())
        return len(jobs)

    def _count_cancel(self, reason: str, tokens: int) -> None:
        if self.metrics is not None:
            self.metrics.cancelled.labels(reason).inc()
            self.metrics.tokens_not_generated.inc(max(tokens, 0))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        batch = self._open_batch()
        while True:
            if not self._running:
                await self._wait_for_work()
            admit = self._admit()
            cancel = {j for j in self._running if j.cancel_reason is not None}
            if not admit and not self._running:
                continue
            try:
                events, gone = await loop.run_in_executor(
                    self._executor, self._iterate, batch, admit, cancel)
            except Exception as exc:  # the engine failed: every row in flight gets the error
                log.warning("Engine step with %d rows failed: %s", len(self._running), exc)
                for job in self._running:
                    if not job.future.done():
                        job.future.set_exception(exc)
                self._running.clear()
                batch = self._open_batch()
                continue
            self._deliver(events, gone)

    def _open_batch(self) -> Any:
        """One batch for every request: rows of different checkpoints (and of the bare base
        model) share each decode step."""
        return self.engine.open_batch(hold=self.hold)

    async def _wait_for_work(self) -> None:
        """Idle: wait for a job; static batching then waits up to window_s for more. Continuous
        batching does not wait (a later arrival joins at the next step): it only lets requests
        that arrived together be prefilled together."""
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        if self.continuous:
            await asyncio.sleep(0)
            return
        deadline = time.perf_counter() + self.window_s
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                break

    def _admit(self) -> list[Job]:
        if not self.continuous and self._running:
            return []  # static batching: a batch runs to its end before the next one starts
        admit = []
        now = time.perf_counter()
        while self._queue and len(self._running) + len(admit) < self.max_batch_size:
            job = self._queue.popleft()
            job.started = now
            admit.append(job)
        self._running.update(admit)
        self._set_depth()
        return admit

    def _iterate(self, batch: Any, admit: list[Job],
                 cancel: set[Job]) -> tuple[list[Any], list[Any]]:
        """Engine thread: drop cancelled rows, one step for the others, then prefill new rows."""
        gone = batch.cancel(cancel)
        events = batch.step()
        if admit:
            events += batch.admit([(j, j.request) for j in admit])
        if self.metrics is not None and len(batch):
            self.metrics.batch_size.observe(len(batch))
        return events, gone

    def _deliver(self, events: list[Any], gone: list[Any]) -> None:
        now = time.perf_counter()
        for c in gone:
            self._running.discard(c.key)
            self._count_cancel(c.key.cancel_reason or "cancelled", c.tokens_not_generated)
        for ev in events:
            job: Job = ev.key
            if job.future.done():  # cancelled: a running row leaves before the next step
                if ev.result is not None or ev.error is not None:
                    self._running.discard(job)  # it has already left the batch
                continue
            if ev.delta and job.on_token is not None:
                job.on_token(ev.delta)
            if ev.error is not None:
                self._running.discard(job)
                job.future.set_exception(ev.error)
            elif ev.result is not None:
                self._running.discard(job)
                job.future.set_result(ev.result)
                elapsed = now - job.started
                self._job_seconds = 0.8 * self._job_seconds + 0.2 * elapsed
                if self.metrics is not None:
                    self.metrics.inference_duration.observe(elapsed)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run other engine work (routing, warmup) on the engine thread, between steps."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.depth)
