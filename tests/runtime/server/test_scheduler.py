"""Unit tests of the batching scheduler's queueing logic, with a fake engine."""
from __future__ import annotations

import asyncio

import pytest

from bem_runtime.errors import RequestTimeout, ServiceUnavailable
from bem_runtime.metrics import Metrics
from bem_runtime.model.types import GenerationRequest, SamplingParams
from bem_runtime.scheduler import Scheduler

from .fakes import FakeEngine


def _req(seed: int, n: int = 2) -> GenerationRequest:
    return GenerationRequest("a b c", SamplingParams(max_new_tokens=n, seed=seed))


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_batch_off_the_loop_thread():
    async def main():
        engine = FakeEngine()
        engine.release.clear()  # hold the first batch so the rest queue up behind it
        sched = Scheduler(engine, max_batch_size=8, max_queue=32, window_s=0.01)
        sched.start()
        jobs = [sched.submit(_req(i)) for i in range(9)]
        await asyncio.sleep(0.05)
        engine.release.set()
        results = [await sched.result(j, 5) for j in jobs]
        await sched.stop()
        return engine, results

    engine, results = _run(main())
    assert sum(engine.batches) == 9
    assert max(engine.batches) == 8  # capped at max_batch_size
    assert [r.text.split()[0] for r in results] == [f"w{i}" for i in range(9)]
    assert engine.threads and all(t.startswith("bem-engine") for t in engine.threads)


def test_batch_size_one_turns_batching_off():
    async def main():
        engine = FakeEngine(delay=0.01)
        sched = Scheduler(engine, max_batch_size=1, max_queue=32)
        sched.start()
        jobs = [sched.submit(_req(i)) for i in range(5)]
        await asyncio.gather(*(sched.result(j, 5) for j in jobs))
        await sched.stop()
        return engine

    assert _run(main()).batches == [1, 1, 1, 1, 1]


def test_full_queue_refuses_with_retry_after_and_counts():
    async def main():
        engine = FakeEngine()
        engine.release.clear()
        metrics = Metrics()
        sched = Scheduler(engine, max_batch_size=1, max_queue=2, metrics=metrics)
        sched.start()
        first = sched.submit(_req(0))
        await asyncio.sleep(0.05)  # the first is now running; the queue is empty again
        queued = [sched.submit(_req(1)), sched.submit(_req(2))]
        with pytest.raises(ServiceUnavailable) as info:
            sched.submit(_req(3))
        engine.release.set()
        await asyncio.gather(*(sched.result(j, 5) for j in [first, *queued]))
        await sched.stop()
        return info.value, metrics

    err, metrics = _run(main())
    assert err.status == 503 and int(err.headers["Retry-After"]) >= 1
    assert err.body()["error"]["type"] == "overloaded"
    assert metrics.queue_rejections._value.get() == 1


def test_timeout_skips_a_job_that_never_started():
    async def main():
        engine = FakeEngine()
        engine.release.clear()
        sched = Scheduler(engine, max_batch_size=1, max_queue=8)
        sched.start()
        running = sched.submit(_req(0))
        await asyncio.sleep(0.05)
        waiting = sched.submit(_req(1))
        with pytest.raises(RequestTimeout):
            await sched.result(waiting, 0.05)
        engine.release.set()
        await sched.result(running, 5)
        await asyncio.sleep(0.05)
        await sched.stop()
        return engine

    assert _run(main()).batches == [1]  # the timed-out job was dropped, not computed


def test_engine_error_reaches_every_caller_of_the_batch():
    async def main():
        sched = Scheduler(FakeEngine(fail=RuntimeError("boom")), max_batch_size=4, max_queue=8)
        sched.start()
        jobs = [sched.submit(_req(i)) for i in range(3)]
        outcomes = await asyncio.gather(*(sched.result(j, 5) for j in jobs),
                                        return_exceptions=True)
        await sched.stop()
        return outcomes

    outcomes = _run(main())
    assert all(isinstance(o, RuntimeError) and str(o) == "boom" for o in outcomes)


def test_tokens_stream_in_order_before_the_result():
    async def main():
        sched = Scheduler(FakeEngine(), max_batch_size=4, max_queue=8)
        sched.start()
        seen: list[str] = []
        job = sched.submit(_req(5, n=3), on_token=seen.append)
        job.future.add_done_callback(lambda _f: seen.append("<done>"))
        await sched.result(job, 5)
        await asyncio.sleep(0)
        await sched.stop()
        return seen

    assert _run(main()) == ["w5 ", "w6 ", "w7 ", "<done>"]
