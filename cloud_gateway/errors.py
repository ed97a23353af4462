"""The gateway's exception hierarchy: each error knows its HTTP status and wire error name.

The names (`code`) are part of the wire protocol: the device reads them to decide whether a
retry is safe (`unknown_key_id`: refresh keys, reseal, resend) or not (everything else).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    status: int = 500
    code: str = "internal_error"
    type: str = "server_error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)

    @property
    def message(self) -> str:
        return str(self)

    def to_body(self) -> dict[str, dict[str, object]]:
        """The OpenAI-style error body sent to the client."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


class ConfigurationError(GatewayError):
    """The gateway configuration or its state directory is invalid."""

    code = "configuration_error"


# --- the envelope and its frames (raised by `cloud_gateway.protocol`, on both sides) ---------


class ProtocolError(GatewayError):
    """A sealed message does not verify or parse."""

    status = 400
    code = "protocol_error"
    type = "invalid_request_error"


class MalformedEnvelope(ProtocolError):
    """The envelope is not in the sealed-request format."""

    code = "malformed_envelope"


class UnsupportedVersion(ProtocolError):
    """The envelope's protocol version or suite is not supported."""

    code = "unsupported_version"


class UnknownKeyId(ProtocolError):
    """The envelope is sealed to a key this gateway does not hold (or no longer holds)."""

    status = 421  # Misdirected Request: sealed for another key; refresh /v1/keys and reseal
    code = "unknown_key_id"


class DecryptionFailed(ProtocolError):
    """The sealed payload failed authentication (wrong key, or a modified byte)."""

    status = 422
    code = "decryption_failed"


class FrameError(ProtocolError):
    """A sealed response or stream frame is modified, reordered, truncated or spliced."""

    code = "bad_frame"


class UntrustedKeys(ProtocolError):
    """The gateway's published key list is not signed by the gateway identity we enrolled with."""

    code = "untrusted_keys"


class StaleKeys(ProtocolError):
    """The gateway's key list is genuine but too old, or older than one already seen (replayed)."""

    code = "stale_keys"


class BadCredential(ProtocolError):
    """A device credential string is not in the expected format."""

    code = "bad_credential"


# --- admission: who sent it, when, how often ---------------------------------------------------


class AdmissionError(GatewayError):
    """The request is well sealed but not admitted."""

    status = 403
    code = "not_admitted"
    type = "invalid_request_error"


class StaleTimestamp(AdmissionError):
    """The envelope's timestamp is outside the gateway's clock window.

    The body carries the gateway's clock (`gateway_time_ms`) so that a device whose clock is
    off can stamp its resealed envelope by the gateway's time (docs/protocol.md, section 5)."""

    status = 425  # Too Early: the gateway will not risk processing a possibly replayed request
    code = "stale_timestamp"

    def __init__(self, message: str, *, gateway_time_ms: int) -> None:
        super().__init__(message)
        self.gateway_time_ms = gateway_time_ms

    def to_body(self) -> dict[str, dict[str, object]]:
        body = super().to_body()
        body["error"]["gateway_time_ms"] = self.gateway_time_ms
        return body


class ReplayedNonce(AdmissionError):
    """This envelope (its nonce) was already seen."""

    status = 409
    code = "replayed_nonce"


class BadSignature(AdmissionError):
    """The device signature does not verify, or the device is not enrolled (one answer, so
    that names cannot be probed)."""

    status = 401
    code = "bad_signature"
    type = "authentication_error"


class RevokedDevice(AdmissionError):
    """The device's credential has been revoked (said only once its signature verified)."""

    status = 403
    code = "revoked_device"
    type = "permission_error"


class PayloadTooLarge(AdmissionError):
    """The request body is larger than the gateway accepts."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(AdmissionError):
    """The request body is not a sealed envelope."""

    status = 415
    code = "unsupported_media_type"


class InvalidChatRequest(AdmissionError):
    """The sealed request is not a valid OpenAI chat-completions body."""

    status = 400
    code = "invalid_request"


class RateLimited(AdmissionError):
    """The device is over its requests-per-minute limit or its tokens-per-day quota."""

    status = 429
    code = "rate_limited"
    type = "rate_limit_error"

    def __init__(self, message: str, retry_after_s: int, limit: str = "requests_per_minute"):
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))
        self.limit = limit


class StoreUnavailable(GatewayError):
    """The gateway's shared state store (Redis: replay cache, rate limits) is unreachable, or
    refuses the request (a read-only replica, a full Redis)."""

    status = 503
    code = "store_unavailable"

    def __init__(self, message: str = "", *, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause  # the store's own error, for the log (never sent to the client)


# --- upstream ----------------------------------------------------------------------------------


class UpstreamError(GatewayError):
    """The upstream model server failed or answered with an error."""

    status = 502
    code = "upstream_error"

    def __init__(self, message: str = "", upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class UpstreamRefusedRequest(UpstreamError):
    """The upstream refused the request itself (a prompt over its context, an unknown model):
    the request is at fault, not the cloud, so the device must not count it as a cloud failure."""

    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class UpstreamRateLimited(UpstreamError):
    """The upstream is over its own rate limit or quota; try again after `retry_after_s`."""

    status = 429
    code = "upstream_rate_limited"
    type = "rate_limit_error"

    def __init__(
        self, message: str, retry_after_s: int, upstream_status: int | None = 429
    ) -> None:
        super().__init__(message, upstream_status)
        self.retry_after_s = max(1, int(retry_after_s))


class UpstreamAuthFailed(UpstreamError):
    """The upstream refused the gateway's API key: the gateway is misconfigured."""

    code = "upstream_auth_failed"


class UpstreamTimeout(UpstreamError):
    """The upstream model server did not answer in time."""

    status = 504
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    """The upstream model server is unreachable or still loading."""

    status = 503
    code = "upstream_unavailable"
