"""Early escalation: how much local decode time is saved by deciding after K tokens.

The full rule escalates an answer when `runtime.confidence.score` over the whole local
answer (up to `--max-tokens`) is below `--threshold` (default 0.5, the runtime's default).
The early rule (`runtime.confidence.EarlyEscalation`) escalates as soon as the running
score over the first K tokens is below threshold - δ, and stops local decoding there.

Prompts: the 80 MT-Bench first turns and ARC-Easy questions asked as free text, through the
runtime's own engine (`kernels.registry.load_engine`, chat template, greedy). A seeded
permutation cuts them in two halves: K and δ are chosen on the first (the largest saving
whose early escalations are all items the full rule also escalates), and reported on the
second. Time saved is measured, A and B interleaved: for each held-out item the early
rule fires on, the full generation and the early-stopped one are run back to back
(alternating which goes first) and timed end to end (prompt evaluation included, so the
fraction is conservative); items it does not fire on cost the same either way.

    python -m benchmarks.early_escalation --json [--limit 160] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import emit, median, table
from kernels import Engine, GenerationParams, Message
from runtime.confidence import EarlyEscalation, RunningConfidence, score

DATA = Path(__file__).resolve().parent / "data" / "qa"
KS = (4, 8, 12, 16, 24, 32)
MARGINS = tuple(round(0.02 * i, 2) for i in range(16))
TARGET_SAVED = 0.30


@dataclass(frozen=True, slots=True)
class Trace:
    """One full local generation: each token's running score and arrival time (s)."""

    prompt: str
    running: tuple[float, ...]  # score over the first k+1 tokens
    times: tuple[float, ...]  # seconds since the request, at token k+1
    total: float  # seconds for the whole request
    full_score: float


def prompts(limit: int, seed: int) -> list[str]:
    """MT-Bench first turns, then ARC-Easy questions as free text, up to `limit`."""
    mt = [json.loads(line)["turns"][0] for line in
          (DATA / "mt_bench" / "question.jsonl").read_text(encoding="utf-8").splitlines()]
    arc = [json.loads(line)["query"].removeprefix("Question:").strip() for line in
           (DATA / "arc_easy" / "arc_easy.jsonl").read_text(encoding="utf-8").splitlines()]
    rng = np.random.default_rng(seed)
    picked = [arc[i] for i in rng.permutation(len(arc))[: max(0, limit - len(mt))]]
    return (mt + [f"Answer briefly: {q}" for q in picked])[:limit]


def trace(engine: Engine, prompt: str, max_tokens: int) -> Trace:
    """Generate the full answer, recording the running score and time at every token."""
    running = RunningConfidence()
    scores: list[float] = []
    times: list[float] = []
    events = []
    started = time.perf_counter()
    for event in engine.stream([Message("user", prompt)], GenerationParams(max_tokens)):
        if event.token_id < 0:
            continue
        events.append(event)
        running.add(event)
        scores.append(running.value().score)
        times.append(time.perf_counter() - started)
    total = time.perf_counter() - started
    return Trace(prompt, tuple(scores), tuple(times), total, score(events).score)


def timed_early(engine: Engine, prompt: str, max_tokens: int, rule: EarlyEscalation,
                threshold: float) -> tuple[float, bool]:
    """Run with the early rule live; (seconds, whether it stopped early)."""
    running = RunningConfidence()
    started = time.perf_counter()
    stream = engine.stream([Message("user", prompt)], GenerationParams(max_tokens))
    fired = False
    try:
        for event in stream:
            running.add(event)
            if rule.fires(running, threshold):
                fired = True
                break
    finally:
        stream.close()
    return time.perf_counter() - started, fired


def early_fires(t: Trace, rule: EarlyEscalation, threshold: float) -> bool:
    k = rule.tokens
    return len(t.running) >= k and t.running[k - 1] < threshold - rule.margin


def evaluate(traces: list[Trace], rule: EarlyEscalation, threshold: float) -> dict[str, float]:
    """Decisions and the saving estimated from token timestamps (used to choose the rule)."""
    escalated = [t for t in traces if t.full_score < threshold]
    fired = [early_fires(t, rule, threshold) for t in traces]
    wrong = sum(f and t.full_score >= threshold for f, t in zip(fired, traces, strict=True))
    full = sum(t.total for t in escalated)
    saved = sum(t.total - t.times[rule.tokens - 1]
                for t in escalated if early_fires(t, rule, threshold))
    return {"saved": saved / full if full else 0.0, "wrong": wrong / max(1, len(traces))}


