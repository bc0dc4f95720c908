"""An API outage logged as one WARNING and one INFO, kopf's lines about it included."""
from __future__ import annotations

import logging
import sys

import pytest

from bem_operator.metrics import OperatorMetrics
from bem_operator.outage import ConnectionErrorFilter, ConnectionState, error_kind

def test_error_kinds() -> None:
    assert [error_kind(s) for s in (0, 429, 500, 503, 409, 422, 403)] == [
        "connection", "throttled", "server", "server", "conflict", "invalid", "forbidden"]


def test_an_outage_is_one_warning_and_one_info(caplog: pytest.LogCaptureFixture) -> None:
    metrics = OperatorMetrics()
    state = ConnectionState(on_error=lambda kind: metrics.api_errors.labels(kind=kind).inc(),
                            clock=lambda: 100.0)
    caplog.set_level(logging.DEBUG, logger="bem_operator")
    for _ in range(20):
        state.lost("Connection refused")
    state.ok()
    state.ok()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in lines] == ["WARNING", "INFO"]
    assert "Lost the connection" in lines[0][1] and "Reconnected" in lines[1][1]
    assert metrics.registry.get_sample_value(
        "bem_operator_api_errors_total", {"kind": "connection"}) == 20


def test_a_relapse_right_after_recovery_is_the_same_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    state = ConnectionState(clock=lambda: now[0], settle=30)
    caplog.set_level(logging.DEBUG, logger="bem_operator")
    state.lost("refused")
    now[0] = 10
    state.ok()
    now[0] = 11
    state.lost("503: the server is initializing")  # the fresh server is not ready yet
    now[0] = 12
    state.ok()
    now[0] = 100
    state.lost("refused")  # a new outage, long after
    state.ok()
    levels = [r.levelname for r in caplog.records if r.levelno >= logging.INFO]
    assert levels == ["WARNING", "INFO", "WARNING", "INFO"]


def _record(name: str, level: int, message: str, exc: BaseException | None = None
            ) -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:  # noqa: BLE001 - capture a real traceback
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, message, None, exc_info)


def test_kopf_network_tracebacks_become_the_one_warning() -> None:
    state = ConnectionState()
    calm = ConnectionErrorFilter(state)
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 6443)")
    assert not calm.filter(_record("kopf._core.reactor.running", logging.ERROR,
                                   "Watcher for bemservices failed", refused))
    assert state.down
    # kopf's client logs each retried attempt at ERROR, the exception only in its text: by
    # logger name it becomes DEBUG, shown only when the operator logs at DEBUG.
    retry = _record("kopf._cogs.clients.watching", logging.ERROR,
                    "Request attempt #3/9 failed; will retry: ServerDisconnectedError()")
    assert not calm.filter(retry) and retry.levelno == logging.DEBUG
    assert ConnectionErrorFilter(state, verbose=True).filter(
        _record("kopf._cogs.clients.api", logging.ERROR, "Request attempt #1/9 failed"))
    # A real bug keeps its traceback, and our own lines are never touched.
    assert calm.filter(_record("kopf.objects", logging.ERROR, "Handler failed",
                               KeyError("spec")))
    assert calm.filter(_record("bem_operator.controller", logging.ERROR, "Connection refused"))
    assert not calm.filter(_record("urllib3.connectionpool", logging.WARNING, "Retrying "
                                   "after connection broken by 'NewConnectionError(...)'"))
    assert calm.filter(_record("kopf.activities", logging.INFO, "Timeout reached"))
    # the text alone decides nothing: a kopf line that only mentions a timeout stays
    assert calm.filter(_record("kopf._core.reactor.running", logging.WARNING,
                               "Cleanup activity is not executed: Timeout"))
