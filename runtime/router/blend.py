"""Training a blended router: the n-gram LR plus what the nearest training prompts say.

By default (`StackParams`) a *stacker* reads, per prompt, the LR's four outcome
probabilities and the outcomes of its nearest training prompts by sentence embedding
(`neighbours.NeighbourStack`). It is fitted on out-of-fold LR probabilities: the training
data is cut in `folds` seeded parts, an n-gram LR fitted on the rest scores each part, and
each training prompt's neighbours are found among the others (leave-one-out), so the
stacker learns how far an LR and a vote that did not see a prompt can be trusted. The
final router is the n-gram LR on all training prompts, the stacker, and every training
prompt's vector and outcome. Cost: `folds` + 1 LR fits instead of one.

`BlendParams` gives the earlier, linear form instead: score = (1 - w) * LR gain + w * mean
gain of the k nearest (fixed k = 30, w = 0.2, the best on the seed-0 development splits of
`benchmarks.routing`; a grid is searched on an inner validation part). It is also what
training falls back to on fewer than `StackParams.min_rows` prompts, or when a fold's
part holds a single outcome. On the development splits the stacker scored 0.703 / 0.616
APGR (random / held-out subjects) against the linear vote's 0.696 / 0.583.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from runtime.router.base import BoolArray, RouterDataError, outcome_classes
from runtime.router.embedding import Embedder
from runtime.router.learned import LearnedRouter, TrainParams, per_outcome
from runtime.router.metrics import routing_curve
from runtime.router.neighbours import (
    STACK_KS,
    NeighbourBlend,
    NeighbourStack,
    neighbour_features,
)

NAME = "hashed_lr_knn"


@dataclass(frozen=True, slots=True)
class BlendParams:
    """k and the vote's weight; with several of either, the grid searched on the inner
    validation part (`validation_share` of the training data)."""

    ks: tuple[int, ...] = (30,)
    weights: tuple[float, ...] = (0.2,)
    validation_share: float = 0.25

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError("BlendParams.ks must be one or more neighbour counts >= 1")
        if not self.weights or not all(0 <= w <= 1 for w in self.weights):
            raise ValueError("BlendParams.weights must be one or more weights in [0, 1]")
        if not 0 < self.validation_share < 1:
            raise ValueError("BlendParams.validation_share must be in (0, 1)")


@dataclass(frozen=True, slots=True)
class StackParams:
    """The stacked form's knobs; the defaults are the development split's."""

    ks: tuple[int, ...] = STACK_KS
    folds: int = 5  # parts for the out-of-fold LR probabilities
    c: float = 1.0  # inverse L2 strength of the stacker
    min_rows: int = 100  # fewer training prompts: the linear vote (a k above n - 1 is cut)

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1 or list(self.ks) != sorted(set(self.ks)):
            raise ValueError("StackParams.ks must be ascending, distinct neighbour counts >= 1")
        if self.folds < 2:
            raise ValueError("StackParams.folds must be at least 2")
        if self.c <= 0:
            raise ValueError("StackParams.c must be positive")
        if self.min_rows < 4 * self.folds:
            raise ValueError("StackParams.min_rows must allow four rows per fold")


def train_blended(
    prompts: Sequence[str], weak: BoolArray, strong: BoolArray, encoder: Embedder,
    params: TrainParams | None = None, blend: BlendParams | None = None,
    ngram: LearnedRouter | None = None, stack: StackParams | None = None,
) -> LearnedRouter:
    """An n-gram router plus its embedding neighbours: stacked, or with `blend` given (or
    too little data to stack) the linear vote.

    `ngram`, an n-gram router already trained on these prompts, is reused as the LR part;
    the same data, params and encoder vectors give the same router.
    """
    params = params or TrainParams()
    stack = stack or StackParams()
    if params.features.embedding:
        raise RouterDataError("a blended router's LR part must be n-gram only")
    weak, strong = np.asarray(weak, dtype=bool), np.asarray(strong, dtype=bool)
    vectors = np.asarray(encoder.encode(prompts), dtype=np.float32)
    if ngram is None:
        ngram = LearnedRouter.train(prompts, weak, strong, params)
    elif ngram.embedding_model or ngram.trained_rows != len(prompts):
        raise RouterDataError("the n-gram router given was not trained on these prompts")
    if blend is None and len(prompts) >= stack.min_rows:
        stacker = train_stacker(prompts, weak, strong, vectors, params, stack)
        if stacker is not None:
            return replace(ngram, name=NAME, neighbours=replace(stacker, model=encoder.name),
                           encoder=encoder, threshold=0.0, fallback_threshold=None)
    blend = blend or BlendParams()
    k, weight = choose_knobs(prompts, weak, strong, vectors, params, blend)
    gains = (strong.astype(np.int8) - weak.astype(np.int8)).astype(np.int8)
    neighbours = NeighbourBlend(model=encoder.name, vectors=vectors.astype(np.float16),
                                gains=gains, k=k, weight=weight)
    return replace(ngram, name=NAME, neighbours=neighbours, encoder=encoder,
                   threshold=0.0, fallback_threshold=None)


def choose_knobs(
    prompts: Sequence[str], weak: BoolArray, strong: BoolArray, vectors: np.ndarray,
    params: TrainParams, blend: BlendParams,
) -> tuple[int, float]:
    """(k, weight) with the best APGR on a seeded inner validation part of the data
    (the one pair given, without any fitting, when the grid has a single point)."""
    if len(blend.ks) == 1 and len(blend.weights) == 1:
        return blend.ks[0], blend.weights[0]
    n = len(prompts)
    order = np.random.default_rng(params.seed).permutation(n)
    cut = n - max(1, int(round(blend.validation_share * n)))
    fit, val = order[:cut], order[cut:]
    if weak[val].mean() == strong[val].mean():
        return blend.ks[0], 0.0  # PGR undefined on this validation part: no evidence
    inner = LearnedRouter.train([prompts[i] for i in fit], weak[fit], strong[fit], params)
    lr_gain = inner.score([prompts[i] for i in val])
    best = (-np.inf, blend.ks[0], 0.0)
    for k in blend.ks:
        vote = NeighbourBlend(model="", vectors=vectors[fit].astype(np.float16),
                              gains=(strong[fit].astype(np.int8) - weak[fit].astype(np.int8)),
                              k=k, weight=1.0).gain(vectors[val])
        for w in blend.weights:
            apgr = routing_curve((1.0 - w) * lr_gain + w * vote, weak[val], strong[val]).apgr()
            # Strictly better only: ties keep the smaller k and weight (listed first).
            if apgr > best[0] + 1e-12:
                best = (apgr, k, w)
    return int(best[1]), float(best[2])


def train_stacker(
    prompts: Sequence[str], weak: BoolArray, strong: BoolArray, vectors: np.ndarray,
    params: TrainParams, stack: StackParams,
) -> NeighbourStack | None:
    """The stacker over out-of-fold LR probabilities and leave-one-out neighbour outcomes
    (None when a fold's training part holds a single outcome: too little to stack)."""
    n = len(prompts)
    outcomes = outcome_classes(weak, strong)
    part = np.random.default_rng(params.seed).permutation(n) % stack.folds
    oof = np.zeros((n, 4))
    for f in range(stack.folds):
        fit, held = np.flatnonzero(part != f), np.flatnonzero(part == f)
        if np.unique(outcomes[fit]).size < 2:
            return None
        inner = LearnedRouter.train([prompts[int(i)] for i in fit], weak[fit], strong[fit],
                                    params)
        oof[held] = inner.lr_probabilities([prompts[int(i)] for i in held])
    train = vectors.astype(np.float16)  # scored as stored, so training sees what scoring will
    stored = train.astype(np.float32)
    ks = tuple(sorted({min(k, n - 1) for k in stack.ks}))
    stats = neighbour_features(stored, outcomes, stored, ks, exclude_self=True)
    x = np.column_stack([oof, stats])
    scaler = StandardScaler().fit(x)  # a constant column gets scale 1, not 0
    std = np.asarray(scaler.scale_, dtype=np.float64)
    model = LogisticRegression(C=stack.c, max_iter=params.max_iter, random_state=params.seed)
    model.fit((x - scaler.mean_) / std, outcomes)
    coef, intercept = per_outcome(model, x.shape[1])
    return NeighbourStack(model="", vectors=train, outcomes=outcomes, ks=ks,
                          mean=np.asarray(scaler.mean_, dtype=np.float64), std=std,
                          coef=coef, intercept=intercept)
