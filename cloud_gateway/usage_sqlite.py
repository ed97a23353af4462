"""Usage counters for a single gateway: in memory, written through to SQLite every second.

Per-minute request counts live only in memory (they are worthless a minute later); daily
request and token totals are persisted so quotas survive a restart. A crash loses at most
`flush_s` seconds of token accounting; a clean shutdown loses nothing.

A flush adds this process's increments to the stored totals (never overwrites them) and
reads the sums back, so gateways sharing a state directory without Redis keep correct
totals and see each other's usage of a device at their next flush of it (limits are
otherwise per process: use Redis to share them exactly).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from cloud_gateway.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    device TEXT NOT NULL,
    day INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device, day)
)
"""


class SqliteUsageStore:
    """The default `UsageStore`: counters in memory, daily totals flushed to SQLite."""

    def __init__(self, path: Path, flush_s: float = 1.0, busy_timeout_s: float = 10.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # How long a flush waits for another gateway's write lock on the same file.
        self._db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._flush_s = flush_s
        self._flushed_at = time.monotonic()
        self._minutes: dict[str, tuple[int, int]] = {}  # device -> (minute, requests)
        self._days: dict[tuple[str, int], list[int]] = {}  # (device, day) -> [requests, tokens]
        self._pending: dict[tuple[str, int], list[int]] = {}  # increments not yet stored

    def _day(self, device: str, day: int) -> list[int]:
        totals = self._days.get((device, day))
        if totals is None:
            row = self._db.execute(
                "SELECT requests, tokens FROM usage WHERE device = ? AND day = ?", (device, day)
            ).fetchone()
            totals = [row[0], row[1]] if row else [0, 0]
            if len(self._days) > 100_000:
                self.flush()
                self._days.clear()
            self._days[(device, day)] = totals
        return totals

    async def count_request(self, device: str, minute: int, day: int) -> tuple[int, int]:
        """Count one request; return (requests this minute, tokens today)."""
        last_minute, count = self._minutes.get(device, (minute, 0))
        count = count + 1 if last_minute == minute else 1
        self._minutes[device] = (minute, count)
        totals = self._day(device, day)
        totals[0] += 1
        self._pending.setdefault((device, day), [0, 0])[0] += 1
        self._maybe_flush()
        return count, totals[1]

    async def add_tokens(
        self, device: str, day: int, tokens: int, charge_id: str | None = None,
        *, first_attempt: bool = False,
    ) -> None:
        """Add a finished request's tokens to the day's total. (This store never raises
        `StoreUnavailable`, so no charge is re-sent to it: `charge_id` is not needed.)"""
        self._day(device, day)[1] += tokens
        self._pending.setdefault((device, day), [0, 0])[1] += tokens
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        """Flush if it is time. A request is counted in memory whatever happens: a flush that
        fails (the file locked by another gateway for longer than the busy timeout, a full
        disk) is logged and its increments wait for the next one, not turned into a 500."""
        if time.monotonic() - self._flushed_at >= self._flush_s:
            try:
                self.flush()
            except sqlite3.Error as exc:
                log.warning("usage flush failed, kept for the next one",
                            extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})

    def flush(self) -> None:
        """Write the changed daily totals now. On failure the increments stay pending (kept
        for the next flush) and the error is raised."""
        self._flushed_at = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            self._db.execute("BEGIN IMMEDIATE")  # inside: a locked file must not lose them
            self._db.executemany(
                "INSERT INTO usage (device, day, requests, tokens) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device, day) DO UPDATE SET requests = requests + excluded.requests,"
                " tokens = tokens + excluded.tokens",
                [(d, day, r, t) for (d, day), (r, t) in pending.items()],
            )
            for d, day in pending:  # the sums, other gateways' flushed usage included
                row = self._db.execute(
                    "SELECT requests, tokens FROM usage WHERE device = ? AND day = ?", (d, day)
                ).fetchone()
                if (d, day) in self._days:
                    self._days[(d, day)] = [row[0], row[1]]
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            for key, (r, t) in pending.items():  # keep them for the next flush
                again = self._pending.setdefault(key, [0, 0])
                again[0], again[1] = again[0] + r, again[1] + t
            raise

    def totals(self, device: str, day: int) -> tuple[int, int]:
        """(requests, tokens) of a device on a day, as this store counts them."""
        requests, tokens = self._day(device, day)
        return requests, tokens

    async def close(self) -> None:
        self.flush()
        self._db.close()
