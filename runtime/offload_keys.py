"""The device's view of the gateway's keys: fetched from `/v1/keys`, verified, cached.

The key list must be signed by the gateway identity in the device credential, so a relay that
serves its own keys is caught before anything is sealed to them. It must also be fresh (issued
at most `KEYS_MAX_AGE_S` ago) and not more than `KEYS_ROLLBACK_TOLERANCE_S` older than the
newest list accepted for that gateway, so a relay replaying an old list cannot bring back a
retired key (the tolerance lets replicas whose clocks differ a little take turns).

With a state file (the runtime's: `default_state_path()`), "the newest list accepted" outlives
the process: the file holds the newest `issued_at` per gateway identity, written atomically
when it grows and read at start, so a list replayed right after a restart is refused too.
Several processes may share the file (a CLI run beside `tandem serve`): each read-merge-write
holds an advisory lock on `gateway_keys.json.lock`, so no process drops another's entry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import httpx

from cloud_gateway.protocol import (
    KEYS_MAX_AGE_S,
    DeviceCredential,
    GatewayError,
    Kem,
    PublishedKey,
    read_keys_document,
)
from cloud_gateway.protocol.codec import b64e
from runtime.atomic import atomic_file, exclusive_lock
from runtime.offload_errors import GatewayRejected, GatewayUnreachable, OffloadNotConfigured
from runtime.telemetry import default_path as telemetry_path

log = logging.getLogger("tandem.offload")

_STATE_VERSION = 1


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


def default_state_path() -> Path:
    """`$XDG_STATE_HOME/tandem/gateway_keys.json`, next to the telemetry database."""
    return telemetry_path().with_name("gateway_keys.json")


class KeyCache:
    """The newest valid gateway key of the configured KEM, refreshed every `ttl_s`: the last
    of that KEM in the list, which the gateway orders oldest first (by creation), so after a
    rotation the device moves to the new key even if it expires before the old one.

    `state_path` keeps the newest accepted `issued_at` across restarts (None: in memory)."""

    def __init__(
        self,
        url: str,
        credential: DeviceCredential,
        kem: Kem,
        ttl_s: float,
        state_path: Path | None = None,
    ) -> None:
        self._url = url.rstrip("/") + "/v1/keys"
        self._identity = credential.identity_key()
        self._gateway = b64e(credential.gateway_identity)
        self._kem = kem
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._key: PublishedKey | None = None
        self._fetched_at = 0.0
        self._state_path = state_path
        self._save_lock = threading.Lock()
        # of the newest document accepted
        self._issued_at = None if state_path is None else _load(state_path, self._gateway)

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
            newer = self._issued_at is None or doc.issued_at > self._issued_at
            if newer:
                self._issued_at = doc.issued_at
        if newer and self._state_path is not None:
            with self._save_lock:
                _save(self._state_path, self._gateway, doc.issued_at)
        usable = [k for k in doc.keys if k.kem == self._kem]
        if not usable:
            message = f"the gateway publishes no current {self._kem} key"
            raise GatewayRejected(200, "no_key", message)
        return usable[-1]  # the list is oldest first: the newest key, not the longest-lived


def _read_state(path: Path) -> dict[str, int]:
    """The newest `issued_at` per gateway identity in the state file ({} without one);
    OSError or ValueError if it cannot be read as one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    data = json.loads(text)
    newest = data.get("newest_issued_at") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("version") != _STATE_VERSION
        or not isinstance(newest, dict)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in newest.values())
    ):
        raise ValueError("not a version-1 gateway keys state file")
    return {str(k): v for k, v in newest.items()}


def _load(path: Path, gateway: str) -> int | None:
    """The newest `issued_at` stored for `gateway`; None (and a warning) for a file that
    cannot be read, so a broken file never stops the device."""
    try:
        newest = _read_state(path).get(gateway)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSON errors are ValueErrors
        log.warning("gateway keys state %s unusable, starting without it: %s", path, exc)
        return None
    if newest is not None and newest > time.time() + KEYS_MAX_AGE_S:
        # Kept, it would refuse every list until then: a clock that was wrong, here or there.
        log.warning("gateway keys state %s ignored: its newest list is from the future "
                    "(issued_at %d); check the clocks", path, newest)
        return None
    return newest


def _save(path: Path, gateway: str, issued_at: int) -> None:
    """Store `issued_at` as `gateway`'s newest (atomically: a new file renamed over the old),
    keeping the newer of it and what the file holds; a failure is a warning."""
    try:
        with exclusive_lock(path):
            _merge_into(path, gateway, issued_at)
    except OSError as exc:
        log.warning("cannot save the gateway keys state %s (the rule holds until this "
                    "process ends): %s", path, exc)


def _merge_into(path: Path, gateway: str, issued_at: int) -> None:
    """Read the state file, keep `gateway`'s newer entry and the others' useful ones, and
    write it back whole (the caller holds the lock)."""
    try:
        stored = _read_state(path)
    except ValueError:
        stored = {}  # unusable (warned at start): replaced
    # A list older than KEYS_MAX_AGE_S is refused anyway: such entries restrict nothing.
    oldest_useful = time.time() - KEYS_MAX_AGE_S
    stored = {g: t for g, t in stored.items() if t >= oldest_useful}
    stored[gateway] = max(issued_at, stored.get(gateway, issued_at))
    with atomic_file(path, "w", encoding="utf-8") as fh:
        json.dump({"version": _STATE_VERSION, "newest_issued_at": stored}, fh)
