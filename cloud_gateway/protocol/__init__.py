"""The sealed-envelope wire protocol: the one part of the gateway the device imports.

- `envelope`: HPKE-sealed requests (chat body, device id, timestamp, nonce, response key),
  signed by the device's Ed25519 key.
- `frames`: responses and streams as AEAD frames under the response key (STREAM construction).
- `trust`: the signed list of gateway keys and the device credential string.
- `suites`: the HPKE suites (X25519 default, MLKEM768-X25519 hybrid) and raw key encodings.

docs/protocol.md describes the format byte by byte, with its threat model.
"""

from cloud_gateway.errors import FrameError, GatewayError, ProtocolError
from cloud_gateway.protocol.envelope import (
    NONCE_BYTES,
    REQUEST_CONTENT_TYPE,
    RESPONSE_CONTENT_TYPE,
    RESPONSE_KEY_BYTES,
    STREAM_CONTENT_TYPE,
    VERSION,
    EnvelopeHeader,
    OpenedRequest,
    SealedRequest,
    encode_header,
    open_request,
    parse_header,
    seal_request,
)
from cloud_gateway.protocol.frames import (
    FrameOpener,
    FrameSealer,
    open_response,
    seal_response,
)
from cloud_gateway.protocol.suites import KEMS, Kem, check_kem
from cloud_gateway.protocol.trust import (
    KEYS_MAX_AGE_S,
    KEYS_ROLLBACK_TOLERANCE_S,
    DeviceCredential,
    KeysDocument,
    PublishedKey,
    read_keys_document,
    sign_keys_document,
    verify_keys_document,
)

__all__ = [
    "KEMS",
    "KEYS_MAX_AGE_S",
    "KEYS_ROLLBACK_TOLERANCE_S",
    "NONCE_BYTES",
    "REQUEST_CONTENT_TYPE",
    "RESPONSE_CONTENT_TYPE",
    "RESPONSE_KEY_BYTES",
    "STREAM_CONTENT_TYPE",
    "VERSION",
    "DeviceCredential",
    "EnvelopeHeader",
    "FrameError",
    "FrameOpener",
    "FrameSealer",
    "GatewayError",
    "Kem",
    "KeysDocument",
    "OpenedRequest",
    "ProtocolError",
    "PublishedKey",
    "SealedRequest",
    "check_kem",
    "encode_header",
    "open_request",
    "open_response",
    "parse_header",
    "read_keys_document",
    "seal_request",
    "seal_response",
    "sign_keys_document",
    "verify_keys_document",
]
