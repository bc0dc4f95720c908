"""Calm logs while the API server is unreachable (no kopf, no API client: testable alone).

An outage is one WARNING when the connection is first lost and one INFO when a request
succeeds again; the errors in between (every watch retry, every periodic check) go to
DEBUG without a traceback. `ConnectionErrorFilter` applies this to kopf's own log lines
by exception type and logger name, never by their text.
Every API failure is counted by kind in bem_operator_api_errors_total.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("bem_operator.connection")

# Exception class names (anywhere in the chain) that mean "the network or the server is
# away", not "our code is wrong": aiohttp's, asyncio's, the standard library's, urllib3's.
NETWORK_ERRORS = frozenset({
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError",
    "ClientOSError", "ServerTimeoutError", "ClientPayloadError", "ConnectionRefusedError",
    "ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError", "TimeoutError",
    "CancelledError", "ProtocolError", "MaxRetryError", "NewConnectionError",
    "ReadTimeoutError", "ConnectTimeoutError", "RemoteDisconnected", "IncompleteRead",
    "APIServerError", "ConnectionError", "ClientConnectionResetError", "SSLError",
})
# Clients that log each failed attempt of a request they retry, with the exception only in
# the text: kopf's (its watches', at ERROR) and urllib3's pool (the operator's own client, at
# WARNING). Their lines go to DEBUG, by logger name; the outage itself is told once by the
# operator's own requests (the periodic check's probe).
RETRY_LOGGERS = ("kopf._cogs.clients", "urllib3.connectionpool")


def error_kind(status: int) -> str:
    """The kind label of bem_operator_api_errors_total for an HTTP status (0: no response)."""
    if status == 0:
        return "connection"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server"
    return {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
            410: "expired", 422: "invalid"}.get(status, "client")


class ConnectionState:
    """Up or down, with transitions logged once each."""

    def __init__(self, on_error: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, settle: float = 30.0) -> None:
        self._down_since: float | None = None
        # A server that just came back can fail again while it initialises (503s, refused
        # watches): within `settle` seconds of a recovery that is the same outage.
        self._settle = settle
        self._recovered_at: float | None = None
        self._relapse = False
        self._lock = threading.Lock()
        self.outages = 0  # how many times the connection was lost (watches broke each time)
        self._on_error = on_error or (lambda kind: None)
        self._clock = clock

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def record_error(self, kind: str) -> None:
        """An API error that is no outage (a refusal, a conflict): counted, not logged."""
        self._on_error(kind)

    def lost(self, detail: str, kind: str = "connection") -> None:
        self._on_error(kind)
        with self._lock:
            now = self._clock()
            first = self._down_since is None
            if first:
                self._down_since = now
                self._relapse = self._recovered_at is not None and \
                    now - self._recovered_at < self._settle
                first = not self._relapse
                self.outages += 1
        if first:
            logger.warning("Lost the connection to the API server (%s); retrying quietly "
                           "until it is back", detail)
        else:
            logger.debug("The API server is still unreachable: %s", detail)

    def ok(self) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
            relapse, self._relapse = self._relapse, False
            if since is not None:
                self._recovered_at = self._clock()
        if since is not None and not relapse:
            logger.info("Reconnected to the API server after %.0fs", self._clock() - since)
        elif since is not None:
            logger.debug("The API server answers again")


def is_network_error(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__name__ in NETWORK_ERRORS or isinstance(
                exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class ConnectionErrorFilter(logging.Filter):
    """On the log handlers: kopf's lines about a lost API server become our one WARNING.

    A record from kopf, aiohttp or urllib3 at WARNING or above whose exception is a network
    error is dropped after telling `state`; the clients' retry lines become DEBUG (shown
    only when `verbose`); everything else passes unchanged."""

    def __init__(self, state: ConnectionState, verbose: bool = False) -> None:
        super().__init__()
        self.state = state
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("kopf", "aiohttp", "urllib3")) \
                or record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if is_network_error(exc):
            assert exc is not None
            self.state.lost(_first_line(f"{type(exc).__name__}: {exc}" if str(exc)
                                        else type(exc).__name__))
            return False
        if record.name.startswith(RETRY_LOGGERS) and record.levelno < logging.CRITICAL:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.verbose
        return True


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line if len(line) <= 300 else line[:297] + "..."
