"""Engines side by side: parity of llama.cpp (GGUF) and ONNX Runtime GenAI (int4), and speed.

    python -m benchmarks.engines --json

Parity (each bundled model's GGUF vs the int4 ONNX converted from it: SmolLM2-135M Q4_1 and
Gemma 3 270M Q4_K_M; greedy, fixed prompts): token agreement (the share of each answer
generated before the two first differ; the quantisations differ, so equality is not expected)
and the correlation of the two engines' confidence scores (`runtime.confidence.score`) over the
prompts.

Speed, per engine x model: time to first token, decode tokens/s and peak RSS. Each engine
runs in its own worker process (so its peak RSS is its own), the workers take turns prompt by
prompt (interleaved, so load on the machine hits all alike), and ratios are to llama.cpp in
the same run. The OpenAI-server engine talks to llama-cpp-python's server on a loopback port;
its RSS is the server's. Prints a table, writes engines.png to the output folder
(`benchmarks._report.out_dir`: `benchmarks/out/` in a source checkout), and ends stdout
with one JSON object whose last key, "results", lists {engine, model, decode_tok_s, ttft_ms,
rss_mb}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._report import at_least, out_path, strict_json
from kernels import Engine, GenerationParams, Message, generate

PARITY_PROMPTS = (
    "Name three colours.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "What is 12 plus 30?",
    "Give me a synonym for happy.",
    "Translate 'good morning' into Spanish.",
    "List two benefits of exercise.",
    "Who wrote Romeo and Juliet?",
    "What does a CPU do?",
    "Describe a cat in five words.",
    "Why is the sky blue?",
)
# The bundled models converted to int4 ONNX and compared with their GGUF.
ONNX_MODELS = ("smollm2-135m", "gemma3-270m")
SPEED_PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe your ideal holiday in detail.",
)


def parity(reference: Engine, other: Engine, max_tokens: int = 32) -> dict[str, Any]:
    """Greedy agreement and confidence correlation of `other` against `reference`."""
    import numpy as np

    from runtime.confidence import score

    params = GenerationParams(max_tokens=max_tokens)
    agreement, exact, ref_scores, other_scores = [], 0, [], []
    for prompt in PARITY_PROMPTS:
        messages = [Message("user", prompt)]
        a, b = generate(reference, messages, params), generate(other, messages, params)
        ids_a = [t.token_id for t in a.tokens if t.token_id >= 0]
        ids_b = [t.token_id for t in b.tokens if t.token_id >= 0]
        same = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y),
                    min(len(ids_a), len(ids_b)))  # fmt: skip
        agreement.append(same / max(len(ids_a), len(ids_b), 1))
        exact += ids_a == ids_b
        ref_scores.append(score(a.tokens).score)
        other_scores.append(score(b.tokens).score)
    return {
        "prompts": len(PARITY_PROMPTS),
        "max_tokens": max_tokens,
        "token_agreement": round(statistics.mean(agreement), 4),
        "exact_matches": exact,
        "confidence_correlation": round(float(np.corrcoef(ref_scores, other_scores)[0, 1]), 4),
        "mean_confidence": {
            "reference": round(statistics.mean(ref_scores), 4),
            "other": round(statistics.mean(other_scores), 4),
        },
    }


# -- worker: one engine in its own process --------------------------------------------------


def worker(spec: str, max_tokens: int) -> None:
    """Load `spec`; for each line on stdin (a prompt index) print one JSON timing line."""
    from kernels.registry import load_engine

    engine = load_engine(spec, context_length=1024)
    generate(engine, "Hello", GenerationParams(max_tokens=4))  # warm-up
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        prompt = [Message("user", SPEED_PROMPTS[int(line)])]
        started = time.perf_counter()
        stream = engine.stream(prompt, GenerationParams(max_tokens=max_tokens))
        first = last = None
        n = 0
        for event in stream:
            if event.token_id < 0:
                continue
            last = time.perf_counter()
            first = first or last
            n += 1
        assert first is not None and last is not None
        decode = (n - 1) / (last - first) if n > 1 and last > first else float("nan")
        print(json.dumps({"ttft_ms": (first - started) * 1000, "decode_tok_s": decode,
                          "tokens": n}), flush=True)  # fmt: skip
    print(json.dumps({"rss_mb": _peak_rss_mb("self")}), flush=True)
    engine.close()


def _peak_rss_mb(pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Worker:
    def __init__(self, engine: str, model: str, spec: str, max_tokens: int, rss_pid: int = 0):
        self.engine, self.model, self.rss_pid = engine, model, rss_pid
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.engines", "--worker", spec,
             "--max-tokens", str(max_tokens)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.runs: list[dict[str, float]] = []
        self._read()  # ready

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.engine} worker died")
        data: dict[str, Any] = json.loads(line)
        return data

    def run(self, index: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{index}\n")
        self.proc.stdin.flush()
        self.runs.append(self._read())

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        rss = self._read()["rss_mb"]
        self.proc.wait()
        if self.rss_pid:
            rss = _peak_rss_mb(self.rss_pid)
        ttft = [r["ttft_ms"] for r in self.runs]
        tps = [r["decode_tok_s"] for r in self.runs]
        return {
            "engine": self.engine,
            "model": self.model,
            "decode_tok_s": round(statistics.median(tps), 2),
            "decode_tok_s_spread": [round(min(tps), 2), round(max(tps), 2)],
            "ttft_ms": round(statistics.median(ttft), 1),
            "ttft_ms_spread": [round(min(ttft), 1), round(max(ttft), 1)],
            "rss_mb": round(rss, 1),
            "runs": len(self.runs),
        }


def _start_server(gguf: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "m",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--logits_all", "true",
         "--verbose", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("llama-cpp-python's server did not start")


def speed(rounds: int, max_tokens: int, onnx_dirs: dict[str, Path]) -> list[dict[str, Any]]:
    """`onnx_dirs`: the converted ONNX folder of each bundled model ("smollm2-135m", ...)."""
    from kernels.registry import resolve

    smol = resolve("bundled:smollm2-135m").path
    server, url = _start_server(smol)
    workers: list[Worker] = []
    try:
        workers.append(Worker("llama.cpp", "smollm2-135m", "bundled:smollm2-135m", max_tokens))
        if "smollm2-135m" in onnx_dirs:
            workers.append(Worker("onnxruntime-genai", "smollm2-135m",
                                  str(onnx_dirs["smollm2-135m"]), max_tokens))  # fmt: skip
        workers.append(Worker("openai-server", "smollm2-135m", f"openai:{url}#m", max_tokens,
                              rss_pid=server.pid))  # fmt: skip
        workers.append(Worker("llama.cpp", "gemma3-270m", "bundled:gemma3-270m", max_tokens))
        if "gemma3-270m" in onnx_dirs:
            workers.append(Worker("onnxruntime-genai", "gemma3-270m",
                                  str(onnx_dirs["gemma3-270m"]), max_tokens))  # fmt: skip
        for _ in range(rounds):
            for index in range(len(SPEED_PROMPTS)):
                for w in workers:  # interleaved: every engine sees the same machine load
                    w.run(index)
        return [w.finish() for w in workers]
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        server.terminate()
        server.wait()


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['engine']}\n{r['model']}" for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    for ax, key, title in zip(
        axes, ("decode_tok_s", "ttft_ms", "rss_mb"),
        ("decode tokens/s (higher is better)", "time to first token, ms", "peak RSS, MB"),
        strict=True,
    ):  # fmt: skip
        ax.bar(range(len(results)), [r[key] for r in results], color="#4c72b0")
        ax.set_xticks(range(len(results)), labels, fontsize=7)
        ax.set_title(title, fontsize=10)
    fig.suptitle("Tandem engines (2 cores, greedy, median of interleaved runs)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON object")
    parser.add_argument("--rounds", type=at_least(1), default=2)
    parser.add_argument("--max-tokens", type=at_least(1), default=64)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.max_tokens)
        return 0

    from kernels.convert import ConvertUnavailableError, TextProgress, cached_onnx
    from kernels.registry import load_engine

    onnx_dirs: dict[str, Path] = {}
    for model in ONNX_MODELS:
        try:
            onnx_dirs[model] = cached_onnx(f"bundled:{model}", progress=TextProgress())
        except ConvertUnavailableError as exc:
            print(f"ONNX engine skipped: {exc}", file=sys.stderr)
            break

    parities: dict[str, dict[str, Any]] = {}
    for model, onnx_dir in onnx_dirs.items():
        reference = load_engine(f"bundled:{model}", context_length=1024)
        other = load_engine(str(onnx_dir), context_length=1024)
        try:
            parities[model] = parity(reference, other)
        finally:
            reference.close()
            other.close()

    results = speed(args.rounds, args.max_tokens, onnx_dirs)
    base = {r["model"]: r for r in results if r["engine"] == "llama.cpp"}
    ratios = [
        {
            "engine": r["engine"],
            "model": r["model"],
            "decode_vs_llama_cpp": round(r["decode_tok_s"] / base[r["model"]]["decode_tok_s"], 3),
            "ttft_vs_llama_cpp": round(r["ttft_ms"] / base[r["model"]]["ttft_ms"], 3),
            "rss_vs_llama_cpp": round(r["rss_mb"] / base[r["model"]]["rss_mb"], 3),
        }
        for r in results
        if r["model"] in base and r["engine"] != "llama.cpp"
    ]
    png = out_path("engines.png")
    chart(results, png)

    print(f"{'engine':<20}{'model':<15}{'decode tok/s':>13}{'TTFT ms':>10}{'RSS MB':>9}")
    for r in results:
        print(f"{r['engine']:<20}{r['model']:<15}{r['decode_tok_s']:>13.1f}"
              f"{r['ttft_ms']:>10.1f}{r['rss_mb']:>9.0f}")  # fmt: skip
    for q in ratios:
        print(f"{q['engine']} / llama.cpp ({q['model']}): decode x{q['decode_vs_llama_cpp']}, "
              f"TTFT x{q['ttft_vs_llama_cpp']}, RSS x{q['rss_vs_llama_cpp']}")  # fmt: skip
    for model, result in parities.items():
        print(f"parity {model} GGUF vs ONNX int4: token agreement "
              f"{result['token_agreement']:.2f}, exact {result['exact_matches']}/"
              f"{result['prompts']}, confidence correlation "
              f"{result['confidence_correlation']:.2f}")  # fmt: skip
    print(f"chart: {png}")
    if args.json:
        report = {
            "benchmark": "engines",
            "rounds": args.rounds,
            "max_tokens": args.max_tokens,
            "parity": parities.get("smollm2-135m"),  # kept under its old key
            "parity_gemma3": parities.get("gemma3-270m"),
            "ratios": ratios,
            "chart": str(png),
            "results": [
                {k: r[k] for k in ("engine", "model", "decode_tok_s", "ttft_ms", "rss_mb")}
                for r in results
            ],
        }
        print(json.dumps(strict_json(report), allow_nan=False))  # NaN: not measured
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
