"""Who trusts whom: the signed list of gateway keys, and the device credential.

The gateway has a long-lived Ed25519 *identity* key. It signs the list of current HPKE keys
published at `GET /v1/keys`, so a relay cannot substitute its own key. The identity public key
reaches the device inside its credential at enrollment, the one out-of-band step.

A keys document is fresh for `KEYS_MAX_AGE_S` after its `issued_at` (the gateway re-signs it
every minute, `issued_at` the minute's start, so replicas sharing their keys publish the same
document), and a device never goes back to a document more than `KEYS_ROLLBACK_TOLERANCE_S`
older than one it already accepted: a relay replaying an old list cannot steer a device to a
retired (perhaps leaked) key for longer than that tolerance, nor at all once the list is older
than `KEYS_MAX_AGE_S`. The tolerance lets a device behind a load balancer alternate between
replicas whose clocks (and so whose minutes) differ a little.

A credential is one string, `tdc1.` followed by base64url(JSON):
`{"device": NAME, "device_key": b64url(Ed25519 seed), "gateway_identity": b64url(public key)}`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_gateway.errors import BadCredential, StaleKeys, UntrustedKeys
from cloud_gateway.protocol.codec import b64d, b64e, canonical_json
from cloud_gateway.protocol.envelope import DEVICE_ID_RE, KEY_ID_RE
from cloud_gateway.protocol.suites import SUITE_NAMES, Kem, check_kem, public_key

CREDENTIAL_PREFIX = "tdc1."
KEYS_DOCUMENT_VERSION = 1
KEYS_MAX_AGE_S = 600.0  # the gateway re-signs every 60 s; caches may add 60 s; the rest is skew
# How much older than the newest list accepted a list may be: one re-signing period (a replica
# whose clock is just behind another's is still in the previous minute) plus an HTTP cache's
# 60 s (`Cache-Control: max-age=60`). Not more: it is how long a replayed list naming a retired
# key can still be taken by a device that has seen lists issued after it (a device refuses it
# once it has accepted one issued more than this later), and never beyond KEYS_MAX_AGE_S.
KEYS_ROLLBACK_TOLERANCE_S = 120
_KEYS_CONTEXT = b"tandem/1 keys\x00"


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """One current HPKE public key of the gateway."""

    key_id: str
    kem: Kem
    public_key: bytes
    not_after: int  # unix seconds; devices stop sealing to it after this

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "kem": self.kem,
            "suite": SUITE_NAMES[self.kem],
            "public_key": b64e(self.public_key),
            "not_after": self.not_after,
        }


def sign_keys_document(
    keys: tuple[PublishedKey, ...], identity: Ed25519PrivateKey, issued_at: int | None = None
) -> dict[str, Any]:
    """The JSON document served at `/v1/keys`: the keys plus the identity's signature."""
    doc: dict[str, Any] = {
        "version": KEYS_DOCUMENT_VERSION,
        "issued_at": int(time.time()) if issued_at is None else issued_at,
        "keys": [k.to_dict() for k in keys],
    }
    doc["signature"] = b64e(identity.sign(_KEYS_CONTEXT + canonical_json(doc)))
    return doc


@dataclass(frozen=True, slots=True)
class KeysDocument:
    """A verified `/v1/keys` document: when the gateway signed it, and its unexpired keys."""

    issued_at: int
    keys: tuple[PublishedKey, ...]


