"""What Tandem's runtime and device API cost on top of bare llama-cpp-python.

Three paths, same model file, prompts and parameters (greedy, fixed max tokens), interleaved
round by round so that machine noise hits all three alike:

- bare:    llama-cpp-python `create_completion(stream=True)` on the very `Llama` object the
           runtime's engine holds, on its thread (KV cache reset first, as the engine does:
           the same prompt work);
- runtime: `Runtime.generate()` — our decode loop with per-token log-softmax and entropy,
           confidence scoring, policy, telemetry, monitor snapshot, Result;
- http:    the device API (`tandem serve` in a subprocess) streamed over SSE on loopback;
- stream:  `Runtime.stream()` iterated piece by piece in this thread (a caller that wants
           every token at once: one thread handover per token), for information.

TTFT is wall time from the call to the first non-empty text; decode tokens/s is
(completion tokens - 1) / (last token time - first token time). For `Runtime.generate`,
which returns once, the first-token time is the Result's own `ttft_ms` and the last is
when the call returned (so post-processing counts against it).

    python -m benchmarks.overhead --json [--rounds 3] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from benchmarks._report import at_least, emit, median, spread, table
from kernels import Message
from kernels.llama_cpp_engine import LlamaCppEngine
from runtime.config import GenerationConfig, ModelConfig, RuntimeConfig, load_config
from runtime.facade import Runtime

PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a short poem about a lighthouse.",
    "List five uses of a paperclip.",
    "What is the difference between weather and climate?",
    "Describe how a bicycle works.",
    "Give three tips for learning a new language.",
]


@dataclass(frozen=True, slots=True)
class Sample:
    path: str
    ttft_ms: float
    decode_tok_s: float
    tokens: int


def _rate(tokens: int, first: float, last: float) -> float:
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")


def run_bare(engine: LlamaCppEngine, prompt: str, max_tokens: int) -> Sample:
    # On the engine's own llama.cpp thread: a second calling thread would give llama.cpp a
    # second OpenMP pool and halve both paths' speed (see kernels/llama_cpp_engine.py).
    return engine._pinned.submit(_bare, engine, prompt, max_tokens).result()


def _bare(engine: LlamaCppEngine, prompt: str, max_tokens: int) -> Sample:
    llm = engine._llm
    llm.reset()  # type: ignore[no-untyped-call]
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0,
                                       top_k=1, stream=True):
        now = time.perf_counter()
        choice: Any = chunk["choices"][0]  # type: ignore[index]
        if choice["finish_reason"] is not None and not choice["text"]:
            continue  # the closing chunk carries no token: 24 tokens came as 25 chunks
        n += 1
        if choice["text"] and not first:
            first = now
        last = now
    return Sample("bare", (first - start) * 1e3, _rate(n, first, last), n)


def run_runtime(rt: Runtime, messages: list[Message], max_tokens: int) -> Sample:
    start = time.perf_counter()
    result = rt.generate(messages, mode="local-only", params=rt.params(max_tokens=max_tokens))
    last = time.perf_counter()
    first = start + result.timings.ttft_ms / 1e3
    n = result.usage.completion_tokens
    return Sample("runtime", result.timings.ttft_ms, _rate(n, first, last), n)


def run_stream(rt: Runtime, messages: list[Message], max_tokens: int) -> Sample:
    start = time.perf_counter()
    first = last = 0.0
    stream = rt.stream(messages, mode="local-only", params=rt.params(max_tokens=max_tokens))
    for _piece in stream:
        now = time.perf_counter()
        if not first:
            first = now
        last = now
    assert stream.result is not None
    n = stream.result.usage.completion_tokens
    return Sample("stream", (first - start) * 1e3, _rate(n, first, last), n)


def run_http(
    client: httpx.Client, base: str, messages: list[Message], max_tokens: int
) -> Sample:
    """One streamed request on a kept-alive connection (as a real client holds one)."""
    body = {"model": "tandem", "messages": [m.to_dict() for m in messages],
            "max_tokens": max_tokens, "stream": True, "tandem": {"mode": "local-only"}}
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    with client.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.perf_counter()
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
                continue
            if chunk["choices"][0]["delta"].get("content"):
                if not first:
                    first = now
                last = now
    return Sample("http", (first - start) * 1e3, _rate(n, first, last), n)


def _start_server(port: int, spec: str, threads: int, ctx: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.update({"TANDEM_MODEL_SPEC": spec, "TANDEM_MODEL_THREADS": str(threads),
                "TANDEM_MODEL_CONTEXT_LENGTH": str(ctx), "TANDEM_RUNTIME_MODE": "local-only"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tandem serve exited: {proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("tandem serve did not become healthy in 120 s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rounds", type=at_least(1), default=3)
    ap.add_argument("--max-tokens", type=at_least(1), default=96)
    ap.add_argument("--model", default="bundled:smollm2-135m")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)

    ctx = 2048
    cfg = load_config(env={}).replace(
        model=ModelConfig(spec=args.model, threads=args.threads, context_length=ctx),
        generation=GenerationConfig(max_tokens=args.max_tokens),
        runtime=RuntimeConfig(mode="local-only"),
    )
    rt = Runtime.from_config(cfg)
    engine = rt.engine
    assert isinstance(engine, LlamaCppEngine)
    port = args.port or _free_port()
    server = _start_server(port, args.model, args.threads, ctx)
    base = f"http://127.0.0.1:{port}"
    samples: list[Sample] = []
    client = httpx.Client()
    try:
        # warm-up: one of each, not counted
        warm = [Message("user", "Hello.")]
        run_bare(engine, engine.render(warm), 8)
        run_runtime(rt, warm, 8)
        run_stream(rt, warm, 8)
        run_http(client, base, warm, 8)
        for r in range(args.rounds):
            for i, text in enumerate(PROMPTS):
                messages = [Message("user", text)]
                prompt = engine.render(messages)
                runners: list[Callable[[], Sample]] = [
                    partial(run_bare, engine, prompt, args.max_tokens),
                    partial(run_runtime, rt, messages, args.max_tokens),
                    partial(run_http, client, base, messages, args.max_tokens),
                    partial(run_stream, rt, messages, args.max_tokens),
                ]
                shift = (r + i) % len(runners)  # rotate who goes first
                for run in runners[shift:] + runners[:shift]:
                    samples.append(run())
    finally:
        client.close()
        server.terminate()
        server.wait(30)
        rt.close()

    by = {p: [s for s in samples if s.path == p] for p in ("bare", "runtime", "http", "stream")}
    tok = {p: median([s.decode_tok_s for s in v]) for p, v in by.items()}
    ttft = {p: median([s.ttft_ms for s in v]) for p, v in by.items()}
    rows = []
    for p, v in by.items():
        lo, hi = spread([s.decode_tok_s for s in v])
        tlo, thi = spread([s.ttft_ms for s in v])
        rows.append([p, len(v), tok[p], f"{lo:.1f}-{hi:.1f}", ttft[p], f"{tlo:.1f}-{thi:.1f}",
                     tok[p] / tok["bare"]])
    summary = {
        "model": args.model,
        "engine_threads": engine.info.extra.get("threads"),
        "max_tokens": args.max_tokens,
        "runs_per_path": len(by["bare"]),
        "decode_tok_s": tok,
        "ttft_ms": ttft,
        "runtime_over_bare_tok_s": tok["runtime"] / tok["bare"],
        "http_over_bare_tok_s": tok["http"] / tok["bare"],
        "stream_over_bare_tok_s": tok["stream"] / tok["bare"],
        "ttft_overhead_ms": ttft["runtime"] - ttft["bare"],
        "http_ttft_overhead_ms": ttft["http"] - ttft["bare"],
        "stream_ttft_overhead_ms": ttft["stream"] - ttft["bare"],
    }
    human = table(["path", "runs", "decode tok/s (median)", "range", "TTFT ms (median)",
                   "range", "tok/s vs bare"], rows)
    human += (f"\nruntime/bare tok/s = {summary['runtime_over_bare_tok_s']:.3f} (target >= 0.97)"
              f"\nhttp/bare tok/s    = {summary['http_over_bare_tok_s']:.3f} (target >= 0.95)"
              f"\nstream/bare tok/s  = {summary['stream_over_bare_tok_s']:.3f} "
              "(Runtime.stream read token by token; no target)"
              f"\nTTFT overhead      = {summary['ttft_overhead_ms']:.2f} ms runtime, "
              f"{summary['http_ttft_overhead_ms']:.2f} ms http, "
              f"{summary['stream_ttft_overhead_ms']:.2f} ms stream (target <= 10 ms)")
    emit(summary, human, args.json)
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())


