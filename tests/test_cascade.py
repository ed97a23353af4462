"""The cascade benchmark: its data readers, the join with GPT-4's labels, the option scorer."""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cascade import (
    DEFAULT_DATASET,
    Item,
    join_gpt4,
    load_arc,
    load_mmlu,
    main,
    sample,
)
from kernels.options import OptionScorer
from runtime.calibration import PEER_FEATURES, peer_features


def test_the_bundled_arc_copy_reads_as_four_option_items() -> None:
    items = load_arc(DEFAULT_DATASET["arc"])
    assert len(items) == 1576
    first = items[0]
    assert first.question.startswith("Which statement best explains why photosynthesis")
    assert first.options[0] == "Sunlight is the source of energy for nearly all ecosystems."
    assert first.gold == 0 and first.strong == 1  # the cloud is assumed right on ARC


def test_the_bundled_mmlu_copy_reads_every_gzipped_subject() -> None:
    items = load_mmlu(DEFAULT_DATASET["mmlu"])
    assert len(items) == 14042
    assert len({i.group for i in items}) == 57
    assert items[0].group == "abstract_algebra" and items[0].options[1] == "4"
    assert items[0].gold == 1


def test_mmlu_items_take_gpt4_correctness_joined_on_question_and_options(tmp_path: Path) -> None:
    routing = tmp_path / "mmlu.csv.gz"
    with gzip.open(routing, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "prompt", "weak", "strong"])
        writer.writerow(["s", "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:", 1, 0])
    asked = Item("What is 2+2?", ("3", "4", "5", "6"), 1, "s")
    other = Item("What is 2+3?", ("3", "4", "5", "6"), 2, "s")
    joined, dropped = join_gpt4([asked, other], routing)
    assert dropped == 1
    assert joined == [Item("What is 2+2?", ("3", "4", "5", "6"), 1, "s", strong=0)]


def test_every_bundled_mmlu_question_joins_with_routellm() -> None:
    # 10 have an option "None", written "nan" in RouteLLM's file; a few questions appear
    # under two subjects, each with its own GPT-4 label (keyed by subject too).
    joined, dropped = join_gpt4(load_mmlu(DEFAULT_DATASET["mmlu"]))
    assert dropped == 0 and len(joined) == 14042
    assert 0.80 < np.mean([i.strong for i in joined]) < 0.81  # GPT-4's published 80.6 %


def test_a_seeded_sample_is_stable_and_keeps_file_order() -> None:
    items = [Item(str(i), ("a", "b"), 0) for i in range(100)]
    a, b = sample(items, 10, seed=3), sample(items, 10, seed=3)
    assert a == b and len(a) == 10
    assert [int(i.question) for i in a] == sorted(int(i.question) for i in a)
    assert sample(items, 0, seed=3) == items


@pytest.fixture(scope="module")
def scorer() -> Iterator[OptionScorer]:
    s = OptionScorer("bundled:smollm2-135m", threads=1)
    yield s
    s.close()


def _reference_logprobs(rows: np.ndarray, targets: list[int]) -> np.ndarray:
    x = rows.astype(np.float64)
    peak = x.max(axis=1, keepdims=True)
    lse = peak[:, 0] + np.log(np.exp(x - peak).sum(axis=1))
    out: np.ndarray = x[np.arange(len(targets)), targets] - lse
    return out


@pytest.mark.slow
def test_option_scores_equal_a_logits_all_scorers_to_the_bit(scorer: OptionScorer) -> None:
    """The scorer reads only the logits rows it needs; a `Llama(logits_all=True)` that
    copies every row, evaluating the same batches, gives the same numbers."""
    from llama_cpp import Llama

    from kernels.registry import resolve

    ref = Llama(model_path=str(resolve("bundled:smollm2-135m").path), n_ctx=512,
                logits_all=True, n_threads=1, n_threads_batch=1, verbose=False)
    try:
        item = Item("What colour is the sky on a clear day?", ("blue", "green", "red"), 0)
        got = scorer.score(item.question, item.options)
        context = scorer.context(item.question)
        assert scorer._llm.detokenize(context) == f"Question: {item.question}\nAnswer:".encode()

        def after(prefix: list[int], toks: list[int]) -> float:
            ref.reset()
            ref.eval(prefix)
            n = ref.n_tokens
            ref.eval(toks)
            rows = np.asarray(ref.scores[n - 1 : n - 1 + len(toks)])
            return float(_reference_logprobs(rows, toks).sum())

        for i, option in enumerate(item.options):
            toks = scorer._tokens(f" {option}")
            assert got.option_logprob[i] == pytest.approx(after(context, toks), abs=1e-9)
            assert got.option_unconditional[i] == pytest.approx(
                after(scorer._tokens("Answer:"), toks), abs=1e-9)
        ref.reset()
        ref.eval(context)
        rows = np.asarray(ref.scores[: len(context) - 1])
        expected = float(_reference_logprobs(rows, context[1:]).mean())
        assert got.prompt_mean_logprob == pytest.approx(expected, abs=1e-9)
    finally:
        ref.close()
    assert got.option_tokens == tuple(len(scorer._tokens(f" {o}")) for o in item.options)
    assert got.option_chars == (5, 6, 4)
    assert got.prompt_mean_logprob < 0 and got.prompt_tokens == len(context)
    # A peer that only rates the options skips the question's own log-probs.
    lean = scorer.score(item.question, item.options, unconditional=False, familiarity=False)
    assert lean.option_logprob == got.option_logprob and lean.option_first == got.option_first
    assert (lean.prompt_mean_logprob, lean.option_unconditional) == (0.0, (0.0, 0.0, 0.0))


