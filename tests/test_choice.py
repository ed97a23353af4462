"""Multiple choice on the device: the real local model and peer, the bundled calibration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cascade import DEFAULT_DATASET, load_arc, sample
from runtime.calibration import PEER_FEATURES, CalibratedConfidence, CalibrationError
from runtime.choice import BUNDLED_CALIBRATIONS, DEFAULT_CALIBRATION, LocalChooser, calibration_path
from runtime.cli import main as cli


@pytest.fixture(scope="module")
def chooser() -> Iterator[LocalChooser]:
    with LocalChooser(threads=1) as c:
        yield c


def test_the_bundled_calibration_names_its_models_and_reads_the_peer() -> None:
    cal = CalibratedConfidence.load(DEFAULT_CALIBRATION)
    assert cal.meta["model"] == "bundled:smollm2-135m"
    assert cal.meta["peer"] == "bundled:gemma3-270m"
    assert set(PEER_FEATURES) <= set(cal.features)


def test_an_easy_question_is_answered_with_its_signals(chooser: LocalChooser) -> None:
    c = chooser.choose("What colour is the sky on a clear day?", ["blue", "green", "red"])
    assert (c.index, c.option) == (0, "blue")
    assert 0.0 < c.p_correct < 1.0
    assert list(c.signals) == list(chooser.calibration.features)
    assert c.signals["agree_peer"] == 1.0  # Gemma picks blue too
    assert (c.model, c.peer) == ("bundled:smollm2-135m", "bundled:gemma3-270m")
    d = json.loads(json.dumps(c.to_dict()))
    assert d["option"] == "blue" and d["escalate"] == (c.p_correct < 0.5)


def test_p_correct_separates_right_from_wrong_answers_on_arc(chooser: LocalChooser) -> None:
    # 40 bundled ARC-Easy items; the calibration was fitted on all of ARC-Easy, so this is
    # in-sample: it checks the wiring (signals, order, weights), not the held-out AUROC.
    items = sample(load_arc(DEFAULT_DATASET["arc"]), 40, seed=3)
    got = [chooser.choose(it.question, list(it.options)) for it in items]
    right = np.array([c.index == it.gold for c, it in zip(got, items, strict=True)])
    p = np.array([c.p_correct for c in got])
    assert 0 < right.sum() < len(items)
    assert p[right].mean() > p[~right].mean() + 0.1


def test_escalate_follows_the_threshold(chooser: LocalChooser) -> None:
    c = chooser.choose("Which animal barks?", ["a cat", "a dog", "a fish", "a bird"])
    assert c.threshold == 0.5 and c.escalate == (c.p_correct < 0.5)
    assert replace(c, threshold=1.0).escalate and not replace(c, threshold=0.0).escalate


@pytest.mark.parametrize(
    ("question", "options", "message"),
    [
        ("", ["a", "b"], "question must be a non-empty string"),
        ("Which?", ["a"], "need at least 2 options, got 1"),
        ("Which?", ["a", "  "], "option 1 must be a non-empty string"),
    ],
)
def test_bad_questions_are_refused(chooser: LocalChooser, question: str, options: list[str],
                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chooser.choose(question, options)


def _calibration(tmp_path: Path, **meta: str) -> Path:
    cal = CalibratedConfidence.load(DEFAULT_CALIBRATION)
    data = cal.to_dict()
    data["meta"] = {**data["meta"], **meta}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(data))
    return path


def test_the_light_bundled_fit_reads_the_answering_model_alone() -> None:
    cal = CalibratedConfidence.load(calibration_path("bundled:arc-light"))
    assert (cal.meta["model"], cal.meta["peer"]) == ("bundled:smollm2-135m", "")
    assert not set(PEER_FEATURES) & set(cal.features)
    with LocalChooser("bundled:arc-light", threads=1) as light:
        assert light.peer == "" and light._peer is None  # Gemma is never loaded
        c = light.choose("What colour is the sky on a clear day?", ["blue", "green", "red"])
    assert (c.index, c.option, c.peer) == (0, "blue", "")
    assert 0.0 < c.p_correct < 1.0 and list(c.signals) == list(cal.features)


def test_calibration_specs_name_bundled_fits_or_files(tmp_path: Path) -> None:
    assert calibration_path(None) == calibration_path("") == DEFAULT_CALIBRATION
    assert calibration_path("bundled:arc") == DEFAULT_CALIBRATION
    assert calibration_path("bundled:arc-light") == BUNDLED_CALIBRATIONS["arc-light"]
    assert all(p.is_file() for p in BUNDLED_CALIBRATIONS.values())  # shipped as package data
    assert calibration_path(tmp_path / "mine.json") == tmp_path / "mine.json"
    known = r"\(bundled: bundled:arc, bundled:arc-light\)"
    with pytest.raises(CalibrationError, match="no bundled fit named 'mmlu' " + known):
        calibration_path("bundled:mmlu")


def test_a_calibration_is_used_only_with_its_own_models(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="fitted on bundled:smollm2-135m's signals, not"):
        LocalChooser(model="bundled:gemma3-270m")
    with pytest.raises(CalibrationError, match="fitted with peer bundled:gemma3-270m, not x"):
        LocalChooser(peer="x")
    with pytest.raises(CalibrationError, match="reads peer signals but names no peer"):
        LocalChooser(_calibration(tmp_path, peer=""))
    odd = CalibratedConfidence.load(DEFAULT_CALIBRATION).to_dict()
    odd["features"][0] = "p_magic"
    with pytest.raises(CalibrationError, match=r"unknown signal\(s\) p_magic"):
        LocalChooser(CalibratedConfidence.from_dict(odd))
    with pytest.raises(CalibrationError, match="cannot read"):
        LocalChooser(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="threshold must be in"):
        LocalChooser(threshold=1.5)


def test_the_cli_answers_and_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["choose", "What colour is the sky on a clear day?", "blue", "green",
                "--json", "--threshold", "0.2", "--mode", "local-only"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["option"], out["source"], out["mode"]) == ("blue", "local", "local-only")
    assert out["p_correct"] > 0.2 and out["reason"] == "mode local-only: the device answers"
    assert cli(["choose", "Which animal barks?", "a cat", "a dog"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(("A. a cat", "B. a dog"))
    assert "[local] mode prefer-local: the device answers; no gateway configured" in captured.err
    assert cli(["choose", "Which?", "only one"]) == 2
    assert "need at least 2 options, got 1" in capsys.readouterr().err
    assert cli(["choose", "  ", "a", "b"]) == 2  # refused before any model loads
    assert "question must be a non-empty string" in capsys.readouterr().err
    assert cli(["choose", "What colour is the sky on a clear day?", "blue", "green", "--json",
                "--calibration", "bundled:arc-light", "--mode", "local-only"]) == 0
    light = json.loads(capsys.readouterr().out)
    assert light["option"] == "blue" and light["p_correct"] != out["p_correct"]
    assert cli(["choose", "Which?", "a", "b", "--calibration", "bundled:nope"]) == 2
    assert "no bundled fit named 'nope'" in capsys.readouterr().err
    assert cli(["choose", "Which?", "a", "b", "--calibration", "/nonexistent.json"]) == 2
    assert "calibration: cannot read /nonexistent.json" in capsys.readouterr().err


def test_the_cli_refuses_nan_weights_instead_of_printing_nan(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = CalibratedConfidence.load(BUNDLED_CALIBRATIONS["arc-light"]).to_dict()
    data["coef"][0] = float("nan")  # json.dumps writes NaN, which json.loads reads back
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(data))
    assert cli(["choose", "Which gas do plants take in?", "oxygen", "carbon dioxide",
                "--calibration", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"calibration: {path}: coef[0] (p_top) must be a finite number, not nan" in captured.err


def test_padded_options_and_question_are_scored_as_the_cloud_reads_them(
        chooser: LocalChooser) -> None:
    question, options = "Which gas do plants take in?", ["oxygen", "carbon dioxide"]
    plain = chooser.choose(question, options)
    padded = chooser.choose(f"  {question}\n", [" oxygen", "carbon dioxide "])
    # a trailing space once moved the device to option 0 (p 0.43 instead of 0.53)
    assert (padded.index, padded.option) == (plain.index, plain.option) == (1, "carbon dioxide")
    assert padded.p_correct == plain.p_correct
    assert padded.signals == plain.signals


@pytest.mark.parametrize(
    ("options", "message"),
    [(["Oxygen", "carbon dioxide", "oxygen "],
      r"options 0 and 2 are the same answer \('Oxygen' and 'oxygen '"),
     (["a", "b", "B"], r"options 1 and 2 are the same answer \('b' and 'B'")],
)
def test_options_that_differ_only_in_case_or_spaces_are_refused(
        chooser: LocalChooser, capsys: pytest.CaptureFixture[str], options: list[str],
        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chooser.choose("Which gas do plants take in?", options)
    assert cli(["choose", "Which gas do plants take in?", *options]) == 2  # before any model
    assert "are the same answer" in capsys.readouterr().err
