"""Early escalation: the rule, how the benchmark chooses it, and a real engine stopping early."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.early_escalation import Trace, choose, evaluate, timed_early, trace
from kernels import Engine, TokenEvent
from runtime.confidence import EarlyEscalation, RunningConfidence


def _running(logprobs: list[float]) -> RunningConfidence:
    acc = RunningConfidence()
    for i, lp in enumerate(logprobs):
        acc.add(TokenEvent("x", i, lp, 2.0))
    return acc


def test_the_early_rule_waits_for_k_tokens() -> None:
    rule = EarlyEscalation(tokens=4, margin=0.1)
    assert not rule.fires(_running([-5.0] * 3), threshold=0.5)
    assert rule.fires(_running([-5.0] * 4), threshold=0.5)


def test_the_early_rule_needs_the_score_clearly_below_threshold() -> None:
    running = _running([-0.4] * 4)
    value = running.value().score
    assert EarlyEscalation(4, 0.0).fires(running, threshold=value + 0.05)
    assert not EarlyEscalation(4, 0.1).fires(running, threshold=value + 0.05)


def test_the_early_rule_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        EarlyEscalation(tokens=0)
    with pytest.raises(ValueError):
        EarlyEscalation(margin=-0.1)


def _trace(scores: list[float], full: float) -> Trace:
    times = tuple(0.1 * (i + 1) for i in range(len(scores)))
    return Trace("p", tuple(scores), times, times[-1], full)


def test_saving_counts_only_escalated_requests_stopped_early() -> None:
    low = _trace([0.1] * 40, full=0.2)  # escalated, clearly low from the start
    keep = _trace([0.9] * 40, full=0.9)  # kept local
    r = evaluate([low, keep], EarlyEscalation(8, 0.1), threshold=0.5)
    assert r["wrong"] == 0.0
    assert r["saved"] == pytest.approx((4.0 - 0.8) / 4.0)


def test_the_chosen_rule_never_escalates_what_the_full_answer_keeps() -> None:
    # starts low but recovers: an early rule at K <= 8 with a small margin would be wrong
    recovers = _trace([0.35] * 8 + [0.9] * 32, full=0.8)
    low = _trace([0.1] * 40, full=0.2)
    rule = choose([recovers, low], threshold=0.5)
    assert evaluate([recovers, low], rule, 0.5)["wrong"] == 0.0
    assert rule.tokens == 4 and rule.margin > 0.15  # the earliest K, margin past 0.35


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    from kernels.registry import load_engine

    e = load_engine("bundled:smollm2-135m", threads=1)
    yield e
    e.close()


@pytest.mark.slow
def test_a_trace_records_every_token_and_ends_on_the_full_score(engine: Engine) -> None:
    t = trace(engine, "Name three colours.", max_tokens=12)
    assert 1 <= len(t.running) == len(t.times) <= 12
    assert t.running[-1] == pytest.approx(t.full_score)
    assert list(t.times) == sorted(t.times) and t.total >= t.times[-1]


@pytest.mark.slow
def test_the_live_early_rule_stops_the_stream_when_it_fires(engine: Engine) -> None:
    rule = EarlyEscalation(tokens=3, margin=0.0)
    _, fired = timed_early(engine, "Name three colours.", 24, rule, threshold=1.0)
    assert fired  # every score is below 1
    _, fired = timed_early(engine, "Name three colours.", 6, rule, threshold=0.0)
    assert not fired  # no score is below 0
    # the engine is free again after an early stop
    assert len(trace(engine, "Say hi.", max_tokens=4).running) >= 1
