"""Early escalation: how much local decode time is saved by deciding after a few tokens.

The full rule escalates an answer when `runtime.confidence.score` over the whole local
answer (up to `--max-tokens`) is below `--threshold` (default 0.5, the runtime's default).
The early rule (`runtime.confidence.EarlyEscalation`) checks the running score at
checkpoints (K = 4, 8, …, 48 every 4 tokens, then 64, 96, 128, 192; those below
`--max-tokens`) and escalates at the first one where it is below threshold - δ_K, stopping
local decoding there.

Prompts: the 80 MT-Bench first turns and ARC-Easy questions asked as free text, through the
runtime's own engine (`kernels.registry.load_engine`, chat template, greedy). A seeded
permutation cuts them in two halves. The margins are chosen on the first: δ_K is the largest
amount by which an answer's final score exceeded its running score at K (rounded up to
0.02), so on those prompts the early rule never escalates an answer the full rule keeps,
whatever the threshold. They are reported on the second half. Time saved is measured, A and
B interleaved: for each held-out item the early rule fires on, the full generation and the
early-stopped one are run back to back (alternating which goes first) and timed; items it
does not fire on cost the same. The headline, `early_saved_fraction`, is the target's
measure: the share of the escalated requests' local *decode* time (first token to the end)
saved. Prompt evaluation, which an early stop cannot save, is left out of it; the share of
whole request time is reported beside it (`early_saved_fraction_end_to_end`).

Per-token ids, log-probs, entropies and times are cached (`--traces`, JSONL in the output
folder, `benchmarks._report.out_dir`: `benchmarks/out/` in a source checkout) so the score can
be revisited without re-generating; greedy decoding makes the cached decisions those of a
fresh run, and the A/B timing is always measured live.

Also reported: what relaxing "the same decisions" would buy (single checkpoints, held out),
and the ceiling of this family of rules — the narrowest margins that keep every answer the
full rule keeps on the held-out half local, chosen on that half itself — with its saving
estimated from token timestamps. And for streamed answers, which the runtime judges on
their first `runtime.stream_decide_tokens` tokens before showing any (no margin: shown text
cannot be taken back), how often that decision matches the whole answer's, and how long
the hold delays the first text, for several hold lengths.

    python -m benchmarks.early_escalation --json [--limit 160] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import at_least, emit, median, out_path, table
from kernels import Engine, GenerationParams, Message, TokenEvent
from runtime.confidence import Checkpoint, EarlyEscalation, RunningConfidence
from runtime.config import RuntimeConfig

DATA = Path(__file__).resolve().parent / "data" / "qa"
# margins are chosen at the runtime's checkpoints: every 4 tokens to 48, then sparser
KS = RuntimeConfig().early_escalation_tokens
STEP = 0.02  # margins are rounded up to this grid
TARGET_SAVED = 0.30
TRADEOFF_KS = (4, 8, 16, 32)
STREAM_KS = (8, 16, 24, 32, 48)  # hold lengths compared for a streamed answer's decision
TRADEOFF_MARGINS = (0.0, 0.05, 0.1, 0.2)
MIN_PROMPTS = 4  # two halves of two: the rule is chosen on one and reported on the other
MIN_MAX_TOKENS = min(KS) + 1  # a checkpoint must come before the answer's last token


@dataclass(frozen=True, slots=True)
class Trace:
    """One full local generation: each token's log-prob, entropy and arrival time (s)."""

    prompt: str
    logprobs: tuple[float, ...]
    entropies: tuple[float, ...]
    times: tuple[float, ...]  # seconds since the request, at token k+1
    total: float  # seconds for the whole request
    token_ids: tuple[int, ...]  # the score skips repeated token n-grams
    # the running score after each token, computed once: every rule evaluated reads it
    _running: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        acc = RunningConfidence()
        out = []
        for tid, lp, h in zip(self.token_ids, self.logprobs, self.entropies, strict=True):
            acc.add(TokenEvent("", tid, lp, h))
            out.append(acc.value().score)
        object.__setattr__(self, "_running", tuple(out))

    def running(self) -> tuple[float, ...]:
        """The running score after each token (the last one is the full answer's score)."""
        return self._running

    @property
    def decode(self) -> float:
        """Seconds of decoding: from the first token to the end (prompt evaluation excluded)."""
        return self.total - self.times[0] if self.times else 0.0

    @property
    def full_score(self) -> float:
        r = self.running()
        return r[-1] if r else math.nan

    def to_json(self) -> str:
        return json.dumps({"prompt": self.prompt, "logprobs": self.logprobs,
                           "entropies": self.entropies, "times": self.times,
                           "total": self.total, "token_ids": self.token_ids})

    @classmethod
    def from_json(cls, line: str) -> Trace | None:
        """The trace on a cache line; None for a line written before token ids were kept."""
        d = json.loads(line)
        if "token_ids" not in d:
            return None
        return cls(d["prompt"], tuple(d["logprobs"]), tuple(d["entropies"]),
                   tuple(d["times"]), float(d["total"]), tuple(d["token_ids"]))


