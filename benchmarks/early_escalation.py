"""Early escalation: how much local decode time is saved by deciding after a few tokens.

The full rule escalates an answer when `runtime.confidence.score` over the whole local
answer (up to `--max-tokens`) is below `--threshold` (default 0.5, the runtime's default).
The early rule (`runtime.confidence.EarlyEscalation`) checks the running score at a few
checkpoints (K = 4, 8, 16, 32 tokens) and escalates at the first one where it is below
threshold - δ_K, stopping local decoding there.

Prompts: the 80 MT-Bench first turns and ARC-Easy questions asked as free text, through the
runtime's own engine (`kernels.registry.load_engine`, chat template, greedy). A seeded
permutation cuts them in two halves. The margins are chosen on the first: δ_K is the largest
amount by which an answer's final score exceeded its running score at K (rounded up to
0.02), so on those prompts the early rule never escalates an answer the full rule keeps.
They are reported on the second half. Time saved is measured, A and B interleaved: for each
held-out item the early rule fires on, the full generation and the early-stopped one are run
back to back (alternating which goes first) and timed end to end (prompt evaluation
included, so the fraction is conservative); items it does not fire on cost the same.

Per-token log-probs, entropies and times are cached (`--traces`, JSONL under
benchmarks/out/) so the score can be revisited without re-generating; greedy decoding makes
the cached decisions those of a fresh run, and the A/B timing is always measured live.

Also reported: the ceiling of this family of rules — margins chosen on the held-out half
itself, so that no kept answer there is escalated, at the runtime's checkpoints and with
later ones (48 … 192 tokens) added — and its saving estimated from token timestamps. It
says how much any margin rule on this score could save with the same decisions.

    python -m benchmarks.early_escalation --json [--limit 160] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import emit, median, out_path, table
from kernels import Engine, GenerationParams, Message, TokenEvent
from runtime.confidence import Checkpoint, EarlyEscalation, RunningConfidence

DATA = Path(__file__).resolve().parent / "data" / "qa"
KS = (4, 8, 16, 32)
STEP = 0.02  # margins are rounded up to this grid
TARGET_SAVED = 0.30
TRADEOFF_MARGINS = (0.0, 0.05, 0.1, 0.2)
BOUND_KS = (4, 8, 16, 32, 48, 64, 128, 192)  # checkpoints for the in-sample ceiling


@dataclass(frozen=True, slots=True)
class Trace:
    """One full local generation: each token's log-prob, entropy and arrival time (s)."""

    prompt: str
    logprobs: tuple[float, ...]
    entropies: tuple[float, ...]
    times: tuple[float, ...]  # seconds since the request, at token k+1
    total: float  # seconds for the whole request

    def running(self) -> list[float]:
        """The running score after each token (the last one is the full answer's score)."""
        acc = RunningConfidence()
        out = []
        for i, (lp, h) in enumerate(zip(self.logprobs, self.entropies, strict=True)):
            acc.add(TokenEvent("", i, lp, h))
            out.append(acc.value().score)
        return out

    @property
    def full_score(self) -> float:
        r = self.running()
        return r[-1] if r else math.nan

    def to_json(self) -> str:
        return json.dumps({"prompt": self.prompt, "logprobs": self.logprobs,
                           "entropies": self.entropies, "times": self.times,
                           "total": self.total})

    @classmethod
    def from_json(cls, line: str) -> Trace:
        d = json.loads(line)
        return cls(d["prompt"], tuple(d["logprobs"]), tuple(d["entropies"]),
                   tuple(d["times"]), float(d["total"]))


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
    """Generate the full answer, recording every token's log-prob, entropy and time."""
    lps: list[float] = []
    hs: list[float] = []
    times: list[float] = []
    started = time.perf_counter()
    for event in engine.stream([Message("user", prompt)], GenerationParams(max_tokens)):
        if event.token_id < 0:
            continue
        lps.append(event.logprob)
        hs.append(event.entropy)
        times.append(time.perf_counter() - started)
    total = time.perf_counter() - started
    return Trace(prompt, tuple(lps), tuple(hs), tuple(times), total)


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


