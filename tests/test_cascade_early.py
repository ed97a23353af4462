"""Early escalation: the rule, how the benchmark chooses it, and a real engine stopping early."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.early_escalation import (
    Trace,
    ceiling,
    choose,
    evaluate,
    fired_at,
    prompts,
    prompts_from_file,
    streamed,
    timed_early,
    trace,
)
from kernels import Engine, TokenEvent
from runtime.confidence import Checkpoint, EarlyEscalation, RunningConfidence


def _running(logprobs: list[float]) -> RunningConfidence:
    acc = RunningConfidence()
    for i, lp in enumerate(logprobs):
        acc.add(TokenEvent("x", i, lp, 2.0))
    return acc


def test_the_early_rule_checks_at_its_checkpoints_only() -> None:
    rule = EarlyEscalation((Checkpoint(4, 0.1), Checkpoint(8, 0.1)))
    assert not rule.fires(_running([-5.0] * 3), threshold=0.5)
    assert rule.fires(_running([-5.0] * 4), threshold=0.5)
    assert not rule.fires(_running([-5.0] * 6), threshold=0.5)  # between checkpoints
    assert rule.fires(_running([-5.0] * 8), threshold=0.5)


def test_a_batched_consumer_checks_each_checkpoint_it_passes_once() -> None:
    rule = EarlyEscalation((Checkpoint(4, 0.1), Checkpoint(8, 0.3)))
    assert rule.crossed(0, 3) is None
    assert rule.crossed(0, 5) == Checkpoint(4, 0.1)
    assert rule.crossed(4, 7) is None  # checkpoint 4 was checked by the earlier batch
    assert rule.crossed(2, 9) == Checkpoint(8, 0.3)  # both passed at once: the later margin
    low = _running([-5.0] * 6)
    assert rule.check(3, low, threshold=0.5) == Checkpoint(4, 0.1)
    assert rule.check(4, low, threshold=0.5) is None  # no checkpoint between 4 and 6
    assert rule.check(0, _running([-0.01] * 6), threshold=0.5) is None  # confident


def test_the_early_rule_needs_the_score_clearly_below_threshold() -> None:
    running = _running([-0.4] * 4)
    value = running.value().score
    assert EarlyEscalation.single(4, 0.0).fires(running, threshold=value + 0.05)
    assert not EarlyEscalation.single(4, 0.1).fires(running, threshold=value + 0.05)


def test_the_early_rule_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        EarlyEscalation.single(tokens=0)
    with pytest.raises(ValueError, match=r"margins must each be in \[0, 1\]"):
        EarlyEscalation.single(margin=-0.1)
    with pytest.raises(ValueError, match=r"margins must each be in \[0, 1\]"):
        EarlyEscalation.single(margin=1.5)
    with pytest.raises(ValueError, match="one margin per checkpoint: 2 token counts, 1 margins"):
        EarlyEscalation.from_lists([4, 8], [0.1])
    assert EarlyEscalation.from_lists([4, 8], [0.3, 0.1]).checkpoints == (
        Checkpoint(4, 0.3), Checkpoint(8, 0.1))
    with pytest.raises(ValueError):
        EarlyEscalation((Checkpoint(8, 0.1), Checkpoint(4, 0.2)))
    with pytest.raises(ValueError):
        EarlyEscalation(())


def _trace(logprob: float, n: int = 40, late: float | None = None) -> Trace:
    """A synthetic trace: every token at `logprob`, the ones after 8 at `late` if given."""
    lps = tuple(logprob if late is None or i < 8 else late for i in range(n))
    times = tuple(0.1 * (i + 1) for i in range(n))
    return Trace("p", lps, (2.0,) * n, times, times[-1], tuple(range(n)))


def test_saving_counts_only_escalated_requests_stopped_early() -> None:
    low, keep = _trace(-3.0), _trace(-0.01)
    assert low.full_score < 0.5 <= keep.full_score
    r = evaluate([low, keep], EarlyEscalation.single(8, 0.1), threshold=0.5)
    assert r["wrong"] == 0.0 and r["fired"] == 1.0
    assert r["saved"] == pytest.approx((4.0 - 0.8) / (4.0 - 0.1))  # of decode time
    assert r["saved_end_to_end"] == pytest.approx((4.0 - 0.8) / 4.0)


def test_the_first_failing_checkpoint_stops_the_answer() -> None:
    rule = EarlyEscalation((Checkpoint(4, 0.4), Checkpoint(16, 0.0)))
    assert fired_at([0.2] * 40, rule, 0.5) == 16  # not clearly low at 4, low at 16
    assert fired_at([0.05] * 40, rule, 0.5) == 4
    assert fired_at([0.6] * 40, rule, 0.5) is None


def test_the_chosen_margins_cover_how_far_a_final_score_rose() -> None:
    # starts low but recovers: its rise from each checkpoint to the end sets the margins
    recovers = _trace(-1.5, late=-0.01)
    low = _trace(-3.0)
    rule = choose([recovers, low], ks=(4, 16))
    full = recovers.full_score
    for c in rule.checkpoints:
        rise = full - recovers.running()[c.tokens - 1]
        assert rise - 1e-9 <= c.margin < rise + 0.02
    assert evaluate([recovers, low], rule, threshold=0.5)["wrong"] == 0.0


def test_the_ceiling_is_the_narrowest_rule_that_keeps_every_kept_answer() -> None:
    recovers, low = _trace(-1.5, late=-0.01), _trace(-3.0)
    assert recovers.full_score >= 0.5 > low.full_score
    rule = ceiling([recovers, low], 0.5, ks=(4, 16, 64))
    assert [c.tokens for c in rule.checkpoints] == [4, 16]  # no trace reaches 64
    for c in rule.checkpoints:
        at_k = recovers.running()[c.tokens - 1]
        assert 0.5 - c.margin <= at_k < 0.5 - c.margin + 0.02  # just keeps it local
    r = evaluate([recovers, low], rule, threshold=0.5)
    assert r["wrong"] == 0.0 and r["saved"] == pytest.approx((4.0 - 0.4) / 3.9)
    # choose() needs no threshold: it covers the whole rise, so it is never narrower
    chosen = choose([recovers, low], ks=(4, 16))
    assert all(a.margin >= b.margin for a, b in zip(chosen.checkpoints, rule.checkpoints,
                                                        strict=True))


def test_a_streamed_decision_is_compared_with_the_whole_answers() -> None:
    recovers, low, keep = _trace(-1.5, late=-0.01), _trace(-3.0), _trace(-0.01)
    short_low = _trace(-3.0, n=6)  # ends before the hold: judged whole, decided at its end
    assert recovers.running()[7] < 0.5 <= recovers.full_score
    rows = streamed([recovers, low, keep, short_low], ks=(8, 32), threshold=0.5)
    by_k = {r["k"]: r for r in rows}
    # At 8 tokens the recovering answer still looks low: escalated though kept whole.
    assert by_k[8]["agreement"] == 0.75 and by_k[8]["escalated_but_whole_keeps"] == 0.25
    assert by_k[8]["streamed_but_whole_escalates"] == 0.0
    # By 32 it has recovered (running score 0.73 there): every decision agrees.
    assert recovers.running()[31] >= 0.5
    assert (by_k[32]["agreement"], by_k[32]["escalated_but_whole_keeps"]) == (1.0, 0.0)
    # Waits: the K-th token's arrival (0.1 s per token), or the whole of a shorter answer.
    assert by_k[8]["median_wait_ms"] == pytest.approx(800.0)  # 0.6, 0.8, 0.8, 0.8 s
    assert by_k[32]["median_wait_ms"] == pytest.approx(3200.0)


def test_the_prompt_sets_read_the_bundled_data() -> None:
    selection = prompts(100, 0)
    assert len(selection) == 100 and selection[80].startswith("Answer briefly: ")
    fresh = prompts(10, 0, "gsm8k-boolq")
    assert len(fresh) == 10 and not fresh[0].startswith("Answer briefly: ")  # GSM8K first
    assert fresh[5].startswith("Answer briefly: ") and fresh[5].endswith("?")  # then BoolQ
    assert fresh == prompts(10, 0, "gsm8k-boolq") != prompts(10, 1, "gsm8k-boolq")
    assert not set(fresh) & set(prompts(160, 0))
    with pytest.raises(ValueError, match="unknown prompt set 'nope'"):
        prompts(10, 0, "nope")


def test_a_deployment_brings_its_own_prompts(tmp_path: Path) -> None:
    lines = tmp_path / "mine.txt"
    lines.write_text("First?\n\n  Second?  \nThird?\nFourth?\nFifth?\n", encoding="utf-8")
    assert prompts_from_file(lines, 4) == ["First?", "Second?", "Third?", "Fourth?"]
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": f"Q{i}\nline two"}) + "\n"
                             for i in range(4)), encoding="utf-8")
    assert prompts_from_file(jsonl, 10)[3] == "Q3\nline two"  # JSONL keeps newlines
    jsonl.write_text('{"prompt": "ok"}\n["not", "an object"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"mine.jsonl:2: expected a JSON object"):
        prompts_from_file(jsonl, 10)
    with pytest.raises(ValueError, match="3 prompts; the benchmark needs at least 4"):
        lines.write_text("a\nb\nc\n", encoding="utf-8")
        prompts_from_file(lines, 10)
    with pytest.raises(ValueError, match="cannot read prompts from"):
        prompts_from_file(tmp_path / "missing.txt", 10)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    from kernels.registry import load_engine

    e = load_engine("bundled:smollm2-135m", threads=1)
    yield e
    e.close()


@pytest.mark.slow
def test_a_trace_records_every_token_and_ends_on_the_full_score(engine: Engine) -> None:
    t = trace(engine, "Name three colours.", max_tokens=12)
    assert 1 <= len(t.logprobs) == len(t.entropies) == len(t.times) <= 12
    assert t.running()[-1] == pytest.approx(t.full_score)
    assert list(t.times) == sorted(t.times) and t.total >= t.times[-1]
    assert Trace.from_json(t.to_json()) == t


@pytest.mark.slow
def test_the_live_early_rule_stops_the_stream_when_it_fires(engine: Engine) -> None:
    rule = EarlyEscalation.single(tokens=3, margin=0.0)
    early = timed_early(engine, "Name three colours.", 24, rule, threshold=1.0)
    assert early.fired  # every score is below 1
    assert 0 < early.decode < early.total
    assert not timed_early(engine, "Name three colours.", 6, rule, threshold=0.0).fired
    # the engine is free again after an early stop
    assert len(trace(engine, "Say hi.", max_tokens=4).logprobs) >= 1