PROMPT_SETS = ("mtbench-arc", "gsm8k-boolq")


def prompts(limit: int, seed: int, which: str = "mtbench-arc") -> list[str]:
    """The benchmark's prompts, up to `limit`.

    `mtbench-arc` (the default, on which the score and the runtime's margins were chosen):
    the 80 MT-Bench first turns, then ARC-Easy questions as free text. `gsm8k-boolq`, a set
    nothing was chosen on: GSM8K word problems and BoolQ yes/no questions, half each.
    """
    rng = np.random.default_rng(seed)
    if which == "mtbench-arc":
        mt = [json.loads(line)["turns"][0] for line in
              (DATA / "mt_bench" / "question.jsonl").read_text(encoding="utf-8").splitlines()]
        arc = [json.loads(line)["query"].removeprefix("Question:").strip() for line in
               (DATA / "arc_easy" / "arc_easy.jsonl").read_text(encoding="utf-8").splitlines()]
        picked = [arc[i] for i in rng.permutation(len(arc))[: max(0, limit - len(mt))]]
        return (mt + [f"Answer briefly: {q}" for q in picked])[:limit]
    if which == "gsm8k-boolq":
        with gzip.open(DATA.parent / "routing" / "gsm8k.csv.gz", "rt", encoding="utf-8") as f:
            gsm = [row["prompt"] for row in csv.DictReader(f)]
        with gzip.open(DATA / "boolq" / "questions.jsonl.gz", "rt", encoding="utf-8") as f:
            boolq = [json.loads(line)["question"] for line in f]
        half = (limit + 1) // 2
        return ([gsm[i] for i in rng.permutation(len(gsm))[:half]]
                + [f"Answer briefly: {boolq[i]}?" for i in
                   rng.permutation(len(boolq))[: limit - half]])
    raise ValueError(f"unknown prompt set {which!r}; one of {', '.join(PROMPT_SETS)}")


def prompts_from_file(path: Path, limit: int) -> list[str]:
    """A deployment's own prompts, the first `limit`: one per line, or JSONL {"prompt": …}.

    Blank lines are skipped. Raises ValueError naming the file and line when it cannot be
    read as either, or holds fewer than 4 prompts (two halves of two).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read prompts from {path}: {exc}") from None
    out: list[str] = []
    jsonl = path.suffix == ".jsonl"
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if jsonl:
            try:
                p = json.loads(line).get("prompt")
            except (json.JSONDecodeError, AttributeError):
                p = None
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"{path}:{n}: expected a JSON object with a \"prompt\" string")
            out.append(p)
        else:
            out.append(line.strip())
    if len(out) < MIN_PROMPTS:
        raise ValueError(f"{path}: {len(out)} prompts; the benchmark needs at least "
                         f"{MIN_PROMPTS} (two halves of two)")
    return out[:limit]


def trace(engine: Engine, prompt: str, max_tokens: int) -> Trace:
    """Generate the full answer, recording every token's log-prob, entropy and time."""
    lps: list[float] = []
    hs: list[float] = []
    ids: list[int] = []
    times: list[float] = []
    started = time.perf_counter()
    for event in engine.stream([Message("user", prompt)], GenerationParams(max_tokens)):
        if event.token_id < 0:
            continue
        lps.append(event.logprob)
        hs.append(event.entropy)
        ids.append(event.token_id)
        times.append(time.perf_counter() - started)
    total = time.perf_counter() - started
    return Trace(prompt, tuple(lps), tuple(hs), tuple(times), total, tuple(ids))


