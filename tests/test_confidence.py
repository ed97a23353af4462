"""The confidence score: its signals and its documented formula."""

from __future__ import annotations

import math
from typing import Any

import pytest

from kernels import TokenEvent
from kernels.openai_protocol import UNKNOWN_TOKEN_ID
from runtime.confidence import ConfidenceWeights, RunningConfidence, score


def _events(logprobs: list[float], entropies: list[float]) -> list[TokenEvent]:
    pairs = zip(logprobs, entropies, strict=True)
    return [TokenEvent("x", i, lp, h) for i, (lp, h) in enumerate(pairs)]


def test_signals_skip_the_opening_token() -> None:
    c = score(_events([-3.0, -0.1, -0.5, -2.0], [4.0, 0.5, 1.0, 3.0]))
    assert c.tokens == 4  # every token counts as generated ...
    assert c.mean_logprob == pytest.approx(-2.6 / 3)  # ... the opening one is not scored
    assert c.min_logprob == -2.0
    assert c.mean_entropy == pytest.approx(1.5)
    assert c.low_fraction == pytest.approx(1 / 3)  # only -2.0 is below log(0.3)


def test_a_step_without_an_entropy_does_not_erase_the_answers_score() -> None:
    # a server engine sends a log-prob but no top log-probs for some steps (entropy NaN):
    # the mean entropy is taken over the steps that have one, not made NaN by that step
    c = score(_events([-3.0, -0.1, -0.5, -2.0], [4.0, 0.5, math.nan, 3.0]))
    assert c.available
    assert c.mean_logprob == pytest.approx(-2.6 / 3)
    assert c.mean_entropy == pytest.approx(1.75)


def test_an_answer_with_no_known_entropy_is_scored_on_its_surprisal() -> None:
    # A server that sends each token's log-prob but never top log-probs: no step has an
    # entropy. The score stands -mean log-prob in for it (the entropy's estimate from
    # sampled tokens) instead of being NaN ("no local confidence") for every answer.
    w = ConfidenceWeights()
    c = score(_events([-3.0, -0.1, -2.5, -0.05], [4.0, math.nan, math.nan, math.nan]))
    assert c.available and math.isnan(c.mean_entropy)  # reported as unknown
    mean_lp = (-0.1 - 2.5 - 0.05) / 3
    assert c.mean_logprob == pytest.approx(mean_lp)
    z = w.mean_logprob * mean_lp - w.low_fraction * (1 / 3) + w.mean_entropy * mean_lp + w.bias
    assert c.score == pytest.approx(1 / (1 + math.exp(-z)))
    assert c.to_dict()["mean_entropy"] is None


def test_score_follows_the_documented_formula() -> None:
    w = ConfidenceWeights()
    c = score(_events([-1.0, -0.22, -0.22, math.log(0.1)], [2.0, 1.0, 1.0, 1.0]))
    z = w.mean_logprob * c.mean_logprob - w.low_fraction * c.low_fraction
    z += -w.mean_entropy * 1.0 + w.bias
    assert c.score == pytest.approx(1 / (1 + math.exp(-z)))


def test_the_score_does_not_drift_as_a_steady_answer_grows() -> None:
    # one unlikely token in every eight, one of them far less likely late in the answer:
    # a worst-token term would keep falling, the fraction of low tokens does not
    logprobs = [-3.0 if i % 8 == 7 else -0.1 for i in range(96)]
    logprobs[87] = -8.0
    steady = RunningConfidence()
    for i, lp in enumerate(logprobs):
        steady.add(TokenEvent("x", i + 1, lp, 1.0))
        if steady.tokens == 17:
            early = steady.value().score
    assert steady.value().score == pytest.approx(early, abs=0.03)


def test_a_sure_answer_scores_higher_than_an_unsure_one() -> None:
    sure = score(_events([-0.01] * 10, [0.05] * 10))
    unsure = score(_events([-1.5] * 10, [4.0] * 10))
    assert sure.score > 0.9 > 0.1 > unsure.score


