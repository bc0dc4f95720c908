"""Typed API errors; one middleware (middlewares.error_middleware) turns them into JSON responses.

Every error body is {"error": {"type", "message", "field"?}} and the message says what to fix.
"""
from __future__ import annotations


class ApiError(Exception):
    status = 500
    type = "internal_error"

    def __init__(self, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict:
        err: dict = {"type": self.type, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


class InvalidInput(ApiError):
    status = 400
    type = "invalid_request"


class Unauthorized(ApiError):
    status = 401
    type = "unauthorized"


class Forbidden(ApiError):
    status = 403
    type = "forbidden"


class NotFound(ApiError):
    status = 404
    type = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    type = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    type = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    type = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    type = "unsupported_media_type"


class InvalidCheckpoint(ApiError):
    """A checkpoint that is not valid for this base model (the load error says why)."""

    status = 422
    type = "invalid_checkpoint"


class RateLimited(ApiError):
    status = 429
    type = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after + 0.5)))})


class ServiceUnavailable(ApiError):
    """Queue full, model not ready, or draining: the client should retry (another replica)."""

    status = 503
    type = "unavailable"

    def __init__(self, message: str, retry_after: float = 1.0, *, type_: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})
        if type_:
            self.type = type_


class RequestTimeout(ApiError):
    status = 504
    type = "timeout"


class InferenceError(ApiError):
    status = 500
    type = "inference_error"
