"""API-key check: `Authorization: Bearer <key>` or `X-API-Key: <key>`, compared in constant time."""
from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from bem_runtime.errors import Unauthorized


class ApiKeys:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(k.encode("utf-8") for k in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def matches(self, given: str) -> bool:
        """Whether `given` is one of the keys (compared against every key, in constant time)."""
        raw = given.encode("utf-8")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(raw, key)
        return matched

    def check(self, request: web.Request) -> str | None:
        """Return a stable id of the key (for rate limiting), None when auth is off."""
        if not self._keys:
            return None
        given = _presented_key(request)
        if given is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or "
                               "'X-API-Key: <key>'", field="Authorization")
        # Compared against every key so timing does not reveal which one nearly matched.
        if not self.matches(given):
            raise Unauthorized("invalid API key", field="Authorization")
        return "key:" + hashlib.sha256(given.encode("utf-8")).hexdigest()[:16]


def _presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise Unauthorized("Authorization header must be 'Bearer <key>'", field="Authorization")
    key = request.headers.get("X-API-Key", "").strip()
    return key or None
