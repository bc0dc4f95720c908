"""The reflectors (watches.py) against a scripted API: list, watch from the list's version,
bookmarks, a 410 that lists again, deletions found by a list, retries, and stop."""
from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest

from bem_operator.builders.kinds import DEPLOYMENT, POD
from bem_operator.controller import Controller, WorkQueue
from bem_operator.k8s import ApiError, KubeApi
from bem_operator.settings import OperatorSettings
from bem_operator.watches import Reflector, Watches


def in_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Runs an async test on a fresh event loop (the reflectors post to it)."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return run


def deployment(name: str, rv: str, parent: str = "svc", uid: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv,
                         "uid": uid or f"uid-{name}", "labels": {"bem.ai/service": parent}},
            "spec": {"replicas": 1}}


class ScriptedApi:
    """Answers lists and watches from scripts; each watch call takes the next script (a list
    of events, or an exception), and blocks when none is left until stopped."""

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists, self.watches = lists, watches
        self.watched_from: list[str] = []
        self.listed = 0
        self.idle = threading.Event()

    def list_to_watch(self, kind: Any, selector: str | None, namespace: str | None
                      ) -> tuple[str, list[dict[str, Any]]]:
        assert selector == "bem.ai/service"
        self.listed += 1
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch(self, kind: Any, selector: str | None, namespace: str | None, version: str,
              timeout_seconds: int, read_timeout: float, opened: Any = None
              ) -> Iterator[tuple[str, dict[str, Any]]]:
        self.watched_from.append(version)
        if not self.watches:
            self.idle.set()
            stop = threading.Event()
            opened(type("R", (), {"shutdown": stop.set})())
            stop.wait(10)
            return
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        yield from script


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.calls.append((event_type or "LISTED", body["metadata"]["name"]))

    def on_list(self, kind: tuple[str, str], namespace: str | None,
                items: list[dict[str, Any]], listed_at: str) -> None:
        self.calls.append(("LIST@" + listed_at, [i["metadata"]["name"] for i in items]))


async def run_reflector(api: ScriptedApi, sink: Any) -> Reflector:
    loop = asyncio.get_running_loop()
    reflector = Reflector(api, DEPLOYMENT, "ns", sink, loop, timeout_seconds=5,  # type: ignore[arg-type]
                          read_timeout=10, sleep=lambda delay: False)
    reflector.start()
    await asyncio.wait_for(reflector.synced.wait(), 5)
    await asyncio.wait_for(loop.run_in_executor(None, api.idle.wait, 5), 6)
    await asyncio.sleep(0.05)  # the last callbacks run
    reflector.stop()
    await loop.run_in_executor(None, reflector.join, 5)
    return reflector


@in_loop
async def test_lists_then_watches_from_the_last_version_seen() -> None:
    api = ScriptedApi(
        lists=[("10", [deployment("a", "9")])],
        watches=[[("MODIFIED", deployment("a", "11")), ("BOOKMARK", {"metadata": {"resourceVersion": "15"}})],
                 [("ADDED", deployment("b", "16"))]])
    sink = Sink()
    reflector = await run_reflector(api, sink)
    assert sink.calls == [("LIST@10", ["a"]), ("MODIFIED", "a"), ("ADDED", "b")]
    # the bookmark moved the version without an event; each watch the server ended was
    # opened again from the last version seen
    assert api.watched_from == ["10", "15", "16"]
    assert api.listed == 1
    assert not reflector._thread.is_alive()


@in_loop
async def test_a_gone_version_lists_again_and_a_refusal_is_retried() -> None:
    api = ScriptedApi(
        lists=[("10", [deployment("a", "9")]), ApiError(0, "refused"), ("30", [])],
        watches=[[("MODIFIED", deployment("a", "11"))], ApiError(410, "too old")])
    sink = Sink()
    await run_reflector(api, sink)
    assert sink.calls == [("LIST@10", ["a"]), ("MODIFIED", "a"), ("LIST@30", [])]
    assert api.watched_from == ["10", "11", "30"]
    assert api.listed == 3


