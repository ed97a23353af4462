"""Baseline routers the learned one is measured against (RouteLLM's comparison set).

`random` ignores the prompt; `knn` scores a prompt by the share of its nearest training
prompts (TF-IDF cosine) where the strong model won; `tfidf_lr` is a logistic regression
on word 1-2-gram TF-IDF predicting "strong right and weak wrong".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from runtime.router.base import BoolArray, FloatArray


def strong_wins(weak: BoolArray, strong: BoolArray) -> BoolArray:
    """The usual routing label: the strong model is right where the weak one is wrong."""
    out: BoolArray = np.asarray(strong, dtype=bool) & ~np.asarray(weak, dtype=bool)
    return out


def _vectorizer() -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)


class RandomRouter:
    """Uniform random scores: the floor every router must clear."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def score(self, prompts: Sequence[str]) -> FloatArray:
        out: FloatArray = self._rng.random(len(prompts))
        return out


class KnnRouter:
    """Mean "strong wins" label of the k most similar training prompts."""

    name = "knn"

    def __init__(self, prompts: Sequence[str], weak: BoolArray, strong: BoolArray,
                 k: int = 100) -> None:
        self._vec = _vectorizer()
        self._train = sparse.csr_matrix(self._vec.fit_transform(prompts))
        self._label = strong_wins(weak, strong).astype(np.float64)
        self._k = min(k, len(prompts))

    def score(self, prompts: Sequence[str]) -> FloatArray:
        x = self._vec.transform(prompts)
        out = np.empty(len(prompts))
        for lo in range(0, len(prompts), 512):  # bounded memory: 512 rows of similarities
            sim = (x[lo : lo + 512] @ self._train.T).toarray()
            top = np.argpartition(-sim, self._k - 1, axis=1)[:, : self._k]
            out[lo : lo + 512] = self._label[top].mean(axis=1)
        return out


class TfidfLrRouter:
    """Logistic regression on word 1-2-gram TF-IDF, predicting "strong wins"."""

    name = "tfidf_lr"

    def __init__(self, prompts: Sequence[str], weak: BoolArray, strong: BoolArray,
                 c: float = 1.0) -> None:
        self._vec = _vectorizer()
        x = self._vec.fit_transform(prompts)
        self._model = LogisticRegression(C=c, max_iter=3000).fit(x, strong_wins(weak, strong))

    def score(self, prompts: Sequence[str]) -> FloatArray:
        out: FloatArray = self._model.predict_proba(self._vec.transform(prompts))[:, 1]
        return out