def choose(traces: list[Trace], threshold: float) -> EarlyEscalation:
    """The rule with the largest estimated saving and no false early escalation."""
    best, best_saved = EarlyEscalation(KS[-1], MARGINS[-1]), -1.0
    for k in KS:
        for margin in MARGINS:
            rule = EarlyEscalation(k, margin)
            r = evaluate(traces, rule, threshold)
            if r["wrong"] == 0 and r["saved"] > best_saved + 1e-9:
                best, best_saved = rule, r["saved"]
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kernels.registry import load_engine

    items = prompts(args.limit, args.seed)
    engine = load_engine(args.model, threads=args.threads)
    try:
        traces = []
        for i, p in enumerate(items, 1):
            traces.append(trace(engine, p, args.max_tokens))
            if i % 20 == 0:
                print(f"  generated {i}/{len(items)}", flush=True)
        order = np.random.default_rng(args.seed).permutation(len(traces))
        half = len(traces) // 2
        train = [traces[i] for i in order[:half]]
        test = [traces[i] for i in order[half:]]
        rule = choose(train, args.threshold)
        # Held-out half, measured: full vs early-stopped, back to back, alternating order.
        escalated = [t for t in test if t.full_score < args.threshold]
        full_cost = early_cost = 0.0
        pairs = []
        for j, t in enumerate(escalated):
            if not early_fires(t, rule, args.threshold):
                full_cost += t.total
                early_cost += t.total
                continue
            runs: dict[str, float] = {}
            for which in (("full", "early") if j % 2 == 0 else ("early", "full")):
                if which == "full":
                    runs["full"] = trace(engine, t.prompt, args.max_tokens).total
                else:
                    runs["early"], fired = timed_early(
                        engine, t.prompt, args.max_tokens, rule, args.threshold)
                    assert fired, "greedy decoding must repeat the traced decision"
            full_cost += runs["full"]
            early_cost += runs["early"]
            pairs.append(runs["early"] / runs["full"])
    finally:
        engine.close()
    fired_test = [early_fires(t, rule, args.threshold) for t in test]
    differ = sum(f and t.full_score >= args.threshold
                 for f, t in zip(fired_test, test, strict=True))
    estimate = evaluate(test, rule, args.threshold)
    return {
        "model": args.model, "n": len(traces), "n_train": len(train), "n_test": len(test),
        "max_tokens": args.max_tokens, "threshold": args.threshold,
        "rule_tokens": rule.tokens, "rule_margin": rule.margin,
        "train_estimated_saved": evaluate(train, rule, args.threshold)["saved"],
        "test_escalated": len(escalated), "test_early_fired": int(sum(fired_test)),
        "test_early_fired_wrongly": differ,
        "test_estimated_saved_from_timestamps": estimate["saved"],
        "median_early_over_full_time": median(pairs),
        "mean_full_tokens": float(np.mean([len(t.running) for t in traces])),
        "target_saved": TARGET_SAVED,
        "early_saved_fraction": 1.0 - early_cost / full_cost if full_cost else 0.0,
        "early_decision_agreement": 1.0 - differ / max(1, len(test)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=160, help="prompts (80 MT-Bench + ARC)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--model", default="bundled:smollm2-135m")
    # see benchmarks.cascade: on shared cores 1 thread beat 2 for this small model
    parser.add_argument("--threads", type=int, default=1, help="0 = the engine default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    s = run(args)
    human = "\n".join([
        f"early escalation: n={s['n']} (rule chosen on {s['n_train']}, reported on "
        f"{s['n_test']}), max_tokens={s['max_tokens']}, threshold={s['threshold']}",
        f"rule: escalate after K={s['rule_tokens']} tokens if running score < "
        f"threshold - {s['rule_margin']}",
        table(["held-out", "value"], [
            ["escalated by the full rule", s["test_escalated"]],
            ["early rule fired", s["test_early_fired"]],
            ["... on items the full rule keeps", s["test_early_fired_wrongly"]],
            ["decision agreement", s["early_decision_agreement"]],
            ["decode time saved (measured)", s["early_saved_fraction"]],
            ["saved, from token timestamps", s["test_estimated_saved_from_timestamps"]],
        ]),
    ])
    emit(s, human, args.json)


if __name__ == "__main__":
    main()
