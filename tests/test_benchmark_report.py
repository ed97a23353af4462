"""The benchmarks' shared report: the JSON line is strict JSON even when a figure is NaN."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import _report
from benchmarks._report import emit, median, out_path


def test_the_json_line_is_strict_and_last(capsys: pytest.CaptureFixture[str]) -> None:
    unmeasured = median([])  # no samples: NaN
    assert math.isnan(unmeasured)
    emit({"a": unmeasured, "b": [1.5, math.inf, (2, -math.inf)], "c": {"d": float("nan")},
          "e": "text"}, "human table", as_json=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "human table"
    assert json.loads(out[-1], parse_constant=lambda c: pytest.fail(f"non-strict {c}")) == {
        "a": None, "b": [1.5, None, [2, None]], "c": {"d": None}, "e": "text"}


def test_without_json_only_the_table_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    emit({"a": 1.0}, "table", as_json=False)
    assert capsys.readouterr().out == "table\n"


REPO = Path(__file__).resolve().parent.parent


def test_output_goes_to_tandem_bench_out_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_BENCH_OUT", str(tmp_path / "results"))
    path = out_path("routing.png")
    assert path == tmp_path / "results" / "routing.png"
    assert path.parent.is_dir()  # created for the caller


def test_a_source_checkout_writes_to_benchmarks_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_BENCH_OUT", " ")  # blank counts as unset
    monkeypatch.chdir(tmp_path)  # the checkout's folder, whatever the current directory
    assert _report.out_dir() == REPO / "benchmarks" / "out"


def test_an_installed_package_writes_to_the_current_directory_not_site_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TANDEM_BENCH_OUT", raising=False)
    installed = tmp_path / "site-packages" / "benchmarks"  # no pyproject.toml beside it
    installed.mkdir(parents=True)
    monkeypatch.setattr(_report, "_PACKAGE", installed)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = out_path("latency.png")
    assert path == work / "benchmarks-out" / "latency.png" and path.parent.is_dir()
    assert list(installed.iterdir()) == []