def test_forced_tokens_are_not_scored() -> None:
    # the opening, two real choices, and two forced steps (entropy < 0.5 nats) between them
    c = score(_events([-2.0, -1.0, -0.001, -0.002, -0.5], [3.0, 1.5, 0.01, 0.2, 1.0]))
    assert c.tokens == 5 and c.scored == 2
    assert c.mean_logprob == pytest.approx(-0.75) and c.mean_entropy == pytest.approx(1.25)
    assert c.min_logprob == -1.0  # reported over every token after the opening
    # filler no longer lifts an unsure answer: the same choices padded with forced tokens
    padded = score(_events([-2.0, -1.0, -0.5] + [-0.001] * 40, [3.0, 1.5, 1.0] + [0.01] * 40))
    assert padded.score == pytest.approx(c.score)


def test_a_loop_is_not_scored() -> None:
    # tokens 1..5, then the same five again: from the 3rd token of the repeat on, each one
    # completes a 3-gram the answer already holds
    ids = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    lps = [-1.0, -0.8, -1.2, -0.9, -1.1, -0.6, -0.05, -0.01, -0.01, -0.01]
    acc = RunningConfidence()
    for i, lp in zip(ids, lps, strict=True):
        acc.add(TokenEvent("x", i, lp, 1.0))
    c = acc.value()
    assert c.tokens == 10 and c.scored == 6  # 9 after the opening, 3 of them repeats
    assert c.mean_logprob == pytest.approx(sum(lps[1:7]) / 6)


def test_without_token_ids_repeats_are_told_by_text() -> None:
    acc = RunningConfidence(ConfidenceWeights(opening_tokens=0))
    for text in ["a", "b", "c", "a", "b", "c"]:
        acc.add(TokenEvent(text, UNKNOWN_TOKEN_ID, -0.5, 1.0))
    assert acc.value().scored == 5  # "a b c" comes again: only its last token ends a repeat


def test_an_answer_of_forced_tokens_and_repeats_is_scored_on_all_of_them() -> None:
    c = score(_events([-3.0] + [-0.01] * 9, [2.0] + [0.05] * 9))
    assert c.scored == 0 and c.mean_logprob == pytest.approx(-0.01)
    assert c.score > 0.9
    off = ConfidenceWeights(forced_entropy=0.0, repeat_ngram=0)  # the first prior's signals
    assert score(_events([-2.0, -1.0, -0.001], [3.0, 1.5, 0.01]), off).scored == 2


def test_an_answer_no_longer_than_its_opening_is_scored_on_it() -> None:
    c = score(_events([-0.05], [0.2]))
    assert c.available and c.tokens == 1 and c.mean_logprob == pytest.approx(-0.05)


def test_no_tokens_means_no_confidence() -> None:
    c = score([])
    assert not c.available and math.isnan(c.score)
    assert c.to_dict()["score"] is None


def test_flushed_text_without_a_model_step_is_ignored() -> None:
    acc = RunningConfidence(ConfidenceWeights(opening_tokens=0))
    acc.add(TokenEvent("ab", 5, -0.3, 1.0))
    acc.add(TokenEvent("held back", -1, 0.0, 0.0))
    assert acc.tokens == 1
    assert acc.value().mean_logprob == pytest.approx(-0.3)


def test_weights_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="low_floor"):
        ConfidenceWeights(low_floor=1.5)
    with pytest.raises(ValueError, match="forced_entropy"):
        ConfidenceWeights(forced_entropy=-0.1)
    with pytest.raises(ValueError, match="forced_entropy"):
        ConfidenceWeights(forced_entropy=math.nan)
    with pytest.raises(ValueError, match="repeat_ngram"):
        ConfidenceWeights(repeat_ngram=1)


@pytest.mark.parametrize("name", ["mean_logprob", "low_fraction", "mean_entropy", "bias"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_weights_of_the_score_must_be_finite(name: str, value: float) -> None:
    bad: dict[str, Any] = {name: value}
    with pytest.raises(ValueError, match=f"ConfidenceWeights.{name} must be a finite number"):
        ConfidenceWeights(**bad)
    fine: dict[str, Any] = {name: 1.0}
    assert score(_events([-1.0, -0.5], [1.0, 1.0]), ConfidenceWeights(**fine)).available