def fired_at(running: Sequence[float], rule: EarlyEscalation, threshold: float) -> int | None:
    """The token count at which the early rule stops this answer, or None."""
    for c in rule.checkpoints:
        if len(running) >= c.tokens and rule.fires_at(c.tokens, running[c.tokens - 1],
                                                       threshold):
            return c.tokens
    return None


def evaluate(traces: Sequence[Trace], rule: EarlyEscalation,
             threshold: float) -> dict[str, float]:
    """Decisions and the saving estimated from token timestamps (used to choose the rule)."""
    full = saved = 0.0
    wrong = fired = 0
    for t in traces:
        running = t.running()
        k = fired_at(running, rule, threshold)
        fired += k is not None
        if running[-1] >= threshold:
            wrong += k is not None
            continue
        full += t.total
        if k is not None:
            saved += t.total - t.times[k - 1]
    return {"saved": saved / full if full else 0.0, "wrong": wrong / max(1, len(traces)),
            "fired": float(fired)}


def choose(traces: Sequence[Trace], ks: Sequence[int] = KS) -> EarlyEscalation:
    """Margins from how far a final score rose above its running score at each K."""
    checkpoints = []
    for k in ks:
        gaps = [r[-1] - r[k - 1] for r in (t.running() for t in traces) if len(r) >= k]
        if not gaps:
            continue
        margin = math.ceil(max(0.0, max(gaps)) / STEP - 1e-9) * STEP
        checkpoints.append(Checkpoint(k, round(margin, 2)))
    return EarlyEscalation(tuple(checkpoints))


