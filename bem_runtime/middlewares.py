"""Request context (id, logs, metrics), the one error-mapping point, the port guard (which
routes each listening port serves) and the API guard (drain, API key, rate limit). Security headers are added for every response, streamed or not."""
from __future__ import annotations

import logging
import re
import time
import uuid

from aiohttp import web

from bem_runtime import errors
from bem_runtime.admin import is_admin_path
from bem_runtime.logs import request_id
from bem_runtime.settings import Settings
from bem_runtime.state import STATE

log = logging.getLogger("bem_runtime.http")
access_log = logging.getLogger("bem_runtime.access")
API_PREFIXES = ("/v1/", "/api/")
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
_HTTP_ERRORS: dict[int, type[errors.ApiError]] = {
    404: errors.NotFound, 405: errors.MethodNotAllowed, 413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def error_response(err: errors.ApiError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers=err.headers)


@web.middleware
async def context_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Outermost: request id, in-flight accounting, error mapping, access log and metrics."""
    state = request.app[STATE]
    incoming = request.headers.get("X-Request-ID", "")
    rid = incoming if _REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex
    request["request_id"] = rid
    token = request_id.set(rid)
    start = time.perf_counter()
    response: web.StreamResponse | None = None
    state.enter()
    try:
        try:
            response = await handler(request)
        except errors.ApiError as err:
            response = error_response(err)
        except web.HTTPException as exc:
            response = error_response(_from_http_exception(request, exc))
        except Exception:
            log.exception("Request failed with an unexpected error")
            response = error_response(errors.ApiError(
                f"internal error; quote request id {rid} when reporting it"))
        return response
    finally:
        state.leave()
        elapsed = time.perf_counter() - start
        status = response.status if response is not None else 499  # client went away
        endpoint = _endpoint(request)
        state.metrics.observe_request(endpoint, status, elapsed, request.get("checkpoint"))
        access_log.info("Handled %s %s", request.method, request.path, extra={
            "status": status, "duration_ms": round(elapsed * 1000, 2),
            "client": request.remote, "endpoint": endpoint})
        request_id.reset(token)


def port_for(path: str, settings: Settings) -> int:
    """The one port that serves `path`: /metrics and the admin API on their own ports when
    those are set, everything else (the API, the probes) on --port."""
    if path == "/metrics" and settings.metrics_port is not None:
        return settings.metrics_port
    if is_admin_path(path) and settings.admin_port is not None:
        return settings.admin_port
    return settings.port


def _local_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None


@web.middleware
async def port_middleware(request: web.Request, handler) -> web.StreamResponse:
    """With a metrics or admin port set, each route answers on its own port only (404 on the
    others), so a NetworkPolicy that admits a client to one port admits it to those routes
    alone. One port (the default): every route on it."""
    settings = request.app[STATE].settings
    if len(settings.listen_ports) > 1:
        wanted = port_for(request.path, settings)
        if _local_port(request) != wanted:
            raise errors.NotFound(f"no endpoint at {request.path} on this port; it is served on "
                                  f"port {wanted}", field="path")
    return await handler(request)


@web.middleware
async def guard_middleware(request: web.Request, handler) -> web.StreamResponse:
    """API paths only: refuse while draining, then check the key, then the rate limit. The
    admin API checks its own token (admin.py)."""
    if not request.path.startswith(API_PREFIXES) or request.match_info.http_exception:
        return await handler(request)  # unmatched: the precise 404/405 helps more than a 401
    state = request.app[STATE]
    if state.draining:
        raise errors.ServiceUnavailable("server is shutting down; retry on another replica",
                                        retry_after=1, type_="draining")
    if is_admin_path(request.path):
        return await handler(request)
    # A valid API key is the client; without auth, the address (behind trusted proxies, the
    # one they report).
    client = state.keys.check(request) or "ip:" + state.proxies.client(
        request.remote, request.headers.getall("X-Forwarded-For", []))
    state.buckets.take(client)
    return await handler(request)


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every response, including SSE and errors."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    rid = request.get("request_id")
    if rid:
        response.headers["X-Request-ID"] = rid


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> errors.ApiError:
    cls = _HTTP_ERRORS.get(exc.status, errors.ApiError)
    if exc.status == 404:
        msg = f"no endpoint at {request.path}; see GET /v1/models and the README for endpoints"
        return errors.NotFound(msg, field="path")
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return errors.MethodNotAllowed(f"{request.method} is not allowed on {request.path}; "
                                       f"use {allowed}", field="method",
                                       headers={"Allow": allowed})
    if exc.status == 413:
        limit = request.app[STATE].settings.max_body_bytes
        return errors.PayloadTooLarge(f"request body exceeds {limit} bytes; send a shorter "
                                      "prompt", field="body")
    err = cls(exc.reason or "HTTP error")
    err.status = exc.status
    return err


def _endpoint(request: web.Request) -> str:
    """Bounded label: the route template, never the raw path."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None or info.http_exception is not None:
        return "unmatched"
    return resource.canonical
