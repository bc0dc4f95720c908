"""Process lifecycle: bind, load in the background, and on SIGTERM drain before exiting
(Kubernetes sends SIGTERM, then SIGKILL after terminationGracePeriodSeconds).

Exit codes (README, "Exit codes"): 0 stopped after every request finished; 1 the drain
deadline was reached and the requests left were cancelled; 2 bad flags or settings (cli.py);
3 the model failed to load (also written to the termination-message file).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import NoReturn

from aiohttp import web

from bem_runtime.app import LOAD_TASK, create_app, drain
from bem_runtime.errors import ServiceUnavailable
from bem_runtime.logs import setup_logging
from bem_runtime.settings import TERMINATION_MESSAGE, Settings
from bem_runtime.state import STATE

log = logging.getLogger("bem_runtime.server")
EXIT_OK = 0
EXIT_DRAIN_DEADLINE = 1
EXIT_LOAD_FAILED = 3
TERMINATION_MESSAGE_ENV = TERMINATION_MESSAGE.env
TERMINATION_MESSAGE_PATH = TERMINATION_MESSAGE.default
ANSWER_GRACE_S = 0.3  # after the deadline: time for cancelled requests to get their 503
SHUTDOWN_GRACE_S = 0.3  # then: what aiohttp may still wait for open handlers
JOIN_GRACE_S = 0.1  # then: for idle worker threads to end


async def serve(settings: Settings) -> int:
    app = create_app(settings)
    # handler_cancellation: a client that disconnects cancels its handler, and so its row.
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           handler_cancellation=True, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    # One app on every port; port_middleware decides which routes each one answers.
    for port in settings.listen_ports:
        await web.TCPSite(runner, settings.host, port).start()
    log.info("Listening", extra={"host": settings.host, "port": settings.port,
                                 "metrics_port": settings.metrics_port,
                                 "admin_port": settings.admin_port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    load = app[LOAD_TASK]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({load, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = EXIT_OK
    signalled = None
    if load.done() and not load.cancelled() and load.exception() is not None:
        code = EXIT_LOAD_FAILED
        write_termination_message(f"model load failed: {load.exception()}")
    else:
        await stopper
        signalled = loop.time()
        deadline = signalled + settings.drain_timeout
        log.info("Received a stop signal", extra={"drain_timeout_s": settings.drain_timeout})
        if not await drain(app, deadline):
            code = EXIT_DRAIN_DEADLINE
            await _cancel_leftovers(app, settings.drain_timeout)
    stopper.cancel()
    await runner.cleanup()
    since = {} if signalled is None else {"seconds_since_signal": round(loop.time() - signalled, 3)}
    log.info("Stopped", extra={"exit_code": code, **since})
    return code


async def _cancel_leftovers(app: web.Application, timeout: float) -> None:
    state = app[STATE]
    cancelled = 0
    if state.scheduler is not None:
        cancelled = state.scheduler.cancel_all("drain", lambda: ServiceUnavailable(
            f"the server shut down before this request finished (drain timeout of {timeout:g} s "
            "reached); retry on another replica", retry_after=1, type_="draining"))
    log.warning("Drain deadline reached: cancelled the requests left", extra={
        "cancelled": cancelled, "inflight": state.inflight})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.idle.wait(), ANSWER_GRACE_S)


def write_termination_message(message: str) -> None:
    """Kubernetes shows this file's content as the container's termination message (the
    operator puts it into the BEMService's status); skipped where it cannot be written."""
    path = os.environ.get(TERMINATION_MESSAGE_ENV) or TERMINATION_MESSAGE_PATH
    line = " ".join(message.split())[:4000]  # one line; the kubelet keeps at most 4096 bytes
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        pass  # not in a pod (or a read-only path): the JSON log line already has the cause


def run_server(settings: Settings) -> NoReturn:
    setup_logging(settings.log_level)
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(serve(settings))
        loop.run_until_complete(_cancel_tasks())
    finally:
        loop.close()  # unlike asyncio.run, does not wait for executor threads
    busy = _busy_threads(JOIN_GRACE_S)
    if busy:  # a model load or an engine step still running is not waited for
        log.info("Exited without waiting for busy threads", extra={"threads": busy})
    # Leave at once: everything the server owns is closed, and the interpreter's own teardown
    # (joining worker threads, finalising torch) takes up to a second the drain deadline does
    # not have.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _cancel_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _busy_threads(grace: float) -> list[str]:
    end = time.monotonic() + grace
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon]
    for t in others:
        t.join(max(0.0, end - time.monotonic()))
    return [t.name for t in others if t.is_alive()]
