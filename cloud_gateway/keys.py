"""The gateway's keys on disk, and the in-memory ring of current keys.

Layout under `<state_dir>/keys/`:
- `identity.key` (0600): the Ed25519 identity that signs the published key list.
- `<key_id>.key` (0600): an HPKE private key, base64url of its raw bytes.
- `<key_id>.json` (0644): key id, KEM, public key, created_at, not_after.

Several keys may be current at once: that is how keys rotate without dropping devices
(generate a new key, let devices pick it up from `/v1/keys`, then retire the old one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_gateway.errors import ConfigurationError
from cloud_gateway.files import create_file, replace_file
from cloud_gateway.logs import LOGGER_NAME
from cloud_gateway.protocol.codec import b64d, b64e
from cloud_gateway.protocol.envelope import KEY_ID_RE
from cloud_gateway.protocol.suites import (
    Kem,
    PrivateKey,
    check_kem,
    generate_secret,
    private_key,
    public_bytes,
)
from cloud_gateway.protocol.trust import PublishedKey, sign_keys_document

_DAY = 86_400
_MAX_VALID_DAYS = 36_500  # 100 years: keeps not_after a representable date
# An hour: a shorter key is a slip (`--not-after 0.000001` meant something else), and would
# expire before a device's cached key list (`keys_ttl_s`, an hour) is due for a refresh.
_MIN_VALID_DAYS = 1 / 24
# The `/v1/keys` document is re-signed once per period, with `issued_at` the period's start:
# every replica holding the same keys signs the same document (Ed25519 is deterministic), so
# a device switching between replicas never sees one list as older than another's.
KEYS_RESIGN_S = 60
_SHORT_KEM = {"x25519": "x25519", "mlkem768-x25519": "mlkem"}


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key's public record as stored next to its private file."""

    published: PublishedKey
    created_at: int
    # Why the gateway could not use this key (its private file missing or unreadable), as
    # `list_keys` found it; None when it can, or when not checked.
    problem: str | None = None

    @property
    def key_id(self) -> str:
        return self.published.key_id


def keys_dir(state_dir: Path) -> Path:
    return state_dir / "keys"


def write_secret(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600, whole or not at all (`FileExistsError` if it exists: a
    secret is never overwritten)."""
    create_file(path, data, mode=0o600)


def _write_public(path: Path, record: dict[str, Any]) -> None:
    # Whole: a running gateway never reads half a file, nor a crash leaves one.
    replace_file(path, (json.dumps(record, indent=2) + "\n").encode(), mode=0o644)


def load_identity(state_dir: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The gateway's Ed25519 identity, created on first use."""
    path = keys_dir(state_dir) / "identity.key"
    if not path.exists():
        if not create:
            raise ConfigurationError(f"no gateway identity at {path}: run `tandem gateway keygen`")
        # Another process may create it first: then use theirs.
        with contextlib.suppress(FileExistsError):
            write_secret(path, b64e(Ed25519PrivateKey.generate().private_bytes_raw()).encode())
    try:
        return Ed25519PrivateKey.from_private_bytes(b64d(path.read_text().strip(), size=32))
    except ValueError as exc:
        raise ConfigurationError(f"gateway identity {path} is corrupt: {exc}") from None


def generate_key(
    state_dir: Path, kem: Kem = "x25519", *, valid_days: float = 90.0, now: float | None = None
) -> StoredKey:
    """Create and store a new HPKE key pair; returns its public record.

    The validity is checked before anything is written, so a refused key leaves no files.
    """
    if not (math.isfinite(valid_days) and _MIN_VALID_DAYS <= valid_days <= _MAX_VALID_DAYS):
        raise ConfigurationError(
            f"a key's validity must be a number of days from {_MIN_VALID_DAYS:.4f} (one hour)"
            f" to {_MAX_VALID_DAYS}, not {valid_days!r}"
        )
    now = time.time() if now is None else now
    load_identity(state_dir)  # the identity must exist before any key is published
    key_id = f"{_SHORT_KEM[kem]}-{time.strftime('%Y%m%d', time.gmtime(now))}-{secrets.token_hex(3)}"
    secret = generate_secret(kem)
    folder = keys_dir(state_dir)
    write_secret(folder / f"{key_id}.key", b64e(secret).encode())
    stored = StoredKey(
        PublishedKey(key_id, kem, public_bytes(kem, secret), int(now + valid_days * _DAY)),
        created_at=int(now),
    )
    _write_public(folder / f"{key_id}.json", _record(stored))
    return stored


def retire_key(state_dir: Path, key_id: str, *, now: float | None = None) -> StoredKey:
    """End a key's validity now: it is no longer published nor accepted."""
    path = keys_dir(state_dir) / f"{key_id}.json"
    if not KEY_ID_RE.fullmatch(key_id) or not path.is_file():
        raise ConfigurationError(f"no key {key_id!r} in {keys_dir(state_dir)}")
    old = _read_public(path)  # only this key's file: a stray file elsewhere must not block it
    stamp = int(time.time() if now is None else now)
    p = old.published
    stored = StoredKey(PublishedKey(p.key_id, p.kem, p.public_key, stamp), old.created_at)
    _write_public(keys_dir(state_dir) / f"{key_id}.json", _record(stored))
    return stored


def list_keys(state_dir: Path, skipped: list[str] | None = None) -> list[StoredKey]:
    """Every stored key (current or not), oldest first. A file that does not read as a key
    is skipped, as the running gateway skips it (`KeyRing`): its problem is appended to
    `skipped`, or logged as `key file skipped` without a list to take it. A key whose
    private file the gateway could not read is listed with that `problem`."""
    folder = keys_dir(state_dir)
    if not folder.is_dir():
        return []
    keys = []
    for path in sorted(folder.glob("*.json")):
        try:
            stored = _read_public(path)
            try:
                _read_private(path, stored.published.kem)
            except ConfigurationError as exc:
                stored = StoredKey(stored.published, stored.created_at, problem=str(exc))
            keys.append(stored)
        except ConfigurationError as exc:
            if skipped is not None:
                skipped.append(str(exc))
            else:
                logging.getLogger(LOGGER_NAME).warning(
                    "key file skipped", extra={"fields": {"problem": str(exc)}}
                )
    return sorted(keys, key=lambda k: (k.created_at, k.key_id))


def _record(stored: StoredKey) -> dict[str, Any]:
    return {**stored.published.to_dict(), "created_at": stored.created_at}


def _read_public(path: Path) -> StoredKey:
    try:
        data = json.loads(path.read_text())
        key_id = str(data["key_id"])
        if not KEY_ID_RE.fullmatch(key_id) or path.stem != key_id:
            raise ValueError("key id does not match the file name")
        published = PublishedKey(
            key_id, check_kem(str(data["kem"])), b64d(data["public_key"]), int(data["not_after"])
        )
        return StoredKey(published, int(data["created_at"]))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"key file {path} is invalid: {exc}") from None


