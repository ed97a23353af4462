"""The privacy benchmark runs on both input formats and ends stdout with its JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "pii"


def _run(*args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.privacy", "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    last = proc.stdout.strip().splitlines()[-1]
    result: dict[str, object] = json.loads(last)
    return result


def test_presidio_format_reports_scores_leakage_and_ends_with_the_headline_keys() -> None:
    result = _run("--dataset", str(DATA / "generated_small.json"), "--limit", "40")
    assert list(result)[-4:] == [
        "structured_leakage", "person_recall", "overall_precision", "ms_per_kb",
    ]  # fmt: skip
    assert result["items"] == 40
    assert result["structured_leakage"] == 0.0
    per_entity = result["per_entity"]
    assert isinstance(per_entity, dict)
    assert per_entity["CREDIT_CARD"]["recall"] == 1.0
    assert 0.0 < float(result["person_recall"]) <= 1.0  # type: ignore[arg-type]


def test_timing_reports_both_layers_per_round_with_the_load_average() -> None:
    result = _run(
        "--dataset", str(DATA / "generated_small.json"), "--limit", "20", "--ner", "names",
        "--rounds", "2",
    )  # fmt: skip
    timing = result["timing"]
    assert isinstance(timing, dict)
    assert set(timing) == {"structured", "whole filter"}
    for row in timing.values():
        assert len(row["round_p50s"]) == 2
        assert row["p50_ms_per_kb"] > 0
    assert result["structured_ms_per_kb"] == timing["structured"]["p50_ms_per_kb"]
    assert result["ms_per_kb"] == timing["whole filter"]["p50_ms_per_kb"]
    assert len(result["loadavg_before"]) == 3  # type: ignore[arg-type]
    assert result["spacy_model"] is None and result["spacy_loaded"] is False


def test_units_format_reports_unit_survival_last() -> None:
    result = _run("--dataset", str(DATA / "generated_small_units.csv"), "--format", "units")
    assert list(result)[-1] == "unit_survival"
    assert result["queries"] == 100
    assert 0.0 <= float(result["unit_survival"]) < 0.5  # type: ignore[arg-type]
    assert float(result["queries_changed"]) > 0.5  # type: ignore[arg-type]
