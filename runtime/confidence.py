"""Confidence of a local answer, from its per-token log-probabilities and entropies.

Signals, over the *scored* tokens of an answer: the generated tokens that carry log-probs,
after the first `opening_tokens` of them, except
- *forced* tokens, whose step distribution had entropy below `forced_entropy` nats (the rest
  of a word, formatting, a fixed phrase): they record no choice the model made, and an
  answer of filler would otherwise look sure of itself;
- *repeats*, tokens that complete a run of `repeat_ngram` tokens already in the answer: a
  small model caught in a loop ("a being that exists in the realm of the mind, a being that
  exists in the realm of …") predicts its own repetition with near certainty, which says
  nothing about the answer.

- `mean_logprob`: the average log-probability of the chosen tokens (the length-normalised
  sequence log-likelihood).
- `low_fraction`: the fraction of tokens the model committed to with probability below
  `low_floor` — the length-normalised "worst tokens" signal.
- `mean_entropy`: the average entropy (nats) of the step distributions.
- `min_logprob` (reported, not scored): the least likely token the model committed to.

Score (documented formula, in [0, 1]):

    z = a * mean_logprob - b * low_fraction - c * mean_entropy + d
    score = 1 / (1 + exp(-z))

Every term is a mean over tokens, so the running score after K tokens estimates the score
of the whole answer instead of drifting with length, which is what lets
`EarlyEscalation` decide after a few tokens. Skipping forced tokens and repeats serves the
same end: filler and loops late in an answer used to lift its final score far above what
its opening said (`benchmarks.early_escalation`). An earlier prior scored `min_logprob`,
which only falls as an answer grows. The opening token(s) are skipped because how to begin
an answer is the least certain choice the model makes and says little about the rest.
An answer whose every token after the opening was forced or a repeat is scored on all of
them (it is as certain as text gets); one no longer than its opening, on its first token.
The weights are a prior chosen without correctness labels (see `ConfidenceWeights`); the
policy issue calibrates them on labelled data.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from kernels import TokenEvent
from kernels.openai_protocol import UNKNOWN_TOKEN_ID


@dataclass(frozen=True, slots=True)
class ConfidenceWeights:
    """Weights of the documented score, and the constants its signals use.

    a, c are the first prior's; b, `low_floor`, `opening_tokens`, `forced_entropy` (0.5
    rather than 0.3: no early stop that the whole answer would have kept, on fresh GSM8K and
    BoolQ prompts) and `repeat_ngram` were chosen, without correctness labels, on
    `benchmarks.early_escalation`'s prompts for a running score that predicts the final one;
    d is re-centred so the same share of those answers (0.49) falls below 0.5 as under the
    first prior. `forced_entropy=0, repeat_ngram=0, bias=2.42` is the previous score.
    """

    mean_logprob: float = 2.0
    low_fraction: float = 2.0
    mean_entropy: float = 0.6
    bias: float = 3.35
    low_floor: float = 0.3  # a token with p < low_floor counts as "low"
    opening_tokens: int = 1  # tokens skipped at the start of an answer
    forced_entropy: float = 0.5  # a step with less entropy (nats) was forced: not scored
    repeat_ngram: int = 3  # a token completing an n-gram already in the answer: not scored

    def __post_init__(self) -> None:
        for name in ("mean_logprob", "low_fraction", "mean_entropy", "bias"):
            if not math.isfinite(getattr(self, name)):  # a NaN weight makes every score NaN
                raise ValueError(f"ConfidenceWeights.{name} must be a finite number, "
                                 f"not {getattr(self, name)}")
        if not 0 < self.low_floor < 1:
            raise ValueError("ConfidenceWeights.low_floor must be in (0, 1)")
        if self.opening_tokens < 0:
            raise ValueError("ConfidenceWeights.opening_tokens must be >= 0")
        if not self.forced_entropy >= 0:  # also refuses NaN
            raise ValueError("ConfidenceWeights.forced_entropy must be >= 0 (0: score them all)")
        if self.repeat_ngram < 0 or self.repeat_ngram == 1:
            raise ValueError("ConfidenceWeights.repeat_ngram must be 0 (off) or at least 2")


@dataclass(frozen=True, slots=True)
class Confidence:
    score: float  # in [0, 1]; NaN when the engine gave no log-probs
    mean_logprob: float
    min_logprob: float
    mean_entropy: float
    tokens: int  # every generated token with a log-prob, the opening ones included
    low_fraction: float = math.nan
    scored: int = 0  # the tokens the signals are means over (see the module docstring)

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


class _Sums:
    """Sums of one set of tokens' signals."""

    __slots__ = ("lp", "h", "hn", "low", "n")

    def __init__(self) -> None:
        self.lp = self.h = 0.0
        self.low = self.n = self.hn = 0

    def add(self, event: TokenEvent, low: bool) -> None:
        self.lp += event.logprob
        if math.isfinite(event.entropy):  # a step without top log-probs has none
            self.h += event.entropy
            self.hn += 1
        self.low += low
        self.n += 1

    @property
    def mean_entropy(self) -> float:
        """Over the tokens whose entropy is known (NaN if none's is)."""
        return self.h / self.hn if self.hn else math.nan


