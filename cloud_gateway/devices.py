"""Enrolled devices: a SQLite registry of names and Ed25519 public keys.

The gateway stores only what it needs to verify a device (its public key), so a leaked
registry lets nobody impersonate a device. The private half exists only in the credential
printed once by `tandem gateway enroll`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_gateway.errors import ConfigurationError
from cloud_gateway.files import open_database
from cloud_gateway.protocol.envelope import DEVICE_ID_RE
from cloud_gateway.protocol.trust import DeviceCredential

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
)
"""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    name: str
    public_key: bytes
    created_at: int
    revoked_at: int | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class DeviceRegistry:
    """The devices table. Safe to use from the CLI while a gateway reads the same file."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, "the device registry", "PRAGMA journal_mode=WAL",
                                 _SCHEMA, timeout=10.0, isolation_level=None)

    def close(self) -> None:
        self._db.close()

    def enroll(
        self,
        name: str,
        gateway_identity: bytes,
        *,
        replace: bool = False,
        deliver: Callable[[DeviceCredential], None] | None = None,
    ) -> DeviceCredential:
        """Create a device key pair, store its public half, return the device's credential.

        `deliver` (e.g. write it to a file) runs before the enrollment is committed: if it
        raises, the registry is left as it was, so no name is taken by a lost credential.
        """
        if not DEVICE_ID_RE.fullmatch(name):
            raise ConfigurationError(
                f"invalid device name {name!r}: 1-64 of letters, digits, '.', '_', '-'"
            )
        existing = self.get(name)
        if existing is not None and not replace:
            state = "revoked" if existing.revoked else "enrolled"
            raise ConfigurationError(
                f"device {name!r} is already {state}; pass --replace to issue a new credential"
            )
        key = Ed25519PrivateKey.generate()
        credential = DeviceCredential(name, key.private_bytes_raw(), gateway_identity)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO devices (name, public_key, created_at, revoked_at)"
                " VALUES (?, ?, ?, NULL)",
                (name, key.public_key().public_bytes_raw(), int(time.time())),
            )
            if deliver is not None:
                deliver(credential)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return credential

    def revoke(self, name: str) -> DeviceRecord:
        """Mark a device revoked (its requests get 403 `revoked_device` from then on)."""
        if self.get(name) is None:
            raise ConfigurationError(f"no device {name!r} is enrolled")
        self._db.execute(
            "UPDATE devices SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (int(time.time()), name),
        )
        record = self.get(name)
        assert record is not None
        return record

    def get(self, name: str) -> DeviceRecord | None:
        row = self._db.execute(
            "SELECT name, public_key, created_at, revoked_at FROM devices WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else DeviceRecord(*row)

    def list(self) -> list[DeviceRecord]:
        rows = self._db.execute(
            "SELECT name, public_key, created_at, revoked_at FROM devices ORDER BY name"
        ).fetchall()
        return [DeviceRecord(*row) for row in rows]


class DeviceDirectory:
    """The gateway's read path: a device's verification key, cached for `ttl_s` seconds.

    The cache bounds how long a revocation takes to be seen (`device_cache_s`); unknown
    names are cached too, so a flood of made-up names costs one query per name per TTL.
    """

    def __init__(self, registry: DeviceRegistry, ttl_s: float = 1.0, max_entries: int = 100_000):
        self._registry = registry
        self._ttl = ttl_s
        self._max = max_entries
        self._cache: dict[str, tuple[float, DeviceRecord | None, Ed25519PublicKey | None]] = {}

    def lookup(self, name: str) -> tuple[Ed25519PublicKey, bool] | None:
        """(the device's public key, whether it is revoked), or None if it is not enrolled."""
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is None or now - hit[0] > self._ttl:
            record = self._registry.get(name)
            key = None
            if record is not None:
                key = Ed25519PublicKey.from_public_bytes(record.public_key)
            if len(self._cache) >= self._max:
                self._cache.clear()  # crude but bounded: the next lookups refill it
            hit = (now, record, key)
            self._cache[name] = hit
        _, record, key = hit
        if record is None or key is None:
            return None
        return key, record.revoked
