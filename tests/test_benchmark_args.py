"""Benchmark command lines: a bad argument is a one-line usage error (exit 2) before anything
is measured, and a run with nothing measured ends cleanly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import crypto, engines, gateway, latency, overhead, privacy
from benchmarks._report import table

BAD_ARGS = [
    (engines.main, ["--json", "--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (engines.main, ["--max-tokens", "0"], "--max-tokens: must be at least 1, not 0"),
    (crypto.main, ["--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (crypto.main, ["--seconds", "nan"], "--seconds: must be a finite number of seconds > 0"),
    (gateway.main, ["--seconds", "0"], "--seconds: must be a finite number of seconds > 0"),
    (overhead.main, ["--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (latency.main, ["--repeats", "0"], "--repeats: must be at least 1, not 0"),
    (privacy.main, ["--json", "--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (privacy.main, ["--limit", "-3"], "--limit: must be at least 0, not -3"),
    (privacy.main, ["--dataset", "/nonexistent"], "--dataset: no such file: /nonexistent"),
    (privacy.main, ["--format", "units"],
     "has no 'user_query' field, which --format units reads"),
]


@pytest.mark.parametrize(("main", "argv", "message"), BAD_ARGS)
def test_a_bad_count_or_duration_is_a_usage_error(
    main: Callable[[list[str]], int], argv: list[str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_a_table_without_rows_is_its_header() -> None:
    assert table(["model", "TTFT ms"], []) == "model  TTFT ms\n-----  -------"


def test_latency_with_no_model_that_loads_reports_the_worker_error_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert latency.main(["--json", "--models", "/nonexistent.gguf", "--repeats", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "/nonexistent.gguf: worker failed: kernels.errors.ModelNotFoundError: "
        "model file not found: /nonexistent.gguf")
    assert captured.out.splitlines()[-1] == '{"models": [], "plot": null}'


class _FilterLoaded(Exception):
    """Raised in place of loading the privacy filter: the test stops before any scoring."""


def _no_filter(*_: object, **__: object) -> None:
    raise _FilterLoaded


@pytest.mark.parametrize("limit", ["3", "10"])
def test_privacy_with_under_1_kb_of_text_skips_timing_with_a_note_before_loading(
    limit: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(privacy.PrivacyFilter, "from_config", _no_filter)
    with pytest.raises(_FilterLoaded):
        privacy.main(["--json", "--limit", limit, "--rounds", "1"])
    note = capsys.readouterr().err.strip()
    assert note.startswith(f"privacy: {limit} items hold ")
    assert note.endswith("under the 1 KB a timing prompt needs: timing skipped "
                         "(raise --limit to time the filter)")


def test_privacy_dataset_in_another_format_is_a_usage_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    rows = tmp_path / "rows.json"
    rows.write_text('[{"full_text": "Jane", "spans": [{"entity_type": "PERSON"}]}]')
    with pytest.raises(SystemExit) as exited:
        privacy.main(["--dataset", str(rows)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"--dataset {rows}: item 1 has a span without 'entity_value'")
    with pytest.raises(SystemExit) as exited:
        privacy.main(["--dataset", str(rows), "--format", "units"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"--dataset {rows}: no items (--format units reads items with user_query and pii_units)")
