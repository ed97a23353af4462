"""Telemetry: answers are logged with their decision; feedback labels them for the router."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from kernels import Engine
from runtime.config import RuntimeConfig, load_config
from runtime.errors import ConfigError
from runtime.facade import Runtime
from runtime.telemetry import FeedbackError, Telemetry
from tests.device_server import serve_in_thread

Q = [{"role": "user", "content": "Name a fruit."}]


def _runtime(engine: Engine, path: Path) -> Runtime:
    cfg = load_config(env={}).replace(runtime=RuntimeConfig(telemetry_path=str(path)))
    return Runtime(cfg, engine=engine)


def test_every_answer_is_logged_with_its_id(engine: Engine, tmp_path: Path) -> None:
    rt = _runtime(engine, tmp_path / "t.sqlite3")
    result = rt.generate(Q, mode="local-only", params=rt.params(max_tokens=4))
    assert result.id.startswith("chatcmpl-")
    assert rt.telemetry is not None
    row = rt.telemetry.answer(result.id)
    assert row is not None
    assert row["prompt"] == "Name a fruit." and row["source"] == "local"
    assert row["completion_tokens"] == result.usage.completion_tokens
    assert row["confidence"] == pytest.approx(result.confidence.score)
    assert row["feedback"] is None
    rt.close()


def test_feedback_labels_answers_for_router_training(engine: Engine, tmp_path: Path) -> None:
    rt = _runtime(engine, tmp_path / "t.sqlite3")
    good = rt.generate(Q, mode="local-only", params=rt.params(max_tokens=3))
    bad = rt.generate([{"role": "user", "content": "Prove Fermat's last theorem."}],
                      mode="local-only", params=rt.params(max_tokens=3))
    rt.feedback(good.id, True)
    rt.feedback(bad.id, False, "wrong")
    with pytest.raises(FeedbackError, match="no answer with id 'nope'"):
        rt.feedback("nope", True)
    assert rt.telemetry is not None
    rows = list(rt.telemetry.training_rows())
    assert [(r.prompt, r.weak, r.strong) for r in rows] == [
        ("Name a fruit.", 1, 1), ("Prove Fermat's last theorem.", 0, 1)]
    rt.close()


def test_telemetry_off_records_nothing(engine: Engine) -> None:
    cfg = load_config(env={}).replace(runtime=RuntimeConfig(telemetry_path="off"))
    rt = Runtime(cfg, engine=engine)
    assert rt.telemetry is None
    result = rt.generate(Q, mode="local-only", params=rt.params(max_tokens=2))
    assert result.id
    rt.close()


def test_feedback_endpoint(engine: Engine, tmp_path: Path) -> None:
    rt = _runtime(engine, tmp_path / "t.sqlite3")
    with serve_in_thread(rt) as url:
        resp = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "tandem", "messages": Q, "max_tokens": 3})
        answer_id = resp.json()["id"]
        assert resp.json()["tandem"]["id"] == answer_id
        ok = httpx.post(f"{url}/v1/feedback", json={"id": answer_id, "good": False})
        assert ok.status_code == 200 and ok.json() == {"id": answer_id, "recorded": True}
        missing = httpx.post(f"{url}/v1/feedback", json={"id": "chatcmpl-x", "good": True})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "answer_not_found"
        bad = httpx.post(f"{url}/v1/feedback", json={"id": answer_id, "good": "yes"})
        assert bad.status_code == 400
        long = httpx.post(f"{url}/v1/feedback",
                          json={"id": answer_id, "good": True, "note": "x" * 1001})
        assert long.status_code == 400  # refused whole, not stored cut to 1,000 characters
        assert "note is 1001 characters; at most 1000" in long.json()["error"]["message"]
    assert rt.telemetry is not None
    row = rt.telemetry.answer(answer_id)
    assert row is not None and row["feedback"] == 0 and row["feedback_note"] == ""
    rt.close()


def test_cloud_tokens_today_sum_cloud_answers_only(tmp_path: Path) -> None:
    tel = Telemetry(tmp_path / "t.sqlite3")
    assert tel.cloud_tokens_today() == 0
    tel.close()


def test_the_budget_day_starts_at_local_midnight(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import runtime.telemetry as telemetry_module

    monkeypatch.setenv("TZ", "Pacific/Auckland")  # UTC+13 in November: days differ from UTC
    time.tzset()
    try:
        midnight = time.mktime((2026, 11, 28, 0, 0, 0, 0, 0, -1))  # local
        tel = Telemetry(tmp_path / "t.sqlite3")
        for offset, tokens in ((-60.0, 1000), (60.0, 7)):  # yesterday 23:59, today 00:01
            monkeypatch.setattr(telemetry_module.time, "time", lambda o=offset: midnight + o)
            tel._insert(decision=None, id=f"a{offset}", mode="prefer-cloud", source="cloud",
                        reason="test", prompt="p", prompt_tokens=tokens, completion_tokens=0)
        monkeypatch.setattr(telemetry_module.time, "time", lambda: midnight + 120.0)
        assert tel.cloud_tokens_today() == 7
        tel.close()
    finally:
        monkeypatch.undo()
        time.tzset()


def test_an_unusable_telemetry_path_is_a_config_error(tmp_path: Path) -> None:
    from runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=f"runtime.telemetry_path: cannot open the telemetry "
                                          f"database {tmp_path}"):
        Telemetry.from_setting(str(tmp_path))  # a directory
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"\x00" * 512)
    with pytest.raises(ConfigError, match="file is not a database"):
        Telemetry.from_setting(str(junk))


def test_a_stream_closed_early_is_logged_like_a_cancelled_one(engine: Engine,
                                                             tmp_path: Path) -> None:
    rt = _runtime(engine, tmp_path / "t.sqlite3")
    stream = rt.stream(Q, mode="local-only", params=rt.params(max_tokens=32))
    next(stream)
    next(stream)
    stream.close()
    assert rt.telemetry is not None
    row = rt.telemetry.answer(stream.id)
    assert row is not None
    assert (row["source"], row["finish_reason"]) == ("local", "cancelled")
    rt.feedback(stream.id, good=True)  # was FeedbackError: no such answer
    again = rt.telemetry.answer(stream.id)
    assert again is not None and again["feedback"] == 1
    rt.close()


# The answers table and indexes as Tandem 0.1.0 created them (before answers_day was dropped).
OLD_SCHEMA = """
CREATE TABLE answers (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, day TEXT NOT NULL, mode TEXT NOT NULL,
    source TEXT NOT NULL, reason TEXT NOT NULL, prompt TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, confidence REAL,
    mean_logprob REAL, min_logprob REAL, mean_entropy REAL, ttft_ms REAL, total_ms REAL,
    tokens_per_s REAL, finish_reason TEXT, decision TEXT, feedback INTEGER, feedback_ts REAL,
    feedback_note TEXT
);
CREATE INDEX answers_day ON answers (day, source);
CREATE INDEX answers_ts ON answers (ts, source);
"""


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {n for (n,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}


def _insert(tel: Telemetry, answer_id: str, source: str, tokens: int) -> None:
    tel._insert(decision=None, id=answer_id, mode="prefer-local", source=source, reason="test",
                prompt="p", prompt_tokens=tokens, completion_tokens=1)


def test_a_new_database_has_the_day_column_but_no_index_on_it(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    tel = Telemetry(path)
    _insert(tel, "a", "cloud", 4)
    row = tel.answer("a")
    tel.close()
    assert row is not None and row["day"] == time.strftime("%Y-%m-%d", time.localtime(row["ts"]))
    assert _indexes(path) == {"answers_ts"}


def test_an_old_database_keeps_its_rows_and_loses_only_the_unused_index(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    now = time.time()
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO answers (id, ts, day, mode, source, reason, prompt, "
                   "prompt_tokens, completion_tokens, feedback) "
                   "VALUES ('old', ?, '2026-11-27', 'prefer-local', 'local', 'r', 'Old?', 3, 2, 1)",
                   (now,))
    db.close()
    assert _indexes(path) == {"answers_day", "answers_ts"}
    reader = Telemetry(path, read_only=True)  # router train --from-telemetry, before any write
    assert [(r.prompt, r.weak) for r in reader.training_rows()] == [("Old?", 1)]
    reader.close()
    tel = Telemetry(path)
    _insert(tel, "new", "cloud", 10)
    old, new = tel.answer("old"), tel.answer("new")
    assert old is not None and new is not None
    assert (old["day"], old["prompt"], old["feedback"]) == ("2026-11-27", "Old?", 1)
    assert new["day"] == time.strftime("%Y-%m-%d", time.localtime(new["ts"]))  # NOT NULL: filled
    assert tel.cloud_tokens_today() == 11
    tel.close()
    assert _indexes(path) == {"answers_ts"}
    again = Telemetry(path)  # opening it again changes nothing more
    assert again.answer("old") == old
    again.close()


def _answer_at(tel: Telemetry, answer_id: str, ts: float,
               monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.telemetry as telemetry_module

    monkeypatch.setattr(telemetry_module.time, "time", lambda: ts)
    tel._insert(decision=None, id=answer_id, mode="prefer-local", source="local",
                reason="test", prompt=f"my secret {answer_id}", prompt_tokens=3,
                completion_tokens=1)
    monkeypatch.undo()


def test_answers_older_than_keep_days_are_deleted_with_their_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.sqlite3"
    now = time.time()
    tel = Telemetry(path)  # keep_days 0: everything stays
    _answer_at(tel, "old", now - 40 * 86_400, monkeypatch)
    _answer_at(tel, "judged-old", now - 31 * 86_400, monkeypatch)
    _answer_at(tel, "recent", now - 29 * 86_400, monkeypatch)
    tel.feedback("judged-old", True)
    assert tel.prune() == 0
    tel.close()

    tel = Telemetry(path, keep_days=30)  # pruned when opened
    assert tel.answer("old") is None and tel.answer("judged-old") is None
    assert tel.answer("recent") is not None
    # Later writes prune too, at most once an hour: an answer that ages past the limit goes
    # with the first write an hour or more after the last pruning.
    _answer_at(tel, "new", now + 1_800, monkeypatch)
    assert tel.answer("recent") is not None
    _answer_at(tel, "newer", now + 2 * 86_400, monkeypatch)
    assert tel.answer("recent") is None
    assert {tel.answer(i) is not None for i in ("new", "newer")} == {True}
    tel.close()
    # Nor are the prompts left in the file's free pages (secure_delete; this machine's SQLite
    # has it on by default, the pragma sets it where a build does not).
    wal = path.with_name(path.name + "-wal")
    raw = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert b"my secret old" not in raw and b"my secret recent" not in raw


def test_keep_days_must_be_a_number_of_days(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_days must be a number >= 0"):
        Telemetry(tmp_path / "t.sqlite3", keep_days=-1)
    with pytest.raises(ConfigError, match="runtime.telemetry_keep_days must be"):
        load_config(env={"TANDEM_RUNTIME_TELEMETRY_KEEP_DAYS": "-3"})
    assert load_config(env={"TANDEM_RUNTIME_TELEMETRY_KEEP_DAYS": "90"}) \
        .runtime.telemetry_keep_days == 90



def test_training_rows_leave_out_verdicts_older_than_the_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file the runtime has not pruned lately (or one opened read-only, which never
    # prunes) still holds older answers: their verdicts must not train a router.
    path = tmp_path / "t.sqlite3"
    now = time.time()
    tel = Telemetry(path)
    for answer_id, days in (("old", 30), ("week", 6.9), ("today", 0.1)):
        _answer_at(tel, answer_id, now - days * 86_400, monkeypatch)
        tel.feedback(answer_id, answer_id != "week")
    tel.close()

    reader = Telemetry(path, read_only=True)
    everything = [("my secret old", 1), ("my secret week", 0), ("my secret today", 1)]
    assert [(r.prompt, r.weak) for r in reader.training_rows()] == everything
    assert [r.prompt for r in reader.training_rows(7)] == ["my secret week",
                                                           "my secret today"]
    assert [r.prompt for r in reader.training_rows(1)] == ["my secret today"]
    assert [r.prompt for r in reader.training_rows(7, now=now + 86_400)] == ["my secret today"]
    assert [(r.prompt, r.weak) for r in reader.training_rows(0)] == everything
    with pytest.raises(ValueError, match="keep_days must be a number >= 0"):
        list(reader.training_rows(float("nan")))
    reader.close()
    # By default, the database's own retention
    retained = Telemetry(path, read_only=True, keep_days=7)
    assert [r.prompt for r in retained.training_rows()] == ["my secret week",
                                                            "my secret today"]
    retained.close()


def test_a_retention_shorter_than_the_day_keeps_todays_cloud_spending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime.telemetry as telemetry_module

    # 18:00 local: answers at 09:00, 11:00 (cloud) and 17:00 (cloud, recent), 6 h retention.
    t = time.localtime()
    now = time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 18, 0, 0, 0, 0, -1))
    path = tmp_path / "t.sqlite3"
    tel = Telemetry(path)
    for answer_id, hour, source in (("local-9", 9, "local"), ("cloud-11", 11, "cloud"),
                                    ("cloud-17", 17, "cloud")):
        monkeypatch.setattr(telemetry_module.time, "time", lambda h=hour: now - (18 - h) * 3600)
        tel._insert(decision={"route": "cloud"}, id=answer_id, mode="prefer-cloud",
                    source=source, reason="r", prompt=f"secret {answer_id}", prompt_tokens=3000,
                    completion_tokens=1000)
        tel.feedback(answer_id, True, "a note")
    monkeypatch.setattr(telemetry_module.time, "time", lambda: now)
    assert tel.cloud_tokens_today() == 8000
    tel.close()
    tel = Telemetry(path, keep_days=0.25)  # pruned when opened
    # The old cloud answer's tokens stay until midnight: the budget still counts them ...
    assert tel.cloud_tokens_today() == 8000
    assert tel.answer("local-9") is None
    kept = tel.answer("cloud-11")
    # ... but nothing it said: its prompt, decision, verdict and note are gone.
    assert kept is not None
    assert (kept["prompt"], kept["decision"], kept["feedback"], kept["feedback_note"]) == (
        "", None, None, None)
    assert tel.answer("cloud-17")["prompt"] == "secret cloud-17"  # type: ignore[index]
    # After midnight the old one goes for good.
    assert tel.prune(now + 8 * 3600) >= 1 and tel.answer("cloud-11") is None
    tel.close()
    assert b"secret cloud-11" not in path.read_bytes()  # secure_delete: no trace in the file


def test_the_telemetry_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    # It holds prompts, personal data included: with the usual umask 022 the folder and the
    # file (and SQLite's -wal/-shm beside it) used to be readable by every local user.
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = tmp_path / "state" / "tandem" / "telemetry.sqlite3"
        tel = Telemetry(path)
        _insert(tel, "a", "local", 3)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert modes["telemetry.sqlite3"] == 0o600
        assert all(mode == 0o600 for mode in modes.values()), modes
        tel.close()
    finally:
        os.umask(old)
