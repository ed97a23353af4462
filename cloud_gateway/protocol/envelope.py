"""The sealed request: one HPKE envelope carrying a chat request, who sent it, when, and the
key the answer must be sealed under.

Wire format (version 1), all integers big-endian:

    envelope  = header || hpke_ciphertext            (hpke_ciphertext = enc || ct)
    header    = "TDM" || version:u8 || suite:u8 || key_id_len:u8 || key_id (ASCII)
    info      = "tandem/1 request" 0x00 || header     (binds version, suite and key id)
    plaintext = signature:64 || meta_len:u16 || meta (JSON) || body (chat request JSON)
    meta      = {"device": str, "ts_ms": int, "nonce": b64url(16), "response_key": b64url(32)}
    signature = Ed25519(device key, "tandem/1 device-signature" 0x00 || header || meta || body)

See docs/protocol.md for the reasoning and the threat model.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_gateway.errors import (
    BadSignature,
    DecryptionFailed,
    MalformedEnvelope,
    UnknownKeyId,
    UnsupportedVersion,
)
from cloud_gateway.protocol.codec import b64d, b64e
from cloud_gateway.protocol.suites import (
    SUITE_BY_ID,
    SUITE_IDS,
    Kem,
    PrivateKey,
    enc_length,
    public_key,
    suite,
)

MAGIC = b"TDM"
VERSION = 1
NONCE_BYTES = 16
RESPONSE_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_DEVICE_ID = 64
KEY_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
REQUEST_CONTENT_TYPE = "application/vnd.tandem.sealed-request"
RESPONSE_CONTENT_TYPE = "application/vnd.tandem.sealed-response"
STREAM_CONTENT_TYPE = "application/vnd.tandem.sealed-stream"

_INFO_PREFIX = b"tandem/1 request\x00"
_SIGNATURE_CONTEXT = b"tandem/1 device-signature\x00"
_META_LEN = struct.Struct(">H")

KeyLookup = Callable[[str], "tuple[Kem, PrivateKey] | None"]
"""Maps a key id to (its KEM, its HPKE private key), or None when the gateway has no such key."""


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The clear part of an envelope: version, suite, key id (authenticated through `info`)."""

    version: int
    kem: Kem
    key_id: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class SealedRequest:
    """What the device keeps after sealing: the bytes to send and the key to open the answer."""

    envelope: bytes
    response_key: bytes
    nonce: bytes
    key_id: str


@dataclass(frozen=True, slots=True)
class OpenedRequest:
    """A decrypted envelope. The device signature is NOT yet checked: call `verify_signature`."""

    header: EnvelopeHeader
    device_id: str
    ts_ms: int
    nonce: bytes
    response_key: bytes
    body: bytes
    signature: bytes
    signed: bytes

    @property
    def key_id(self) -> str:
        return self.header.key_id

    def verify_signature(self, device_key: Ed25519PublicKey) -> None:
        """Raise `BadSignature` unless the enrolled device key signed this envelope."""
        try:
            device_key.verify(self.signature, self.signed)
        except InvalidSignature:
            raise BadSignature("the device signature does not verify") from None


def encode_header(kem: Kem, key_id: str) -> bytes:
    """The clear header for an envelope sealed to `key_id`."""
    if not KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"invalid key id {key_id!r}")
    kid = key_id.encode("ascii")
    return MAGIC + bytes((VERSION, SUITE_IDS[kem], len(kid))) + kid


def parse_header(envelope: bytes) -> tuple[EnvelopeHeader, bytes]:
    """Split an envelope into its header and HPKE ciphertext, checking only the format."""
    if len(envelope) < 6 or envelope[:3] != MAGIC:
        raise MalformedEnvelope("not a sealed envelope (bad magic)")
    version, suite_id, kid_len = envelope[3], envelope[4], envelope[5]
    if version != VERSION:
        raise UnsupportedVersion(f"envelope version {version} is not supported (want {VERSION})")
    kem = SUITE_BY_ID.get(suite_id)
    if kem is None:
        raise UnsupportedVersion(f"suite {suite_id} is not supported")
    end = 6 + kid_len
    try:
        key_id = envelope[6:end].decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEnvelope("key id is not ASCII") from None
    if len(key_id) != kid_len or not KEY_ID_RE.fullmatch(key_id):
        raise MalformedEnvelope("invalid key id")
    ciphertext = envelope[end:]
    # enc, then at least the AEAD tag (16 bytes) and the fixed part of the plaintext
    if len(ciphertext) < enc_length(kem) + 16 + SIGNATURE_BYTES + _META_LEN.size:
        raise MalformedEnvelope("envelope too short")
    return EnvelopeHeader(version, kem, key_id, envelope[:end]), ciphertext


