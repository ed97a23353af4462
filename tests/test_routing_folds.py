"""The routing benchmark's cross-validation folds: every query held out exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.routing import (
    main,
    random_folds,
    subject_folds,
    target_checks,
    without_test_copies,
)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_random_folds_hold_out_each_query_once(k: int) -> None:
    folds = random_folds(101, seed=1, k=k)
    assert len(folds) == k
    held = np.concatenate([test for _, test in folds])
    assert sorted(held.tolist()) == list(range(101))
    for train, test in folds:
        assert not set(train.tolist()) & set(test.tolist())
        assert len(train) + len(test) == 101
        assert abs(len(test) - 101 / k) < 1


def test_two_random_folds_are_the_half_half_split() -> None:
    idx = np.random.default_rng(1).permutation(10)
    (tr0, te0), (tr1, te1) = random_folds(10, seed=1)
    assert te0.tolist() == idx[5:].tolist() == tr1.tolist()
    assert te1.tolist() == idx[:5].tolist() == tr0.tolist()


@pytest.mark.parametrize("k", [2, 4])
def test_subject_folds_hold_out_whole_subjects(k: int) -> None:
    groups = tuple(f"s{i % 9}" for i in range(90))
    folds = subject_folds(groups, seed=0, k=k)
    held = np.concatenate([test for _, test in folds])
    assert sorted(held.tolist()) == list(range(90))
    for train, test in folds:
        seen = {groups[i] for i in train}
        assert seen and not seen & {groups[i] for i in test}


def test_folds_out_of_range_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--folds", "1"])
    assert exc.value.code == 2
    assert "--folds must be in 2..57, not 1" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [("1,x", "not a comma-separated list"),
                                               ("1,1", "distinct seeds"), (",", "distinct")])
def test_bad_seed_lists_are_refused(text: str, message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--seeds", text])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_target_checks_compare_ours_with_the_best_baseline_and_the_floors() -> None:
    base = {"random": {"apgr": 0.5, "cpt50": 0.5}, "knn": {"apgr": 0.6, "cpt50": 0.3},
            "tfidf_lr": {"apgr": 0.65, "cpt50": 0.3}}
    results = {"random": {**base, "ours": {"apgr": 0.70, "cpt50": 0.25}},
               "subject": {**base, "ours": {"apgr": 0.599, "cpt50": 0.4}}}
    assert target_checks(results, "ours") == {
        "beats_baselines_random": True, "beats_baselines_subject": False,
        "apgr_random_ge_0.70": True, "apgr_subject_ge_0.60": False,
        "cpt50_random_le_25pct": True}


def test_training_parts_hold_no_copy_of_a_held_out_prompt() -> None:
    # RouteLLM's MMLU holds 105 questions twice, 78 of them under two subjects: a held-out
    # subject's question must not be learned from its copy in the other half.
    prompts = ["q0", "q1", "dup", "q3", "dup", "q5"]
    groups = ("a", "a", "a", "b", "b", "b")
    folds = subject_folds(groups, seed=0)
    clean = without_test_copies(folds, prompts)
    for (train, test), (kept, same_test) in zip(folds, clean, strict=True):
        assert same_test is test  # every query is still scored once
        held = {prompts[i] for i in test}
        assert sorted(kept) == [i for i in sorted(train) if prompts[i] not in held]
        assert "dup" not in {prompts[i] for i in kept}
        assert len(kept) == len(train) - 1
