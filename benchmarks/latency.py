"""Time to first token, prefill and decode speed, and peak RSS for each bundled model.

Each model runs in its own subprocess (so peak RSS is that model's alone), through the
Tandem engine, at prompt lengths 32 / 256 / 1024 tokens, greedy, `--decode` new tokens.
Prefill tokens/s = prompt tokens / TTFT; decode tokens/s = (new tokens - 1) / (last - first).

    python -m benchmarks.latency --json [--models bundled:smollm2-135m,bundled:gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

from benchmarks._report import at_least, emit, median, out_path, table

LENGTHS = (32, 256, 1024)
TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in "
    "Europe built wooden machines that riders pushed along with their feet. Over the following "
    "decades pedals, chains, pneumatic tyres and lighter frames turned it into the most "
    "efficient vehicle ever made, and cities around the world reshaped their streets for it. "
)


def _worker(spec: str, decode: int, repeats: int) -> dict[str, Any]:
    from kernels import GenerationParams
    from kernels.registry import load_engine

    engine = load_engine(spec, context_length=2048)
    rows = []
    filler = TEXT * 80
    for target in LENGTHS:
        # cut the filler to `target` tokens by bisection on characters
        lo, hi = 1, len(filler)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if engine.count_tokens(filler[:mid]) <= target:
                lo = mid
            else:
                hi = mid - 1
        prompt = filler[:lo]
        n_prompt = engine.count_tokens(prompt)
        ttfts, decodes = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            first = last = 0.0
            n = 0
            for _event in engine.stream(prompt, GenerationParams(max_tokens=decode)):
                now = time.perf_counter()
                n += 1
                if not first:
                    first = now
                last = now
            ttfts.append((first - start) * 1e3)
            decodes.append((n - 1) / (last - first) if n > 1 else float("nan"))
        ttft = median(ttfts)
        rows.append({"prompt_tokens": n_prompt, "ttft_ms": ttft,
                     "prefill_tok_s": n_prompt / (ttft / 1e3), "decode_tok_s": median(decodes)})
    engine.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": spec, "threads": engine.info.extra.get("threads"), "rows": rows,
            "peak_rss_mb": rss_mb}


def _plot(results: list[dict[str, Any]]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for res in results:
        xs = [r["prompt_tokens"] for r in res["rows"]]
        label = f"{res['model']} ({res['peak_rss_mb']:.0f} MB peak RSS)"
        axes[0].plot(xs, [r["ttft_ms"] for r in res["rows"]], marker="o", label=label)
        axes[1].plot(xs, [r["prefill_tok_s"] for r in res["rows"]], marker="o", label=label)
        axes[2].plot(xs, [r["decode_tok_s"] for r in res["rows"]], marker="o", label=label)
    for ax, title in zip(axes, ("time to first token (ms)", "prefill tokens/s",
                                "decode tokens/s"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt tokens")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = out_path("latency.png")
    fig.savefig(path, dpi=110)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", default="bundled:smollm2-135m,bundled:gemma3-270m")
    ap.add_argument("--decode", type=at_least(1), default=64, help="new tokens per run")
    ap.add_argument("--repeats", type=at_least(1), default=3)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.decode, args.repeats)))
        return 0
    results = []
    for spec in args.models.split(","):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.latency", "--worker", spec,
             "--decode", str(args.decode), "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            print(f"{spec}: worker failed: {why[-400:]}", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = [[res["model"], r["prompt_tokens"], r["ttft_ms"], r["prefill_tok_s"],
             r["decode_tok_s"], res["peak_rss_mb"]] for res in results for r in res["rows"]]
    human = table(["model", "prompt tok", "TTFT ms", "prefill tok/s", "decode tok/s",
                   "peak RSS MB"], rows)
    png = _plot(results) if results else None  # nothing measured, nothing to draw
    if png:
        human += f"\nplot: {png}"
    emit({"models": results, "plot": png}, human, args.json)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
