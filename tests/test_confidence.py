"""The confidence score: its signals and its documented formula."""

from __future__ import annotations

import math

import pytest

from kernels import TokenEvent
from runtime.confidence import ConfidenceWeights, RunningConfidence, score


def _events(logprobs: list[float], entropies: list[float]) -> list[TokenEvent]:
    pairs = zip(logprobs, entropies, strict=True)
    return [TokenEvent("x", i, lp, h) for i, (lp, h) in enumerate(pairs)]


def test_signals_are_mean_min_and_mean_entropy() -> None:
    c = score(_events([-0.1, -0.5, -2.0], [0.5, 1.0, 3.0]))
    assert c.tokens == 3
    assert c.mean_logprob == pytest.approx(-2.6 / 3)
    assert c.min_logprob == -2.0
    assert c.mean_entropy == pytest.approx(1.5)


def test_score_follows_the_documented_formula() -> None:
    w = ConfidenceWeights()
    c = score(_events([-0.22, -0.22, math.log(0.1)], [1.0, 1.0, 1.0]))
    z = w.mean_logprob * c.mean_logprob + w.min_logprob * c.min_logprob - w.mean_entropy * 1.0
    assert c.score == pytest.approx(1 / (1 + math.exp(-(z + w.bias))))


def test_a_sure_answer_scores_higher_than_an_unsure_one() -> None:
    sure = score(_events([-0.01] * 10, [0.05] * 10))
    unsure = score(_events([-1.5] * 10, [4.0] * 10))
    assert sure.score > 0.9 > 0.1 > unsure.score


def test_no_tokens_means_no_confidence() -> None:
    c = score([])
    assert not c.available and math.isnan(c.score)
    assert c.to_dict()["score"] is None


def test_flushed_text_without_a_model_step_is_ignored() -> None:
    acc = RunningConfidence()
    acc.add(TokenEvent("ab", 5, -0.3, 1.0))
    acc.add(TokenEvent("held back", -1, 0.0, 0.0))
    assert acc.tokens == 1
    assert acc.value().mean_logprob == pytest.approx(-0.3)
