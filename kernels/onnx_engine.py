"""The second in-process engine: int4 ONNX models through ONNX Runtime GenAI.

A model is a folder with `genai_config.json` (what `tandem convert` or the onnxruntime-genai
model builder writes). Decoding is our own loop over `og.Generator`, like the llama.cpp
engine's: before each step `get_logits()` gives the raw distribution the next token is drawn
from, so every token carries the log-softmax at the chosen id and the entropy of that step,
stop strings are matched on the decoded text, and cancellation is checked between tokens.

Two traps, handled here:
- some tokenizers (Gemma's) need their BOS token and onnxruntime-genai's `encode` never adds
  it: the engine adds it when the model says so (`tandem.json` from the converter, else
  `add_bos_token` in `tokenizer_config.json`);
- a model with sliding-window attention breaks when `max_length` is below its window, so the
  per-generation `max_length` never goes below it.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from kernels.base import (
    FinishReason,
    GenerationParams,
    ModelInfo,
    Prompt,
    TokenEvent,
    TokenStream,
    Usage,
)
from kernels.common import (
    StopText,
    check_context,
    default_threads,
    render_transcript,
    sampling_seed,
)
from kernels.errors import (
    EngineError,
    EngineUnavailableError,
    ModelNotFoundError,
)
from kernels.logprobs import step_stats
from kernels.registry import ResolvedModel

MANIFEST = "tandem.json"  # written by `tandem convert` next to the model


def import_onnxruntime_genai() -> ModuleType:
    """The `onnxruntime_genai` module, or a clear error saying how to install it."""
    try:
        return importlib.import_module("onnxruntime_genai")
    except ImportError as exc:
        raise EngineUnavailableError(
            "ONNX models need onnxruntime-genai: pip install 'onnxruntime-genai==0.18.0'"
        ) from exc


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file is absent."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def chat_template(folder: Path) -> str | None:
    """The model's chat template (`chat_template.jinja` or `tokenizer_config.json`), if any."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = read_json(folder / "tokenizer_config.json").get("chat_template")
    return template if isinstance(template, str) and template else None


def sliding_window(genai_model: dict[str, Any]) -> int:
    """The sliding-attention window of a `genai_config.json` model section (0 = none)."""
    window = genai_model.get("decoder", {}).get("sliding_window")
    if isinstance(window, dict):
        window = window.get("window_size")
    return int(window or 0)


def og_seed(seed: int) -> int:
    """`seed` as onnxruntime-genai takes it: its `random_seed` is a 32-bit signed int (2**31
    and above fail to convert) and any negative value means "draw a random seed", so every
    seed is folded into 0..2**31-1 (s and s + 2**31 sample alike)."""
    return seed % 2**31