@dataclass(frozen=True, slots=True)
class Timed:
    """One live run: seconds to the end, seconds of decoding, whether the early rule fired."""

    total: float
    decode: float  # from the first token to the end (the stream closed)
    fired: bool


def timed_early(engine: Engine, prompt: str, max_tokens: int, rule: EarlyEscalation,
                threshold: float) -> Timed:
    """Run with the early rule live, stopping the stream where it fires."""
    running = RunningConfidence()
    started = time.perf_counter()
    first = None
    stream = engine.stream([Message("user", prompt)], GenerationParams(max_tokens))
    fired = False
    try:
        for event in stream:
            if first is None and event.token_id >= 0:
                first = time.perf_counter()
            running.add(event)
            if rule.fires(running, threshold):
                fired = True
                break
    finally:
        stream.close()
    end = time.perf_counter()
    return Timed(end - started, end - (first if first is not None else end), fired)


def fired_at(running: Sequence[float], rule: EarlyEscalation, threshold: float) -> int | None:
    """The token count at which the early rule stops this answer, or None."""
    for c in rule.checkpoints:
        if len(running) >= c.tokens and c.fails(running[c.tokens - 1], threshold):
            return c.tokens
    return None


def evaluate(traces: Sequence[Trace], rule: EarlyEscalation,
             threshold: float) -> dict[str, float]:
    """Decisions and the saving estimated from token timestamps, over escalated answers.

    `saved`: the share of their decode time (first token to end) the early stops cut;
    `saved_end_to_end`: the share of their whole request time (prompt evaluation included).
    """
    total = decode = saved = 0.0
    wrong = fired = 0
    for t in traces:
        running = t.running()
        k = fired_at(running, rule, threshold)
        fired += k is not None
        if running[-1] >= threshold:
            wrong += k is not None
            continue
        total += t.total
        decode += t.decode
        if k is not None:
            saved += t.total - t.times[k - 1]
    return {"saved": saved / decode if decode else 0.0,
            "saved_end_to_end": saved / total if total else 0.0,
            "wrong": wrong / max(1, len(traces)), "fired": float(fired)}


def streamed(traces: Sequence[Trace], ks: Sequence[int], threshold: float
             ) -> list[dict[str, float]]:
    """A streamed prefer-local answer's decision against the whole answer's, per hold K.

    The runtime holds the first K tokens of a streamed answer (`runtime.stream_decide_tokens`)
    and escalates if their running score is below the threshold, with no margin: once text
    is shown it cannot take it back. An answer shorter than K is judged whole. Per K, over
    all traces (nothing is fitted): how often the two decisions agree, the share streamed
    although the whole answer would escalate, the share escalated although it would be
    kept, and the median wait before the first text appears (the K-th token's arrival).
    """
    rows = []
    for k in ks:
        agree = kept_low = escalated_ok = 0
        waits = []
        for t in traces:
            running = t.running()
            seen = min(k, len(running))
            stream_escalates = running[seen - 1] < threshold
            whole_escalates = running[-1] < threshold
            agree += stream_escalates == whole_escalates
            kept_low += whole_escalates and not stream_escalates
            escalated_ok += stream_escalates and not whole_escalates
            waits.append(t.times[seen - 1] if seen < len(running) else t.total)
        n = max(1, len(traces))
        rows.append({"k": k, "agreement": agree / n, "streamed_but_whole_escalates": kept_low / n,
                     "escalated_but_whole_keeps": escalated_ok / n,
                     "median_wait_ms": 1000.0 * median(waits)})
    return rows


