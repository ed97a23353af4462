"""The neighbour term of a blended router: mean cloud gain of the nearest training prompts.

A prompt's k nearest training prompts by cosine similarity of their sentence embeddings
vote with their observed gain (strong right - weak right, so -1, 0 or +1). That mean is
an estimate of the same quantity the logistic regression scores, the expected accuracy
gain of the cloud, so the two are blended linearly without rescaling. On the seed-0
development splits a blend of 0.2 with k = 30 lifted APGR from 0.686 to 0.694 (random)
and 0.573 to 0.581 (held-out subjects); `blend.train_blended` picks k and the weight on
an inner validation part of the training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from runtime.router.base import FloatArray

_CHUNK = 512  # query rows per similarity block: bounded memory on a device


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

    def gain(self, queries: npt.ArrayLike) -> FloatArray:
        """Mean gain of the `k` most similar training prompts, one value per query row."""
        q = np.asarray(queries, dtype=np.float32)
        train = self.vectors.astype(np.float32)
        k = min(self.k, train.shape[0])
        out = np.empty(q.shape[0])
        gains = self.gains.astype(np.float64)
        for lo in range(0, q.shape[0], _CHUNK):
            sim = q[lo : lo + _CHUNK] @ train.T
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            out[lo : lo + _CHUNK] = gains[top].mean(axis=1)
        return out

    def blend(self, lr_gain: FloatArray, queries: npt.ArrayLike) -> FloatArray:
        """The blended score of prompts whose LR gain and embeddings are given."""
        out: FloatArray = (1.0 - self.weight) * lr_gain + self.weight * self.gain(queries)
        return out