def read_keys_document(
    doc: object,
    identity: Ed25519PublicKey,
    now: float | None = None,
    *,
    max_age_s: float = KEYS_MAX_AGE_S,
    not_before: int | None = None,
    tolerance_s: float = KEYS_ROLLBACK_TOLERANCE_S,
) -> KeysDocument:
    """Verify a `/v1/keys` document: `UntrustedKeys` if it is not genuine, `StaleKeys` if it
    was issued more than `max_age_s` ago, or more than `tolerance_s` before `not_before` (the
    `issued_at` of the newest one accepted)."""
    if not isinstance(doc, dict) or doc.get("version") != KEYS_DOCUMENT_VERSION:
        raise UntrustedKeys("not a version-1 keys document")
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    try:
        signature = b64d(doc.get("signature"), size=64)
        identity.verify(signature, _KEYS_CONTEXT + canonical_json(unsigned))
    except (ValueError, InvalidSignature):
        raise UntrustedKeys("the keys document is not signed by the enrolled gateway") from None
    issued_at, entries = doc.get("issued_at"), doc.get("keys")
    if isinstance(issued_at, bool) or not isinstance(issued_at, int):
        raise UntrustedKeys("the keys document has no integer issued_at")
    if not isinstance(entries, list):
        raise UntrustedKeys("the keys document has no key list")
    now = time.time() if now is None else now
    if now - issued_at > max_age_s:
        raise StaleKeys(
            f"the keys document was issued {now - issued_at:.0f} s ago (at most {max_age_s:.0f}):"
            " a replayed list, or a wrong clock here or at the gateway"
        )
    if not_before is not None and issued_at < not_before - tolerance_s:
        raise StaleKeys(
            f"the keys document is older than one already accepted (by {not_before - issued_at}"
            f" s, at most {tolerance_s:.0f}): a replayed list"
        )
    keys = [_parse_key(e) for e in entries]
    return KeysDocument(issued_at, tuple(k for k in keys if k.not_after > now))


def verify_keys_document(
    doc: object, identity: Ed25519PublicKey, now: float | None = None
) -> tuple[PublishedKey, ...]:
    """The unexpired keys of a genuine, fresh `/v1/keys` document (see `read_keys_document`)."""
    return read_keys_document(doc, identity, now).keys


def _parse_key(entry: object) -> PublishedKey:
    try:
        if not isinstance(entry, Mapping):
            raise ValueError("not an object")
        key_id, not_after = entry.get("key_id"), entry.get("not_after")
        if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
            raise ValueError("bad key_id")
        if isinstance(not_after, bool) or not isinstance(not_after, int):
            raise ValueError("bad not_after")
        kem = check_kem(str(entry.get("kem")))
        raw = b64d(entry.get("public_key"))
        public_key(kem, raw)  # validates size and encoding
    except ValueError as exc:
        raise UntrustedKeys(f"invalid key entry: {exc}") from None
    return PublishedKey(key_id, kem, raw, not_after)


@dataclass(frozen=True, slots=True, repr=False)
class DeviceCredential:
    """What an enrolled device holds: its name, its signing key, the gateway's identity."""

    device_id: str
    device_key: bytes  # Ed25519 private seed, 32 bytes: keep secret
    gateway_identity: bytes  # Ed25519 public key, 32 bytes

    def __repr__(self) -> str:  # never print the secret
        return f"DeviceCredential(device_id={self.device_id!r})"

    def signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.device_key)

    def identity_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.gateway_identity)

    def encode(self) -> str:
        """The single-string form (`tdc1.…`) a device config takes."""
        payload = {
            "device": self.device_id,
            "device_key": b64e(self.device_key),
            "gateway_identity": b64e(self.gateway_identity),
        }
        return CREDENTIAL_PREFIX + b64e(json.dumps(payload, separators=(",", ":")).encode())

    @classmethod
    def parse(cls, text: str) -> DeviceCredential:
        """Parse the `tdc1.…` string; `BadCredential` says what is wrong (never the secret)."""
        text = text.strip()
        if not text.startswith(CREDENTIAL_PREFIX):
            raise BadCredential(f"a device credential starts with {CREDENTIAL_PREFIX!r}")
        try:
            data = json.loads(b64d(text[len(CREDENTIAL_PREFIX) :]))
            if not isinstance(data, dict):
                raise ValueError("not an object")
            device = data.get("device")
            if not isinstance(device, str) or not DEVICE_ID_RE.fullmatch(device):
                raise ValueError("bad device name")
            cred = cls(
                device_id=device,
                device_key=b64d(data.get("device_key"), size=32),
                gateway_identity=b64d(data.get("gateway_identity"), size=32),
            )
            cred.identity_key()
        except ValueError as exc:
            raise BadCredential(f"invalid device credential: {exc}") from None
        return cred
