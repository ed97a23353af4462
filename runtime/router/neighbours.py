"""The neighbour part of a blended router: what the nearest training prompts say.

Two forms, both over the k nearest training prompts by cosine similarity of their sentence
embeddings:

- `NeighbourStack` (the default since router format 4): a second, small multinomial
  logistic regression (a *stacker*) over the n-gram LR's four outcome probabilities, the
  neighbours' weak and strong accuracy at several k, and how similar the nearest ones are.
  It learns how far to trust each source, per prompt: a prompt with close neighbours can
  lean on them, one unlike anything in training on the LR. On the seed-0 development
  splits it lifted APGR from 0.696 to 0.703 (random) and 0.583 to 0.616 (held-out
  subjects) over the linear vote below.
- `NeighbourBlend` (format 3): their mean gain (strong right - weak right), blended
  linearly with the LR's gain, with a fixed weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from runtime.router.base import FloatArray, softmax_rows

_CHUNK = 512  # query rows per similarity block: bounded memory on a device
STACK_KS = (10, 30, 100)  # neighbour counts whose accuracies the stacker reads


def nearest(train: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], k: int,
            exclude_self: bool = False) -> tuple[npt.NDArray[np.intp], FloatArray]:
    """Indices of the `k` most similar training rows per query, most similar first, and
    their similarities. `exclude_self`: the queries *are* the training rows, and a row is
    not its own neighbour (leave-one-out)."""
    k = min(k, train.shape[0] - (1 if exclude_self else 0))
    if k < 1:
        raise ValueError("not enough training vectors for a neighbour")
    idx = np.empty((queries.shape[0], k), dtype=np.intp)
    sims = np.empty((queries.shape[0], k))
    for lo in range(0, queries.shape[0], _CHUNK):
        sim = queries[lo : lo + _CHUNK] @ train.T
        if exclude_self:
            rows = np.arange(sim.shape[0])
            sim[rows, lo + rows] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        idx[lo : lo + _CHUNK] = np.take_along_axis(top, order, axis=1)
        sims[lo : lo + _CHUNK] = np.take_along_axis(top_sim, order, axis=1)
    return idx, sims


def neighbour_features(train: npt.NDArray[np.float32], outcomes: npt.NDArray[np.uint8],
                       queries: npt.NDArray[np.float32], ks: tuple[int, ...],
                       exclude_self: bool = False) -> FloatArray:
    """Per query: the weak and the strong model's accuracy over its k nearest training
    prompts for each k of `ks`, then the similarity of the nearest, and the mean
    similarity of the `ks[0]` and of the `ks[-1]` nearest."""
    idx, sims = nearest(train, queries, max(ks), exclude_self)
    weak = (outcomes & 1).astype(np.float64)[idx]
    strong = (outcomes >> 1).astype(np.float64)[idx]
    cols = []
    for k in ks:
        cols += [weak[:, :k].mean(axis=1), strong[:, :k].mean(axis=1)]
    cols += [sims[:, 0], sims[:, : ks[0]].mean(axis=1), sims.mean(axis=1)]
    out: FloatArray = np.column_stack(cols)
    return out


@dataclass(frozen=True, slots=True)
class NeighbourBlend:
    """Training vectors and gains, and how much of the score their vote carries.

    `vectors` are unit-length embeddings (float16: a router file stays ~0.8 KB per
    training prompt); `gains` are strong - weak correctness of the same prompts.
    """

    model: str  # the embedding model the vectors come from
    vectors: npt.NDArray[np.float16]
    gains: npt.NDArray[np.int8]
    k: int
    weight: float  # score = (1 - weight) * LR gain + weight * neighbour gain
    # `vectors` widened once for scoring (float16 has no BLAS): +2 bytes per value.
    _wide: npt.NDArray[np.float32] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v, g = self.vectors, self.gains
        if v.ndim != 2 or g.shape != (v.shape[0],) or v.shape[0] == 0:
            raise ValueError(f"neighbour arrays of shapes {v.shape} and {g.shape}")
        object.__setattr__(self, "_wide", v.astype(np.float32))

    def describe(self) -> dict[str, object]:
        return {"kind": "vote", "model": self.model, "k": self.k, "weight": self.weight}

    def gain(self, queries: npt.ArrayLike) -> FloatArray:
        """Mean gain of the `k` most similar training prompts, one value per query row."""
        q = np.asarray(queries, dtype=np.float32)
        idx, _ = nearest(self._wide, q, self.k)
        out: FloatArray = self.gains.astype(np.float64)[idx].mean(axis=1)
        return out

    def blend(self, lr_gain: FloatArray, queries: npt.ArrayLike) -> FloatArray:
        """The blended score of prompts whose LR gain and embeddings are given."""
        out: FloatArray = (1.0 - self.weight) * lr_gain + self.weight * self.gain(queries)
        return out


@dataclass(frozen=True, slots=True)
class NeighbourStack:
    """Training vectors and outcomes, and the stacker that reads them beside the LR.

    `outcomes` are weak-right + 2 * strong-right per training prompt (the LR's classes);
    the stacker's input is [LR outcome probabilities | `neighbour_features`],
    standardised by `mean`/`std`; `coef` has one row per outcome class (a class absent
    from its training data has zeros and an intercept of -inf).
    """

    model: str
    vectors: npt.NDArray[np.float16]
    outcomes: npt.NDArray[np.uint8]
    ks: tuple[int, ...]
    mean: FloatArray
    std: FloatArray
    coef: FloatArray
    intercept: FloatArray
    _wide: npt.NDArray[np.float32] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        width = 4 + 2 * len(self.ks) + 3
        n = self.vectors.shape[0] if self.vectors.ndim == 2 else 0
        if n == 0 or self.outcomes.shape != (n,):
            raise ValueError(f"neighbour arrays of shapes {self.vectors.shape} and "
                             f"{self.outcomes.shape}")
        if not self.ks or min(self.ks) < 1 or list(self.ks) != sorted(self.ks):
            raise ValueError(f"neighbour counts must be ascending and >= 1, not {self.ks}")
        if (self.mean.shape != (width,) or self.std.shape != (width,)
                or self.coef.shape != (4, width) or self.intercept.shape != (4,)):
            raise ValueError(f"stacker shapes {self.coef.shape}/{self.mean.shape} do not "
                             f"match {len(self.ks)} neighbour counts")
        object.__setattr__(self, "_wide", self.vectors.astype(np.float32))

    def describe(self) -> dict[str, object]:
        return {"kind": "stack", "model": self.model, "ks": list(self.ks)}

    def probabilities(self, lr_probs: FloatArray, queries: npt.ArrayLike) -> FloatArray:
        """P(outcome) per query, from the LR's probabilities and the query embeddings."""
        q = np.asarray(queries, dtype=np.float32)
        stats = neighbour_features(self._wide, self.outcomes, q, self.ks)
        x = (np.column_stack([lr_probs, stats]) - self.mean) / self.std
        return softmax_rows(x @ self.coef.T + self.intercept)
