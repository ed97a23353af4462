"""Small strict encodings shared by the protocol modules (base64url, canonical JSON)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


def b64e(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: object, *, size: int | None = None) -> bytes:
    """Decode base64url (padding optional); ValueError on anything else or a wrong size."""
    if not isinstance(text, str):
        raise ValueError("expected a base64url string")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base64url") from exc
    # Re-encode to reject non-canonical inputs (a changed trailing bit decodes the same).
    if b64e(raw) != text.rstrip("="):
        raise ValueError("non-canonical base64url")
    if size is not None and len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    return raw


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces) for signing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
