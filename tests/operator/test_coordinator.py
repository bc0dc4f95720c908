"""Per-parent serialisation and coalescing of child-triggered reconciles."""
from __future__ import annotations

import asyncio

from bem_operator.coordinator import Coordinator, Key


def test_requests_in_one_window_merge_and_full_wins() -> None:
    calls: list[tuple[Key, bool]] = []

    async def on_request(key: Key, full: bool) -> None:
        calls.append((key, full))

    async def scenario() -> None:
        coordinator = Coordinator(on_request, delay=0.05)
        coordinator.request(("ns", "a"), full=False)
        coordinator.request(("ns", "a"), full=True)
        coordinator.request(("ns", "a"), full=False)
        coordinator.request(("ns", "b"), full=False)
        await asyncio.sleep(0.2)
        await coordinator.close()

    asyncio.run(scenario())
    assert sorted(calls) == [(("ns", "a"), True), (("ns", "b"), False)]


def test_runs_of_one_key_never_overlap() -> None:
    active = 0
    peak = 0

    async def work() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1

    async def on_request(key: Key, full: bool) -> None:
        await work()

    async def scenario() -> None:
        coordinator = Coordinator(on_request, delay=0.0)
        runs = [coordinator.run(("ns", "a"), work) for _ in range(5)]
        coordinator.request(("ns", "a"))
        await asyncio.gather(*runs)
        await asyncio.sleep(0.1)
        await coordinator.close()

    asyncio.run(scenario())
    assert peak == 1


def test_a_failing_run_does_not_stop_later_ones() -> None:
    calls = 0

    async def on_request(key: Key, full: bool) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("API down")

    async def scenario() -> None:
        coordinator = Coordinator(on_request, delay=0.0)
        coordinator.request(("ns", "a"))
        await asyncio.sleep(0.05)
        coordinator.request(("ns", "a"))
        await asyncio.sleep(0.05)
        await coordinator.close()

    asyncio.run(scenario())
    assert calls == 2