def load_traces(engine_factory: Any, items: list[str], max_tokens: int,
                cache: Path | None) -> list[Trace]:
    """Cached traces for `items`, generating (and appending) the missing ones."""
    have: dict[str, Trace] = {}
    if cache is not None and cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            t = Trace.from_json(line)
            have[t.prompt] = t
    missing = [p for p in items if p not in have]
    if missing:
        engine = engine_factory()
        try:
            for i, p in enumerate(missing, 1):
                have[p] = trace(engine, p, max_tokens)
                if cache is not None:
                    with cache.open("a", encoding="utf-8") as f:
                        f.write(have[p].to_json() + "\n")
                if i % 20 == 0:
                    print(f"  generated {i}/{len(missing)}", flush=True)
        finally:
            engine.close()
    return [have[p] for p in items]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kernels.registry import load_engine

    def factory() -> Engine:
        return load_engine(args.model, threads=args.threads)

    items = prompts(args.limit, args.seed)
    cache = None if args.no_cache else out_path(
        args.traces or f"early-traces-{args.model.replace(':', '-')}-{args.max_tokens}.jsonl")
    traces = load_traces(factory, items, args.max_tokens, cache)
    order = np.random.default_rng(args.seed).permutation(len(traces))
    half = len(traces) // 2
    train = [traces[i] for i in order[:half]]
    test = [traces[i] for i in order[half:]]
    rule = choose(train)
    thr = args.threshold
    # Held-out half, measured: full vs early-stopped, back to back, alternating order.
    escalated = [t for t in test if t.full_score < thr]
    full_cost = early_cost = 0.0
    pairs = []
    engine = factory()
    try:
        for j, t in enumerate(escalated):
            if fired_at(t.running(), rule, thr) is None:
                full_cost += t.total
                early_cost += t.total
                continue
            runs: dict[str, float] = {}
            for which in (("full", "early") if j % 2 == 0 else ("early", "full")):
                if which == "full":
                    runs["full"] = trace(engine, t.prompt, args.max_tokens).total
                else:
                    runs["early"], fired = timed_early(engine, t.prompt, args.max_tokens,
                                                       rule, thr)
                    assert fired, "greedy decoding must repeat the traced decision"
            full_cost += runs["full"]
            early_cost += runs["early"]
            pairs.append(runs["early"] / runs["full"])
    finally:
        engine.close()
    # What relaxing "the same decisions" would buy: single-checkpoint rules on the held-out
    # half, saving estimated from token timestamps (not chosen, not measured live).
    tradeoff = []
    for k in KS:
        for margin in TRADEOFF_MARGINS:
            e = evaluate(test, EarlyEscalation.single(k, margin), thr)
            tradeoff.append({"k": k, "margin": margin, "saved_estimated": e["saved"],
                             "agreement": 1.0 - e["wrong"]})
    # The ceiling of this family of rules on these prompts: margins chosen on the held-out
    # half itself (in-sample), at the runtime's checkpoints and at later ones too.
    ceiling = {}
    for ks in (KS, BOUND_KS):
        best = choose(test, [k for k in ks if k < args.max_tokens])
        ceiling[",".join(str(c.tokens) for c in best.checkpoints)] = {
            "rule": [[c.tokens, c.margin] for c in best.checkpoints],
            "saved_estimated": evaluate(test, best, thr)["saved"]}
    stops = [fired_at(t.running(), rule, thr) for t in test]
    differ = sum(k is not None and t.full_score >= thr for k, t in zip(stops, test, strict=True))
    return {
        "model": args.model, "n": len(traces), "n_train": len(train), "n_test": len(test),
        "max_tokens": args.max_tokens, "threshold": thr,
        "rule": [[c.tokens, c.margin] for c in rule.checkpoints],
        "train_escalated_share": float(np.mean([t.full_score < thr for t in train])),
        "train_estimated_saved": evaluate(train, rule, thr)["saved"],
        "test_escalated": len(escalated), "test_early_fired": sum(k is not None for k in stops),
        "test_fired_at": {str(c.tokens): stops.count(c.tokens) for c in rule.checkpoints},
        "test_early_fired_wrongly": differ,
        "test_estimated_saved_from_timestamps": evaluate(test, rule, thr)["saved"],
        "median_early_over_full_time": median(pairs),
        "mean_full_tokens": float(np.mean([len(t.logprobs) for t in traces])),
        "target_saved": TARGET_SAVED,
        "tradeoff": tradeoff,
        "in_sample_ceiling": ceiling,
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
    parser.add_argument("--traces", default="", help="trace cache file name in benchmarks/out")
    parser.add_argument("--no-cache", action="store_true", help="generate every trace afresh")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    s = run(args)
    rule = ", ".join(f"K={k}: δ={m:.2f}" for k, m in s["rule"])
    human = "\n".join([
        f"early escalation: n={s['n']} (rule chosen on {s['n_train']}, reported on "
        f"{s['n_test']}), max_tokens={s['max_tokens']}, threshold={s['threshold']}",
        f"rule: escalate at the first checkpoint where running score < threshold - δ ({rule})",
        table(["held-out", "value"], [
            ["escalated by the full rule", s["test_escalated"]],
            ["early rule fired", s["test_early_fired"]],
            ["... on items the full rule keeps", s["test_early_fired_wrongly"]],
            ["decision agreement", s["early_decision_agreement"]],
            ["decode time saved (measured)", s["early_saved_fraction"]],
            ["saved, from token timestamps", s["test_estimated_saved_from_timestamps"]],
        ]),
    ])
    best = sorted(s["tradeoff"], key=lambda r: (-r["agreement"], -r["saved_estimated"]))
    human += "\n\nIf some decisions may differ (held out, single checkpoint, estimated):\n"
    human += table(["K", "δ", "agreement", "saved (est.)"], [
        [r["k"], r["margin"], r["agreement"], r["saved_estimated"]]
        for r in best if r["margin"] in (0.0, 0.1)])
    human += ("\n\nCeiling: margins chosen on the held-out half itself (never escalates a "
              "kept answer there; estimated):\n")
    human += table(["checkpoints", "margins", "saved (est.)"], [
        [ks, " / ".join(f"{m:.2f}" for _, m in c["rule"]), c["saved_estimated"]]
        for ks, c in s["in_sample_ceiling"].items()])
    emit(s, human, args.json)


if __name__ == "__main__":
    main()