def _up(x: float) -> float:
    """`x` rounded up to the margin grid, within [0, 1]."""
    return round(min(1.0, math.ceil(max(0.0, x) / STEP - 1e-9) * STEP), 2)


def choose(traces: Sequence[Trace], ks: Sequence[int] = KS) -> EarlyEscalation:
    """Margins from how far a final score rose above its running score at each K.

    Checkpoints no trace reaches are left out. The margins do not depend on the threshold.
    """
    checkpoints = []
    runs = [t.running() for t in traces]
    for k in ks:
        gaps = [r[-1] - r[k - 1] for r in runs if len(r) >= k]
        if gaps:
            checkpoints.append(Checkpoint(k, _up(max(gaps))))
    return EarlyEscalation(tuple(checkpoints))


def ceiling(traces: Sequence[Trace], threshold: float, ks: Sequence[int] = KS
            ) -> EarlyEscalation:
    """The narrowest margins that escalate none of these traces' kept answers (in-sample).

    A rule that has seen the answers it is judged on: it bounds what any margin rule on this
    score could save on them with the same decisions.
    """
    runs = [t.running() for t in traces]
    checkpoints = []
    for k in ks:
        if not any(len(r) >= k for r in runs):
            continue
        kept = [r[k - 1] for r in runs if len(r) >= k and r[-1] >= threshold]
        checkpoints.append(Checkpoint(k, _up(threshold - min(kept)) if kept else 0.0))
    return EarlyEscalation(tuple(checkpoints))


def load_traces(engine_factory: Any, items: list[str], max_tokens: int,
                cache: Path | None) -> list[Trace]:
    """Cached traces for `items`, generating (and appending) the missing ones."""
    have: dict[str, Trace] = {}
    if cache is not None and cache.exists():
        old = 0
        for line in cache.read_text(encoding="utf-8").splitlines():
            t = Trace.from_json(line)
            if t is None:
                old += 1
            else:
                have[t.prompt] = t
        if old:  # keep the file to what this version reads
            cache.write_text("".join(t.to_json() + "\n" for t in have.values()),
                             encoding="utf-8")
            print(f"  {cache.name}: dropped {old} traces without token ids", flush=True)
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


def prompt_set(args: argparse.Namespace) -> tuple[list[str], str, str]:
    """The prompts `args` name, their name in the report, and their trace-cache suffix.

    Raises ValueError for a prompts file that cannot be used (`prompts_from_file`).
    """
    if args.prompts_file:
        items = prompts_from_file(Path(args.prompts_file), args.limit)
        digest = hashlib.sha256("\n".join(items).encode("utf-8")).hexdigest()[:12]
        return items, f"file:{args.prompts_file}", f"-file-{digest}"
    items = prompts(args.limit, args.seed, args.prompts)
    return items, args.prompts, "" if args.prompts == PROMPT_SETS[0] else f"-{args.prompts}"


