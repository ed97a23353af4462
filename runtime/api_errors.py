"""OpenAI-shaped errors of the device API, and how runtime errors map onto them."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from kernels import ContextOverflowError, EngineError
from runtime.calibration import CalibrationError
from runtime.errors import ModeError, OffloadError, PrivacyBlockError, QueueFullError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MODE_HEADER = "X-Tandem-Mode"

log = logging.getLogger(__name__)


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


def error_body(err: ApiError) -> dict[str, dict[str, str | None]]:
    """The OpenAI error object of `err`: the body of an error response, and the error chunk
    of a stream that fails after its 200 (same type, param and code either way)."""
    return {
        "error": {
            "message": err.message,
            "type": _TYPES.get(err.status, "invalid_request_error" if err.status < 500
                               else "server_error"),
            "param": err.param,
            "code": err.code,
        }
    }


def error_response(err: ApiError) -> web.Response:
    return web.json_response(error_body(err), status=err.status, headers=err.headers)


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
    except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen failure: still JSON
        return error_response(internal_error(exc))


def internal_error(exc: BaseException) -> ApiError:
    """A 500 for an error nobody mapped; the traceback goes to the log, not to the client."""
    log.error("unexpected error while serving a request", exc_info=exc)
    return ApiError(500, "internal server error (see the server log)", "internal_error")


# Request fields a runtime ValueError may name first ("messages[0] must be ...").
_REQUEST_FIELDS = ("messages", "question", "options")


def param_named(message: str, fields: tuple[str, ...]) -> str | None:
    """The field a validation message starts with ("top_p must be ..."), if it is one of these."""
    head = re.split(r"[\s\[.]", message, maxsplit=1)[0]
    return head if head in fields else None


def map_runtime_error(exc: Exception, mode_param: str | None = None) -> ApiError:
    """The client-facing error for what the runtime raised (a logged 500 when unforeseen).

    `mode_param` names where the request's mode came from (`tandem.mode`, `mode`, the
    `X-Tandem-Mode` header); None when the server's default mode was used.
    """
    if isinstance(exc, QueueFullError):
        return ApiError(429, str(exc), "queue_full", headers={"Retry-After": "1"})
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), "context_length_exceeded", "messages")
    if isinstance(exc, ModeError):
        return ApiError(400, str(exc), "mode_unavailable", mode_param)
    if isinstance(exc, PrivacyBlockError):
        return ApiError(400, str(exc), "privacy_block", "messages")
    if isinstance(exc, OffloadError):
        return ApiError(503, str(exc), "cloud_unavailable")
    if isinstance(exc, CalibrationError):
        return ApiError(503, str(exc), "calibration_unavailable")
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc), "invalid_value", param_named(str(exc), _REQUEST_FIELDS))
    if isinstance(exc, EngineError):
        return ApiError(503, str(exc), "engine_error")
    return internal_error(exc)
