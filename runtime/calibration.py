"""A fitted local confidence: a small logistic model over on-device signals, stored as JSON.

The runtime's prior score (`runtime.confidence.score`) weighs a generated answer's token
log-probabilities by hand. When the local model answers a multiple-choice question by
option log-likelihood, more signals are on the device: how the probability mass spreads over
the options, whether different length normalisations pick the same option, how familiar the
question text is to the model, cues in the question, and, when a second small model is on
the device (`PEER_FEATURES`), how that model rates the same options. `CalibratedConfidence` is a
logistic regression over such named signals, fitted offline (`benchmarks.cascade`) and
saved as a small JSON file of weights (never a pickle), so loading it runs no code.

    model = CalibratedConfidence.load("calibration-arc.json")
    signals = mc_features(option_scores, question) | peer_features(option_scores, peer_scores)
    p = model.predict(signals)   # P(local answer is right); model.features names what it needs
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernels.options import OptionScores
from runtime.errors import TandemError

FORMAT = "tandem.calibration/1"

# The multiple-choice signals, in the order `mc_features` returns them.
MC_FEATURES: tuple[str, ...] = (
    "p_top",  # top option's probability, options normalised by summed log-likelihood
    "margin",  # p_top minus the runner-up's probability
    "option_entropy",  # entropy (nats) over the options, divided by log(#options)
    "p_top_mean",  # top probability when options are scored by mean token log-prob
    "p_top_pmi",  # ... by log-likelihood minus the option's unconditional log-likelihood
    "agree_mean",  # 1 when the mean-normalised choice is the chosen option
    "agree_pmi",  # 1 when the PMI choice is the chosen option
    "agree_chars",  # 1 when the per-character-normalised choice is the chosen option
    "p_top_first",  # top probability over the options' first tokens alone
    "agree_first",  # 1 when the first-token choice is the chosen option
    "chosen_mean_logprob",  # mean token log-prob of the chosen option
    "chosen_tokens_log",  # log(1 + tokens of the chosen option)
    "length_rank",  # 1 when the chosen option is the longest, 0 when the shortest
    "prompt_mean_logprob",  # mean token log-prob of the question text (familiarity)
    "prompt_tokens_log",  # log(1 + question tokens)
    "cue_negation",  # question asks for the exception ("not", "except", "least")
    "cue_number",  # the options contain digits (arithmetic-like items)
)

# Signals from a second on-device model (the peer, e.g. Gemma 3 270M) scoring the same options:
# two different small models agreeing is a strong sign the answer is not a guess.
PEER_FEATURES: tuple[str, ...] = (
    "peer_p_chosen",  # the peer's probability (summed log-likelihood softmax) of the chosen option
    "peer_p_top",  # the peer's top option probability
    "peer_margin",  # the peer's top minus runner-up probability
    "agree_peer",  # 1 when the peer's choice is the chosen option
    "peer_p_chosen_mean",  # the peer's probability of the chosen option, per-token normalised
)

_NEGATION = re.compile(r"\b(not|except|least|false|incorrect)\b", re.IGNORECASE)
_DIGIT = re.compile(r"\d")


class CalibrationError(TandemError):
    """A calibration file is missing, malformed, or lacks a feature the caller did not give."""


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    out: np.ndarray = e / e.sum()
    return out


def mc_features(
    scores: OptionScores, question: str, options: Sequence[str] = ()
) -> dict[str, float]:
    """The `MC_FEATURES` of one item, from its option scores and its text."""
    lp = np.asarray(scores.option_logprob, dtype=np.float64)
    toks = np.maximum(np.asarray(scores.option_tokens, dtype=np.float64), 1.0)
    chars = np.maximum(np.asarray(scores.option_chars, dtype=np.float64), 1.0)
    unc = np.asarray(scores.option_unconditional, dtype=np.float64)
    k = scores.chosen
    p = _softmax(lp)
    ordered = np.sort(p)[::-1]
    entropy = float(-(p * np.log(np.clip(p, 1e-300, None))).sum()) / math.log(p.size)
    by_mean = lp / toks
    by_pmi = lp - unc
    by_chars = lp / chars
    first = np.asarray(scores.option_first or scores.option_logprob, dtype=np.float64)
    rank = float(np.argsort(np.argsort(chars))[k]) / (p.size - 1)
    text = " ".join(options)
    return {
        "p_top": float(ordered[0]),
        "margin": float(ordered[0] - ordered[1]),
        "option_entropy": entropy,
        "p_top_mean": float(_softmax(by_mean).max()),
        "p_top_pmi": float(_softmax(by_pmi).max()),
        "agree_mean": float(int(np.argmax(by_mean)) == k),
        "agree_pmi": float(int(np.argmax(by_pmi)) == k),
        "agree_chars": float(int(np.argmax(by_chars)) == k),
        "p_top_first": float(_softmax(first).max()),
        "agree_first": float(int(np.argmax(first)) == k),
        "chosen_mean_logprob": float(by_mean[k]),
        "chosen_tokens_log": math.log1p(float(toks[k])),
        "length_rank": rank,
        "prompt_mean_logprob": scores.prompt_mean_logprob,
        "prompt_tokens_log": math.log1p(scores.prompt_tokens),
        "cue_negation": float(bool(_NEGATION.search(question))),
        "cue_number": float(bool(_DIGIT.search(text))),
    }


def peer_features(scores: OptionScores, peer: OptionScores) -> dict[str, float]:
    """The `PEER_FEATURES` of one item: how a second model's option scores back the answer."""
    if len(peer.option_logprob) != len(scores.option_logprob):
        raise ValueError("peer_features: both models must score the same options")
    k = scores.chosen
    lp = np.asarray(peer.option_logprob, dtype=np.float64)
    toks = np.maximum(np.asarray(peer.option_tokens, dtype=np.float64), 1.0)
    p = _softmax(lp)
    ordered = np.sort(p)[::-1]
    return {
        "peer_p_chosen": float(p[k]),
        "peer_p_top": float(ordered[0]),
        "peer_margin": float(ordered[0] - ordered[1]),
        "agree_peer": float(peer.chosen == k),
        "peer_p_chosen_mean": float(_softmax(lp / toks)[k]),
    }


