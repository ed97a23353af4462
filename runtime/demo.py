"""The main job (`make run`): a short scripted session through the runtime.

Each prompt is answered through `Runtime.generate` and printed with where it was computed,
why, the local confidence and the latency.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass

from runtime.config import load_config
from runtime.facade import Runtime
from runtime.result import Result


@dataclass(frozen=True, slots=True)
class Step:
    prompt: str
    mode: str


SCRIPT = (
    Step("What is the capital of France? Answer in one word.", "local-only"),
    Step("Write one sentence about the sea.", "prefer-local"),
    Step("List three primary colours.", "prefer-local"),
)


def show(step: Step, result: Result) -> str:
    conf = result.confidence.score
    answer = textwrap.shorten(result.text.strip().replace("\n", " "), 220) or "(empty)"
    return "\n".join([
        f"> {step.prompt}   [mode {step.mode}]",
        f"  answer:     {answer}",
        f"  source:     {result.source}",
        f"  reason:     {result.reason}",
        f"  confidence: {'n/a' if conf != conf else f'{conf:.2f}'}",
        f"  latency:    ttft {result.timings.ttft_ms:.0f} ms, total {result.timings.total_ms:.0f}"
        f" ms, {result.usage.completion_tokens} tokens at {result.timings.tokens_per_s:.1f} tok/s",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args(argv)
    config = load_config(overrides={"generation.max_tokens": args.max_tokens})
    with Runtime.from_config(config) as rt:
        print(f"Tandem demo: model {config.model.spec}", flush=True)
        for step in SCRIPT:
            result = rt.generate([{"role": "user", "content": step.prompt}], mode=step.mode)
            print(show(step, result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
