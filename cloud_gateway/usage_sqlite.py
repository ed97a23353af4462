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

import asyncio
import contextlib
import logging
import threading
import time
from pathlib import Path

from cloud_gateway.files import open_database
from cloud_gateway.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

_Key = tuple[str, int]  # (device, day)

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
    """The default `UsageStore`: counters in memory, daily totals flushed to SQLite.

    Flushes run in a worker thread, one at a time, so a usage file another gateway has
    locked (a write waits up to `busy_timeout_s` for it) or a slow disk never stalls the
    event loop: requests go on being counted in memory meanwhile. Reads of a day not yet in
    memory use a second connection, which a write in progress does not block (WAL).
    """

    def __init__(self, path: Path, flush_s: float = 1.0, busy_timeout_s: float = 10.0) -> None:
        # busy_timeout_s: how long a flush waits for another gateway's write lock on the file.
        self._writer = open_database(
            path, "the usage file", "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
            _SCHEMA, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            self._db = open_database(path, "the usage file", timeout=busy_timeout_s,
                                     isolation_level=None)
        except BaseException:
            self._writer.close()
            raise
        self._write_lock = threading.Lock()  # one user of the writer connection at a time
        self._flush_s = flush_s
        self._flushed_at = time.monotonic()
        self._minutes: dict[str, tuple[int, int]] = {}  # device -> (minute, requests)
        self._days: dict[_Key, list[int]] = {}  # (device, day) -> [requests, tokens]
        self._pending: dict[_Key, list[int]] = {}  # increments not yet handed to a write
        self._writing: asyncio.Future[dict[_Key, tuple[int, int]]] | None = None
        self._in_write: dict[_Key, list[int]] = {}  # the increments that write carries

    def _day(self, device: str, day: int) -> list[int]:
        totals = self._days.get((device, day))
        if totals is None:
            row = self._db.execute(
                "SELECT requests, tokens FROM usage WHERE device = ? AND day = ?", (device, day)
            ).fetchone()
            totals = [row[0], row[1]] if row else [0, 0]
            if len(self._days) > 100_000:  # forget the days with nothing left to write
                self._days = {key: value for key, value in self._days.items()
                              if key in self._pending or key in self._in_write}
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
        """Start a flush in the background if it is time and none is running."""
        if time.monotonic() - self._flushed_at >= self._flush_s:
            self._start_flush()

    def _start_flush(self) -> asyncio.Future[dict[_Key, tuple[int, int]]] | None:
        """The write in progress, or a new one of the pending increments (None: nothing to
        write). A write that fails (the file locked by another gateway for longer than the
        busy timeout, a full disk) is logged and its increments wait for the next one: a
        request is counted in memory whatever happens, never turned into a 500."""
        if self._writing is not None and not self._writing.done():
            return self._writing
        self._flushed_at = time.monotonic()
        if not self._pending:
            return None
        self._in_write, self._pending = self._pending, {}
        self._writing = asyncio.get_running_loop().run_in_executor(
            None, self._write, self._in_write
        )
        self._writing.add_done_callback(self._settle)  # first: before any waiter resumes
        return self._writing

    def _settle(self, write: asyncio.Future[dict[_Key, tuple[int, int]]]) -> None:
        carried, self._in_write = self._in_write, {}
        error = "cancelled" if write.cancelled() else write.exception()
        if error is not None:
            self._keep(carried)
            described = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            log.warning("usage flush failed, kept for the next one",
                        extra={"fields": {"error": described}})
        else:
            self._apply(write.result())

    async def flush_async(self) -> None:
        """Write the pending increments now, off the event loop (joining a write already
        running; what was counted after it started waits for the next). A failure is
        logged, not raised, and the increments are kept for the next flush."""
        writing = self._start_flush()
        if writing is not None:
            # Shielded: a cancelled caller must not cancel the write, which goes on in its
            # thread and is settled by its callback either way.
            with contextlib.suppress(Exception):
                await asyncio.shield(writing)

    def flush(self) -> None:
        """Write the pending increments now, in this thread; on failure they stay pending
        (kept for the next flush) and the error is raised. For shutdown and scripts: on a
        running gateway flushes go through `flush_async`, off the event loop."""
        if self._writing is not None and not self._writing.done():
            raise RuntimeError("a flush is running: await flush_async() or close()")
        self._flushed_at = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            sums = self._write(pending)
        except BaseException:
            self._keep(pending)
            raise
        self._apply(sums)

    def _write(self, pending: dict[_Key, list[int]]) -> dict[_Key, tuple[int, int]]:
        """Add the increments to the stored totals; return the stored sums, other gateways'
        flushed usage included. Runs in a worker thread, or in the caller's for `flush`."""
        with self._write_lock:
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")  # inside: a locked file must not lose them
                db.executemany(
                    "INSERT INTO usage (device, day, requests, tokens) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (device, day) DO UPDATE SET"
                    " requests = requests + excluded.requests,"
                    " tokens = tokens + excluded.tokens",
                    [(d, day, r, t) for (d, day), (r, t) in pending.items()],
                )
                sums = {}
                for key in pending:
                    row = db.execute(
                        "SELECT requests, tokens FROM usage WHERE device = ? AND day = ?", key
                    ).fetchone()
                    sums[key] = (int(row[0]), int(row[1]))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return sums

    def _apply(self, sums: dict[_Key, tuple[int, int]]) -> None:
        """The stored sums, plus what was counted here since the write began."""
        for key, (requests, tokens) in sums.items():
            if key in self._days:
                later = self._pending.get(key, (0, 0))
                self._days[key] = [requests + later[0], tokens + later[1]]

    def _keep(self, increments: dict[_Key, list[int]]) -> None:
        for key, (r, t) in increments.items():  # kept for the next flush
            again = self._pending.setdefault(key, [0, 0])
            again[0], again[1] = again[0] + r, again[1] + t

    def totals(self, device: str, day: int) -> tuple[int, int]:
        """(requests, tokens) of a device on a day, as this store counts them."""
        requests, tokens = self._day(device, day)
        return requests, tokens

    async def close(self) -> None:
        """Wait for a write in progress, write what is left (raising if that fails), close."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
        try:
            if self._pending:
                await asyncio.to_thread(self.flush)
        finally:
            self._writer.close()
            self._db.close()
