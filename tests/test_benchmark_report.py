"""The benchmarks' shared report: the JSON line is strict JSON even when a figure is NaN."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks._report import emit, median


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
