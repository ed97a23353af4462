"""Converted models cached per machine, keyed by the source file's hash and the options.

Tests, benchmarks and `tandem convert` all go through `cached_onnx`, so a model is
converted once per machine; a lock file makes concurrent callers wait for one conversion.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from kernels.convert.pipeline import ConvertOptions, convert_gguf
from kernels.convert.progress import Progress
from kernels.convert.source import file_sha256, inspect_gguf
from kernels.registry import default_cache_dir, resolve


def cache_path(gguf: Path, options: ConvertOptions, cache_dir: str | Path | None = None) -> Path:
    """Where the conversion of `gguf` with `options` lives in the cache (converted or not)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return cache / "onnx" / f"{file_sha256(gguf)[:16]}-{options.key}"


def cached_onnx(
    source: str | Path,
    options: ConvertOptions | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """The ONNX folder for `source` (a .gguf path or a `bundled:` spec), converting if needed."""
    options = options or ConvertOptions()
    model = resolve(str(source), cache_dir)
    if model.format != "gguf":
        from kernels.convert.errors import UnsupportedModelError

        raise UnsupportedModelError(f"{source} is a {model.format} model: conversion takes a GGUF")
    gguf = inspect_gguf(model.path)  # fails fast on an unsupported file, and hashes it
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / "onnx" / f"{gguf.sha256[:16]}-{options.key}"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting the same file
        if not _complete(target):
            stem = (
                model.id.removeprefix("bundled:")
                if model.id.startswith("bundled:")
                else (model.path.stem)
            )
            convert_gguf(
                gguf,
                target,
                options,
                model_id=f"{stem}-{options.target}",
                chat=model.chat,
                progress=progress,
            )
    return target


def _complete(folder: Path) -> bool:
    # the manifest is written last, just before the folder is renamed into place
    return (folder / "tandem.json").is_file() and (folder / "genai_config.json").is_file()
