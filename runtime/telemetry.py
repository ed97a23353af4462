"""Local telemetry: every decision, its features and outcome, and the user's verdict.

A SQLite file on the device (`runtime.telemetry_path`; `"off"` disables it). It is the
training data of the routing policy (`tandem router train --from-telemetry`) and the source
of the daily cloud budget. Nothing here ever leaves the device; prompts are stored so that
a router can be trained on them locally.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import ConfigError, TandemError
from runtime.result import Result

if TYPE_CHECKING:
    from runtime.choice import ChoiceResult

# `day` is the answer's local date (YYYY-MM-DD) in the time zone it was written in. Tandem
# itself does not read it: the daily budget counts by `ts` from the current local midnight
# (`cloud_tokens_today`), right even after a change of time zone. It is kept, still written:
# every existing file has it NOT NULL, so a writer must fill it there anyway, and leaving it
# out of new files only would mean two layouts and files an earlier Tandem cannot write to;
# it also serves whoever reads the file by hand (`GROUP BY day`). Its index is gone — nothing
# queries by day — and is dropped from older files (an index holds no data of its own).
SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    day TEXT NOT NULL,
    mode TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    prompt TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    confidence REAL,
    mean_logprob REAL,
    min_logprob REAL,
    mean_entropy REAL,
    ttft_ms REAL,
    total_ms REAL,
    tokens_per_s REAL,
    finish_reason TEXT,
    decision TEXT,
    feedback INTEGER,
    feedback_ts REAL,
    feedback_note TEXT,
    cloud_tokens INTEGER
);
DROP INDEX IF EXISTS answers_day;
CREATE INDEX IF NOT EXISTS answers_ts ON answers (ts, source);
"""

# `cloud_tokens`: what the answer spent in the cloud, whoever answered in the end: a cloud
# answer's usage, but also a device answer that continued a half-sent cloud answer, or a
# multiple-choice answer whose cloud reply named no option. NULL in rows written before the
# column existed (added to older files when they open): those count a cloud answer's usage.
_CLOUD_TOKENS = ("COALESCE(cloud_tokens, CASE WHEN source = 'cloud' "
                 "THEN prompt_tokens + completion_tokens ELSE 0 END)")


MAX_NOTE = 1000  # characters of a feedback note
_PRUNE_EVERY_S = 3600.0  # with a retention set, old answers are deleted at most this often


def is_off(setting: str) -> bool:
    """Whether a `runtime.telemetry_path` setting turns telemetry off ("off", any case)."""
    return setting.strip().lower() == "off"


class FeedbackError(TandemError):
    """Feedback names an answer this device does not know."""


class TelemetryError(TandemError):
    """The telemetry database cannot be opened (a directory, not SQLite, not writable…)."""


@dataclass(frozen=True, slots=True)
class TrainingRow:
    """One labelled prompt for the router: did the local model's answer suffice?"""

    prompt: str
    weak: int
    strong: int


def default_path() -> Path:
    import os

    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tandem" / "telemetry.sqlite3"


