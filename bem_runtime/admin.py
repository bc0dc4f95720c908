"""The admin API: which checkpoints this process serves (GET/PUT/DELETE /v1/checkpoints).

It has its own bearer token (--admin-token-file), never a client API key: a client key is
refused (403) even when valid, a missing or wrong token is 401, and without the flag every
admin route answers 403 naming it. The API-key guard and the rate limit do not apply here.
"""
from __future__ import annotations

import hmac

from aiohttp import web

from bem_runtime import errors
from bem_runtime.schemas import CheckpointBody, parse_body
from bem_runtime.state import STATE, AppState

ADMIN_PREFIX = "/v1/checkpoints"


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
    if hmac.compare_digest(given.encode("utf-8"), state.admin_token.encode("utf-8")):
        return
    if state.keys.enabled and state.keys.matches(given):
        raise errors.Forbidden("a client API key is never accepted on the admin API; send the "
                               "admin token", field="Authorization")
    raise errors.Unauthorized("invalid admin token", field="Authorization")


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
