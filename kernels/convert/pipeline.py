"""GGUF -> int4 ONNX for ONNX Runtime GenAI, in five steps with a progress display.

1. read the GGUF's metadata (architecture, tokenizer facts) and hash it;
2. dequantise it to an fp32 safetensors folder with transformers (the builder takes only
   fp16/fp32 weights);
3. run the onnxruntime-genai model builder (`-p int4 -e cpu`, block size, accuracy level)
   through `kernels.convert.build`, which adapts the one config layout it misreads;
4. export `tokenizer.json` for token counting with `tokenizers`, and write `tandem.json`;
5. run a check prompt through the new model with `OnnxEngine`.

Everything is built in a work folder next to the output and renamed into place at the end,
so a failed or interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from kernels.convert.errors import ConversionError, UnsupportedModelError
from kernels.convert.progress import Progress, SilentProgress
from kernels.convert.source import GgufSource, inspect_gguf, require, require_installed

TARGETS: Final = {"onnx-int4": "int4", "onnx-int8": "int8", "onnx-fp32": "fp32"}
BLOCK_SIZES: Final = (16, 32, 64, 128, 256)
# The builder's weight-only quantisation algorithms. k_quant_last (k-quant, with the output
# projection in int8) is the default: on SmolLM2 its greedy output agrees with llama.cpp's Q4_1
# ~4x longer than plain round-to-nearest int4 does (see docs/engines.md).
ALGORITHMS: Final = ("k_quant_last", "k_quant", "rtn", "default")
STEPS: Final = 5
CHECK_PROMPT: Final = "The capital of France is"


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """How to convert. Defaults: int4 for the CPU, the builder's block size and accuracy."""

    target: str = "onnx-int4"
    block_size: int = 32  # weights per int4 quantisation block
    accuracy_level: int = 4  # MatMulNBits compute type: 1 fp32, 2 fp16, 3 bf16, 4 int8
    algorithm: str = "k_quant_last"
    check_prompt: str = CHECK_PROMPT

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block size must be one of {BLOCK_SIZES}, not {self.block_size}")
        if self.accuracy_level not in (1, 2, 3, 4):
            raise ValueError(f"accuracy level must be 1, 2, 3 or 4, not {self.accuracy_level}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")

    @property
    def precision(self) -> str:
        return TARGETS[self.target]

    @property
    def key(self) -> str:
        """What distinguishes two conversions of the same file (the cache key's suffix)."""
        return f"{self.target}-b{self.block_size}-a{self.accuracy_level}-{self.algorithm}"


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """A finished conversion: where the model is and what `tandem.json` says about it."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return float(sum(self.manifest.get("timings", {}).values()))


def convert_gguf(
    gguf: Path | GgufSource,
    out: Path,
    options: ConvertOptions | None = None,
    *,
    model_id: str | None = None,
    chat: bool = True,
    progress: Progress | None = None,
) -> ConversionResult:
    """Convert `gguf` into an ONNX Runtime GenAI folder at `out` (which must not exist yet).

    `gguf` may be a path or the `GgufSource` already read from it (saves hashing it again).

    `chat=False` marks a base model (completion prompting) even if the GGUF has a template.
    """
    options = options or ConvertOptions()
    progress = progress or SilentProgress()
    if out.exists() and any(out.iterdir()):
        raise ConversionError(f"output folder {out} exists and is not empty")
    timings: dict[str, float] = {}

    def step(index: int, title: str) -> _Step:
        return _Step(progress, timings, index, title)

    with step(1, "Reading GGUF metadata") as s:
        source = gguf if isinstance(gguf, GgufSource) else inspect_gguf(gguf)
        gguf = source.path
        s.detail = f"{source.architecture}, {_mb(gguf.stat().st_size)}, sha256 {source.sha256[:12]}"
    work = staging_folder(out)
    try:
        hf, onnx_dir = work / "hf", work / "onnx"
        with step(2, "Dequantising to fp32 safetensors") as s:
            require_installed("torch")
            require_installed("transformers")
            _run_child(
                [sys.executable, "-m", "kernels.convert.dequantise", str(gguf), str(hf)],
                work / "dequantise.log",
                "dequantising",
            )
            s.detail = _mb(_folder_size(hf))
        title = f"Building ONNX ({options.precision}, block {options.block_size}, "
        with step(3, title + f"accuracy {options.accuracy_level})") as s:
            require_installed("onnxruntime_genai.models.builder")
            _run_child(
                _builder_command(hf, onnx_dir, work / "cache", options),
                work / "builder.log",
                "the onnxruntime-genai builder",
            )
            s.detail = _mb(_folder_size(onnx_dir))
        shutil.rmtree(hf)  # the fp32 copy is large and no longer needed
        with step(4, "Exporting tokenizer.json") as s:
            vocab = _export_tokenizer(onnx_dir)
            manifest = _manifest(
                source,
                options,
                model_id or f"{gguf.stem}-{options.target}",
                chat and source.has_chat_template,
                timings,
            )
            _write_manifest(onnx_dir, manifest)
            s.detail = f"{vocab} tokens"
        with step(5, "Checking the new model") as s:
            manifest["check"] = check_model(onnx_dir, options.check_prompt)
            s.detail = repr(options.check_prompt + manifest["check"]["text"])
        manifest["timings"] = timings
        _write_manifest(onnx_dir, manifest)
        put_in_place(onnx_dir, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ConversionResult(out, manifest)


def staging_folder(out: Path) -> Path:
    """A new hidden folder beside `out` (same file system), where a model folder is built
    whole before `put_in_place` moves it to `out`; the caller removes it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


