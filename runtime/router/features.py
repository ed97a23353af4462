"""Prompt features for the learned router: hashed TF-IDF n-grams plus difficulty cues.

Words (1-2-grams) and characters (2-5-grams inside word boundaries) are hashed into fixed
spaces, so a router file holds no vocabulary, only IDF weights and coefficients. A dozen
dense "difficulty" cues (length, how rare the words are, digits, multiple-choice layout)
carry across topics better than n-grams do: they are what lifts held-out-subject quality.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer

from runtime.router.base import FloatArray

# Splits a multiple-choice prompt into its stem and its options block ("\nA. ...").
_OPTIONS = re.compile(r"\n\(?A[.)]\s")
_OPTION_SPLIT = re.compile(r"\n\(?[A-J][.)]\s")
_UNSEEN_IDF = 12.0  # IDF given to a hash bucket never seen in training (rarer than any seen)
_MIN_CUE_STD = 1e-6  # below this a cue counts as constant over the training prompts
DENSE_NAMES: tuple[str, ...] = (
    "log_chars", "log_stem_chars", "log_option_chars", "idf_mean", "idf_max", "idf_p90",
    "idf_p50", "log_words", "digit_share", "option_digit_share", "lines", "option_len_cv",
    "log_option_len",
)
# How the options relate to each other and to the question, by their words: options that
# share most words (fine distinctions), a question whose words one option repeats, numbers
# as options. Since router format 6 (`FeatureSpec.option_cues`).
OPTION_CUE_NAMES: tuple[str, ...] = (
    "option_overlap_mean", "option_overlap_max", "stem_option_overlap_mean",
    "stem_option_overlap_max", "stem_option_overlap_std", "numeric_option_share",
)
_WORD = re.compile(r"\w+")
_STOP_WORDS = frozenset((
    "the", "a", "an", "of", "to", "in", "and", "or", "is", "are", "be", "for", "on", "by",
    "with", "as", "at", "that", "this", "which", "it", "from",
))
_NUMERIC_OPTION = re.compile(r"[-+$€£]?[\d.,/%\s^*()x-]+")
_ANSWER_CUE = "Answer:"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How prompts become vectors; saved with the router so scoring matches training."""

    word_bits: int = 17
    char_bits: int = 17
    # Word n-grams of the question's stem alone (before "\nA. "), in a space of their own:
    # a word weighs differently in the question than among the options. 0 = no such block
    # (router files written before it existed).
    stem_bits: int = 17
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    dense_weight: float = 0.15  # scale of the standardised cues against unit-norm TF-IDF rows
    embedding: str = ""  # sentence-embedding model whose vectors are appended ("" = none)
    embedding_weight: float = 0.0  # scale of the standardised embedding block
    # The OPTION_CUE_NAMES cues beside DENSE_NAMES (False: router files before format 6).
    option_cues: bool = True

    @property
    def cue_names(self) -> tuple[str, ...]:
        """The dense cues' names, in their columns' order."""
        return DENSE_NAMES + (OPTION_CUE_NAMES if self.option_cues else ())

    @property
    def hashed_columns(self) -> int:
        """Columns of the hashed n-gram blocks (words, characters, and stems if any)."""
        stems = 2**self.stem_bits if self.stem_bits else 0
        return int(2**self.word_bits + 2**self.char_bits + stems)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(
            word_bits=int(data["word_bits"]),
            char_bits=int(data["char_bits"]),
            word_ngrams=(int(data["word_ngrams"][0]), int(data["word_ngrams"][1])),
            char_ngrams=(int(data["char_ngrams"][0]), int(data["char_ngrams"][1])),
            stem_bits=int(data.get("stem_bits", 0)),
            dense_weight=float(data["dense_weight"]),
            embedding=str(data.get("embedding", "")),
            embedding_weight=float(data.get("embedding_weight", 0.0)),
            option_cues=bool(data.get("option_cues", False)),
        )


@dataclass(frozen=True, slots=True)
class FeatureState:
    """What featurising learns from the training prompts (all saved in the router file)."""

    word_idf: FloatArray
    char_idf: FloatArray
    dense_mean: FloatArray
    dense_std: FloatArray
    # Standardisation of the embedding block; empty when the spec names no embedding.
    embed_mean: FloatArray = field(default_factory=lambda: np.zeros(0))
    embed_std: FloatArray = field(default_factory=lambda: np.zeros(0))
    stem_idf: FloatArray = field(default_factory=lambda: np.zeros(0))  # empty: no stem block