def _read_private(public_path: Path, kem: Kem) -> PrivateKey:
    """The private key beside the public record `public_path` (`<key_id>.key`)."""
    secret_path = public_path.with_suffix(".key")
    try:
        return private_key(kem, b64d(secret_path.read_text().strip()))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigurationError(f"private key {secret_path} is unreadable: {exc}") from None


@dataclass(frozen=True, slots=True)
class _LoadedKey:
    published: PublishedKey
    private: PrivateKey
    created_at: int


class KeyRing:
    """The gateway's current keys, re-read from disk when the keys folder changes.

    `lookup` is called for every request, so it stats the folder at most once per `rescan_s`
    and re-reads it only when it changed (a key generated or retired by the CLI). A file that
    does not read as a key (a stray `backup.json`, a missing `.key`) is logged and skipped —
    a key already loaded under that name stays — and the folder is re-read until it is fixed.
    """

    def __init__(self, state_dir: Path, *, rescan_s: float = 1.0) -> None:
        self._state_dir = state_dir
        self._rescan_s = rescan_s
        self._lock = threading.Lock()
        self._identity = load_identity(state_dir, create=False)
        self._keys: dict[str, _LoadedKey] = {}
        self._stamp: int | None = None
        self._checked = 0.0
        self._problems: list[str] = []
        self._document: dict[str, Any] | None = None
        self._document_ids: tuple[str, ...] = ()
        self.reload()

    @property
    def identity(self) -> Ed25519PrivateKey:
        return self._identity

    def reload(self) -> None:
        """Read the keys folder now."""
        folder = keys_dir(self._state_dir)
        stamp = folder.stat().st_mtime_ns if folder.is_dir() else None
        loaded: dict[str, _LoadedKey] = {}
        problems: list[str] = []
        for path in sorted(folder.glob("*.json")) if stamp is not None else []:
            try:
                found = self._load(path)
            except ConfigurationError as exc:
                problems.append(str(exc))
                kept = self._keys.get(path.stem)
                if kept is not None:
                    loaded[path.stem] = kept
                continue
            loaded[found.published.key_id] = found
        ordered = sorted(loaded.values(), key=lambda k: (k.created_at, k.published.key_id))
        if problems != self._problems:
            for problem in problems:
                logging.getLogger(LOGGER_NAME).warning(
                    "key file skipped", extra={"fields": {"problem": problem}}
                )
        with self._lock:
            self._keys = {k.published.key_id: k for k in ordered}
            self._stamp = None if problems else stamp  # None: look again at the next rescan
            self._problems = problems
            self._checked = time.monotonic()
            self._document = None

    def _load(self, path: Path) -> _LoadedKey:
        stored = _read_public(path)
        prior = self._keys.get(stored.key_id)
        if prior is not None and prior.published.public_key == stored.published.public_key:
            return _LoadedKey(stored.published, prior.private, stored.created_at)
        private = _read_private(path, stored.published.kem)
        return _LoadedKey(stored.published, private, stored.created_at)

    def _maybe_rescan(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._rescan_s:
            return
        self._checked = now
        folder = keys_dir(self._state_dir)
        stamp = folder.stat().st_mtime_ns if folder.is_dir() else None
        if stamp != self._stamp:
            self.reload()

    def lookup(self, key_id: str) -> tuple[Kem, PrivateKey] | None:
        """The private key for a current key id, or None."""
        self._maybe_rescan()  # a monotonic-clock check; touches the disk at most once per rescan_s
        found = self._keys.get(key_id)
        if found is None or found.published.not_after <= time.time():
            return None
        return found.published.kem, found.private

    def current(self) -> tuple[PublishedKey, ...]:
        """The keys devices may seal to now, newest last."""
        self._maybe_rescan()
        now = time.time()
        return tuple(k.published for k in self._keys.values() if k.published.not_after > now)

    def document(self) -> dict[str, Any]:
        """The signed `/v1/keys` document, re-signed when the keys change and at the start of
        every `KEYS_RESIGN_S` period, with `issued_at` that period's start (by the wall
        clock): replicas sharing a keys folder publish the same document, byte for byte."""
        keys = self.current()
        ids = tuple(k.key_id for k in keys)
        period = int(time.time()) // KEYS_RESIGN_S * KEYS_RESIGN_S
        doc = self._document
        if doc is None or doc["issued_at"] != period or ids != self._document_ids:
            doc = sign_keys_document(keys, self._identity, issued_at=period)
            self._document, self._document_ids = doc, ids
        return doc
