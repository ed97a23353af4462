"""OpenAI-shaped errors of the device API, and how runtime errors map onto them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from kernels import ContextOverflowError, EngineError
from runtime.calibration import CalibrationError
from runtime.errors import ModeError, OffloadError, PrivacyBlockError, QueueFullError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error a client caused or must handle, rendered as an OpenAI error body."""

    def __init__(
        self, status: int, message: str, code: str, param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error", 503: "service_unavailable"}


def error_response(err: ApiError) -> web.Response:
    body = {
        "error": {
            "message": err.message,
            "type": _TYPES.get(err.status, "invalid_request_error" if err.status < 500
                               else "server_error"),
            "param": err.param,
            "code": err.code,
        }
    }
    return web.json_response(body, status=err.status, headers=err.headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(ApiError(413, exc.text or "request body too large", "body_too_large"))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(ApiError(exc.status, exc.reason, exc.reason.lower().replace(" ",
                                                                                              "_")))
        raise


def map_runtime_error(exc: Exception) -> ApiError:
    if isinstance(exc, QueueFullError):
        return ApiError(429, str(exc), "queue_full", headers={"Retry-After": "1"})
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), "context_length_exceeded", "messages")
    if isinstance(exc, ModeError):
        return ApiError(400, str(exc), "mode_unavailable", "tandem.mode")
    if isinstance(exc, PrivacyBlockError):
        return ApiError(400, str(exc), "privacy_block", "messages")
    if isinstance(exc, OffloadError):
        return ApiError(503, str(exc), "cloud_unavailable")
    if isinstance(exc, CalibrationError):
        return ApiError(503, str(exc), "calibration_unavailable")
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc), "invalid_value")
    if isinstance(exc, EngineError):
        return ApiError(503, str(exc), "engine_error")
    raise exc