class Featurizer:
    """Turns prompts into the router's sparse design matrix."""

    def __init__(self, spec: FeatureSpec, state: FeatureState | None = None) -> None:
        self.spec = spec
        self.state = state
        self._words = HashingVectorizer(
            n_features=2**spec.word_bits, ngram_range=spec.word_ngrams,
            alternate_sign=False, norm=None,
        )
        # Same hash space and tokeniser as `_words`, so a unigram lands in its own bucket.
        self._unigrams = HashingVectorizer(
            n_features=2**spec.word_bits, ngram_range=(1, 1), alternate_sign=False, norm=None,
        )
        self._chars = HashingVectorizer(
            n_features=2**spec.char_bits, analyzer="char_wb", ngram_range=spec.char_ngrams,
            alternate_sign=False, norm=None,
        )
        # Tokens of one character count here ("x", "2", "I"): a stem's symbols matter.
        self._stems = HashingVectorizer(
            n_features=2**spec.stem_bits, ngram_range=spec.word_ngrams,
            alternate_sign=False, norm=None, token_pattern=r"(?u)\b\w+\b",
        ) if spec.stem_bits else None

    @property
    def dimension(self) -> int:
        return self.spec.hashed_columns + len(self.spec.cue_names)

    def fit(self, prompts: Sequence[str], embeddings: FloatArray | None = None) -> Featurizer:
        """Learn IDF weights and cue statistics from `prompts` (the training set only).

        `embeddings` (one row per prompt) are required when the spec names an embedding.
        """
        words = self._words.transform(prompts)
        chars = self._chars.transform(prompts)
        word_df = _document_frequency(words)
        word_idf = _idf_of(word_df, len(prompts))
        # Each training prompt's cues see its words as a new prompt's would: IDF from the
        # *other* training prompts, a word only it holds counting as unseen.
        dense = dense_cues(prompts, self._unigrams.transform(prompts), word_idf,
                           training_df=word_df, option_cues=self.spec.option_cues)
        std = dense.std(axis=0)
        e_mean, e_std = np.zeros(0), np.zeros(0)
        if self.spec.embedding:
            if embeddings is None:
                raise ValueError(f"the spec needs {self.spec.embedding} embeddings")
            e_mean, e_std = embeddings.mean(axis=0), embeddings.std(axis=0)
            e_std = np.where(e_std > 0, e_std, 1.0)
        self.state = FeatureState(
            word_idf=word_idf,
            char_idf=_idf(chars),
            dense_mean=dense.mean(axis=0),
            # A cue (nearly) constant over the training prompts is left unscaled: dividing
            # by a rounding-error std turns a new prompt's tiny difference into a huge one.
            dense_std=np.where(std > _MIN_CUE_STD, std, 1.0),
            embed_mean=e_mean,
            embed_std=e_std,
            stem_idf=(_idf(self._stems.transform([stem(p) for p in prompts]))
                      if self._stems else np.zeros(0)),
        )
        return self

    def transform(self, prompts: Sequence[str]) -> sparse.csr_matrix:
        """The design matrix: [word TF-IDF | char TF-IDF | stem word TF-IDF (when the spec
        has that block) | weighted standardised cues]."""
        if self.state is None:
            raise RuntimeError("Featurizer.transform before fit")
        st = self.state
        words = _tfidf(self._words.transform(prompts), st.word_idf)
        chars = _tfidf(self._chars.transform(prompts), st.char_idf)
        dense = dense_cues(prompts, self._unigrams.transform(prompts), st.word_idf,
                           option_cues=self.spec.option_cues)
        dense = (dense - st.dense_mean) / st.dense_std * self.spec.dense_weight
        blocks = [words, chars]
        if self._stems:
            blocks.append(_tfidf(self._stems.transform([stem(p) for p in prompts]), st.stem_idf))
        return sparse.hstack([*blocks, sparse.csr_matrix(dense)], format="csr")

    def embedding_block(self, embeddings: npt.ArrayLike) -> FloatArray:
        """Standardised, weighted embedding columns to append to `transform`'s matrix."""
        if self.state is None or self.state.embed_mean.size == 0:
            raise RuntimeError("Featurizer.embedding_block without a fitted embedding")
        st = self.state
        out: FloatArray = ((np.asarray(embeddings, dtype=np.float64) - st.embed_mean)
                           / st.embed_std * self.spec.embedding_weight)
        return out


def stem(prompt: str) -> str:
    """The question before a multiple-choice options block (the whole prompt if none)."""
    match = _OPTIONS.search(prompt)
    return prompt[: match.start()] if match else prompt


def _document_frequency(counts: sparse.csr_matrix) -> FloatArray:
    """In how many rows each column occurs."""
    csr = counts.tocsr()
    csr.sum_duplicates()
    df: FloatArray = np.bincount(csr.indices, minlength=csr.shape[1]).astype(np.float64)
    return df