@pytest.mark.slow
def test_a_question_longer_than_the_context_is_cut_from_the_left(scorer: OptionScorer) -> None:
    before = scorer.truncated
    item = Item("word " * 700 + "Which is a colour?", ("blue", "seven"), 0)
    got = scorer.score(item.question, item.options)
    assert scorer.truncated == before + 1
    assert got.prompt_tokens == scorer._llm.n_ctx() - max(got.option_tokens)
    assert all(math.isfinite(x) for x in got.option_logprob)


@pytest.mark.slow
def test_the_benchmark_ends_its_json_with_accuracy_auroc_and_apgr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = DEFAULT_DATASET["arc"] / "arc_easy.jsonl"
    data = tmp_path / "arc"
    data.mkdir()
    (data / "part.jsonl").write_text("\n".join(source.read_text().splitlines()[:24]) + "\n")
    weights = tmp_path / "w.json"
    main(["--format", "arc", "--dataset", str(data), "--limit", "0", "--folds", "2",
          "--save", str(weights), "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(summary)[-3:] == ["local_accuracy", "auroc", "apgr"]
    assert summary["peer"] == "bundled:gemma3-270m"
    assert set(PEER_FEATURES) <= set(summary["coef"])
    assert 0.0 <= summary["peer_accuracy"] <= 1.0
    assert summary["n"] == 24 and summary["cloud"] == "assumed-correct"
    assert 0.0 <= summary["local_accuracy"] <= 1.0
    assert summary["quality_at_share"]["1.0"] == 1.0  # everything escalated: the cloud's score
    assert summary["quality_at_share"]["0.0"] == pytest.approx(summary["local_accuracy"])
    assert json.loads(weights.read_text())["meta"]["items"] == 24


@pytest.mark.slow
def test_the_gemma_peer_prompt_starts_with_bos_and_it_backs_easy_answers(
    scorer: OptionScorer,
) -> None:
    peer = OptionScorer("bundled:gemma3-270m", threads=1)
    try:
        items = [
            Item("What colour is the sky on a clear day?", ("blue", "green", "red"), 0),
            Item("Which animal barks?", ("a cat", "a dog", "a fish", "a bird"), 1),
            Item("What do plants need to make food?", ("sunlight", "rocks", "plastic"), 0),
        ]
        assert peer.context("Hi")[0] == 2  # Gemma's <bos>; SmolLM2's tokenizer adds none
        assert scorer.context("Hi")[0] != 1
        for item in items:
            own = scorer.score(item.question, item.options)
            theirs = peer.score(item.question, item.options, unconditional=False)
            assert theirs.option_unconditional == (0.0,) * len(item.options)
            assert theirs.chosen == item.gold  # the 270M model knows these
            f = peer_features(own, theirs)
            assert f["agree_peer"] == float(own.chosen == item.gold)
            assert 0.0 < f["peer_p_chosen"] <= f["peer_p_top"] <= 1.0
    finally:
        peer.close()


def test_cached_scores_of_another_prompt_are_refused(tmp_path: Path) -> None:
    from benchmarks.cascade import read_scores, write_scores
    from kernels.options import OptionScores

    item = Item("q?", ("a", "b"), 1)
    scores = OptionScores((-1.0, -2.0), (1, 2), (2, 3), (-0.5, -0.7), -3.5, 7)
    path = tmp_path / "scores.jsonl"
    write_scores(path, "m", [(item, scores)], prompt="{question}\nAnswer:")
    with pytest.raises(SystemExit, match="another prompt"):
        read_scores(path, [item])


def test_cached_option_scores_read_back_for_the_same_items(tmp_path: Path) -> None:
    from benchmarks.cascade import read_scores, write_scores
    from kernels.options import OptionScores

    item = Item("q?", ("a", "b"), 1)
    scores = OptionScores((-1.0, -2.0), (1, 2), (2, 3), (-0.5, -0.7), -3.5, 7, (-1.0, -1.5))
    path = tmp_path / "scores.jsonl"
    write_scores(path, "m", [(item, scores)])
    assert read_scores(path, [item]) == [(item, scores)]
    with pytest.raises(SystemExit, match="other items"):
        read_scores(path, [Item("another?", ("a", "b"), 0)])
