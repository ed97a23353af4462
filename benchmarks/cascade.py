"""The local-then-cloud cascade on multiple-choice QA, with a calibrated local confidence.

The real local model (default `bundled:smollm2-135m`) answers each question by option
log-likelihood: the prompt is `PROMPT`, `"Question: {question}\\nAnswer:"` (plain text, no chat
template) and each option `" {text}"` is scored by the sum of its token log-probabilities;
the answer is the highest sum. A second on-device model, the peer (default
`bundled:gemma3-270m`), scores the same options; its view feeds the confidence only.
Scoring is `kernels.options.OptionScorer`, the device's own multiple-choice scorer (its own
`Llama(logits_all=True)`, called from the main thread only).

The confidence is `runtime.calibration`: a logistic model over on-device signals
(`MC_FEATURES`), scored out-of-fold (stratified k-fold, seeded) so every item is judged by
a model that never saw it. Escalated items take the strong model's result: on MMLU,
GPT-4-1106's correctness from RouteLLM's routing data joined on the question text; on other
sets a cloud assumed always right (labelled `cloud: assumed-correct`).

    python -m benchmarks.cascade --format arc --limit 500 --json
    python -m benchmarks.cascade --format mmlu --dataset PATH --limit 500 --json

Writes the weights fitted on all scored items to `calibration-<format>.json` (load with
`CalibratedConfidence.load`) and the curve to `cascade-<format>.png`, in the output folder
(`benchmarks._report.out_dir`: `benchmarks/out/` in a source checkout).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import at_least, emit, out_path, table
from kernels.errors import EngineError
from kernels.options import PROMPT, OptionScorer, OptionScores
from runtime.calibration import (
    MC_FEATURES,
    PEER_FEATURES,
    fit,
    mc_features,
    peer_features,
)
from runtime.router.metrics import routing_curve

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_DATASET = {"arc": DATA / "qa" / "arc_easy", "mmlu": DATA / "qa" / "mmlu"}
ROUTING_MMLU = DATA / "routing" / "mmlu.csv.gz"
SHARES = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
TARGET_AUROC_ARC = 0.68
# The scorer's prompt is lm-evaluation-harness's ARC prompt (the data's `query` field): 0.48 vs
# 0.45 accuracy without the "Question:" prefix on 150 items (seed 1) for SmolLM2-135M, 0.60 vs
# 0.53 (40) for Gemma.


@dataclass(frozen=True, slots=True)
class Item:
    """One multiple-choice question; `strong` is the cloud's correctness (1/0)."""

    question: str
    options: tuple[str, ...]
    gold: int
    group: str = ""
    strong: int = 1


# -- data ---------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115 (returned to a with)


def load_arc(path: Path) -> list[Item]:
    """JSONL lines `{query, choices, gold}` from a file or every `*.jsonl` in a folder."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    items = []
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                query = str(row["query"]).removeprefix("Question:").strip()
                items.append(Item(query, tuple(map(str, row["choices"])), int(row["gold"])))
    return items


def load_mmlu(path: Path) -> list[Item]:
    """CSVs `question,choice0..3,answer` (optionally gzipped); a folder's `test/` if present."""
    if path.is_dir() and (path / "test").is_dir():
        path = path / "test"
    files = sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    if path.is_file():
        files = [path]
    items = []
    for file in files:
        subject = re.sub(r"_test$|_dev$", "", file.name.split(".")[0])
        with _open_text(file) as handle:
            for row in csv.DictReader(handle):
                options = tuple(row[f"choice{i}"] for i in range(4))
                items.append(Item(row["question"], options, int(row["answer"]), subject))
    return items


def _mmlu_key(subject: str, question: str, options: tuple[str, ...]) -> tuple[str, str]:
    # RouteLLM's file went through pandas, which wrote an option "None" as "nan" (10 items).
    letters = "".join(f"\n{'ABCD'[i]}. {'nan' if o == 'None' else o}"
                      for i, o in enumerate(options))
    return subject, " ".join(f"{question}{letters}".split())


def join_gpt4(items: list[Item], routing: Path = ROUTING_MMLU) -> tuple[list[Item], int]:
    """Attach GPT-4's correctness (RouteLLM) to MMLU items; drop those it does not cover.

    Keyed by subject and text: a few questions appear under two subjects, with GPT-4's
    correctness recorded for each."""
    strong: dict[tuple[str, str], int] = {}
    with _open_text(routing) as handle:
        for row in csv.DictReader(handle):
            text = " ".join(row["prompt"].removesuffix("Answer:").split())
            strong[row["subject"], text] = int(row["strong"])
    joined = []
    for item in items:
        label = strong.get(_mmlu_key(item.group, item.question, item.options))
        if label is not None:
            joined.append(Item(item.question, item.options, item.gold, item.group, label))
    return joined, len(items) - len(joined)