class Telemetry:
    """Thread-safe; one connection guarded by a lock (writes are a few per answer)."""

    def __init__(
        self, path: str | Path, *, read_only: bool = False, keep_days: float = 0.0
    ) -> None:
        """Open (or create) the database at `path`; `read_only` opens an existing one
        without creating or changing anything, and checks it holds Tandem's answers.

        `keep_days` > 0: answers older than that many days are deleted (prompts, verdicts
        and all), now and then at most once an hour as answers are recorded; their bytes are
        overwritten in the file (SQLite `secure_delete`). 0 keeps every answer."""
        if not (math.isfinite(keep_days) and keep_days >= 0):
            raise ValueError(f"keep_days must be a number >= 0, not {keep_days!r}")
        self.path = Path(path)
        self.keep_days = keep_days
        self._pruned_at = -math.inf
        db: sqlite3.Connection | None = None
        try:
            if read_only:
                db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                     check_same_thread=False, isolation_level=None)
                db.execute("SELECT id, prompt, feedback FROM answers LIMIT 1")
                columns = {row[1] for row in db.execute("PRAGMA table_info(answers)")}
                self._cloud_tokens = "cloud_tokens" in columns  # not in older files
            else:
                # Prompts are personal: a folder and a file for this user only (SQLite gives
                # its -wal and -shm files the database file's permissions).
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                # In WAL mode NORMAL never corrupts the file; a power cut may lose the last
                # few records. FULL would fsync every answer (~4 ms here), on the reply's path.
                db.execute("PRAGMA synchronous=NORMAL")
                if keep_days:
                    db.execute("PRAGMA secure_delete=ON")  # pruned prompts leave no trace
                db.executescript(SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(answers)")}
                if "cloud_tokens" not in columns:  # a file from before the column
                    db.execute("ALTER TABLE answers ADD COLUMN cloud_tokens INTEGER")
                self._cloud_tokens = True
        except (OSError, sqlite3.Error) as exc:
            if db is not None:
                db.close()
            raise TelemetryError(f"cannot open the telemetry database {self.path}: "
                                 f"{exc}") from exc
        self._db = db
        self._lock = threading.Lock()
        if keep_days and not read_only:
            self.prune()

    @classmethod
    def from_setting(cls, setting: str, keep_days: float = 0.0) -> Telemetry | None:
        """`""` = the default path, `"off"` = no telemetry, else a file path."""
        if is_off(setting):
            return None
        try:
            return cls(setting or default_path(), keep_days=keep_days)
        except TelemetryError as exc:
            raise ConfigError(f"runtime.telemetry_path: {exc}") from exc

    def prune(self, now: float | None = None) -> int:
        """Delete the answers older than `keep_days` (none when it is 0); how many went
        (deleted, or emptied as below).

        Today's cloud spending outlives a retention shorter than the day (or a 25-hour day):
        such an answer loses its prompt, text of its verdict and decision (overwritten) but
        keeps its token counts until local midnight, or the daily budget would forget it."""
        if not self.keep_days:
            return 0
        now = time.time() if now is None else now
        cutoff = now - self.keep_days * 86_400
        midnight = _local_midnight(now)
        with self._lock:
            self._pruned_at = now
            cur = self._db.execute(
                f"DELETE FROM answers WHERE ts < ? AND NOT (ts >= ? AND {_CLOUD_TOKENS} > 0)",
                (cutoff, midnight))
            deleted = cur.rowcount
            cur = self._db.execute(
                "UPDATE answers SET prompt = '', decision = NULL, feedback = NULL, "
                "feedback_note = NULL, mode = '', reason = '' "
                "WHERE ts < ? AND prompt != ''", (cutoff,))
        return deleted + cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, result: Result, prompt: str) -> None:
        c = result.confidence
        t = result.timings
        self._insert(
            id=result.id, mode=result.mode, source=result.source, reason=result.reason,
            prompt=prompt, prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens, confidence=_num(c.score),
            mean_logprob=_num(c.mean_logprob), min_logprob=_num(c.min_logprob),
            mean_entropy=_num(c.mean_entropy), ttft_ms=t.ttft_ms, total_ms=t.total_ms,
            tokens_per_s=t.tokens_per_s, finish_reason=result.finish_reason,
            decision=result.decision, cloud_tokens=result.cloud_tokens)

    def record_choice(self, result: ChoiceResult, prompt: str) -> None:
        """A multiple-choice answer (`Runtime.choose`): its P(right) is the confidence, its
        cloud tokens count toward the daily budget, and it can take feedback like any answer."""
        p = result.p_correct
        self._insert(
            id=result.id, mode=result.mode, source=result.source, reason=result.reason,
            prompt=prompt, prompt_tokens=result.usage.get("prompt_tokens", 0),
            completion_tokens=result.usage.get("completion_tokens", 0),
            confidence=None if p is None else _num(p), total_ms=result.total_ms,
            finish_reason="choice", decision=result.decision,
            # its usage is the cloud's, whoever answered: the device's option scoring has none
            cloud_tokens=sum(result.usage.get(k, 0)
                             for k in ("prompt_tokens", "completion_tokens")))

    def _insert(self, *, decision: dict[str, Any] | None, **columns: Any) -> None:
        """One answer row (stamped with the time and day, the decision as JSON); columns not
        given stay NULL."""
        now = time.time()
        row = {"ts": now, "day": _day(now), **columns,
               "decision": json.dumps(decision) if decision else None}
        names = ", ".join(row)  # keys are this module's literal column names
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO answers ({names}) "
                f"VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        if self.keep_days and now - self._pruned_at >= _PRUNE_EVERY_S:
            self.prune(now)

    def feedback(self, answer_id: str, good: bool, note: str = "") -> None:
        """Record a user's verdict on an answer (`good`: it was good enough)."""
        if len(note) > MAX_NOTE:  # refused, not cut: nothing the user wrote is lost silently
            raise ValueError(f"note is {len(note)} characters; at most {MAX_NOTE}")
        with self._lock:
            cur = self._db.execute(
                "UPDATE answers SET feedback = ?, feedback_ts = ?, feedback_note = ? "
                "WHERE id = ?", (1 if good else 0, time.time(), note, answer_id))
        if cur.rowcount == 0:
            raise FeedbackError(f"no answer with id {answer_id!r} on this device")

    def cloud_tokens_today(self) -> int:
        """Cloud tokens (prompt + completion) spent since local midnight, by every answer
        (device answers that used the cloud on the way too): the daily budget's day is the
        device's own, in its current time zone."""
        with self._lock:
            row = self._db.execute(
                f"SELECT COALESCE(SUM({_CLOUD_TOKENS}), 0) FROM answers WHERE ts >= ?",
                (_local_midnight(time.time()),)
            ).fetchone()
        return int(row[0])

    def answer(self, answer_id: str) -> dict[str, Any] | None:
        with self._lock:
            self._db.row_factory = sqlite3.Row
            try:
                row = self._db.execute("SELECT * FROM answers WHERE id = ?",
                                       (answer_id,)).fetchone()
            finally:
                self._db.row_factory = None
        return dict(row) if row is not None else None

    def training_rows(self, keep_days: float | None = None,
                      now: float | None = None) -> Iterator[TrainingRow]:
        """Labelled prompts from feedback on local answers.

        A local answer the user judged good: the weak (local) model sufficed. Judged bad: it
        did not, and the strong model is assumed to do better (an optimistic label, as the
        cloud's answer to that prompt was not seen). Cloud answers carry no local label, nor
        do device answers the cloud had a part in (a continuation of a half-sent cloud answer).

        Only answers within `keep_days` of `now` (default: this database's own retention,
        `self.keep_days`; 0 = all), as `prune` would keep them: a file opened read-only, or
        not pruned for a while, still holds older ones, and those no longer train.
        """
        keep_days = self.keep_days if keep_days is None else keep_days
        if not (math.isfinite(keep_days) and keep_days >= 0):
            raise ValueError(f"keep_days must be a number >= 0, not {keep_days!r}")
        since = -math.inf
        if keep_days:
            since = (time.time() if now is None else now) - keep_days * 86_400
        with self._lock:
            rows = self._db.execute(
                "SELECT prompt, feedback FROM answers WHERE source = 'local' "
                "AND feedback IS NOT NULL AND ts >= ? AND prompt != '' "
                + ("AND COALESCE(cloud_tokens, 0) = 0 " if self._cloud_tokens else "")
                + "ORDER BY ts", (since,)).fetchall()
        for prompt, feedback in rows:
            yield TrainingRow(prompt=str(prompt), weak=int(feedback), strong=1)


def _day(ts: float) -> str:
    """The local date of `ts` (the `day` column, kept for readers of the file; see SCHEMA)."""
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def _local_midnight(ts: float) -> float:
    """The start of `ts`'s local day (DST-aware: `mktime` with isdst = -1)."""
    t = time.localtime(ts)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


def _num(value: float) -> float | None:
    return None if value != value else value  # NaN -> NULL