def put_in_place(folder: Path, out: Path) -> None:
    """Rename the finished `folder` to `out`, which is absent or an empty folder (callers
    refuse a non-empty one before any work): `out` never holds half a model."""
    if out.exists():
        out.rmdir()
    folder.rename(out)


def check_model(folder: Path, prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    """Greedy-decode `prompt` with the converted model; fail unless it gives real tokens."""
    from kernels.base import GenerationParams, generate
    from kernels.onnx_engine import OnnxEngine
    from kernels.registry import ResolvedModel

    engine = OnnxEngine(ResolvedModel(folder.name, folder, "onnx", chat=False), context_length=256)
    try:
        gen = generate(engine, prompt, GenerationParams(max_tokens=max_tokens))
    finally:
        engine.close()
    logprobs = [t.logprob for t in gen.tokens if t.token_id >= 0]
    if not logprobs or not all(lp <= 0.0 for lp in logprobs):  # NaN fails this too
        raise ConversionError(f"the converted model produced no usable tokens for {prompt!r}")
    return {
        "prompt": prompt,
        "text": gen.text,
        "tokens": len(logprobs),
        "mean_logprob": round(sum(logprobs) / len(logprobs), 4),
    }


class _Step:
    """One step of the progress display, timed; failures are shown, then re-raised."""

    def __init__(self, progress: Progress, timings: dict[str, float], index: int, title: str):
        self._progress, self._timings = progress, timings
        self._index, self._title = index, title
        self.detail = ""
        self._started = 0.0

    def __enter__(self) -> _Step:
        self._progress.start(self._index, STEPS, self._title)
        self._started = time.monotonic()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, _tb: object) -> None:
        self._timings[self._title] = round(time.monotonic() - self._started, 2)
        if exc is None:
            self._progress.done(self.detail)
        else:
            self._progress.failed(str(exc) or type(exc).__name__)


def _builder_command(hf: Path, out: Path, cache: Path, options: ConvertOptions) -> list[str]:
    return [
        sys.executable, "-m", "kernels.convert.build",  # the builder, with its config shims
        "-i", str(hf), "-o", str(out), "-p", options.precision, "-e", "cpu", "-c", str(cache),
        "--extra_options",
        f"block_size={options.block_size}",
        f"accuracy_level={options.accuracy_level}",
        f"algo_config={options.algorithm}",
        "hf_token=false",  # never ask the hub for credentials: everything is local
    ]  # fmt: skip


def _run_child(command: list[str], log: Path, what: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-12:]
        cause = next((ln for ln in reversed(tail) if "Error" in ln), tail[-1] if tail else "")
        raise ConversionError(f"{what} failed (exit {code}): {cause.strip()}\n" + "\n".join(tail))


def _export_tokenizer(folder: Path) -> int:
    """Make sure `tokenizer.json` is there and loads with `tokenizers`; its vocabulary size."""
    tokenizers = require("tokenizers")
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ConversionError(f"the builder wrote no tokenizer.json in {folder}")
    try:
        return int(tokenizers.Tokenizer.from_file(str(path)).get_vocab_size())
    except Exception as exc:
        raise ConversionError(f"tokenizer.json does not load with tokenizers: {exc}") from exc


def _manifest(
    source: GgufSource, options: ConvertOptions, model_id: str, chat: bool,
    timings: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": model_id,
        "chat": chat,
        "add_bos": source.add_bos,
        "precision": options.precision,
        "source": {"file": source.path.name, "sha256": source.sha256,
                   "architecture": source.architecture, "name": source.name},
        "options": asdict(options),
        "versions": {p: _version(p) for p in ("onnxruntime-genai", "transformers", "torch")},
        "tokenizer": "tokenizer.json",
        "timings": timings,
    }  # fmt: skip


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    from kernels.onnx_engine import MANIFEST

    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


__all__ = [
    "ConversionResult",
    "ConvertOptions",
    "UnsupportedModelError",
    "check_model",
    "convert_gguf",
]
