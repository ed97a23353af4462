"""Usage charges the store refused, kept on disk so that a restart or a crash loses none.

One pair of files per gateway process under `<state>/uncharged/`: `<id>.json` holds the
process's kept charges, rewritten whole (atomically) when they changed, at each upkeep round
(`usage_flush_s`) and at shutdown; `<id>.lock` is locked (flock) for as long as the process
lives. A process that starts claims the files of processes that are gone (their lock can be
taken): their charges become its own, each under a charge id, which the store applies at
most once. A charge that was never sent gets an id derived from the file it came from, so
one claimed twice (a crash between writing the claimer's file and deleting the claimed one)
is still charged once. A crash loses at most the charges kept since the last upkeep round.

POSIX only (flock); elsewhere the journal is not used and kept charges live in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, NamedTuple

from cloud_gateway.files import replace_file
from cloud_gateway.logs import LOGGER_NAME

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(LOGGER_NAME)

_VERSION = 1
STALE_LOCK_S = 60.0  # a lock file without charges, free and this old, is a crash's leftover


class Kept(NamedTuple):
    """One kept charge: `tokens` used by `device` on UTC day number `day`."""

    device: str
    day: int
    tokens: int


def available() -> bool:
    """Whether this platform can lock the journal's files (POSIX flock)."""
    return fcntl is not None


class ChargeJournal:
    """This process's kept charges on disk, and the claim on those of processes gone."""

    def __init__(self, folder: Path) -> None:
        if fcntl is None:  # pragma: no cover - not POSIX
            raise OSError("the charge journal needs POSIX file locks")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.id = uuid.uuid4().hex
        self.path = folder / f"{self.id}.json"
        self._lock = _lock_file(folder / f"{self.id}.lock")
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX)
        self._written: bytes | None = None  # what self.path holds (None: no file)
        self._claimed: list[tuple[Path, IO[bytes]]] = []  # deleted once ours is written

    def claim(self) -> dict[str, Kept]:
        """The charges of the files left by processes that are gone, by charge id.

        Their files stay (locked by this process) until `write` has stored the charges in
        this process's own file: a crash in between leaves them claimable again."""
        charges: dict[str, Kept] = {}
        for path in sorted(self.folder.glob("*.json")):
            stem = path.stem
            if stem == self.id or any(p == path for p, _ in self._claimed):
                continue
            lock = _try_lock(self.folder / f"{stem}.lock")
            if lock is None:  # its process is alive
                continue
            try:
                found = _read(path, stem)
            except FileNotFoundError:  # claimed and deleted by another process just now
                Path(lock.name).unlink(missing_ok=True)
                lock.close()
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:  # left for an operator
                lock.close()
                log.error("kept usage file unreadable",
                          extra={"fields": {"path": str(path), "error": str(exc)}})
                continue
            charges.update(found)
            self._claimed.append((path, lock))
            log.warning("kept usage claimed",
                        extra={"fields": {"path": str(path), "charges": len(found),
                                          "tokens": sum(c.tokens for c in found.values())}})
        self._remove_stale_locks()
        return charges

    def _remove_stale_locks(self) -> None:
        """Delete the lock files that processes gone left without charges (a crash).

        Only files older than `STALE_LOCK_S` whose lock is free: a process that has just
        opened its lock file may not have locked it yet."""
        for path in self.folder.glob("*.lock"):
            if path.stem == self.id or path.with_suffix(".json").exists():
                continue
            try:
                if time.time() - path.stat().st_mtime < STALE_LOCK_S:
                    continue
            except FileNotFoundError:  # removed just now
                continue
            lock = _try_lock(path)
            if lock is not None:  # free: its process is gone
                path.unlink(missing_ok=True)
                lock.close()

    def write(self, unsent: Mapping[tuple[str, int], int], sent: Mapping[str, Kept]) -> None:
        """Store these kept charges as this process's (no file when there are none), then
        delete the claimed files whose charges they include. OSError if it cannot."""
        if unsent or sent:
            data = json.dumps({
                "version": _VERSION,
                "unsent": [[d, day, t] for (d, day), t in unsent.items()],
                "sent": [[cid, c.device, c.day, c.tokens] for cid, c in sent.items()],
            }).encode()
            if data != self._written:
                replace_file(self.path, data)
                self._written = data
        elif self._written is not None:
            self.path.unlink(missing_ok=True)
            self._written = None
        for path, lock in self._claimed:
            path.unlink(missing_ok=True)
            Path(lock.name).unlink(missing_ok=True)
            lock.close()
        self._claimed.clear()

    def close(self) -> None:
        """Release this process's lock (its file, if any, is then claimable)."""
        for _, lock in self._claimed:
            lock.close()
        self._claimed.clear()
        if self._written is None:
            Path(self._lock.name).unlink(missing_ok=True)
        self._lock.close()


def _lock_file(path: Path) -> IO[bytes]:
    return open(path, "a+b")  # noqa: SIM115 - held open: the lock lives as long as the file


def _try_lock(path: Path) -> IO[bytes] | None:
    """`path` opened and locked, or None when another process holds its lock."""
    lock = _lock_file(path)
    try:
        assert fcntl is not None
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _read(path: Path, stem: str) -> dict[str, Kept]:
    """A journal file's charges by id; never-sent ones under an id derived from the file."""
    data = json.loads(path.read_bytes())
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        raise ValueError("not a version-1 kept usage file")
    out: dict[str, Kept] = {}
    for device, day, tokens in data["unsent"]:
        digest = hashlib.sha256(f"{stem}\0{device}\0{day}".encode()).hexdigest()[:32]
        out[digest] = Kept(str(device), int(day), int(tokens))
    for cid, device, day, tokens in data["sent"]:
        out[str(cid)] = Kept(str(device), int(day), int(tokens))
    return out