def sample(items: list[Item], limit: int, seed: int) -> list[Item]:
    """A seeded random subset (spread over subjects), in a stable order."""
    if limit <= 0 or limit >= len(items):
        return items
    keep = np.sort(np.random.default_rng(seed).permutation(len(items))[:limit])
    return [items[i] for i in keep]


# -- the local model ------------------------------------------------------------------------


# -- evaluation -----------------------------------------------------------------------------


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for `labels` (ties count half)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=np.int64)
    if y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, scores))


def out_of_fold(
    x: np.ndarray, y: np.ndarray, features: tuple[str, ...], folds: int, seed: int
) -> tuple[np.ndarray, list[float]]:
    """Calibrated confidences where each item is scored by a model fitted without it."""
    from sklearn.model_selection import StratifiedKFold

    conf = np.zeros(y.size)
    per_fold = []
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in split.split(x, y):
        model = fit(x[train], y[train], features)
        conf[test] = model.predict_many(x[test])
        per_fold.append(auroc(conf[test], y[test]))
    return conf, per_fold


def write_scores(
    path: Path, model: str, scored: list[tuple[Item, OptionScores]], prompt: str = PROMPT
) -> None:
    """Keep the model's raw option scores (JSONL) so signals can be revisited offline."""
    lines = [json.dumps({"model": model, "prompt": prompt})]
    lines += [json.dumps({"question": it.question, **asdict(s)}) for it, s in scored]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_scores(
    path: Path, items: list[Item], prompt: str = PROMPT
) -> list[tuple[Item, OptionScores]]:
    """Scores written by `write_scores`, matched to `items` (which must be the same run's)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    # files without a prompt predate the "Question:" prefix: their scores are another prompt's
    if json.loads(lines[0]).get("prompt") != prompt:
        raise SystemExit(f"{path} holds scores for another prompt: delete it")
    rows = [json.loads(line) for line in lines[1:]]
    if [r["question"] for r in rows] != [it.question for it in items]:
        raise SystemExit(f"{path} holds scores for other items: drop --scores or delete it")
    return [(it, OptionScores(
        option_logprob=tuple(r["option_logprob"]),
        option_tokens=tuple(r["option_tokens"]),
        option_chars=tuple(r["option_chars"]),
        option_unconditional=tuple(r["option_unconditional"]),
        prompt_mean_logprob=float(r["prompt_mean_logprob"]),
        prompt_tokens=int(r["prompt_tokens"]),
        option_first=tuple(r.get("option_first", ())),
    )) for it, r in zip(items, rows, strict=True)]


def score_items(
    model: str, items: list[Item], threads: int, cache: Path | None, unconditional: bool = True
) -> tuple[list[tuple[Item, OptionScores]], str, float | None]:
    """(scores, model id, seconds per item) from `cache` if present, else from the model.

    Seconds per item is None when the scores came from the cache.
    """
    if cache is not None and cache.is_file():
        model_id = json.loads(cache.read_text(encoding="utf-8").splitlines()[0])["model"]
        return read_scores(cache, items), model_id, None
    started = time.perf_counter()
    scorer = OptionScorer(model, threads)
    try:
        scored = []
        for k, item in enumerate(items, 1):
            scored.append((item, scorer.score(item.question, item.options, unconditional)))
            if k % 100 == 0:
                print(f"  {scorer.model_id}: scored {k}/{len(items)}", flush=True)
    finally:
        scorer.close()
    if scorer.truncated:
        print(f"  {scorer.model_id}: {scorer.truncated} long questions cut from the left to "
              "fit the scoring context", flush=True)
    if cache is not None:
        write_scores(cache, scorer.model_id, scored)
    return scored, scorer.model_id, (time.perf_counter() - started) / max(1, len(items))


@dataclass(frozen=True, slots=True)
class Questions:
    """The items a run scores, where they came from, and who answers the escalated ones."""

    items: list[Item]
    dataset: Path
    dropped: int  # MMLU items RouteLLM's data does not cover
    cloud: str


def load_questions(args: argparse.Namespace) -> Questions:
    """The seeded sample `args` names. Raises OSError, ValueError or KeyError for bad data."""
    dataset = Path(args.dataset) if args.dataset else DEFAULT_DATASET[args.format]
    dropped = 0
    if args.format == "mmlu":
        items, dropped = join_gpt4(load_mmlu(dataset))
        cloud = "gpt-4-1106-preview correctness (RouteLLM)"
    else:
        items = load_arc(dataset)
        cloud = "assumed-correct"
    return Questions(sample(items, args.limit, args.seed), dataset, dropped, cloud)


class TooFewOfAClass(Exception):
    """The local model answered fewer than --folds items right (or wrong): no k-fold split."""


def run(args: argparse.Namespace, questions: Questions) -> dict[str, Any]:
    items, dataset, dropped, cloud = (
        questions.items, questions.dataset, questions.dropped, questions.cloud)
    cache = Path(args.scores) if args.scores else None
    scored, model_id, seconds = score_items(args.model, items, args.threads, cache)
    right = sum(s.chosen == it.gold for it, s in scored)
    if min(right, len(scored) - right) < args.folds:  # before the peer spends its time
        raise TooFewOfAClass(
            f"the local model answered {right} of {len(scored)} items right: --folds "
            f"{args.folds} needs at least {args.folds} right and {args.folds} wrong "
            "(raise --limit)")
    rows = [mc_features(s, it.question, it.options) for it, s in scored]
    features = MC_FEATURES
    peer_id, peer_seconds, peer_accuracy = "", None, None
    if args.peer:
        peer_cache = cache.with_name(f"{cache.stem}-peer{cache.suffix}") if cache else None
        # the peer's content-free pass is skipped: PEER_FEATURES do not use it
        peer, peer_id, peer_seconds = score_items(
            args.peer, items, args.threads, peer_cache, unconditional=False
        )
        for row, (_, own), (_, theirs) in zip(rows, scored, peer, strict=True):
            row.update(peer_features(own, theirs))
        features = MC_FEATURES + PEER_FEATURES
        peer_accuracy = float(np.mean([s.chosen == it.gold for it, s in peer]))
    x = np.array([[r[f] for f in features] for r in rows])
    local = np.array([s.chosen == it.gold for it, s in scored])
    strong = np.array([bool(it.strong) for it, _ in scored])
    y = local.astype(np.int64)
    calibrated, per_fold = out_of_fold(x, y, features, args.folds, args.seed)
    own_only, _ = out_of_fold(x[:, : len(MC_FEATURES)], y, MC_FEATURES, args.folds, args.seed)
    top_prob = x[:, MC_FEATURES.index("p_top")]
    # escalate the least confident first: the router score is 1 - confidence
    curve = routing_curve(1.0 - calibrated, local, strong)
    base_curve = routing_curve(1.0 - top_prob, local, strong)

    final = fit(x, local, features, meta={
        "model": model_id, "peer": peer_id, "dataset": str(args.format), "items": len(items),
        "scoring": f"option log-likelihood, prompt {PROMPT!r} + ' {{option}}'",
    })
    weights_path = Path(args.save) if args.save else out_path(f"calibration-{args.format}.json")
    final.save(weights_path)
    png = _plot(curve, base_curve, args.format, cloud)

    summary: dict[str, Any] = {
        "format": args.format, "dataset": str(dataset), "model": model_id, "peer": peer_id,
        "scoring": "option log-likelihood (sum over option tokens)", "prompt": PROMPT,
        "cloud": cloud, "n": len(items), "unjoined_dropped": dropped, "folds": args.folds,
        "seed": args.seed,
        # scoring time per item and model; null when the scores came from the --scores cache
        "seconds_per_item": seconds, "peer_seconds_per_item": peer_seconds,
        "peer_accuracy": peer_accuracy,
        "auroc_top_prob": auroc(top_prob, local),
        "auroc_without_peer": auroc(own_only, local),
        "auroc_per_fold": per_fold,
        "cloud_accuracy": float(strong.mean()),
        "quality_at_share": {f"{s:.1f}": curve.quality_at(s) for s in SHARES},
        "apgr_top_prob": base_curve.apgr(),
        "weights": str(weights_path), "png": png,
        "coef": dict(zip(features, final.coef, strict=True)),
    }
    if args.format == "arc":
        summary["target_auroc"] = TARGET_AUROC_ARC
    summary["local_accuracy"] = float(local.mean())
    summary["auroc"] = auroc(calibrated, local)
    summary["apgr"] = curve.apgr()
    return summary


def _plot(curve: Any, base: Any, name: str, cloud: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    n = curve.quality.size - 1
    share = np.arange(n + 1) / n
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(share, curve.quality, label="calibrated confidence (out-of-fold)")
    ax.plot(share, base.quality, label="top-option probability", alpha=0.7)
    ax.plot([0, 1], [curve.weak_quality, curve.strong_quality], "k:", label="random")
    ax.set_xlabel("cloud share")
    ax.set_ylabel("accuracy")
    ax.set_title(f"cascade on {name} (cloud: {cloud})", fontsize=9)
    ax.legend(fontsize=8)
    path = out_path(f"cascade-{name}.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def _checked_questions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Questions:
    """The questions, once every path and count is known good (a usage error, exit 2, if not).

    Checked before any model loads: paths, enough items for the folds, and the models
    (unless their --scores cache holds the scores).
    """
    from kernels.registry import resolve

    if args.dataset and not Path(args.dataset).exists():
        parser.error(f"--dataset: no such file or folder: {args.dataset}")
    for flag, name in (("--scores", args.scores), ("--save", args.save)):
        if name and not Path(name).resolve().parent.is_dir():
            parser.error(f"{flag}: no folder {Path(name).resolve().parent} to write {name} in")
    try:
        questions = load_questions(args)
    except (OSError, ValueError, KeyError) as exc:
        detail = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
        parser.error(f"--dataset: cannot read {args.format} items: {detail}")
    if len(questions.items) < 2 * args.folds:
        parser.error(f"{len(questions.items)} items; --folds {args.folds} needs at least "
                     f"{2 * args.folds} ({args.folds} answered right and {args.folds} wrong)")
    cache = Path(args.scores) if args.scores else None
    caches = [cache, cache.with_name(f"{cache.stem}-peer{cache.suffix}") if cache else None]
    for flag, spec, cached in zip(("--model", "--peer"), (args.model, args.peer), caches,
                                  strict=True):
        if spec and not (cached is not None and cached.is_file()):
            try:
                resolve(spec)  # finds the file (a bundled one is assembled once), loads nothing
            except EngineError as exc:
                parser.error(f"{flag}: {exc}")
    return questions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--format", choices=("arc", "mmlu"), default="arc")
    parser.add_argument("--dataset", default="", help="file or folder (default: bundled copy)")
    parser.add_argument("--limit", type=at_least(0), default=500,
                        help="items, seeded sample; 0 = all. At least 2 x --folds: each fold"
                        " needs right and wrong answers")
    parser.add_argument("--model", default="bundled:smollm2-135m")
    parser.add_argument("--peer", default="bundled:gemma3-270m",
                        help="a second on-device model whose option scores feed the confidence"
                        " (empty: none)")
    # 1 thread: these are tiny batches, and with the cores shared, OpenMP workers spinning
    # on a busy core made 2 threads 3x slower than 1 (measured 1.96 vs 0.63 s per item)
    parser.add_argument("--threads", type=at_least(0), default=1,
                        help="0 = the engine default")
    parser.add_argument("--folds", type=at_least(2), default=5,
                        help="stratified cross-validation folds for the confidence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default="", help="where to write the fitted weights (JSON)")
    parser.add_argument("--scores", default="",
                        help="JSONL of raw option scores: read if present, else written"
                        " (the peer's go to NAME-peer.jsonl)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    questions = _checked_questions(parser, args)
    try:
        s = run(args, questions)
    except (EngineError, TooFewOfAClass) as exc:  # a model that fails, unlucky scores: 1 line
        raise SystemExit(f"cascade: {exc}") from None
    rows = [[f"{k}", v] for k, v in s["quality_at_share"].items()]
    human = "\n".join([
        f"cascade on {s['format']}: n={s['n']} model={s['model']} cloud={s['cloud']}",
        f"local accuracy {s['local_accuracy']:.3f}; AUROC calibrated {s['auroc']:.3f} "
        f"(folds {', '.join(f'{a:.3f}' for a in s['auroc_per_fold'])}), "
        f"top-option probability {s['auroc_top_prob']:.3f}",
        f"APGR calibrated {s['apgr']:.3f}, top-option probability {s['apgr_top_prob']:.3f}",
        table(["cloud share", "accuracy"], rows),
        f"weights: {s['weights']}",
    ])
    emit(s, human, args.json)


if __name__ == "__main__":
    main()
