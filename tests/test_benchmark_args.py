"""Benchmark command lines: a bad argument is a one-line usage error (exit 2) before anything
is measured, and a run with nothing measured ends cleanly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import (
    cascade,
    crypto,
    early_escalation,
    engines,
    gateway,
    latency,
    overhead,
    privacy,
)
from benchmarks._report import table
from kernels.errors import EngineUnavailableError
from kernels.options import PROMPT

SECONDS_RANGE = "must be a number of seconds > 0 and at most 2592000 (30 days)"
BAD_ARGS = [
    (engines.main, ["--json", "--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (engines.main, ["--max-tokens", "0"], "--max-tokens: must be at least 1, not 0"),
    (crypto.main, ["--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (crypto.main, ["--seconds", "nan"], f"--seconds: {SECONDS_RANGE}, not nan"),
    (gateway.main, ["--seconds", "0"], f"--seconds: {SECONDS_RANGE}, not 0"),
    (overhead.main, ["--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (latency.main, ["--repeats", "0"], "--repeats: must be at least 1, not 0"),
    (privacy.main, ["--json", "--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (privacy.main, ["--limit", "-3"], "--limit: must be at least 0, not -3"),
    (privacy.main, ["--dataset", "/nonexistent"], "--dataset: no such file: /nonexistent"),
    (privacy.main, ["--format", "units"],
     "has no 'user_query' field, which --format units reads"),
    (cascade.main, ["--folds", "0"], "--folds: must be at least 2, not 0"),
    (cascade.main, ["--limit", "-1"], "--limit: must be at least 0, not -1"),
    (cascade.main, ["--limit", "3"],
     "3 items; --folds 5 needs at least 10 (5 answered right and 5 wrong)"),
    (cascade.main, ["--dataset", "/nonexistent"],
     "--dataset: no such file or folder: /nonexistent"),
    (cascade.main, ["--model", "/x.gguf"], "--model: model file not found: /x.gguf"),
    (cascade.main, ["--save", "/nonexistent/w.json"],
     "--save: no folder /nonexistent to write /nonexistent/w.json in"),
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


def _arc_items(path: Path, n: int) -> list[str]:
    """`n` ARC-format questions, each with option 0 right, written to `path`."""
    questions = [f"Which is number {i}?" for i in range(n)]
    path.write_text("".join(
        json.dumps({"query": f"Question: {q}", "choices": ["this", "that"], "gold": 0}) + "\n"
        for q in questions), encoding="utf-8")
    return questions


def test_cascade_whose_model_answers_every_item_right_stops_in_one_line_before_fitting(
    tmp_path: Path,
) -> None:
    questions = _arc_items(tmp_path / "arc.jsonl", 10)
    scores = tmp_path / "scores.jsonl"  # cached scores: no model loads
    scores.write_text("\n".join([json.dumps({"model": "m", "prompt": PROMPT})] + [json.dumps({
        "question": q, "option_logprob": [-1.0, -5.0], "option_tokens": [1, 1],
        "option_chars": [4, 4], "option_unconditional": [-2.0, -2.0],
        "prompt_mean_logprob": -3.0, "prompt_tokens": 5}) for q in questions]) + "\n")
    with pytest.raises(SystemExit) as exited:
        cascade.main(["--dataset", str(tmp_path / "arc.jsonl"), "--limit", "0", "--peer", "",
                      "--scores", str(scores), "--save", str(tmp_path / "w.json")])
    assert exited.value.code == (
        "cascade: the local model answered 10 of 10 items right: --folds 5 needs at least "
        "5 right and 5 wrong (raise --limit)")
    assert not (tmp_path / "w.json").exists()


def test_cascade_whose_model_fails_to_load_exits_1_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unavailable(*_: object) -> None:
        raise EngineUnavailableError("llama.cpp could not load the model")

    monkeypatch.setattr(cascade, "OptionScorer", unavailable)
    _arc_items(tmp_path / "arc.jsonl", 10)
    with pytest.raises(SystemExit) as exited:
        cascade.main(["--dataset", str(tmp_path / "arc.jsonl"), "--peer", "",
                      "--save", str(tmp_path / "w.json")])
    assert exited.value.code == "cascade: llama.cpp could not load the model"


@pytest.mark.parametrize(("argv", "message"), [
    (["--limit", "0"], "--limit: must be at least 4, not 0"),
    (["--limit", "-5"], "--limit: must be at least 4, not -5"),
    (["--limit", "3"], "--limit: must be at least 4, not 3"),
    (["--limit", "3", "--prompts-file", "{five prompts}"], "--limit: must be at least 4, not 3"),
    (["--max-tokens", "0"], "--max-tokens: must be at least 5, not 0"),
    (["--max-tokens", "4"], "--max-tokens: must be at least 5, not 4"),
])
def test_early_escalation_refuses_too_few_prompts_or_tokens_before_loading_a_model(
    argv: list[str], message: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    five = tmp_path / "mine.txt"
    five.write_text("".join(f"Question {i}?\n" for i in range(5)), encoding="utf-8")
    argv = [str(five) if a == "{five prompts}" else a for a in argv]

    def no_engine(*_: object, **__: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("kernels.registry.load_engine", no_engine)
    with pytest.raises(SystemExit) as exited:
        early_escalation.main(["--no-cache", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_early_escalation_says_so_when_no_answer_reaches_the_first_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # four cached answers of two tokens each: no rule can be chosen (was a ValueError)
    prompts = [f"Question {i}?" for i in range(4)]
    mine = tmp_path / "mine.txt"
    mine.write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(
        early_escalation.Trace(p, (-0.5, -0.4), (1.0, 1.0), (0.1, 0.2), 0.3, (5, 6)).to_json()
        + "\n" for p in prompts), encoding="utf-8")

    def no_engine(*_: object, **__: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("kernels.registry.load_engine", no_engine)
    with pytest.raises(SystemExit, match="no answer of the selection half reached the first "
                                         r"checkpoint \(4 tokens\)"):
        early_escalation.main(["--prompts-file", str(mine), "--limit", "4",
                               "--traces", str(traces)])