@dataclass(frozen=True, slots=True)
class CalibratedConfidence:
    """P(local answer is right) = sigmoid(intercept + coef · (x - mean) / scale)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = _weights_problem(self.features, self.mean, self.scale, self.coef,
                                   self.intercept)
        if problem:
            raise CalibrationError(f"calibration: {problem}")

    def predict(self, features: Mapping[str, float]) -> float:
        """The calibrated probability for one item's named signals."""
        missing = [name for name in self.features if name not in features]
        if missing:
            raise CalibrationError(f"calibration: missing feature(s) {', '.join(missing)}")
        z = self.intercept
        for name, mu, sd, w in zip(self.features, self.mean, self.scale, self.coef, strict=True):
            z += w * (float(features[name]) - mu) / sd
        return _sigmoid(z)

    def predict_many(self, matrix: np.ndarray) -> np.ndarray:
        """Probabilities for rows of signals ordered as `self.features`."""
        x = (np.asarray(matrix, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        z = x @ np.asarray(self.coef) + self.intercept
        out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        """Write the weights as JSON (readable, diffable, no code on load)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> CalibratedConfidence:
        """Weights from the JSON `save` writes; a `CalibrationError` naming `source` (the
        file, when there is one) and the field for anything else."""
        where = f"calibration: {source}: " if source else "calibration: "
        if data.get("format") != FORMAT:
            raise CalibrationError(f"{where}format must be {FORMAT!r}")
        missing = [k for k in ("features", "mean", "scale", "coef", "intercept") if k not in data]
        if missing:
            raise CalibrationError(f"{where}missing field(s) {', '.join(missing)}")
        features = data["features"]
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise CalibrationError(f"{where}features must be a list of signal names")
        vectors: dict[str, tuple[float, ...]] = {}
        for name in ("mean", "scale", "coef"):
            values = data[name]
            if not isinstance(values, list) or not all(_is_number(v) for v in values):
                raise CalibrationError(f"{where}{name} must be a list of numbers")
            vectors[name] = tuple(_as_float(v) for v in values)
        if not _is_number(data["intercept"]):
            raise CalibrationError(f"{where}intercept must be a number, "
                                   f"not {json.dumps(data['intercept'])}")
        intercept = _as_float(data["intercept"])
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise CalibrationError(f"{where}meta must be a JSON object")
        problem = _weights_problem(tuple(features), vectors["mean"], vectors["scale"],
                                   vectors["coef"], intercept)
        if problem:
            raise CalibrationError(f"{where}{problem}")
        return cls(features=tuple(features), mean=vectors["mean"], scale=vectors["scale"],
                   coef=vectors["coef"], intercept=intercept, meta=dict(meta))

    @classmethod
    def load(cls, path: str | Path) -> CalibratedConfidence:
        """Read a file written by `save`; a clear `CalibrationError` if it is not one."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"calibration: cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise CalibrationError(f"calibration: {path} does not hold a JSON object")
        return cls.from_dict(data, source=str(path))


def fit(
    matrix: np.ndarray,
    correct: np.ndarray,
    features: Sequence[str],
    *,
    c: float = 1.0,
    meta: Mapping[str, Any] | None = None,
) -> CalibratedConfidence:
    """Fit the logistic model (scikit-learn, the `router` extra) on standardised signals."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(matrix, dtype=np.float64)
    y = np.asarray(correct, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != len(features) or x.shape[0] != y.size:
        raise ValueError("fit: matrix must be (items, features) and match `correct`")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0  # a constant signal carries nothing; keep it harmless
    model = LogisticRegression(C=c, max_iter=1000)
    model.fit((x - mean) / scale, y)
    return CalibratedConfidence(
        features=tuple(features),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in model.coef_[0]),
        intercept=float(model.intercept_[0]),
        meta=dict(meta or {}),
    )


def _is_number(value: object) -> bool:
    # JSON true/false are not weights, though Python counts bool as int
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float: not a usable weight
        return math.inf


def _weights_problem(features: tuple[str, ...], mean: tuple[float, ...],
                     scale: tuple[float, ...], coef: tuple[float, ...],
                     intercept: float) -> str:
    """What is wrong with a set of weights, or "" when nothing is: a NaN or infinite weight
    would make every probability NaN (never below a threshold) or 0 / 1."""
    n = len(features)
    if not n:
        return "features is empty"
    if not all(features):
        return "features holds an empty name"
    twice = sorted({f for f in features if features.count(f) > 1})
    if twice:
        return f"features names {', '.join(twice)} more than once"
    for name, values in (("mean", mean), ("scale", scale), ("coef", coef)):
        if len(values) != n:
            return f"{name} has {len(values)} values for {n} features"
        for i, v in enumerate(values):
            if not math.isfinite(v):
                return f"{name}[{i}] ({features[i]}) must be a finite number, not {v}"
    for i, s in enumerate(scale):
        if s <= 0:
            return f"scale[{i}] ({features[i]}) must be positive, not {s}"
    if not math.isfinite(intercept):
        return f"intercept must be a finite number, not {intercept}"
    return ""


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)
