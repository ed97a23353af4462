"""Benchmark command lines: a bad argument is a one-line usage error (exit 2) before anything
is measured, and a run with nothing measured ends cleanly."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from benchmarks import crypto, engines, gateway, latency, overhead
from benchmarks._report import table

BAD_ARGS = [
    (engines.main, ["--json", "--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (engines.main, ["--max-tokens", "0"], "--max-tokens: must be at least 1, not 0"),
    (crypto.main, ["--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (crypto.main, ["--seconds", "nan"], "--seconds: must be a finite number of seconds > 0"),
    (gateway.main, ["--seconds", "0"], "--seconds: must be a finite number of seconds > 0"),
    (overhead.main, ["--rounds", "0"], "--rounds: must be at least 1, not 0"),
    (latency.main, ["--repeats", "0"], "--repeats: must be at least 1, not 0"),
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
