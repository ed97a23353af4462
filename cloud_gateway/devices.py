"""Enrolled devices: a SQLite registry of names and Ed25519 public keys.

The gateway stores only what it needs to verify a device (its public key), so a leaked
registry lets nobody impersonate a device. The private half exists only in the credential
printed once by `tandem gateway enroll`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_gateway.errors import ConfigurationError
from cloud_gateway.files import open_database
from cloud_gateway.logs import LOGGER_NAME
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

_BUSY_TIMEOUT_S = 10.0  # how long a query waits for a lock another process holds


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
    """The devices table. Safe to use from the CLI while a gateway reads the same file.

    A file replaced whole on disk (copied beside it and renamed over it, as rsync, Ansible
    or a Kubernetes ConfigMap distribute it) is a new file: the connection opened on the old
    one would never see it. So the file is stat'ed (device and inode) at most once per
    `recheck_s` before a query, and reopened when it changed. A replacement that does not
    read as a registry is logged and the one in service stays until a good one arrives.
    """

    def __init__(self, path: Path, *, recheck_s: float = 1.0) -> None:
        self._path = path
        self._recheck_s = recheck_s
        self._in_memory = str(path) == ":memory:"
        self._db: sqlite3.Connection | None = self._open()
        self._identity = self._stat()
        self._checked = time.monotonic()
        self._refused: tuple[int, int] | None = None  # a replacement already logged

    def _open(self) -> sqlite3.Connection:
        return open_database(self._path, "the device registry", "PRAGMA journal_mode=WAL",
                             _SCHEMA, timeout=_BUSY_TIMEOUT_S, isolation_level=None)

    def _stat(self) -> tuple[int, int] | None:
        if self._in_memory:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None  # gone for now: keep the connection we have
        return st.st_dev, st.st_ino

    def _connection(self) -> sqlite3.Connection:
        """The connection, reopened first if the file was replaced since it was opened."""
        now = time.monotonic()
        if not self._in_memory and now - self._checked >= self._recheck_s:
            self._checked = now
            found = self._stat()
            if found is not None and (self._db is None or found != self._identity):
                self._reopen(found)
        if self._db is None:  # the replacement could not be opened after the old was closed
            raise ConfigurationError(f"cannot open the device registry {self._path}")
        return self._db

    def _reopen(self, found: tuple[int, int]) -> None:
        """Move to the file now at the path (`found`: its device and inode)."""
        log = logging.getLogger(LOGGER_NAME)
        fields: dict[str, object] = {"path": str(self._path)}
        problem = _not_a_registry(self._path)
        if problem is None and self._db is not None:
            # The `-wal` and `-shm` files beside the path are still the replaced file's: a
            # connection opened now would read the old file's pages from them (and a
            # checkpoint would write them into the new file). Its pages go to the old file
            # first, which empties the `-wal`; not while another connection reads it.
            # Without waiting: this runs on the gateway's event loop.
            self._db.execute("PRAGMA busy_timeout = 0")
            try:
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                busy, fields["error"] = 1, str(exc)
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            wal = Path(f"{self._path}-wal")
            if busy or (wal.exists() and wal.stat().st_size > 0):
                problem = "the replaced file's write-ahead log is in use; trying again"
        if problem is not None:
            if found != self._refused:  # once per replacement
                log.error("device registry not reloaded",
                          extra={"fields": {**fields, "problem": problem}})
            self._refused = found
            return
        if self._db is not None:
            self._db.close()
            self._db = None  # fail closed (500s) rather than verify against a lost file
        try:
            self._db = self._open()
        except ConfigurationError as exc:
            if found != self._refused:
                log.error("device registry not reloaded",
                          extra={"fields": {**fields, "problem": str(exc)}})
            self._refused = found
            return
        self._identity, self._refused = found, None
        log.info("device registry reloaded", extra={"fields": fields})

    def close(self) -> None:
        if self._db is not None:
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
        Whether the name is taken is decided inside the write transaction, so of two
        enrollments of one name at once (two `enroll` runs) exactly one succeeds.
        """
        if not DEVICE_ID_RE.fullmatch(name):
            raise ConfigurationError(
                f"invalid device name {name!r}: 1-64 of letters, digits, '.', '_', '-'"
            )
        key = Ed25519PrivateKey.generate()
        credential = DeviceCredential(name, key.private_bytes_raw(), gateway_identity)
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")  # the write lock: no other enrollment comes between
        try:
            if not replace:
                row = db.execute(
                    "SELECT revoked_at FROM devices WHERE name = ?", (name,)
                ).fetchone()
                if row is not None:
                    raise _taken(name, revoked=row[0] is not None)
            verb = "INSERT OR REPLACE" if replace else "INSERT"
            try:
                db.execute(
                    f"{verb} INTO devices (name, public_key, created_at, revoked_at)"
                    " VALUES (?, ?, ?, NULL)",
                    (name, key.public_key().public_bytes_raw(), int(time.time())),
                )
            except sqlite3.IntegrityError:
                raise _taken(name, revoked=False) from None
            if deliver is not None:
                deliver(credential)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return credential

    def revoke(self, name: str) -> DeviceRecord:
        """Mark a device revoked (its requests get 403 `revoked_device` from then on)."""
        if self.get(name) is None:
            raise ConfigurationError(f"no device {name!r} is enrolled")
        self._connection().execute(
            "UPDATE devices SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (int(time.time()), name),
        )
        record = self.get(name)
        assert record is not None
        return record

    def get(self, name: str) -> DeviceRecord | None:
        row = self._connection().execute(
            "SELECT name, public_key, created_at, revoked_at FROM devices WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else DeviceRecord(*row)

    def list(self) -> list[DeviceRecord]:
        rows = self._connection().execute(
            "SELECT name, public_key, created_at, revoked_at FROM devices ORDER BY name"
        ).fetchall()
        return [DeviceRecord(*row) for row in rows]


def _taken(name: str, *, revoked: bool) -> ConfigurationError:
    state = "revoked" if revoked else "enrolled"
    return ConfigurationError(
        f"device {name!r} is already {state}; pass --replace to issue a new credential"
    )


def _not_a_registry(path: Path) -> str | None:
    """Why the file at `path` is not a device registry, or None if it is one. Read as it is
    on disk (`immutable`): no locks, and not through the `-wal` and `-shm` files beside it,
    which may still belong to the file it replaced."""
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?immutable=1", uri=True)
        try:
            db.execute("SELECT name, public_key, created_at, revoked_at FROM devices LIMIT 1")
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"{path} is not a device registry: {exc}"
    return None


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