def run(args: argparse.Namespace, items: list[str], name: str, tag: str) -> dict[str, Any]:
    """The benchmark on `items` (from `prompt_set`: reported as `name`, cached with `tag`)."""
    from kernels.registry import load_engine

    def factory() -> Engine:
        return load_engine(args.model, threads=args.threads)

    cache = None if args.no_cache else out_path(
        args.traces or f"early-traces-{args.model.replace(':', '-')}-{args.max_tokens}{tag}.jsonl")
    traces = load_traces(factory, items, args.max_tokens, cache)
    order = np.random.default_rng(args.seed).permutation(len(traces))
    half = len(traces) // 2
    train = [traces[i] for i in order[:half]]
    test = [traces[i] for i in order[half:]]
    ks = [k for k in KS if k < args.max_tokens]  # stopping at max_tokens saves nothing
    if not any(len(t.running()) >= min(ks) for t in train):
        raise SystemExit(f"early_escalation: no answer of the selection half reached the first "
                         f"checkpoint ({min(ks)} tokens): there is nothing to choose margins "
                         "on (longer answers: other prompts or a larger --max-tokens)")
    rule = choose(train, ks)
    thr = args.threshold
    # Held-out half, measured: full vs early-stopped, back to back, alternating order.
    escalated = [t for t in test if t.full_score < thr]
    # [full, early] seconds over the escalated answers: end to end, and decoding only
    total, decode = [0.0, 0.0], [0.0, 0.0]
    pairs = []
    engine = factory()
    try:
        for j, t in enumerate(escalated):
            if fired_at(t.running(), rule, thr) is None:  # costs the same both ways
                total = [total[0] + t.total, total[1] + t.total]
                decode = [decode[0] + t.decode, decode[1] + t.decode]
                continue
            if j % 2 == 0:  # alternate which goes first
                full = trace(engine, t.prompt, args.max_tokens)
                early = timed_early(engine, t.prompt, args.max_tokens, rule, thr)
            else:
                early = timed_early(engine, t.prompt, args.max_tokens, rule, thr)
                full = trace(engine, t.prompt, args.max_tokens)
            assert early.fired, "greedy decoding must repeat the traced decision"
            total = [total[0] + full.total, total[1] + early.total]
            decode = [decode[0] + full.decode, decode[1] + early.decode]
            pairs.append(early.total / full.total)
    finally:
        engine.close()
    # What relaxing "the same decisions" would buy: single-checkpoint rules on the held-out
    # half, saving estimated from token timestamps (not chosen, not measured live).
    tradeoff = []
    for k in TRADEOFF_KS:
        for margin in TRADEOFF_MARGINS:
            e = evaluate(test, EarlyEscalation.single(k, margin), thr)
            tradeoff.append({"k": k, "margin": margin, "saved_estimated": e["saved"],
                             "agreement": 1.0 - e["wrong"]})
    # The ceiling of this family of rules on these prompts: margins chosen on the held-out
    # half itself (in-sample), the narrowest that keep every kept answer there local.
    best = ceiling(test, thr, ks)
    bound = {"rule": [[c.tokens, c.margin] for c in best.checkpoints],
             "saved_estimated": evaluate(test, best, thr)["saved"]}
    # The runtime's own default rule (runtime.early_escalation_tokens / _margins) on the
    # held-out half, estimated: what a device with the default config does on these prompts.
    default = RuntimeConfig().early_escalation
    shipped = None
    if default is not None:
        e = evaluate(test, default, thr)
        shipped = {"fired": e["fired"], "agreement": 1.0 - e["wrong"],
                   "saved_estimated": e["saved"],
                   "saved_end_to_end_estimated": e["saved_end_to_end"]}
    stops = [fired_at(t.running(), rule, thr) for t in test]
    differ = sum(k is not None and t.full_score >= thr for k, t in zip(stops, test, strict=True))
    return {
        "model": args.model, "prompts": name, "n": len(traces),
        "n_train": len(train), "n_test": len(test),
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
        "in_sample_ceiling": bound,
        "runtime_rule": shipped,
        "streamed": streamed(traces, [k for k in STREAM_KS if k < args.max_tokens], thr),
        "stream_decide_tokens": RuntimeConfig().stream_decide_tokens,
        "median_first_token_ms": 1000.0 * median([t.times[0] for t in traces if t.times]),
        "test_estimated_saved_end_to_end": evaluate(test, rule, thr)["saved_end_to_end"],
        "early_saved_fraction_end_to_end": 1.0 - total[1] / total[0] if total[0] else 0.0,
        # the target's measure: local decode time saved on escalated requests
        "early_saved_fraction": 1.0 - decode[1] / decode[0] if decode[0] else 0.0,
        "early_decision_agreement": 1.0 - differ / max(1, len(test)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=at_least(MIN_PROMPTS), default=160,
                        help=f"prompts (80 MT-Bench + ARC); at least {MIN_PROMPTS}, two halves "
                        "of two, as for --prompts-file")
    parser.add_argument("--prompts", choices=PROMPT_SETS, default=PROMPT_SETS[0],
                        help="mtbench-arc (selection set) or gsm8k-boolq (fresh)")
    parser.add_argument("--prompts-file", default="",
                        help="your own prompts instead: one per line, or .jsonl {\"prompt\": …}")
    parser.add_argument("--max-tokens", type=at_least(MIN_MAX_TOKENS), default=96,
                        help=f"at least {MIN_MAX_TOKENS}: the first checkpoint is K={min(KS)}")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--model", default="bundled:smollm2-135m")
    # see benchmarks.cascade: on shared cores 1 thread beat 2 for this small model
    parser.add_argument("--threads", type=at_least(0), default=1,
                        help="0 = the engine default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--traces", default="", help="trace cache file name in the output folder")
    parser.add_argument("--no-cache", action="store_true", help="generate every trace afresh")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        chosen = prompt_set(args)
    except ValueError as exc:  # a bad prompts file: one line, not a traceback
        parser.exit(2, f"early_escalation: {exc}\n")
    s = run(args, *chosen)
    rule = ", ".join(f"K={k}: δ={m:.2f}" for k, m in s["rule"])
    human = "\n".join([
        f"early escalation: {s['prompts']}, n={s['n']} (rule chosen on {s['n_train']}, reported on "
        f"{s['n_test']}), max_tokens={s['max_tokens']}, threshold={s['threshold']}",
        f"rule: escalate at the first checkpoint where running score < threshold - δ ({rule})",
        table(["held-out", "value"], [
            ["escalated by the full rule", s["test_escalated"]],
            ["early rule fired", s["test_early_fired"]],
            ["... on items the full rule keeps", s["test_early_fired_wrongly"]],
            ["decision agreement", s["early_decision_agreement"]],
            ["decode time saved (measured)", s["early_saved_fraction"]],
            ["... from token timestamps", s["test_estimated_saved_from_timestamps"]],
            ["request time saved, prompt evaluation included", s[
                "early_saved_fraction_end_to_end"]],
            ["... from token timestamps", s["test_estimated_saved_end_to_end"]],
        ]),
    ])
    best = sorted(s["tradeoff"], key=lambda r: (-r["agreement"], -r["saved_estimated"]))
    human += "\n\nIf some decisions may differ (held out, single checkpoint, estimated):\n"
    human += table(["K", "δ", "agreement", "saved (est.)"], [
        [r["k"], r["margin"], r["agreement"], r["saved_estimated"]]
        for r in best if r["margin"] in (0.0, 0.1)])
    if s["runtime_rule"] is not None:
        r = s["runtime_rule"]
        human += (f"\n\nThe runtime's default rule on the held-out half (estimated): fired on "
                  f"{r['fired']:.0f}, agreement {r['agreement']:.3f}, decode time saved "
                  f"{r['saved_estimated']:.3f}, request time saved "
                  f"{r['saved_end_to_end_estimated']:.3f}")
    human += ("\n\nA streamed answer, judged on its first K tokens with no margin, against the "
              f"whole answer (all {s['n']} prompts; the runtime holds "
              f"{s['stream_decide_tokens']}; unheld, the first token arrives after a median "
              f"{s['median_first_token_ms']:.0f} ms):\n")
    human += table(["K", "agreement", "shown, whole escalates", "escalated, whole kept",
                    "median wait ms"], [
        [r["k"], r["agreement"], r["streamed_but_whole_escalates"],
         r["escalated_but_whole_keeps"], r["median_wait_ms"]] for r in s["streamed"]])
    human += ("\n\nCeiling: margins chosen on the held-out half itself (never escalates a "
              "kept answer there; estimated):\n")
    bound = s["in_sample_ceiling"]
    human += table(["checkpoints", "margins", "saved (est.)"], [[
        ",".join(str(k) for k, _ in bound["rule"]),
        " / ".join(f"{m:.2f}" for _, m in bound["rule"]), bound["saved_estimated"]]])
    human += ("\n\nThe chosen rule as runtime config (tandem.toml):\n[runtime]\n"
              f"early_escalation_tokens = {[k for k, _ in s['rule']]}\n"
              f"early_escalation_margins = {[m for _, m in s['rule']]}")
    emit(s, human, args.json)


if __name__ == "__main__":
    main()
