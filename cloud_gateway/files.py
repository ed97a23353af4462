"""Files in the gateway's state folder: whole-file writes (a reader, another replica or this
one after a crash, sees no file or a whole one, never half of one) and its SQLite databases.

The device side has its own (`runtime.atomic`): the gateway does not import the runtime.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from cloud_gateway.errors import ConfigurationError


def open_database(path: Path, what: str, *setup: str, **connect: Any) -> sqlite3.Connection:
    """A connection to the SQLite file `path` (its folder created), with the `setup`
    statements run; a file that is not a database, a folder in its place or no access is a
    `ConfigurationError` naming `what` and the path, and no connection is left open."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db: sqlite3.Connection = sqlite3.connect(path, **connect)
        try:
            for statement in setup:
                db.execute(statement)
        except BaseException:
            db.close()
            raise
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigurationError(f"cannot open {what} {path}: {reason}") from None
    return db


def replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `path` whole with permissions `mode`, replacing any file there: `data` goes to
    a temporary file beside it, flushed to disk, renamed over `path`. On an error the
    temporary file is removed and `path` is left as it was. The folder is created if need be."""
    tmp = _written_beside(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Create `path` whole with permissions `mode`; never overwrite. Raises
    `FileExistsError` if `path` exists, also when another process creates it first. A crash
    part-way leaves no `path` (a temporary file beside it at worst), so a half-written
    secret is never taken for one."""
    tmp = _written_beside(path, data, mode)
    try:
        os.link(tmp, path)  # atomic, and fails if `path` exists
    finally:
        tmp.unlink(missing_ok=True)


def _written_beside(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, mode)  # mkstemp makes it 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
