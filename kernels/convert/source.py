"""What a GGUF file to convert is: its hash, architecture and tokenizer facts.

Read before any heavy step so that an unsupported input fails in a second, with one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernels.convert.errors import ConvertUnavailableError, UnsupportedModelError

GGUF_MAGIC = b"GGUF"

# GGUF architectures that both transformers' GGUF loader and the onnxruntime-genai builder
# know. "llama" (SmolLM2) and "gemma3" (Gemma 3 270M, through the RoPE shim in
# `kernels.convert.build`) are exercised here; the rest are the documented intersection of the
# two projects' support lists.
SUPPORTED_ARCHITECTURES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "phi3", "nemotron", "gemma3"}
)

# Known not to work with the pinned tools, with the reason a user sees (none at the moment).
BROKEN_ARCHITECTURES: dict[str, str] = {}

CONVERT_EXTRA = "pip install 'tandem-llm[convert]'"


@dataclass(frozen=True, slots=True)
class GgufSource:
    """A GGUF file we are about to convert."""

    path: Path
    sha256: str
    architecture: str
    name: str
    add_bos: bool
    has_chat_template: bool


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def require(module: str) -> Any:
    """Import a module of the `convert` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConvertUnavailableError(
            f"conversion needs {module!r}, part of the convert extra: {CONVERT_EXTRA}"
        ) from exc


def require_installed(module: str) -> None:
    """Check that a module of the `convert` extra is installed, without importing it (torch
    and transformers run in a child process: importing them here would cost seconds and
    hundreds of MB in the caller's, and change how spaCy picks its device)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a dotted name whose parent package is missing
        found = False
    if not found:
        raise ConvertUnavailableError(
            f"conversion needs {module!r}, part of the convert extra: {CONVERT_EXTRA}")


def inspect_gguf(path: Path) -> GgufSource:
    """Check that `path` is a GGUF of a supported architecture and read what conversion needs."""
    if path.is_dir():
        raise UnsupportedModelError(f"{path} is a folder: conversion takes one .gguf file")
    if not path.is_file():
        raise UnsupportedModelError(f"no such file: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise UnsupportedModelError(f"{path} is not a GGUF file (it starts with {magic!r})")
    gguf = require("gguf")
    try:
        fields = gguf.GGUFReader(str(path)).fields
    except Exception as exc:  # a truncated or corrupt file fails in many ways
        raise UnsupportedModelError(f"{path} is not a readable GGUF file: {exc}") from exc

    def value(key: str, default: object = None) -> object:
        field = fields.get(key)
        return field.contents() if field is not None else default

    arch = str(value("general.architecture", ""))
    if arch in BROKEN_ARCHITECTURES:
        raise UnsupportedModelError(f"{path.name}: {arch} cannot be converted yet: "
                                    f"{BROKEN_ARCHITECTURES[arch]}")  # fmt: skip
    if arch not in SUPPORTED_ARCHITECTURES:
        known = ", ".join(sorted(SUPPORTED_ARCHITECTURES))
        raise UnsupportedModelError(
            f"{path.name}: architecture {arch or 'unknown'!r} cannot be converted "
            f"(supported: {known})"
        )
    return GgufSource(
        path=path,
        sha256=file_sha256(path),
        architecture=arch,
        name=str(value("general.name", path.stem)),
        add_bos=bool(value("tokenizer.ggml.add_bos_token", False)),
        has_chat_template=value("tokenizer.chat_template") is not None,
    )
