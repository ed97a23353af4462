"""MLC LLM in process (`mlc_llm.MLCEngine`), when `mlc_llm` is installed.

`MLCEngine` speaks the OpenAI protocol in Python: `engine.chat.completions.create(...)`
streams the same chunk objects `mlc_llm serve` sends over HTTP. So this engine builds its
requests and reads its chunks with `kernels.openai_protocol`, exactly like `OpenAIEngine`
does for a server. mlc_llm is not on PyPI (it ships from MLC's own wheel index); without it
`MlcEngine` raises `EngineUnavailableError` saying so, and `mlc_llm serve` plus
`openai:http://127.0.0.1:PORT/v1` is the way to reach MLC.
"""

from __future__ import annotations

import importlib
import itertools
import threading
import uuid
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

from kernels.base import (
    FinishReason,
    GenerationParams,
    ModelInfo,
    Prompt,
    TokenEvent,
    TokenStream,
    Usage,
)
from kernels.errors import ContextOverflowError, EngineError, EngineUnavailableError
from kernels.openai_protocol import (
    DEFAULT_TOP_LOGPROBS,
    ChunkAssembler,
    build_request,
    render_messages,
    server_error,
)
from kernels.registry import ResolvedModel


def import_mlc_llm() -> ModuleType:
    """The `mlc_llm` module, or a clear error saying where it comes from."""
    try:
        return importlib.import_module("mlc_llm")
    except ImportError as exc:
        raise EngineUnavailableError(
            "mlc: models need the mlc_llm package, which is not on PyPI: install it from "
            "https://llm.mlc.ai/docs/install/mlc_llm.html, or run `mlc_llm serve MODEL` and use "
            "the spec openai:http://127.0.0.1:8000/v1"
        ) from exc


def as_dict(chunk: object) -> Mapping[str, Any]:
    """An MLC response object (pydantic) as the JSON object a server would have sent."""
    if isinstance(chunk, Mapping):
        return chunk
    dump = getattr(chunk, "model_dump", None)
    if dump is None:
        raise EngineError(f"unexpected MLC response object {type(chunk).__name__}")
    data = dump()
    if not isinstance(data, Mapping):
        raise EngineError(f"unexpected MLC response object {type(chunk).__name__}")
    return data


class MlcEngine:
    """A compiled MLC model folder run by `mlc_llm.MLCEngine` in this process."""

    def __init__(
        self,
        model: ResolvedModel,
        *,
        context_length: int = 2048,
        device: str = "auto",
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
        mlc: ModuleType | None = None,
    ) -> None:
        mlc = mlc or import_mlc_llm()
        try:
            self._engine = mlc.MLCEngine(str(model.path), device=device, mode="local")
        except Exception as exc:  # TVM raises its own error types
            raise EngineError(f"MLC could not load {model.path}: {exc}") from exc
        self._model_path = str(model.path)
        self._top_logprobs = top_logprobs
        self._info = ModelInfo(
            id=model.id,
            path=str(model.path),
            engine="mlc",
            context_length=context_length,
            chat=True,
            has_logprobs=top_logprobs > 0,
            extra={"device": device, "entropy": "top-k lower bound"},
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    def render(self, prompt: Prompt) -> str:
        """Raw prompts as they are; chat as a transcript (MLC applies its own template)."""
        return prompt if isinstance(prompt, str) else render_messages(list(prompt))

    def count_tokens(self, text: str) -> int:
        return len(self._engine.tokenizer.encode(text))

    def stream(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> TokenStream:
        request = build_request(
            prompt, params, model=self._model_path, top_logprobs=self._top_logprobs
        )
        body = dict(request.body)
        body["request_id"] = f"tandem-{uuid.uuid4().hex}"
        if not request.chat:
            # MLC's completions take `logprobs` as a bool plus `top_logprobs`, like chat
            top = body.pop("logprobs", 0)
            body["logprobs"] = bool(top)
            body["top_logprobs"] = int(top)
        create = self._engine.chat.completions if request.chat else self._engine.completions
        try:
            chunks = iter(create.create(**body))
            # MLC validates the request when the generator first runs: run it to the first
            # chunk here so that a refusal raises from stream(), as in the other engines.
            first = next(chunks, None)
        except Exception as exc:  # BadRequestError for an over-long prompt, TVM errors
            raise _mlc_error(exc) from exc
        head = [] if first is None else [first]
        stream = TokenStream(iter(()), cancel)
        stream._events = self._events(
            itertools.chain(head, chunks), chunks, body["request_id"], prompt, stream
        )
        return stream

    def close(self) -> None:
        self._engine.terminate()

    def _events(
        self,
        chunks: Iterator[object],
        source: Iterator[object],
        request_id: str,
        prompt: Prompt,
        stream: TokenStream,
    ) -> Iterator[TokenEvent]:
        assembler = ChunkAssembler()
        reason: FinishReason | None = None
        try:
            for chunk in chunks:
                yield from assembler.feed(as_dict(chunk))
                if stream.cancel_event.is_set():
                    reason = "cancelled"
                    self._engine.abort(request_id)
                    break
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # MLC aborts a request whose generator is closed early
        reason = reason or assembler.finish_reason or "stop"
        usage = assembler.usage
        if usage is None or reason == "cancelled":
            prompt_tokens = usage.prompt_tokens if usage else self.count_tokens(self.render(prompt))
            usage = Usage(prompt_tokens, assembler.steps)
        stream.finish(reason, usage)


def _mlc_error(exc: Exception) -> EngineError:
    error = server_error(str(exc))  # recognises MLC's "prompt has N tokens ... limit M"
    if isinstance(error, ContextOverflowError):
        return error
    return EngineError(f"MLC refused the request: {exc}")
