"""Confidence of a local answer, from its per-token log-probabilities and entropies.

Signals (over the generated tokens that carry text-bearing log-probs):
- `mean_logprob`: the average log-probability of the chosen tokens (the length-normalised
  sequence log-likelihood).
- `min_logprob`: the least likely token the model committed to.
- `mean_entropy`: the average entropy (nats) of the step distributions.

Score (documented formula, in [0, 1]):

    z = a * mean_logprob + b * min_logprob - c * mean_entropy + d
    score = 1 / (1 + exp(-z))

with defaults a = 2.0, b = 0.15, c = 0.6, d = 2.5: a greedy answer whose tokens average
p ≈ 0.8 (mean_logprob ≈ -0.22), whose worst token has p ≈ 0.1 and whose steps average
1 nat of entropy scores ≈ 0.75; one averaging p ≈ 0.3 with a worst token at p ≈ 0.01 and
3 nats scores ≈ 0.08. The weights are a prior; the policy issue calibrates them on
labelled data (`ConfidenceWeights` can be loaded from a fitted file).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from kernels import TokenEvent


@dataclass(frozen=True, slots=True)
class ConfidenceWeights:
    mean_logprob: float = 2.0
    min_logprob: float = 0.15
    mean_entropy: float = 0.6
    bias: float = 2.5


@dataclass(frozen=True, slots=True)
class Confidence:
    score: float  # in [0, 1]; NaN when the engine gave no log-probs
    mean_logprob: float
    min_logprob: float
    mean_entropy: float
    tokens: int

    @property
    def available(self) -> bool:
        return not math.isnan(self.score)

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


NO_CONFIDENCE = Confidence(math.nan, math.nan, math.nan, math.nan, 0)


def score(events: Iterable[TokenEvent], weights: ConfidenceWeights | None = None) -> Confidence:
    """Score a finished (or partial) local answer."""
    acc = RunningConfidence(weights)
    for event in events:
        acc.add(event)
    return acc.value()


class RunningConfidence:
    """Confidence accumulated token by token (for early escalation while streaming)."""

    __slots__ = ("_weights", "_sum_lp", "_min_lp", "_sum_h", "_n")

    def __init__(self, weights: ConfidenceWeights | None = None) -> None:
        self._weights = weights or ConfidenceWeights()
        self._sum_lp = 0.0
        self._min_lp = math.inf
        self._sum_h = 0.0
        self._n = 0

    def add(self, event: TokenEvent) -> None:
        # token_id -1 marks text flushed without a model step (held-back stop-string prefix)
        if event.token_id < 0 or math.isnan(event.logprob):
            return
        self._sum_lp += event.logprob
        self._min_lp = min(self._min_lp, event.logprob)
        self._sum_h += event.entropy
        self._n += 1

    @property
    def tokens(self) -> int:
        return self._n

    def value(self) -> Confidence:
        if self._n == 0:
            return NO_CONFIDENCE
        w = self._weights
        mean_lp = self._sum_lp / self._n
        mean_h = self._sum_h / self._n
        z = w.mean_logprob * mean_lp + w.min_logprob * self._min_lp - w.mean_entropy * mean_h
        z += w.bias
        return Confidence(_sigmoid(z), mean_lp, self._min_lp, mean_h, self._n)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@dataclass(frozen=True, slots=True)
class EarlyEscalation:
    """Stop local generation early when the first `tokens` tokens are clearly unconfident.

    "Clearly" means the running score is below `threshold - margin`: the margin keeps the
    early rule from escalating answers that the full answer's score would have kept local
    (`benchmarks.early_escalation` chooses both on held-in prompts and reports the rest).
    """

    tokens: int = 16
    margin: float = 0.1

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError("EarlyEscalation.tokens must be at least 1")
        if self.margin < 0:
            raise ValueError("EarlyEscalation.margin must be >= 0")

    def fires(self, running: RunningConfidence, threshold: float) -> bool:
        """True once `tokens` tokens are in and their score is below threshold - margin."""
        if running.tokens < self.tokens:
            return False
        return running.value().score < threshold - self.margin