@in_loop
async def test_a_list_drops_what_was_deleted_while_the_watch_was_away() -> None:
    """The controller's side of a list: each item as if watched, the missing ones dropped
    (only in the listed namespace, only when older than the list), their service queued."""
    controller = Controller(KubeApi(None), OperatorSettings())  # type: ignore[arg-type]
    controller.on_event("ADDED", deployment("gone", "5", parent="one"))
    controller.on_event("ADDED", deployment("kept", "5", parent="two"))
    controller.on_event("ADDED", deployment("newer", "25", parent="three"))
    elsewhere = deployment("other", "5", parent="four")
    elsewhere["metadata"]["namespace"] = "other-ns"
    controller.on_event("ADDED", elsewhere)
    controller.queue = WorkQueue()
    controller.on_list(DEPLOYMENT.key, "ns", [deployment("kept", "5", parent="two")], "20")
    assert controller.cache.get(DEPLOYMENT.key, "ns", "one", "gone") is None
    assert controller.cache.get(DEPLOYMENT.key, "ns", "two", "kept") is not None
    assert controller.cache.get(DEPLOYMENT.key, "ns", "three", "newer") is not None
    assert controller.cache.get(DEPLOYMENT.key, "other-ns", "four", "other") is not None
    assert len(controller.queue) == 1  # "one", after the child-event delay
    controller.queue.close()


@in_loop
async def test_a_watch_started_after_stop_ends_at_once() -> None:
    api = ScriptedApi(lists=[("1", [])], watches=[])
    loop = asyncio.get_running_loop()
    reflector = Reflector(api, POD, None, Sink(), loop, timeout_seconds=5,  # type: ignore[arg-type]
                          read_timeout=10)
    reflector.stop()
    reflector.start()
    await loop.run_in_executor(None, reflector.join, 5)
    assert not reflector._thread.is_alive()


@in_loop
async def test_watches_sync_every_kind_in_every_namespace() -> None:
    class Api(ScriptedApi):
        def list_to_watch(self, kind: Any, selector: str | None, namespace: str | None
                          ) -> tuple[str, list[dict[str, Any]]]:
            self.seen.append((kind.plural, namespace))
            return "1", []

    api = Api([], [])
    api.seen = []  # type: ignore[attr-defined]
    watches = Watches(api, (DEPLOYMENT, POD), ("a", "b"), timeout_seconds=5,  # type: ignore[arg-type]
                      read_timeout=10)
    watches.start(Sink(), asyncio.get_running_loop())
    await asyncio.wait_for(watches.wait_synced(), 5)
    await asyncio.get_running_loop().run_in_executor(None, watches.stop)
    assert sorted(api.seen) == [("deployments", "a"), ("deployments", "b"),  # type: ignore[attr-defined]
                                ("pods", "a"), ("pods", "b")]
    assert all(not r._thread.is_alive() for r in watches.reflectors)


@pytest.mark.parametrize("status", [403, 500])
@in_loop
async def test_an_error_waits_a_growing_delay(status: int) -> None:
    delays: list[float] = []
    api = ScriptedApi(lists=[ApiError(status, "no"), ApiError(status, "no"), ApiError(status, "no"),
                             ("1", [])], watches=[])
    loop = asyncio.get_running_loop()
    reflector = Reflector(api, POD, None, Sink(), loop, timeout_seconds=5,  # type: ignore[arg-type]
                          read_timeout=10, sleep=lambda delay: delays.append(delay) or False)
    reflector.start()
    await asyncio.wait_for(reflector.synced.wait(), 5)
    reflector.stop()
    await loop.run_in_executor(None, reflector.join, 5)
    assert delays == [0.5, 1.0, 2.0]


def test_the_controller_lists_only_the_kinds_no_reflector_watches() -> None:
    """At start and in the periodic check the controller lists kopf's kinds itself; a kind
    with a reflector is listed (and its deletions found) by the reflector alone."""
    class Api(KubeApi):
        def serves(self, child: Any) -> bool:
            return True

    controller = Controller(Api(None), OperatorSettings())  # type: ignore[arg-type]
    everything = {kind.plural for kind, _ in controller._listed_kinds()}
    assert {"bemservices", "bemcheckpoints", "pods", "deployments"} <= everything
    controller.watches = Watches(controller.api, (DEPLOYMENT, POD), (), timeout_seconds=5,
                                 read_timeout=10)
    listed = {kind.plural for kind, _ in controller._listed_kinds()}
    assert listed == everything - {"pods", "deployments"}