class RunningConfidence:
    """Confidence accumulated token by token (for early escalation while streaming).

    O(1) per token; it remembers the answer's n-grams (`repeat_ngram`) to spot repeats.
    """

    __slots__ = ("_weights", "_log_floor", "_min_lp", "_n", "_first", "_scored", "_all",
                 "_recent", "_seen")

    def __init__(self, weights: ConfidenceWeights | None = None) -> None:
        self._weights = weights or ConfidenceWeights()
        self._log_floor = math.log(self._weights.low_floor)
        self._min_lp = math.inf
        self._n = 0
        self._first: TokenEvent | None = None  # kept for answers no longer than the opening
        self._scored = _Sums()  # after the opening, neither forced nor a repeat
        self._all = _Sums()  # after the opening
        self._recent: deque[int | str] = deque(maxlen=max(1, self._weights.repeat_ngram))
        self._seen: set[tuple[int | str, ...]] = set()

    def add(self, event: TokenEvent) -> None:
        """Take one generated token into account."""
        # token_id -1 marks text flushed without a model step (held-back stop-string prefix)
        if event.token_id < 0 or math.isnan(event.logprob):
            return
        w = self._weights
        self._n += 1
        repeat = self._repeats(event)
        if self._n == 1:
            self._first = event
        if self._n <= w.opening_tokens:
            return
        low = event.logprob < self._log_floor
        self._min_lp = min(self._min_lp, event.logprob)
        self._all.add(event, low)
        if not repeat and not event.entropy < w.forced_entropy:
            self._scored.add(event, low)

    def _repeats(self, event: TokenEvent) -> bool:
        """Whether `event` completes an n-gram the answer already holds (then remember it)."""
        if self._weights.repeat_ngram == 0:
            return False
        # an id the engine could not report is told apart by its text
        self._recent.append(event.text if event.token_id == UNKNOWN_TOKEN_ID
                            else event.token_id)
        if len(self._recent) < self._weights.repeat_ngram:
            return False
        gram = tuple(self._recent)
        if gram in self._seen:
            return True
        self._seen.add(gram)
        return False

    @property
    def tokens(self) -> int:
        return self._n

    def value(self) -> Confidence:
        """The score of the tokens seen so far (NO_CONFIDENCE before the first one)."""
        if self._n == 0:
            return NO_CONFIDENCE
        w = self._weights
        sums = self._scored if self._scored.n else self._all
        if sums.n == 0:
            # an answer no longer than its opening: score the first token rather than nothing
            assert self._first is not None
            lp, h = self._first.logprob, self._first.entropy
            return _confidence(w, lp, lp, h, float(lp < self._log_floor), self._n, 0)
        return _confidence(w, sums.lp / sums.n, self._min_lp, sums.mean_entropy,
                           sums.low / sums.n, self._n, self._scored.n)


