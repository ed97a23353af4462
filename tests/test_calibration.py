"""The fitted local confidence: its signals, its JSON weights, and its formula."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from runtime.calibration import (
    MC_FEATURES,
    PEER_FEATURES,
    CalibratedConfidence,
    CalibrationError,
    OptionScores,
    fit,
    mc_features,
    peer_features,
)


def _scores(logprobs: tuple[float, ...], tokens: tuple[int, ...] = (1, 1, 1, 1),
            unconditional: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)) -> OptionScores:
    return OptionScores(
        option_logprob=logprobs,
        option_tokens=tokens,
        option_chars=tuple(4 * t for t in tokens),
        option_unconditional=unconditional,
        prompt_mean_logprob=-3.0,
        prompt_tokens=20,
    )


def test_option_probabilities_margin_and_entropy_come_from_the_summed_log_likelihoods() -> None:
    lp = (math.log(0.7), math.log(0.1), math.log(0.1), math.log(0.1))
    f = mc_features(_scores(lp), "Which is right?", ("a", "b", "c", "d"))
    assert set(f) == set(MC_FEATURES)
    assert f["p_top"] == pytest.approx(0.7)
    assert f["margin"] == pytest.approx(0.6)
    expected_h = -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)) / math.log(4)
    assert f["option_entropy"] == pytest.approx(expected_h)
    assert f["prompt_tokens_log"] == pytest.approx(math.log(21))


def test_normalisations_that_pick_another_option_are_flagged_as_disagreeing() -> None:
    # option 0 wins on the sum with 1 token; option 1 (9 tokens) wins per token
    f = mc_features(_scores((-4.0, -4.5, -9.0, -9.0), tokens=(1, 9, 4, 4),
                            unconditional=(-1.0, -8.0, -1.0, -1.0)), "q", ())
    assert f["agree_mean"] == 0.0
    assert f["agree_chars"] == 0.0
    assert f["agree_pmi"] == 0.0  # -4 - -1 = -3 loses to -4.5 - -8 = 3.5
    assert f["chosen_mean_logprob"] == pytest.approx(-4.0)
    assert f["length_rank"] == pytest.approx(0.0)  # the chosen option is the shortest


def test_question_cues_detect_exceptions_and_numbers() -> None:
    f = mc_features(_scores((-1.0, -2.0, -3.0, -4.0)),
                    "Which of these is NOT a mammal?", ("12 kg", "b", "c", "d"))
    assert f["cue_negation"] == 1.0 and f["cue_number"] == 1.0
    g = mc_features(_scores((-1.0, -2.0, -3.0, -4.0)), "Which is a mammal?", ("a", "b"))
    assert g["cue_negation"] == 0.0 and g["cue_number"] == 0.0


def test_option_scores_reject_mismatched_fields() -> None:
    with pytest.raises(ValueError):
        OptionScores((-1.0, -2.0), (1,), (1, 1), (0.0, 0.0), -1.0, 3)


def test_prediction_follows_the_standardised_logistic_formula() -> None:
    model = CalibratedConfidence(("a", "b"), (1.0, 0.0), (2.0, 0.5), (0.8, -1.2), 0.3)
    z = 0.3 + 0.8 * (3.0 - 1.0) / 2.0 - 1.2 * (0.25 - 0.0) / 0.5
    assert model.predict({"a": 3.0, "b": 0.25}) == pytest.approx(1 / (1 + math.exp(-z)))
    many = model.predict_many(np.array([[3.0, 0.25], [1.0, 0.0]]))
    assert many[0] == pytest.approx(1 / (1 + math.exp(-z)))
    assert many[1] == pytest.approx(1 / (1 + math.exp(-0.3)))


def test_fitted_weights_round_trip_through_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    model = fit(x, y, ("x0", "x1", "x2"), meta={"dataset": "synthetic"})
    assert model.coef[0] > 0 > model.coef[1]  # recovers the signs that generated y
    path = tmp_path / "weights.json"
    model.save(path)
    loaded = CalibratedConfidence.load(path)
    assert loaded == model
    assert json.loads(path.read_text())["format"] == "tandem.calibration/1"
    np.testing.assert_allclose(loaded.predict_many(x[:5]), model.predict_many(x[:5]))


def test_a_constant_signal_does_not_break_the_fit() -> None:
    x = np.c_[np.arange(20.0), np.ones(20)]
    model = fit(x, (np.arange(20) >= 10).astype(int), ("rank", "constant"))
    assert model.scale[1] == 1.0 and model.coef[0] > 0


def test_a_missing_feature_is_a_calibration_error() -> None:
    model = CalibratedConfidence(("a", "b"), (0.0, 0.0), (1.0, 1.0), (1.0, 1.0), 0.0)
    with pytest.raises(CalibrationError, match="missing feature.*b"):
        model.predict({"a": 1.0})


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"format": "other/1"}',
                                  '{"format": "tandem.calibration/1", "features": ["a"]}'])
def test_a_malformed_weights_file_is_a_calibration_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(CalibrationError):
        CalibratedConfidence.load(path)


def test_a_missing_weights_file_is_a_calibration_error(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="cannot read"):
        CalibratedConfidence.load(tmp_path / "absent.json")


def test_non_positive_scales_are_rejected() -> None:
    with pytest.raises(CalibrationError):
        CalibratedConfidence(("a",), (0.0,), (0.0,), (1.0,), 0.0)


def test_peer_signals_say_how_a_second_model_rates_the_chosen_option() -> None:
    own = _scores((-1.0, -2.0, -3.0, -4.0))  # chooses option 0
    lp = (math.log(0.2), math.log(0.5), math.log(0.2), math.log(0.1))
    peer = _scores(lp, tokens=(1, 1, 1, 4))
    f = peer_features(own, peer)
    assert set(f) == set(PEER_FEATURES)
    assert f["agree_peer"] == 0.0  # the peer prefers option 1
    assert f["peer_p_chosen"] == pytest.approx(0.2)
    assert f["peer_p_top"] == pytest.approx(0.5)
    assert f["peer_margin"] == pytest.approx(0.3)
    by_token = np.exp(np.array(lp) / np.array([1, 1, 1, 4]))
    assert f["peer_p_chosen_mean"] == pytest.approx(by_token[0] / by_token.sum())
    assert peer_features(own, own)["agree_peer"] == 1.0


def test_peer_signals_need_the_same_options() -> None:
    with pytest.raises(ValueError, match="same options"):
        peer_features(_scores((-1.0, -2.0, -3.0, -4.0)),
                      OptionScores((-1.0, -2.0), (1, 1), (1, 1), (0.0, 0.0), -1.0, 3))


_BUNDLED_LIGHT = Path(__file__).resolve().parent.parent / "runtime/data/calibration-arc-light.json"


def _bundled_with(tmp_path: Path, field: str, value: object) -> Path:
    """A copy of the bundled arc-light weights with one field (or `field[0]`) replaced."""
    data = json.loads(_BUNDLED_LIGHT.read_text())
    if field.endswith("[0]"):
        data[field[:-3]][0] = value
    else:
        data[field] = value
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))  # writes NaN / Infinity as Python's json reads them
    return path


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("coef[0]", math.nan, r"coef\[0\] \(p_top\) must be a finite number, not nan"),
        ("coef[0]", math.inf, r"coef\[0\] \(p_top\) must be a finite number, not inf"),
        ("mean[0]", -math.inf, r"mean\[0\] \(p_top\) must be a finite number, not -inf"),
        ("scale[0]", math.nan, r"scale\[0\] \(p_top\) must be a finite number, not nan"),
        ("coef[0]", 10**400, r"coef\[0\] \(p_top\) must be a finite number, not inf"),
        ("intercept", math.nan, "intercept must be a finite number, not nan"),
        ("intercept", True, "intercept must be a number, not true"),
        ("intercept", "0.1", 'intercept must be a number, not "0.1"'),
        ("coef[0]", True, "coef must be a list of numbers"),
        ("mean", {"0.8": 1}, "mean must be a list of numbers"),
        ("scale", "1.0", "scale must be a list of numbers"),
        ("features", "p_top", "features must be a list of signal names"),
        ("features[0]", "margin", "features names margin more than once"),
        ("features[0]", "", "features holds an empty name"),
        ("coef", [0.5], "coef has 1 values for 17 features"),
        ("features", [], "features is empty"),
        ("meta", ["model"], "meta must be a JSON object"),
    ],
)
def test_malformed_weights_name_the_file_and_the_field(tmp_path: Path, field: str,
                                                        value: object, message: str) -> None:
    path = _bundled_with(tmp_path, field, value)
    with pytest.raises(CalibrationError, match=f"^calibration: {re.escape(str(path))}: {message}"):
        CalibratedConfidence.load(path)


def test_the_bundled_weights_load_and_pass_the_checks() -> None:
    cal = CalibratedConfidence.load(_BUNDLED_LIGHT)
    assert len(cal.features) == len(set(cal.features)) == len(cal.coef) == 17
    assert all(math.isfinite(v) for v in (*cal.mean, *cal.scale, *cal.coef, cal.intercept))


def test_weights_built_in_code_are_checked_too() -> None:
    message = r"^calibration: coef\[1\] \(b\) must be a finite number, not nan"
    with pytest.raises(CalibrationError, match=message):
        CalibratedConfidence(("a", "b"), (0.0, 0.0), (1.0, 1.0), (1.0, math.nan), 0.0)
    with pytest.raises(CalibrationError, match="features names a more than once"):
        CalibratedConfidence(("a", "a"), (0.0, 0.0), (1.0, 1.0), (1.0, 1.0), 0.0)
    with pytest.raises(CalibrationError, match="intercept must be a finite number, not inf"):
        CalibratedConfidence(("a",), (0.0,), (1.0,), (1.0,), math.inf)
