"""The device's view of the gateway's keys: fetched from `/v1/keys`, verified, cached.

The key list must be signed by the gateway identity in the device credential, so a relay that
serves its own keys is caught before anything is sealed to them. It must also be fresh (issued
at most `KEYS_MAX_AGE_S` ago) and never older than the newest list this cache accepted, so a
relay replaying an old list cannot bring back a retired key.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from cloud_gateway.protocol import (
    DeviceCredential,
    GatewayError,
    Kem,
    PublishedKey,
    read_keys_document,
)
from runtime.offload_errors import GatewayRejected, GatewayUnreachable, OffloadNotConfigured


def load_credential(value: str) -> DeviceCredential:
    """The credential from its `tdc1.…` string or from a file holding it."""
    text = value.strip()
    if not text:
        raise OffloadNotConfigured("no device credential configured (offload.credential)")
    if not text.startswith("tdc1."):
        path = Path(text).expanduser()
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise OffloadNotConfigured(
                f"offload.credential: cannot read the device credential {path}: {exc}") from None
    try:
        return DeviceCredential.parse(text)
    except GatewayError as exc:
        raise OffloadNotConfigured(f"offload.credential: {exc}") from None


class KeyCache:
    """The newest valid gateway key of the configured KEM, refreshed every `ttl_s`."""

    def __init__(self, url: str, credential: DeviceCredential, kem: Kem, ttl_s: float) -> None:
        self._url = url.rstrip("/") + "/v1/keys"
        self._identity = credential.identity_key()
        self._kem = kem
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._key: PublishedKey | None = None
        self._fetched_at = 0.0
        self._issued_at: int | None = None  # of the newest document accepted

    def invalidate(self) -> None:
        """Forget the cached key (the gateway said it no longer holds it)."""
        with self._lock:
            self._key = None

    def current(self, client: httpx.Client, timeout: httpx.Timeout) -> PublishedKey:
        """The key to seal to now, fetching the list if the cache is empty, stale or expired."""
        with self._lock:
            key, fresh = self._key, time.monotonic() - self._fetched_at < self._ttl
            if key is not None and fresh and key.not_after > time.time():
                return key
        key = self._fetch(client, timeout)
        with self._lock:
            self._key, self._fetched_at = key, time.monotonic()
        return key

    def _fetch(self, client: httpx.Client, timeout: httpx.Timeout) -> PublishedKey:
        try:
            resp = client.get(self._url, timeout=timeout)
        except httpx.TransportError as exc:
            # Nothing was sent to a model: always safe to retry.
            raise GatewayUnreachable(
                f"cannot fetch the gateway keys: {type(exc).__name__}", retry_safe=True
            ) from exc
        if resp.status_code != 200:
            raise GatewayRejected(resp.status_code, "keys_unavailable", "GET /v1/keys failed")
        with self._lock:
            newest = self._issued_at
        try:
            doc = read_keys_document(resp.json(), self._identity, not_before=newest)
        except ValueError:
            raise GatewayRejected(200, "untrusted_keys", "the keys document is not JSON") from None
        except GatewayError as exc:
            raise GatewayRejected(200, exc.code, str(exc)) from None
        with self._lock:
            if self._issued_at is None or doc.issued_at > self._issued_at:
                self._issued_at = doc.issued_at
        usable = [k for k in doc.keys if k.kem == self._kem]
        if not usable:
            message = f"the gateway publishes no current {self._kem} key"
            raise GatewayRejected(200, "no_key", message)
        return max(usable, key=lambda k: (k.not_after, k.key_id))
