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


async def _finish_order(batching: str) -> tuple[list[str], FakeEngine]:
    engine = FakeEngine(delay=0.002)
    sched = Scheduler(engine, max_batch_size=4, max_queue=8, window_s=0.0, batching=batching)
    sched.start()
    order: list[str] = []
    long = sched.submit(_req(0, n=60))
    for _ in range(500):  # bounded: until the long one is decoding
        if engine.steps >= 1:
            break
        await asyncio.sleep(0.005)
    short = sched.submit(_req(100, n=2))
    long.future.add_done_callback(lambda _f: order.append("long"))
    short.future.add_done_callback(lambda _f: order.append("short"))
    await asyncio.gather(sched.result(long, 5), sched.result(short, 5))
    await sched.stop()
    return order, engine


def test_a_request_joins_the_running_batch_and_leaves_when_done():
    order, engine = _run(_finish_order("continuous"))
    assert order == ["short", "long"]
    assert engine.held is False
    assert engine.batches == [1, 1]  # two prefills: the short one joined mid-flight


@pytest.mark.parametrize("batching, held", [("static", True), ("static-leave", False)])
def test_static_batching_makes_a_short_request_wait_for_the_long_one(batching, held):
    order, engine = _run(_finish_order(batching))
    assert order == ["long", "short"]
    assert engine.held is held  # only "static" keeps finished rows in the forward pass


def test_cancelled_rows_leave_and_are_counted_with_the_tokens_not_generated():
    async def main():
        engine = FakeEngine(delay=0.002)
        metrics = Metrics()
        sched = Scheduler(engine, max_batch_size=4, max_queue=8, window_s=0.0, metrics=metrics)
        sched.start()
        keep, drop = sched.submit(_req(0, n=30)), sched.submit(_req(1, n=500))
        queued = [sched.submit(_req(2, n=7)) for _ in range(3)]  # batch full: 2 stay queued
        for _ in range(500):  # bounded: until a few steps ran
            if engine.steps >= 3:
                break
            await asyncio.sleep(0.005)
        sched.cancel(drop, "disconnect")
        sched.cancel(queued[-1], "timeout")
        await asyncio.gather(*(sched.result(j, 5) for j in [keep, *queued[:2]]))
        await sched.stop()
        return engine, metrics, drop

    engine, metrics, drop = _run(main())
    assert drop.future.cancelled()
    assert metrics.cancelled.labels("disconnect")._value.get() == 1
    assert metrics.cancelled.labels("timeout")._value.get() == 1
    not_generated = metrics.tokens_not_generated._value.get()
    assert 7 + 400 < not_generated < 7 + 500  # the dropped row stopped early, the queued never ran
    assert engine.steps < 100  # nobody decoded the 500-token row to its end


def test_cancel_all_answers_every_job_with_the_given_error():
    async def main():
        engine = FakeEngine(delay=0.002)
        sched = Scheduler(engine, max_batch_size=2, max_queue=8, window_s=0.0)
        sched.start()
        jobs = [sched.submit(_req(i, n=400)) for i in range(4)]
        await asyncio.sleep(0.02)
        n = sched.cancel_all("drain", lambda: ServiceUnavailable("drain deadline", type_="draining"))
        outcomes = await asyncio.gather(*(sched.result(j, 5) for j in jobs), return_exceptions=True)
        await asyncio.sleep(0.02)
        running = sched.in_flight
        await sched.stop()
        return n, outcomes, running

    n, outcomes, running = _run(main())
    assert n == 4 and running == 0
    assert all(isinstance(o, ServiceUnavailable) and o.type == "draining" for o in outcomes)


def test_a_waiter_cancelled_by_a_disconnect_cancels_its_job():
    async def main():
        sched = Scheduler(FakeEngine(delay=0.002), max_batch_size=2, max_queue=8, window_s=0.0)
        sched.start()
        job = sched.submit(_req(0, n=400))
        waiter = asyncio.create_task(sched.result(job, 5))
        await asyncio.sleep(0.02)
        waiter.cancel()  # what aiohttp does to the handler when the client goes away
        await asyncio.gather(waiter, return_exceptions=True)
        await asyncio.sleep(0.02)
        running = sched.in_flight
        await sched.stop()
        return job, running

    job, running = _run(main())
    assert job.cancel_reason == "disconnect" and running == 0


def test_the_model_loads_on_the_thread_that_runs_every_forward_pass(monkeypatch):
    """A second thread running torch gives a CPU process a second OpenMP team, and both then run
    about 2x slower: loading, warmup and every step share the scheduler's one engine thread."""
    import threading

    from bem_runtime import app as app_module
    from bem_runtime.auth import ApiKeys
    from bem_runtime.ratelimit import TokenBuckets
    from bem_runtime.registry import Registry
    from bem_runtime.settings import Settings
    from bem_runtime.state import AppState

    engine, loaded_on = FakeEngine(), []

    def load(settings):
        loaded_on.append(threading.current_thread().name)
        return engine

    monkeypatch.setattr(app_module, "_load_engine", load)

    async def main():
        metrics = Metrics()
        state = AppState(settings=Settings(), metrics=metrics, keys=ApiKeys([]),
                         buckets=TokenBuckets(1000.0, 1000), registry=Registry(Settings(), metrics))
        await app_module._load_and_warm(state)
        await state.scheduler.result(state.scheduler.submit(_req(0, n=3)), 5)
        await state.scheduler.stop()

    _run(main())
    assert loaded_on[0].startswith("bem-engine") and engine.threads == {loaded_on[0]}