class OnnxEngine:
    """An ONNX Runtime GenAI model folder. One generation at a time (a lock serialises)."""

    def __init__(
        self,
        model: ResolvedModel,
        *,
        threads: int = 0,
        context_length: int = 2048,
        seed: int | None = None,
    ) -> None:
        """`seed`: what a request without its own seed samples with (None: a fresh random
        seed per request)."""
        og = import_onnxruntime_genai()
        folder = model.path
        config_path = folder / "genai_config.json"
        if not config_path.is_file():
            raise ModelNotFoundError(f"not an ONNX Runtime GenAI model folder: {folder}")
        genai = read_json(config_path).get("model", {})
        manifest = read_json(folder / MANIFEST)
        n_threads = threads or default_threads()
        try:
            config = og.Config(str(folder))
            session = {"intra_op_num_threads": n_threads}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
            self._og_model = og.Model(config)
            self._tokenizer = og.Tokenizer(self._og_model)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeError / OSError
            raise EngineError(f"onnxruntime-genai could not load {folder}: {exc}") from exc
        self._og = og
        self._seed = seed
        self._lock = threading.Lock()
        self._vocab = int(genai.get("vocab_size") or 0)
        self._eos = {int(t) for t in self._tokenizer.eos_token_ids}
        bos = genai.get("bos_token_id")
        self._bos = int(bos[0] if isinstance(bos, list) else bos) if bos is not None else -1
        tokenizer_config = read_json(folder / "tokenizer_config.json")
        wants_bos = manifest.get("add_bos", tokenizer_config.get("add_bos_token", False))
        self._add_bos = self._bos >= 0 and bool(wants_bos)
        self._bos_text = (
            self._tokenizer.decode(np.array([self._bos], dtype=np.int32)) if self._add_bos else ""
        )
        self._window = sliding_window(genai)
        model_ctx = int(genai.get("context_length") or context_length)
        self._template = chat_template(folder) if model.chat else None
        self._info = ModelInfo(
            id=model.id,
            path=str(folder),
            engine="onnxruntime-genai",
            context_length=min(context_length, model_ctx),
            chat=self._template is not None,
            has_logprobs=True,
            extra={
                "threads": str(n_threads),
                "vocab": str(self._vocab),
                "precision": str(manifest.get("precision", "unknown")),
            },
        )

    # -- Engine protocol -------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        messages = list(prompt)
        if self._template is None:
            return render_transcript(messages)
        rendered = self._open_tokenizer().apply_chat_template(
            json.dumps([m.to_dict() for m in messages]),
            template_str=self._template,
            add_generation_prompt=True,
        )
        return str(rendered)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as the model sees it (BOS added when the model needs it)."""
        ids = [int(t) for t in self._open_tokenizer().encode(text)]
        if (
            self._add_bos
            and not (ids and ids[0] == self._bos)
            and not (self._bos_text and text.startswith(self._bos_text))
        ):
            ids.insert(0, self._bos)
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def stream(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> TokenStream:
        tokens = self.tokenize(self.render(prompt))
        if not tokens:  # onnxruntime-genai refuses it only once generating: "input_ids is empty"
            raise ValueError("the prompt is empty: there is nothing to continue")
        check_context(len(tokens), self._info.context_length)
        stream = TokenStream(iter(()), cancel)
        stream._events = self._decode(tokens, params, stream)
        return stream

    def close(self) -> None:
        """Release the model (idempotent); any later call raises EngineError."""
        with self._lock:
            self._tokenizer = None
            self._og_model = None

    # -- internals ---------------------------------------------------------------------------

    def _open_tokenizer(self) -> Any:
        tokenizer = self._tokenizer  # close() may clear it from another thread
        if tokenizer is None:
            raise EngineError("the engine is closed")
        return tokenizer

    def _generator(self, prompt_tokens: list[int], budget: int, params: GenerationParams) -> Any:
        og = self._og
        gen_params = og.GeneratorParams(self._og_model)
        length = min(self._info.context_length, len(prompt_tokens) + budget)
        options: dict[str, Any] = {
            # never below the sliding window: the windowed KV cache needs the whole window
            "max_length": max(length, self._window),
            "do_sample": params.temperature > 0,
            "random_seed": og_seed(sampling_seed(params.seed, self._seed)),
        }
        if params.temperature > 0:
            # top_k 0 = no top-k cut, as in the llama.cpp engine; only top-p applies
            options.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        gen_params.set_search_options(**options)
        generator = og.Generator(self._og_model, gen_params)
        generator.append_tokens(np.asarray(prompt_tokens, dtype=np.int32))
        return generator

    def _decode(
        self, prompt_tokens: list[int], params: GenerationParams, stream: TokenStream
    ) -> Iterator[TokenEvent]:
        budget = min(params.max_tokens, self._info.context_length - len(prompt_tokens))
        text = StopText(params.stop)
        produced = 0
        reason: FinishReason = "length"
        # The lock guards each step, never a `yield`: a consumer holding a half-read stream
        # must not block close() or a second stream (a second stream in the same thread
        # would wait forever); close() between steps makes the next step raise.
        with self._lock:
            if self._og_model is None:
                raise EngineError("the engine is closed")
            try:
                generator = self._generator(prompt_tokens, budget, params)
            except Exception as exc:
                raise EngineError(f"onnxruntime-genai could not start generating: {exc}") from exc
            detok = self._tokenizer.create_stream()
        try:
            while produced < budget:
                if stream.cancel_event.is_set():
                    reason = "cancelled"
                    break
                with self._lock:
                    if self._og_model is None:
                        raise EngineError("the engine is closed")
                    # The logits the next token is drawn from: read before the step takes it.
                    logits = np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1)
                    generator.generate_next_token()
                    token = int(generator.get_next_tokens()[0])
                if token in self._eos:
                    reason = "stop"
                    break
                produced += 1
                lse, entropy = step_stats(logits)
                logprob = float(logits[token]) - lse
                shown = text.add(detok.decode(token))
                # one event per token, possibly with empty text, so confidence sees them all
                yield TokenEvent(shown, token, logprob, entropy)
                if text.stopped:
                    reason = "stop"
                    break
        finally:
            with self._lock:
                del generator  # frees the KV cache now, not at the next GC
        rest = text.rest()  # what was held back for a stop string that never completed
        if rest:
            yield TokenEvent(rest, -1, 0.0, 0.0)
        stream.finish(reason, Usage(len(prompt_tokens), produced))