def _idf(counts: sparse.csr_matrix) -> FloatArray:
    """Smoothed IDF of these rows' columns (`_idf_of`)."""
    return _idf_of(_document_frequency(counts), counts.shape[0])


def _idf_of(df: FloatArray, n: int) -> FloatArray:
    """Smoothed IDF, as scikit-learn's TfidfTransformer: ln((1+n)/(1+df)) + 1."""
    idf: FloatArray = np.log((1.0 + n) / (1.0 + df)) + 1.0
    return idf


def _tfidf(counts: sparse.csr_matrix, idf: FloatArray) -> sparse.csr_matrix:
    """Sublinear TF (1 + ln tf) times IDF, each row L2-normalised."""
    m = counts.astype(np.float64).tocsr()
    m.data = (1.0 + np.log(m.data)) * idf[m.indices]
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ m)


def dense_cues(
    prompts: Sequence[str], unigrams: sparse.csr_matrix, word_idf: FloatArray,
    training_df: FloatArray | None = None, option_cues: bool = True,
) -> npt.NDArray[np.float64]:
    """The difficulty cues of `DENSE_NAMES` (and, with `option_cues`, `OPTION_CUE_NAMES`),
    one row per prompt (unstandardised).

    With `training_df` (document frequencies over these very prompts, the training set),
    each prompt's word IDFs are those of the other prompts, leave-one-out: a word no other
    prompt holds is unseen, as it would be for a new prompt.
    """
    names = DENSE_NAMES + (OPTION_CUE_NAMES if option_cues else ())
    rows = np.zeros((len(prompts), len(names)))
    counts = unigrams.tocsr()
    seen = word_idf < word_idf.max()  # buckets that occurred in the training prompts
    n = len(prompts)
    for i, prompt in enumerate(prompts):
        lo, hi = counts.indptr[i], counts.indptr[i + 1]
        buckets = counts.indices[lo:hi]
        if training_df is None:
            known = np.where(seen[buckets], word_idf[buckets], _UNSEEN_IDF)
        else:  # over the n - 1 others: ln((1 + (n-1)) / (1 + (df-1))) + 1 = ln(n/df) + 1
            df = training_df[buckets]  # >= 1: this prompt holds each of its words
            known = np.where(df > 1, np.log(n / df) + 1.0, _UNSEEN_IDF)
        idf = np.repeat(known, counts.data[lo:hi].astype(np.int64))
        if idf.size == 0:
            idf = np.zeros(1)
        question = stem(prompt)
        options = prompt[len(question):]
        parts = _OPTION_SPLIT.split(options)[1:]
        lengths = [len(o) for o in parts] or [0]
        mean_len = float(np.mean(lengths))
        rows[i, : len(DENSE_NAMES)] = (
            math.log1p(len(prompt)),
            math.log1p(len(question)),
            math.log1p(len(options)),
            float(idf.mean()),
            float(idf.max()),
            float(np.percentile(idf, 90)),
            float(np.percentile(idf, 50)),
            math.log1p(int(counts.data[lo:hi].sum())),
            sum(c.isdigit() for c in prompt) / max(1, len(prompt)),
            sum(c.isdigit() for c in options) / max(1, len(options)),
            float(prompt.count("\n")),
            float(np.std(lengths)) / (mean_len + 1.0),
            math.log1p(mean_len),
        )
        if option_cues:
            rows[i, len(DENSE_NAMES):] = option_overlap_cues(question, parts)
    return rows


def option_overlap_cues(question: str, parts: Sequence[str]) -> tuple[float, ...]:
    """`OPTION_CUE_NAMES` of a prompt's `question` (its stem) and its options block split at
    the option letters (`parts`; none: all 0): the Jaccard overlap of the options' word sets,
    pairwise (mean, max); the share of each option's words the question holds (mean, max,
    std); the share of options that are numbers."""
    options = [o.strip() for o in parts]
    if options and options[-1].endswith(_ANSWER_CUE):  # the prompt's closing "Answer:"
        options[-1] = options[-1].removesuffix(_ANSWER_CUE).strip()
    if not options:
        return (0.0,) * len(OPTION_CUE_NAMES)
    asked = _content_words(question)
    words = [_content_words(o) for o in options]
    pairs = [len(a & b) / len(a | b) if a | b else 0.0
             for i, a in enumerate(words) for b in words[i + 1:]] or [0.0]
    shared = [len(asked & w) / max(1, len(w)) for w in words]
    numeric = sum(bool(_NUMERIC_OPTION.fullmatch(o)) for o in options) / len(options)
    return (float(np.mean(pairs)), float(np.max(pairs)), float(np.mean(shared)),
            float(np.max(shared)), float(np.std(shared)), numeric)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS}
