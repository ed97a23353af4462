"""The learned router: a multinomial logistic regression over the four outcomes.

For each training prompt the outcome is one of: both models wrong, only the weak (local)
one right, only the strong (cloud) one right, both right. Fitting all four at once (rather
than the single label "strong wins") uses every labelled row, and gives the score that
ranks best: the expected accuracy gain of the cloud, P(strong only) - P(weak only).
Probabilities come from a log-loss fit, so `p_strong_wins` is calibrated on data like the
training set; `threshold` is set separately by `calibration.calibrate`. Until then it is 0.0:
"cloud" wherever the cloud is expected to be more accurate, which on most data is nearly
every prompt (the stronger model is seldom expected to be worse), so `tandem router train`
says which share of its training prompts that would send and that the file is uncalibrated.

With `FeatureSpec.embedding` set, a sentence embedding of the prompt is appended to the
n-gram features, and a second, n-gram-only model is fitted beside the full one: a device
without the embedding model (the `router-embed` extra) scores with that fallback.
With `neighbours` set (`blend.train_blended`), the nearest training prompts in embedding
space join in: a `NeighbourStack` re-estimates the outcome probabilities from the n-gram
model's and the neighbours' outcomes, a `NeighbourBlend` (older files) mixes their mean gain
into the score. Without the embedding model the router scores with the n-gram model alone,
against its own `fallback_threshold`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from runtime.router.base import (
    STRONG_ONLY,
    WEAK_ONLY,
    BoolArray,
    FloatArray,
    RouterDataError,
    RouterVerdict,
    outcome_classes,
    right_probabilities,
    softmax_rows,
)
from runtime.router.embedding import Embedder
from runtime.router.features import FeatureSpec, FeatureState, Featurizer
from runtime.router.neighbours import NeighbourBlend, NeighbourStack

MIN_ROWS = 20


@dataclass(frozen=True, slots=True)
class TrainParams:
    """Training knobs; the defaults are the ones the routing benchmark reports."""

    c: float = 0.3  # inverse L2 strength of the logistic regression
    max_iter: int = 3000
    seed: int = 0
    features: FeatureSpec = FeatureSpec()


@dataclass(frozen=True, slots=True)
class LearnedRouter:
    """A trained router: feature state plus per-outcome linear weights.

    `coef` has one row per outcome class (`BOTH_WRONG` .. `BOTH_RIGHT`); a class absent
    from the training data has a row of zeros and an intercept of -inf.
    """

    spec: FeatureSpec
    features: FeatureState
    coef: npt.NDArray[np.float32]
    intercept: FloatArray
    threshold: float = 0.0
    params: TrainParams = TrainParams()
    trained_rows: int = 0
    name: str = "hashed_lr"
    # The n-gram-only model of an embedding router (None for an n-gram router).
    fallback_coef: npt.NDArray[np.float32] | None = None
    fallback_intercept: FloatArray | None = None
    encoder: Embedder | None = field(default=None, compare=False, repr=False)
    # The embedding-neighbour part of a blended router (None: the LR alone).
    neighbours: NeighbourStack | NeighbourBlend | None = field(default=None, compare=False,
                                                                repr=False)
    # Threshold for the scores of the n-gram fallback (None: use `threshold`).
    fallback_threshold: float | None = None
    # Whether `threshold` was chosen (`calibration.calibrate`, `with_threshold`): False
    # straight from training, where it is 0.0, "the cloud whenever it is expected to be
    # more accurate", which on most data sends nearly every prompt to the cloud.
    calibrated: bool = False

    @classmethod
    def train(
        cls, prompts: Sequence[str], weak: BoolArray, strong: BoolArray,
        params: TrainParams | None = None, encoder: Embedder | None = None,
        ngram: LearnedRouter | None = None,
    ) -> LearnedRouter:
        """Fit on labelled prompts; the same data and params give the same router.

        `encoder` is required when `params.features.embedding` names an embedding model.
        `ngram`, an n-gram router trained on the same prompts and knobs, becomes the
        fallback model as it is (it is what the fallback fit would give), saving that fit.
        """
        params = params or TrainParams()
        if len(prompts) < MIN_ROWS:
            raise RouterDataError(f"need at least {MIN_ROWS} labelled prompts, got {len(prompts)}")
        if not len(prompts) == len(weak) == len(strong):
            raise RouterDataError("prompts, weak and strong labels differ in length")
        outcome = outcome_classes(weak, strong).astype(np.int64)
        if np.unique(outcome).size < 2:
            raise RouterDataError("the labels have a single outcome: nothing to learn")
        spec = params.features
        vectors = None
        if spec.embedding:
            if encoder is None or encoder.name != spec.embedding:
                raise RouterDataError(f"training this router needs the {spec.embedding} encoder")
            vectors = np.asarray(encoder.encode(prompts), dtype=np.float64)
        featurizer = Featurizer(spec).fit(prompts, vectors)
        x = featurizer.transform(prompts)
        fallback: tuple[npt.NDArray[np.float32], FloatArray] | None = None
        if vectors is not None:
            fallback = (_fit(x, outcome, params) if ngram is None
                        else _reuse(ngram, featurizer, params))
            x = sparse.hstack([x, sparse.csr_matrix(featurizer.embedding_block(vectors))],
                              format="csr")
        coef, intercept = _fit(x, outcome, params)
        assert featurizer.state is not None
        return cls(spec=spec, features=featurizer.state, coef=coef, intercept=intercept,
                   params=params, trained_rows=len(prompts),
                   name="hashed_emb_lr" if spec.embedding else "hashed_lr",
                   fallback_coef=fallback[0] if fallback else None,
                   fallback_intercept=fallback[1] if fallback else None, encoder=encoder)

    @property
    def embedding_model(self) -> str:
        """The sentence-embedding model this router's full scoring needs ("" = none)."""
        return self.spec.embedding or (self.neighbours.model if self.neighbours else "")

    @property
    def uses_embedding(self) -> bool:
        """Whether verdicts use the sentence embedding (False: the n-gram fallback)."""
        return bool(self.embedding_model) and self.encoder is not None

    @property
    def active_threshold(self) -> float:
        """The threshold for the scores this router computes as it is loaded now."""
        if self.embedding_model and self.encoder is None and self.fallback_threshold is not None:
            return self.fallback_threshold
        return self.threshold

    def with_encoder(self, encoder: Embedder | None) -> LearnedRouter:
        """A copy scoring with `encoder` (None: the n-gram fallback of an embedding router)."""
        if encoder is not None and encoder.name != self.embedding_model:
            raise RouterDataError(f"this router needs {self.embedding_model or 'no'} embeddings, "
                                  f"not {encoder.name}")
        return replace(self, encoder=encoder)

    def outcome_probabilities(self, prompts: Sequence[str]) -> FloatArray:
        """P(outcome) per prompt: columns `BOTH_WRONG`, `WEAK_ONLY`, `STRONG_ONLY`, `BOTH_RIGHT`.

        A stacked router's come from its stacker when the encoder is loaded.
        """
        probs = self.lr_probabilities(prompts)
        if isinstance(self.neighbours, NeighbourStack) and self.encoder is not None:
            return self.neighbours.probabilities(probs, self.encoder.encode(prompts))
        return probs

    def lr_probabilities(self, prompts: Sequence[str]) -> FloatArray:
        """P(outcome) from the logistic regression alone (with its embedding columns, if any)."""
        featurizer = Featurizer(self.spec, self.features)
        x = featurizer.transform(prompts)
        coef, intercept = self.coef, self.intercept
        if self.spec.embedding and self.encoder is not None:  # embedding columns in the LR
            assert self.encoder is not None
            block = featurizer.embedding_block(self.encoder.encode(prompts))
            x = sparse.hstack([x, sparse.csr_matrix(block)], format="csr")
        elif self.fallback_coef is not None and self.fallback_intercept is not None:
            coef, intercept = self.fallback_coef, self.fallback_intercept
        return softmax_rows(np.asarray(x @ coef.T.astype(np.float64)) + intercept)

    def score(self, prompts: Sequence[str]) -> FloatArray:
        """Expected accuracy gain of the cloud model: P(strong only) - P(weak only).

        An older blended router (`NeighbourBlend`) mixes in the neighbours' mean gain when
        its encoder is loaded.
        """
        return self._score(prompts, self.outcome_probabilities(prompts))

    def _score(self, prompts: Sequence[str], p: FloatArray) -> FloatArray:
        gain: FloatArray = p[:, STRONG_ONLY] - p[:, WEAK_ONLY]
        if isinstance(self.neighbours, NeighbourBlend) and self.encoder is not None:
            return self.neighbours.blend(gain, self.encoder.encode(prompts))
        return gain

    def p_local_ok(self, prompts: Sequence[str]) -> FloatArray:
        """Probability that the local (weak) model's answer is right."""
        return right_probabilities(self.outcome_probabilities(prompts))[0]

    def verdict(self, prompt: str) -> RouterVerdict:
        """The policy's input for one prompt: score, threshold, P(strong wins), and
        P(right) of each model (the online bandit's context)."""
        p = self.outcome_probabilities([prompt])
        local, cloud = right_probabilities(p)
        return RouterVerdict(
            router=self.name if self.uses_embedding or not self.embedding_model
            else f"{self.name}:ngram-fallback",
            score=float(self._score([prompt], p)[0]),
            threshold=self.active_threshold,
            p_strong_wins=float(p[0, STRONG_ONLY]),
            p_local_right=float(local[0]),
            p_cloud_right=float(cloud[0]),
        )

    def with_threshold(self, threshold: float, fallback: float | None = None) -> LearnedRouter:
        """A copy whose verdicts say "cloud" above `threshold` (`fallback`: n-gram scores),
        marked `calibrated`."""
        return replace(self, threshold=float(threshold),
                       fallback_threshold=None if fallback is None else float(fallback),
                       calibrated=True)