def _confidence(w: ConfidenceWeights, mean_lp: float, min_lp: float, mean_h: float,
                low: float, n: int, scored: int) -> Confidence:
    # No step's entropy known (a server that sends log-probs but no top log-probs): the mean
    # surprisal of the chosen tokens stands in, the entropy's estimate from tokens sampled
    # from the step distributions (the reported mean_entropy stays NaN: unknown).
    h = mean_h if math.isfinite(mean_h) else -mean_lp
    z = w.mean_logprob * mean_lp - w.low_fraction * low - w.mean_entropy * h + w.bias
    return Confidence(_sigmoid(z), mean_lp, min_lp, mean_h, n, low, scored)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """After `tokens` tokens, escalate if the running score is below threshold - `margin`."""

    tokens: int
    margin: float

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError("EarlyEscalation checkpoint tokens must be at least 1")
        if not 0 <= self.margin <= 1:  # scores and thresholds lie in [0, 1]
            raise ValueError("EarlyEscalation checkpoint margins must each be in [0, 1]")

    def fails(self, running_score: float, threshold: float) -> bool:
        """The check at this checkpoint: the score is clearly below threshold (NaN: never)."""
        return running_score < threshold - self.margin


@dataclass(frozen=True, slots=True)
class EarlyEscalation:
    """Stop local generation early when the answer so far is clearly unconfident.

    The running score is checked once at each checkpoint (K tokens in): "clearly" means
    below `threshold - margin`. Early checkpoints need wide margins (few tokens are a noisy
    estimate), later ones narrower; the margins keep the early rule from escalating answers
    the full answer's score would have kept local. `benchmarks.early_escalation` chooses them
    on held-in prompts and reports the rest.
    """

    checkpoints: tuple[Checkpoint, ...] = (Checkpoint(16, 0.1),)

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ValueError("EarlyEscalation needs at least one checkpoint")
        ks = [c.tokens for c in self.checkpoints]
        if ks != sorted(set(ks)):
            raise ValueError("EarlyEscalation checkpoints must have increasing token counts")

    @classmethod
    def from_lists(cls, tokens: Sequence[int], margins: Sequence[float]) -> EarlyEscalation:
        """The rule with checkpoints `tokens[i]` and margins `margins[i]` (as config lists)."""
        if len(tokens) != len(margins):
            raise ValueError(f"EarlyEscalation needs one margin per checkpoint: {len(tokens)} "
                             f"token counts, {len(margins)} margins")
        return cls(tuple(Checkpoint(k, m) for k, m in zip(tokens, margins, strict=True)))

    @classmethod
    def single(cls, tokens: int = 16, margin: float = 0.1) -> EarlyEscalation:
        """One check after `tokens` tokens with `margin`."""
        return cls((Checkpoint(tokens, margin),))

    def fires(self, running: RunningConfidence, threshold: float) -> bool:
        """True when the stream has just reached a checkpoint whose check fails (`check`
        over the latest token alone)."""
        return self.check(running.tokens - 1, running, threshold) is not None

    def crossed(self, before: int, now: int) -> Checkpoint | None:
        """The last checkpoint passed while the token count went from `before` to `now`.

        For consumers that take tokens in batches (a paced stream): the check then runs on
        the first batch that reaches K, over all its tokens, with that checkpoint's margin.
        """
        passed = [c for c in self.checkpoints if before < c.tokens <= now]
        return passed[-1] if passed else None

    def check(self, before: int, running: RunningConfidence,
              threshold: float) -> Checkpoint | None:
        """The checkpoint whose check failed since `before` tokens, or None.

        The score is computed only when a checkpoint was passed; a NaN score never fires.
        """
        c = self.crossed(before, running.tokens)
        if c is None:
            return None
        return c if c.fails(running.value().score, threshold) else None
