"""Why the cloud path failed: `OffloadError` subclasses whose message is the user-facing reason.

`retry_safe` is True when the request surely never reached the upstream model (nothing was
computed or billed), so the client may try again with a freshly sealed envelope.
"""

from __future__ import annotations

from runtime.errors import OffloadError


class OffloadNotConfigured(OffloadError):
    """No gateway URL or device credential is configured."""


class OffloadTimeout(OffloadError):
    """The cloud did not answer within the deadline."""


class GatewayUnreachable(OffloadError):
    """The gateway could not be reached, or the connection broke."""

    def __init__(self, message: str, *, retry_safe: bool = False) -> None:
        super().__init__(message)
        self.retry_safe = retry_safe


class CircuitOpen(OffloadError):
    """Recent cloud calls failed; the cloud is skipped for a while."""

    def __init__(self, message: str, retry_in_s: float) -> None:
        super().__init__(message)
        self.retry_in_s = retry_in_s


class GatewayRejected(OffloadError):
    """The gateway (or its upstream) refused the request with an HTTP error and a code."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"the gateway refused the request: {status} {code}: {message}")
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


class SealedReplyInvalid(OffloadError):
    """The sealed answer failed authentication or ended early (tampered or truncated)."""
