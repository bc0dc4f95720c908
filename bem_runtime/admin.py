"""The admin API: which checkpoints this process serves (GET/PUT/DELETE /v1/checkpoints).

It has its own bearer token (--admin-token-file), never a client API key: a client key is
refused (403) even when valid, a missing or wrong token is 401, and without the flag every
admin route answers 403 naming it. The API-key guard and the rate limit do not apply here.
"""
from __future__ import annotations

import hmac
import logging
import time

from aiohttp import web

from bem_runtime import errors
from bem_runtime.schemas import CheckpointBody, parse_body
from bem_runtime.settings import read_admin_token
from bem_runtime.state import STATE, AppState

ADMIN_PREFIX = "/v1/checkpoints"
TOKEN_REREAD_INTERVAL_S = 1.0
log = logging.getLogger("bem_runtime.admin")


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def check_admin(request: web.Request, state: AppState) -> None:
    if state.admin_token is None:
        raise errors.Forbidden("the admin API is off: start the runtime with --admin-token-file "
                               "(env BEM_ADMIN_TOKEN_FILE)", field="Authorization")
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    given = given or request.headers.get("X-API-Key", "").strip()
    if not given:
        raise errors.Unauthorized("missing admin token: send 'Authorization: Bearer <token>'",
                                  field="Authorization")
    if _matches(given, state.admin_token) or _matches(given, _reread_token(state)):
        return
    if state.keys.enabled and state.keys.matches(given):
        raise errors.Forbidden("a client API key is never accepted on the admin API; send the "
                               "admin token", field="Authorization")
    raise errors.Unauthorized("invalid admin token", field="Authorization")


def _matches(given: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def _reread_token(state: AppState) -> str | None:
    """The token file again, when a token did not match: the file is a mounted Secret, which
    the kubelet updates in place when the Secret is replaced (the operator recreates a deleted
    one with a new token). At most once a second, so wrong tokens cannot make it busy."""
    path = state.settings.admin_token_file
    now = time.monotonic()
    if path is None or now - state.admin_token_read_at < TOKEN_REREAD_INTERVAL_S:
        return None
    state.admin_token_read_at = now
    try:
        token = read_admin_token(path)
    except ValueError:  # mid-update or gone: keep the one held
        return None
    if token != state.admin_token:
        log.info("Read a new admin token from %s", path)
        state.admin_token = token
    return token


def _loaded_state(request: web.Request) -> AppState:
    """The state once the base model is loaded (the start list may still be loading: a PUT then
    waits for it)."""
    state = request.app[STATE]
    check_admin(request, state)
    if not state.loaded or state.engine is None:
        raise errors.ServiceUnavailable("the base model is still loading; retry shortly",
                                        retry_after=5, type_="not_ready")
    return state


async def list_checkpoints(request: web.Request) -> web.Response:
    state = request.app[STATE]
    check_admin(request, state)
    entries = sorted(state.registry.entries.values(), key=lambda e: e.name)
    return web.json_response({"capacity": state.registry.capacity,
                              "data": [e.json() for e in entries]})


async def put_checkpoint(request: web.Request) -> web.Response:
    state = _loaded_state(request)
    body: CheckpointBody = parse_body(await request.read(), request.content_type, CheckpointBody)
    status, entry = await state.registry.put(request.match_info["name"], body.path)
    return web.json_response(entry.json(), status=status)


async def delete_checkpoint(request: web.Request) -> web.Response:
    state = _loaded_state(request)
    await state.registry.delete(request.match_info["name"])
    return web.Response(status=204)
