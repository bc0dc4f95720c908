"""Process lifecycle: bind, load in the background, and on SIGTERM drain before exiting 0
(Kubernetes sends SIGTERM, then SIGKILL after terminationGracePeriodSeconds)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiohttp import web

from bem_runtime.app import LOAD_TASK, create_app, drain
from bem_runtime.logs import setup_logging
from bem_runtime.settings import Settings

log = logging.getLogger("bem_runtime.server")
EXIT_LOAD_FAILED = 3
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_ENV = "BEM_TERMINATION_MESSAGE_PATH"


async def serve(settings: Settings) -> int:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port,
                       shutdown_timeout=settings.drain_timeout)
    await site.start()
    log.info("Listening", extra={"host": settings.host, "port": settings.port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    load = app[LOAD_TASK]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({load, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if load.done() and not load.cancelled() and load.exception() is not None:
        code = EXIT_LOAD_FAILED
        write_termination_message(f"model load failed: {load.exception()}")
    else:
        await stopper
        log.info("Received a stop signal")
        if not await drain(app):
            code = 1
    stopper.cancel()
    await runner.cleanup()
    log.info("Stopped", extra={"exit_code": code})
    return code


def write_termination_message(message: str) -> None:
    """Kubernetes shows this file's content as the container's termination message (the
    operator puts it into the BEMService's status). Path from BEM_TERMINATION_MESSAGE_PATH;
    skipped where it cannot be written (outside a pod)."""
    path = os.environ.get(TERMINATION_MESSAGE_ENV, TERMINATION_MESSAGE_PATH)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(message[:4096])  # the kubelet keeps at most 4 KiB
    except OSError:
        log.debug("No termination message file at %s", path)


def run_server(settings: Settings) -> int:
    setup_logging(settings.log_level)
    return asyncio.run(serve(settings))
