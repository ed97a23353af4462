"""The learned router on real labelled data: determinism, files, calibration, metrics."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer

from runtime.router.bandit import LinUcbBandit
from runtime.router.base import RouterDataError, RouterFileError
from runtime.router.calibration import calibrate, cloud_fraction, threshold_for_fraction
from runtime.router.data import RoutingData, load_routing_data
from runtime.router.features import (
    DENSE_NAMES,
    OPTION_CUE_NAMES,
    FeatureSpec,
    Featurizer,
    dense_cues,
    option_overlap_cues,
)
from runtime.router.learned import LearnedRouter, TrainParams
from runtime.router.metrics import oracle_scores, routing_curve
from runtime.router.online import OnlineRouter
from runtime.router.store import load_router, save_router

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "routing"
SMALL = TrainParams(features=FeatureSpec(word_bits=15, char_bits=15, stem_bits=15))


@pytest.fixture(scope="module")
def mmlu() -> RoutingData:
    """A seeded shuffle of the bundled MMLU routing labels (14,042 queries)."""
    data = load_routing_data(DATA / "mmlu.csv.gz")
    return data.subset(np.random.default_rng(7).permutation(len(data)))


@pytest.fixture(scope="module")
def trained(mmlu: RoutingData) -> LearnedRouter:
    train = mmlu.subset(range(3000))
    return LearnedRouter.train(train.prompts, train.weak, train.strong)


def test_bundled_data_has_the_published_counts(mmlu: RoutingData) -> None:
    assert len(mmlu) == 14_042
    assert len(set(mmlu.groups)) == 57
    assert round(float(mmlu.strong.mean()), 3) == 0.806
    assert round(float(mmlu.weak.mean()), 3) == 0.681
    gsm = load_routing_data(DATA / "gsm8k.csv.gz")
    assert (len(gsm), int(gsm.weak.sum()), int(gsm.strong.sum())) == (1319, 842, 1130)


def test_training_is_deterministic_for_a_seed(mmlu: RoutingData) -> None:
    part = mmlu.subset(range(800))
    a = LearnedRouter.train(part.prompts, part.weak, part.strong, SMALL)
    b = LearnedRouter.train(part.prompts, part.weak, part.strong, SMALL)
    assert np.array_equal(a.coef, b.coef)
    assert np.array_equal(a.intercept, b.intercept)
    probe = mmlu.subset(range(800, 900)).prompts
    assert np.array_equal(a.score(probe), b.score(probe))


def test_router_ranks_held_out_queries_better_than_chance(
    mmlu: RoutingData, trained: LearnedRouter
) -> None:
    test = mmlu.subset(range(9000, 12000))
    curve = routing_curve(trained.score(test.prompts), test.weak, test.strong)
    assert curve.apgr() > 0.6  # random routing scores 0.5 by construction


def test_outcome_probabilities_are_distributions(
    mmlu: RoutingData, trained: LearnedRouter
) -> None:
    probs = trained.outcome_probabilities(mmlu.subset(range(5000, 5050)).prompts)
    assert probs.shape == (50, 4)
    assert np.allclose(probs.sum(axis=1), 1.0)
    verdict = trained.verdict(mmlu.prompts[5000])
    assert verdict.score == pytest.approx(probs[0, 2] - probs[0, 1])
    assert verdict.p_strong_wins == pytest.approx(probs[0, 2])


def test_calibration_hits_the_target_share_on_held_out_data(
    mmlu: RoutingData, trained: LearnedRouter
) -> None:
    cal = mmlu.subset(range(3000, 6000)).prompts
    held_out = mmlu.subset(range(9000, 12000)).prompts
    held_scores = trained.score(held_out)
    for target in (0.1, 0.3, 0.5):
        router = calibrate(trained, cal, target)
        assert cloud_fraction(trained.score(cal), router.threshold) == pytest.approx(target,
                                                                                    abs=1e-3)
        assert abs(cloud_fraction(held_scores, router.threshold) - target) <= 0.02


def test_router_file_round_trips_without_pickle(
    mmlu: RoutingData, trained: LearnedRouter, tmp_path: Path
) -> None:
    path = save_router(trained.with_threshold(0.123), tmp_path / "router")
    assert path.suffix == ".npz"
    assert path.stat().st_size < 5_000_000
    with np.load(path, allow_pickle=False) as npz:  # loads with pickle disabled
        assert "header" in npz.files
    loaded = load_router(path)
    probe = mmlu.subset(range(6000, 6200)).prompts
    assert loaded.threshold == 0.123
    assert np.allclose(loaded.score(probe), trained.score(probe), atol=1e-6)


def test_pickled_or_foreign_files_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.npz"
    evil.write_bytes(pickle.dumps({"header": "x"}))
    with pytest.raises(RouterFileError, match="not a router file"):
        load_router(evil)
    other = tmp_path / "other.npz"
    np.savez(other, header=np.array('{"format": "something-else"}'))
    with pytest.raises(RouterFileError, match="not a Tandem router file"):
        load_router(other)
    with pytest.raises(RouterFileError, match="not found"):
        load_router(tmp_path / "missing.npz")


def test_files_that_are_no_npz_archive_are_named_as_such(tmp_path: Path) -> None:
    """A CSV or an .npy array passed as the router: a RouterFileError that says what the
    file is not (NumPy's own words for a CSV advise unpickling it; an .npy array used to
    escape as a TypeError)."""
    csv = tmp_path / "cal.csv"
    csv.write_text("prompt,weak,strong\nhi,1,0\n")
    with pytest.raises(RouterFileError, match=r"cal.csv is not a router file: not an .npz a"):
        load_router(csv)
    array = tmp_path / "arr.npy"
    np.save(array, np.arange(3))
    with pytest.raises(RouterFileError, match=r"arr.npy is not a router file: an .npy array"):
        load_router(array)
    with pytest.raises(RouterFileError, match="arr.npy is not a bandit state file: an .npy"):
        LinUcbBandit.load(array)
    with pytest.raises(RouterFileError, match="cal.csv is not a bandit state file: not an .npz"):
        OnlineRouter.load(csv)


def test_threshold_for_fraction_edges() -> None:
    scores = np.array([0.3, 0.1, 0.2, 0.4])
    assert cloud_fraction(scores, threshold_for_fraction(scores, 0.0)) == 0.0
    assert cloud_fraction(scores, threshold_for_fraction(scores, 1.0)) == 1.0
    assert threshold_for_fraction(scores, 0.5) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        threshold_for_fraction(scores, 1.5)


def test_threshold_for_fraction_reaches_the_nearest_share_with_tied_scores() -> None:
    tied = np.array([0.9] + [0.5] * 8 + [0.1])  # only 0 %, 10 %, 90 % and 100 % reachable
    assert cloud_fraction(tied, threshold_for_fraction(tied, 0.8)) == pytest.approx(0.9)
    assert cloud_fraction(tied, threshold_for_fraction(tied, 0.3)) == pytest.approx(0.1)
    assert cloud_fraction(tied, threshold_for_fraction(tied, 0.95)) == pytest.approx(0.9)
    # distinct scores: k/n closest to F; a half-way F takes the smaller share
    ten = np.arange(10) / 10
    shares = [cloud_fraction(ten, threshold_for_fraction(ten, f))
              for f in (0.05, 0.15, 0.25, 0.35, 0.34, 0.36)]
    assert shares == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.3, 0.4])


def test_routing_curve_matches_a_hand_computed_example() -> None:
    weak = np.array([True, False, False, True, False])
    strong = np.array([True, True, True, False, False])
    curve = routing_curve(np.array([0.1, 0.9, 0.5, 0.2, 0.3]), weak, strong)
    # Cloud order q1 (+1), q2 (+1), q4 (0), q3 (-1), q0 (0); weak quality 0.4, strong 0.6.
    assert np.allclose(curve.quality, [0.4, 0.6, 0.8, 0.8, 0.6, 0.6])
    assert np.allclose(curve.pgr, [0, 1, 2, 2, 1, 1])
    assert curve.cpt(0.5) == pytest.approx(0.2)
    assert curve.quality_at(0.4) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="same accuracy"):
        routing_curve(np.zeros(2), np.array([True, False]), np.array([False, True]))


def test_constant_scores_route_like_random_and_oracle_is_best(mmlu: RoutingData) -> None:
    flat = routing_curve(np.zeros(len(mmlu)), mmlu.weak, mmlu.strong)
    assert flat.apgr() == pytest.approx(0.5)
    oracle = routing_curve(oracle_scores(mmlu.weak, mmlu.strong), mmlu.weak, mmlu.strong)
    assert oracle.apgr() > 1.0  # beats the strong model: it also keeps weak-only wins local
    gap = mmlu.strong.mean() - mmlu.weak.mean()
    assert oracle.cpt(1.0) == pytest.approx(gap, abs=1e-4)  # strong-only wins come first


def test_bad_training_data_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("prompt,weak\nhello,1\n")
    with pytest.raises(RouterDataError, match="missing column\\(s\\) strong"):
        load_routing_data(path)
    path.write_text("prompt,weak,strong\nhello,1,maybe\n")
    with pytest.raises(RouterDataError, match="bad.csv:2: column strong"):
        load_routing_data(path)
    with pytest.raises(RouterDataError, match="at least 20"):
        LearnedRouter.train(["a"] * 5, np.ones(5, bool), np.ones(5, bool))
    with pytest.raises(RouterDataError, match="single outcome"):
        LearnedRouter.train(["a b"] * 30, np.ones(30, bool), np.ones(30, bool))


def test_a_running_runtime_loads_a_new_router_file_on_next_use(
    trained: LearnedRouter, tmp_path: Path
) -> None:
    from runtime.config import load_config
    from runtime.facade import Runtime
    from runtime.policy import PolicyConfig

    eager = save_router(trained.with_threshold(-10.0), tmp_path / "eager")  # all to the cloud
    never = save_router(trained.with_threshold(10.0), tmp_path / "never")
    cfg = load_config(env={})
    prompt = "Which of the following is a prime number? A. 4 B. 6 C. 7 D. 9"
    with Runtime(cfg.replace(policy=PolicyConfig(router_path=str(eager)))) as rt:
        first, problem = rt._router_verdict(prompt)
        assert first is not None and first.wants_cloud and problem == ""
        rt.config = cfg.replace(policy=PolicyConfig(router_path=str(never)))
        second, _ = rt._router_verdict(prompt)
        assert second is not None and not second.wants_cloud
        assert second.score == pytest.approx(first.score)  # same model, new threshold


def test_an_unusable_router_file_is_read_once_until_it_is_replaced(
    trained: LearnedRouter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    from runtime.config import load_config
    from runtime.facade import Runtime
    from runtime.policy import PolicyConfig

    path = tmp_path / "router.npz"
    path.write_text("prompt,weak,strong\n")  # a CSV where the router file should be
    cfg = load_config(env={}).replace(policy=PolicyConfig(router_path=str(path)))
    prompt = "Which of the following is a prime number? A. 4 B. 6 C. 7 D. 9"
    with Runtime(cfg) as rt, caplog.at_level("WARNING", logger="tandem.runtime"):
        first = rt._router_verdict(prompt)
        again = rt._router_verdict(prompt)
        before = path.stat().st_mtime_ns
        save_router(trained.with_threshold(-10.0), path)  # all to the cloud
        os.utime(path, ns=(before + 10**9, before + 10**9))  # a later mtime, however coarse
        replaced, problem = rt._router_verdict(prompt)
    assert first[0] is None and "not an .npz archive" in first[1]
    assert again == first
    assert [r.getMessage() for r in caplog.records] == [first[1]]  # read and logged once
    assert replaced is not None and replaced.wants_cloud and problem == ""


def test_stem_words_have_columns_of_their_own() -> None:
    spec = FeatureSpec(word_bits=12, char_bits=12, stem_bits=12)
    prompts = ["Which gas do plants absorb?\nA. oxygen\nB. carbon dioxide\nAnswer:",
               "What is photosynthesis?\nA. a process\nB. a gas\nAnswer:",
               "Name the gas plants release.\nA. oxygen\nB. photosynthesis\nAnswer:"]
    featurizer = Featurizer(spec).fit(prompts)
    x = featurizer.transform(prompts).toarray()
    cues = len(DENSE_NAMES) + len(OPTION_CUE_NAMES)
    assert x.shape == (3, featurizer.dimension) == (3, 3 * 2**12 + cues)
    stems = x[:, 2 * 2**12: 3 * 2**12]
    bucket = HashingVectorizer(n_features=2**12, alternate_sign=False, norm=None,
                               token_pattern=r"(?u)\b\w+\b").transform(["photosynthesis"])
    col = int(bucket.indices[0])
    # In the stem of the second prompt, among the options of the third: only the first counts.
    assert stems[1, col] > 0 and stems[2, col] == 0 and stems[0, col] == 0
    assert np.allclose(np.linalg.norm(stems, axis=1), 1.0)


def test_router_files_without_a_stem_block_still_load_and_score(
    mmlu: RoutingData, tmp_path: Path
) -> None:
    old = TrainParams(features=FeatureSpec(word_bits=12, char_bits=12, stem_bits=0))
    train = mmlu.subset(range(800))
    router = LearnedRouter.train(train.prompts, train.weak, train.strong, old)
    path = save_router(router, tmp_path / "no-stems")
    with np.load(path, allow_pickle=False) as npz:
        assert "stem_idf" not in npz.files
    probe = mmlu.subset(range(900, 1000)).prompts
    assert np.allclose(load_router(path).score(probe), router.score(probe), atol=1e-6)
    # Headers written before the block existed have no stem_bits: no stem block.
    header = {k: v for k, v in old.features.to_dict().items() if k != "stem_bits"}
    assert FeatureSpec.from_dict(header).stem_bits == 0


def test_a_router_trained_on_few_prompts_keeps_its_probabilities_moderate(
    mmlu: RoutingData,
) -> None:
    # On 20 prompts every prompt's rarest word is one no other prompt holds, so some
    # cues are constant in training: scaled by a rounding-error std, a new prompt's cue
    # came out ~1e7 and every verdict was certain (P = 0 or 1) and the same.
    part = mmlu.subset(range(20))
    router = LearnedRouter.train(part.prompts, part.weak, part.strong, SMALL)
    assert router.features is not None
    assert float(router.features.dense_std.min()) >= 1e-6
    probs = router.outcome_probabilities(mmlu.subset(range(100, 160)).prompts)
    assert float(probs.max()) < 0.95
    assert len(np.unique(np.round(router.score(mmlu.subset(range(100, 160)).prompts), 6))) > 10


def test_training_cues_count_a_word_no_other_prompt_holds_as_unseen() -> None:
    # A training prompt's IDF cues are those of the other training prompts, as a new
    # prompt's are: its one-off word is unseen (IDF 12), not "seen once" (ln(n/2) + 1).
    prompts = ["alpha beta", "alpha beta", "alpha zeta"]
    featurizer = Featurizer(FeatureSpec(word_bits=12, char_bits=12, stem_bits=12))
    featurizer.fit(prompts)
    state = featurizer.state
    assert state is not None
    idf_max = DENSE_NAMES.index("idf_max")
    # zeta: unseen among the others (12); beta in the first two: ln(3/2) + 1 over 2 others
    raw_max = state.dense_mean[idf_max]
    assert raw_max == pytest.approx((2 * (np.log(3 / 2) + 1) + 12.0) / 3)


def test_option_overlap_cues_read_the_options_against_each_other_and_the_question() -> None:
    prompt = ("Which law says that force equals mass times acceleration?\n"
              "A. Newton's second law\nB. Newton's third law\nC. Hooke's law\nD. 42\nAnswer:")
    unigrams = HashingVectorizer(n_features=2**12, alternate_sign=False, norm=None)
    row = dense_cues([prompt], unigrams.transform([prompt]), np.ones(2**12))[0]
    cues = dict(zip(OPTION_CUE_NAMES, row[len(DENSE_NAMES):], strict=True))
    # word sets: {newton, s, second, law}, {newton, s, third, law}, {hooke, s, law}, {42}
    pairs = [3 / 5, 2 / 5, 0.0, 2 / 5, 0.0, 0.0]
    assert cues["option_overlap_mean"] == pytest.approx(np.mean(pairs))
    assert cues["option_overlap_max"] == pytest.approx(3 / 5)
    shared = [1 / 4, 1 / 4, 1 / 3, 0.0]  # the question holds "law" ("Answer:" is not an option's)
    assert cues["stem_option_overlap_mean"] == pytest.approx(np.mean(shared))
    assert cues["stem_option_overlap_max"] == pytest.approx(1 / 3)
    assert cues["stem_option_overlap_std"] == pytest.approx(np.std(shared))
    assert cues["numeric_option_share"] == pytest.approx(1 / 4)
    assert option_overlap_cues("Tell me a joke about cats.", []) == (0.0,) * len(OPTION_CUE_NAMES)


def test_router_files_without_option_cues_still_load_and_score(
    mmlu: RoutingData, tmp_path: Path
) -> None:
    old = TrainParams(features=FeatureSpec(word_bits=12, char_bits=12, stem_bits=12,
                                           option_cues=False))
    train = mmlu.subset(range(800))
    router = LearnedRouter.train(train.prompts, train.weak, train.strong, old)
    assert router.features is not None and router.features.dense_mean.size == len(DENSE_NAMES)
    path = save_router(router, tmp_path / "no-option-cues")
    probe = mmlu.subset(range(900, 1000)).prompts
    assert np.allclose(load_router(path).score(probe), router.score(probe), atol=1e-6)
    # Headers written before the cues existed have no option_cues: thirteen cues.
    header = {k: v for k, v in old.features.to_dict().items() if k != "option_cues"}
    assert FeatureSpec.from_dict(header).option_cues is False
    assert FeatureSpec().cue_names == DENSE_NAMES + OPTION_CUE_NAMES


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"prompt,weak,strong\nfine,1,0\nno labels\n", r"bad.csv:3: too few fields \(no weak"),
        (b"prompt,weak,strong\nfine,1,0\na, b,1,0\n", "bad.csv:3: more fields than the header"),
        (b'prompt,weak,strong\n"two\nlines",1,0\n"three\nmore\nlines",1,maybe\n',
         "bad.csv:4-6: column strong must be"),  # a record's physical lines, not its index
        ("prompt,weak,strong\ncaf\u00e9,1,0\n".encode("latin-1"),
         r"bad.csv is not UTF-8 text \(byte 22: b'\\xe9'\)"),
    ],
)
def test_malformed_csv_rows_name_file_and_lines(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(raw)
    with pytest.raises(RouterDataError, match=message):
        load_routing_data(path)


def test_spreadsheet_csv_quirks_are_read(tmp_path: Path) -> None:
    # A byte-order mark, spaced and capitalised header names, float labels, CRLF lines.
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfSubject, Prompt, Weak, Strong\r\n"
                     b"law,\"a\r\nb\",1.0,0.0\r\nmath,c,0,1\r\n")
    data = load_routing_data(path)
    assert data.prompts == ("a\r\nb", "c")
    assert data.groups == ("law", "math")
    assert data.weak.tolist() == [True, False] and data.strong.tolist() == [False, True]


def test_a_router_without_its_extra_installed_routes_without_it(
    trained: LearnedRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from runtime.config import load_config
    from runtime.facade import Runtime
    from runtime.policy import PolicyConfig

    path = save_router(trained, tmp_path / "router")
    monkeypatch.setitem(sys.modules, "runtime.router.store", None)  # as without scikit-learn
    cfg = load_config(env={}).replace(policy=PolicyConfig(router_path=str(path)))
    with Runtime(cfg) as rt:
        verdict, problem = rt._router_verdict("Which of these is prime? A. 4 B. 7")
    assert verdict is None
    assert problem.startswith("policy.router_path unusable, routing without it: the router "
                              "needs the router extra (pip install 'tandem-llm[router]')")