def _reuse(ngram: LearnedRouter, featurizer: Featurizer, params: TrainParams
           ) -> tuple[npt.NDArray[np.float32], FloatArray]:
    """`ngram`'s weights, if it was fitted like this router's fallback would be."""
    spec = replace(featurizer.spec, embedding="", embedding_weight=0.0)
    assert featurizer.state is not None
    same = (ngram.spec == spec and ngram.fallback_coef is None
            and replace(ngram.params, features=spec) == replace(params, features=spec)
            and np.array_equal(ngram.features.word_idf, featurizer.state.word_idf)
            and np.array_equal(ngram.features.char_idf, featurizer.state.char_idf)
            and np.array_equal(ngram.features.stem_idf, featurizer.state.stem_idf))
    if not same:
        raise RouterDataError("the n-gram router given as fallback was trained differently")
    return ngram.coef, ngram.intercept


def _fit(x: sparse.csr_matrix, outcome: npt.NDArray[np.int64], params: TrainParams
         ) -> tuple[npt.NDArray[np.float32], FloatArray]:
    """Multinomial LR weights laid out per outcome class, whatever classes occur."""
    model = LogisticRegression(C=params.c, max_iter=params.max_iter, random_state=params.seed)
    model.fit(x, outcome)
    coef, intercept = per_outcome(model, x.shape[1])
    return coef.astype(np.float32), intercept


def per_outcome(model: LogisticRegression, width: int) -> tuple[FloatArray, FloatArray]:
    """A fitted LR's weights as one row per outcome class (`BOTH_WRONG` .. `BOTH_RIGHT`);
    a class absent from its training data gets zeros and an intercept of -inf."""
    coef = np.zeros((4, width))
    intercept = np.full(4, -np.inf)
    classes = [int(c) for c in model.classes_]
    if len(classes) == 2:  # binary LR stores one row: logit of classes[1] vs classes[0]
        coef[classes[1]] = model.coef_[0]
        intercept[classes[0]] = 0.0
        intercept[classes[1]] = float(model.intercept_[0])
    else:
        for row, c in enumerate(classes):
            coef[c] = model.coef_[row]
            intercept[c] = float(model.intercept_[row])
    return coef, intercept
