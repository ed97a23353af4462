"""`tandem router train --from-telemetry` on a real telemetry database in a temp dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.confidence import NO_CONFIDENCE
from runtime.result import Result, Source, Timings, Usage
from runtime.router.cli import main
from runtime.router.data import load_routing_data
from runtime.router.store import load_router
from runtime.telemetry import Telemetry
from tests.test_policy import calm_snapshot

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "routing"


def record(db: Path, rows: list[tuple[str, bool | None]], source: Source = "local") -> None:
    """Log one answer per row through a real `Telemetry`, with the user's verdict if any."""
    telemetry = Telemetry(db)
    try:
        for i, (prompt, good) in enumerate(rows):
            result = _result(f"{source}-{i}", source)
            telemetry.record(result, prompt)
            if good is not None:
                telemetry.feedback(result.id, good)
    finally:
        telemetry.close()


def _result(answer_id: str, source: Source) -> Result:
    """An answer as the runtime returns it (the fields telemetry logs are what matter)."""
    return Result(text="42", source=source, reason="test", confidence=NO_CONFIDENCE,
                  usage=Usage(prompt_tokens=5, completion_tokens=1),
                  timings=Timings(queued_ms=0.0, ttft_ms=10.0, total_ms=20.0,
                                  tokens_per_s=50.0),
                  resources=calm_snapshot(), finish_reason="stop", model="test",
                  mode="prefer-local", id=answer_id)


def test_router_trained_from_telemetry_learns_the_local_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = load_routing_data(DATA / "gsm8k.csv.gz").subset(range(120))
    db = tmp_path / "telemetry.sqlite3"
    record(db, [(p, bool(w)) for p, w in zip(data.prompts, data.weak, strict=True)])
    record(db, [("cloud answers carry no local label", True)] * 3, source="cloud")
    out = tmp_path / "device-router.npz"
    assert main(["train", "--from-telemetry", "--db", str(db), "--out", str(out),
                 "--hash-bits", "12"]) == 0
    assert "trained on 120 prompts" in capsys.readouterr().out
    router = load_router(out)
    assert router.trained_rows == 120 and router.spec.word_bits == 12
    probs = router.outcome_probabilities(data.prompts[:10])
    # Feedback labels have the cloud right everywhere: only "both right" and "strong only".
    assert np.allclose(probs[:, 0] + probs[:, 1], 0.0)
    assert np.allclose(router.score(data.prompts[:10]), probs[:, 2])


def test_too_little_or_one_sided_feedback_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.npz"
    missing = tmp_path / "none.sqlite3"
    assert main(["train", "--from-telemetry", "--db", str(missing), "--out", str(out)]) == 2
    assert "no telemetry database at" in capsys.readouterr().err
    assert not missing.exists()
    few = tmp_path / "few.sqlite3"
    record(few, [(f"question {i}", i % 2 == 0) for i in range(12)] + [("unjudged", None)])
    assert main(["train", "--from-telemetry", "--db", str(few), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has 12 local answers with feedback; training needs 20" in err
    assert err.count("\n") == 1
    one_sided = tmp_path / "good.sqlite3"
    record(one_sided, [(f"question {i}", True) for i in range(25)])
    assert main(["train", "--from-telemetry", "--db", str(one_sided), "--out", str(out)]) == 2
    assert "all 25 judged local answers" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--data", "x.csv", "--db", str(few), "--out", str(out)]) == 2
    assert main(["train", "--data", "x.csv", "--from-telemetry", "--out", str(out)]) == 2


def test_a_file_that_is_no_telemetry_database_is_refused_and_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    out = tmp_path / "r.npz"
    text = tmp_path / "notes.sqlite3"
    text.write_text("not a database\n")
    assert main(["train", "--from-telemetry", "--db", str(text), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot open the telemetry database {text}" in err and err.count("\n") == 1
    assert text.read_text() == "not a database\n"
    other = tmp_path / "other-app.sqlite3"  # SQLite, but another program's
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    before = other.read_bytes()
    assert main(["train", "--from-telemetry", "--db", str(other), "--out", str(out)]) == 2
    assert "no such table: answers" in capsys.readouterr().err
    assert other.read_bytes() == before  # no schema written into it, no WAL switch
    assert not out.exists()


def test_from_telemetry_reads_the_database_the_runtime_is_configured_to_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_routing_data(DATA / "gsm8k.csv.gz").subset(range(30))
    db = tmp_path / "custom.sqlite3"
    record(db, [(p, bool(w)) for p, w in zip(data.prompts, data.weak, strict=True)])
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the default: empty
    monkeypatch.setenv("TANDEM_RUNTIME_TELEMETRY_PATH", str(db))
    out = tmp_path / "r.npz"
    assert main(["train", "--from-telemetry", "--out", str(out), "--hash-bits", "12"]) == 0
    assert "trained on 30 prompts" in capsys.readouterr().out
    monkeypatch.setenv("TANDEM_RUNTIME_TELEMETRY_PATH", "off")
    assert main(["train", "--from-telemetry", "--out", str(out)]) == 2
    assert 'runtime.telemetry_path is "off"' in capsys.readouterr().err


def test_from_telemetry_leaves_out_verdicts_older_than_runtime_telemetry_keep_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import runtime.telemetry as telemetry_module

    data = load_routing_data(DATA / "gsm8k.csv.gz").subset(range(65))
    judged = [(p, bool(w)) for p, w in zip(data.prompts, data.weak, strict=True)]
    db = tmp_path / "telemetry.sqlite3"
    month_ago = time.time() - 30 * 86_400
    with monkeypatch.context() as m:  # 40 verdicts on answers of a month ago ...
        m.setattr(telemetry_module.time, "time", lambda: month_ago)
        record(db, judged[:40])
    old = db.read_bytes()
    monkeypatch.delenv("TANDEM_CONFIG", raising=False)
    monkeypatch.setenv("TANDEM_RUNTIME_TELEMETRY_PATH", str(db))
    monkeypatch.setenv("TANDEM_RUNTIME_TELEMETRY_KEEP_DAYS", "7")
    out = tmp_path / "r.npz"
    assert main(["train", "--from-telemetry", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"tandem router: {db} has 0 local answers with feedback (40 more are older "
                   "than runtime.telemetry_keep_days = 7 days); training needs 20\n")
    assert db.read_bytes() == old and not out.exists()  # read only: nothing pruned here
    telemetry = Telemetry(db)  # ... and 25 on this week's
    try:
        for i, (prompt, good) in enumerate(judged[40:]):
            result = _result(f"recent-{i}", "local")
            telemetry.record(result, prompt)
            telemetry.feedback(result.id, good)
    finally:
        telemetry.close()
    assert main(["train", "--from-telemetry", "--out", str(out), "--hash-bits", "10"]) == 0
    assert "trained on 25 prompts" in capsys.readouterr().out
    assert load_router(out).trained_rows == 25
    monkeypatch.setenv("TANDEM_RUNTIME_TELEMETRY_KEEP_DAYS", "0")  # 0: keep (and train on) all
    assert main(["train", "--from-telemetry", "--out", str(out), "--hash-bits", "10"]) == 0
    assert "trained on 65 prompts" in capsys.readouterr().out