def seal_request(
    body: bytes,
    *,
    kem: Kem,
    key_id: str,
    gateway_key: bytes,
    device_id: str,
    device_key: Ed25519PrivateKey,
    now_ms: int | None = None,
    nonce: bytes | None = None,
    response_key: bytes | None = None,
) -> SealedRequest:
    """Seal `body` (a chat request as JSON bytes) to the gateway's public key `gateway_key`.

    A fresh nonce and response key are drawn unless given (tests give them to build replays).
    """
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise ValueError(f"invalid device id {device_id!r}")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    response_key = os.urandom(RESPONSE_KEY_BYTES) if response_key is None else response_key
    ts_ms = int(time.time() * 1000) if now_ms is None else now_ms
    header = encode_header(kem, key_id)
    meta = json.dumps(
        {
            "device": device_id,
            "ts_ms": ts_ms,
            "nonce": b64e(nonce),
            "response_key": b64e(response_key),
        },
        separators=(",", ":"),
    ).encode()
    signature = device_key.sign(_SIGNATURE_CONTEXT + header + meta + body)
    plaintext = signature + _META_LEN.pack(len(meta)) + meta + body
    ciphertext = suite(kem).encrypt(
        plaintext, public_key(kem, gateway_key), info=_INFO_PREFIX + header
    )
    return SealedRequest(header + ciphertext, response_key, nonce, key_id)


def open_request(envelope: bytes, private_key_for: KeyLookup) -> OpenedRequest:
    """Decrypt and parse an envelope; raises a `ProtocolError` subclass on any defect."""
    header, ciphertext = parse_header(envelope)
    found = private_key_for(header.key_id)
    if found is None:
        raise UnknownKeyId(f"no current key {header.key_id!r}; fetch /v1/keys and reseal")
    kem, key = found
    if kem != header.kem:
        raise UnknownKeyId(f"key {header.key_id!r} is a {kem} key, the envelope says {header.kem}")
    try:
        plaintext = suite(kem).decrypt(ciphertext, key, info=_INFO_PREFIX + header.raw)
    except InvalidTag:
        raise DecryptionFailed("the envelope does not decrypt (modified or wrong key)") from None
    return _parse_plaintext(header, plaintext)


def _parse_plaintext(header: EnvelopeHeader, plaintext: bytes) -> OpenedRequest:
    # Authenticated by HPKE but written by whoever holds the public key: parse defensively.
    if len(plaintext) < SIGNATURE_BYTES + _META_LEN.size:
        raise MalformedEnvelope("sealed payload too short")
    signature = plaintext[:SIGNATURE_BYTES]
    (meta_len,) = _META_LEN.unpack_from(plaintext, SIGNATURE_BYTES)
    start = SIGNATURE_BYTES + _META_LEN.size
    meta_raw = plaintext[start : start + meta_len]
    if len(meta_raw) != meta_len:
        raise MalformedEnvelope("sealed metadata truncated")
    try:
        meta = json.loads(meta_raw)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: deep nesting
        raise MalformedEnvelope("sealed metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise MalformedEnvelope("sealed metadata is not an object")
    device = meta.get("device")
    ts_ms = meta.get("ts_ms")
    if not isinstance(device, str) or not DEVICE_ID_RE.fullmatch(device):
        raise MalformedEnvelope("sealed metadata has no valid device id")
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int):
        raise MalformedEnvelope("sealed metadata has no integer ts_ms")
    try:
        nonce = b64d(meta.get("nonce"), size=NONCE_BYTES)
        response_key = b64d(meta.get("response_key"), size=RESPONSE_KEY_BYTES)
    except ValueError as exc:
        raise MalformedEnvelope(f"sealed metadata: {exc}") from None
    body = plaintext[start + meta_len :]
    return OpenedRequest(
        header=header,
        device_id=device,
        ts_ms=ts_ms,
        nonce=nonce,
        response_key=response_key,
        body=body,
        signature=signature,
        signed=_SIGNATURE_CONTEXT + header.raw + meta_raw + body,
    )
