"""kopf handlers: declarations only. kopf runs the operator (startup, login, cleanup, the
liveness endpoint) and watches the two custom resources; the children and pods, nearly all
the events, are watched by the reflectors (watches.py), started here. Every event goes to
the controller (controller.py), which does the rest. No handler here makes kopf write to an
object: no finalizers, no progress or diff-base annotations."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from bem_operator.constants import CHECKPOINT_PLURAL, GROUP, PLURAL, VERSION
from bem_operator.controller import Controller
from bem_operator.k8s import credentials
from bem_operator.kopf_config import configure
from bem_operator.metrics import counted_kopf_session
from bem_operator.watches import Watches

BEMSERVICES = (GROUP, VERSION, PLURAL)


def register(registry: kopf.OperatorRegistry, controller: Controller,
             lead: Callable[[], Awaitable[None]], watches: Watches | None = None) -> None:
    """Registers every handler of the operator in `registry`, bound to `controller`; at
    startup `watches` (the children's and pods') start, and `lead` runs for the life of the
    operator (leader election, then the workers)."""
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, controller.settings)
        if watches is not None:
            controller.watch(watches)
        # The watches start once the startup handlers return: leading runs beside them.
        tasks.append(asyncio.create_task(lead(), name="lead"))

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        # A fresh registry has none of kopf's default login handlers: the same credentials
        # as the operator's own requests (read again when kopf logs in again after a 401),
        # through a session that counts kopf's requests in bem_operator_api_requests_total.
        return counted_kopf_session(credentials().info)

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await controller.close()

    async def on_event(event: kopf.RawEvent, type: str | None, **_: Any) -> None:
        controller.on_event(type, event["object"])

    kopf.on.event(*BEMSERVICES, id="watch-bemservices", registry=registry)(on_event)
    kopf.on.event(GROUP, VERSION, CHECKPOINT_PLURAL, id="watch-bemcheckpoints",
                  registry=registry)(on_event)
