"""The default engine: GGUF models through llama-cpp-python.

Decoding runs our own loop over `Llama.generate` (token ids in, token ids out) rather than
`create_completion`, so that each token carries its log-probability and the entropy of its
step (from `StepRecorder`, a logits processor), stop strings are matched on the decoded text,
and cancellation is checked between tokens.
"""

from __future__ import annotations

import codecs
import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kernels.base import (
    FinishReason,
    GenerationParams,
    ModelInfo,
    Prompt,
    TokenEvent,
    TokenStream,
    Usage,
)
from kernels.common import default_threads, find_stop, render_transcript
from kernels.errors import ContextOverflowError, EngineError, ModelNotFoundError
from kernels.logprobs import StepRecorder
from kernels.registry import ResolvedModel

if TYPE_CHECKING:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter


class LlamaCppEngine:
    """A GGUF model loaded with llama-cpp-python. One generation at a time (a lock serialises)."""

    def __init__(
        self,
        model: ResolvedModel,
        *,
        threads: int = 0,
        context_length: int = 2048,
        seed: int = 0,
    ) -> None:
        from llama_cpp import Llama

        if not model.path.is_file():
            raise ModelNotFoundError(f"model file not found: {model.path}")
        n_threads = threads or default_threads()
        try:
            self._llm = Llama(
                model_path=str(model.path),
                n_ctx=context_length,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                seed=seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp could not load {model.path}: {exc}") from exc
        self._model = model
        self._seed = seed
        self._lock = threading.Lock()
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._formatter: Jinja2ChatFormatter | None = None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if model.chat and template:
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llm.token_eos()),
                bos_token=self._token_text(self._llm.token_bos()),
                add_generation_prompt=True,
            )

        self._vocab = self._llm._model.vocab
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._info = ModelInfo(
            id=model.id,
            path=str(model.path),
            engine="llama.cpp",
            context_length=self._llm.n_ctx(),
            chat=self._formatter is not None,
            has_logprobs=True,
            extra={"threads": str(n_threads), "vocab": str(self._llm.n_vocab())},
        )

    # -- Engine protocol -------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        messages = list(prompt)
        if self._formatter is None:
            return render_transcript(messages)
        rendered = self._formatter(messages=[m.to_dict() for m in messages])  # type: ignore[misc]
        return str(rendered.prompt)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as the model sees it (special tokens parsed, BOS as configured)."""
        bos_text = self._token_text(self._llm.token_bos()) if self._add_bos else ""
        add_bos = self._add_bos and not (bos_text and text.startswith(bos_text))
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def stream(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> TokenStream:
        tokens = self.tokenize(self.render(prompt))
        n_ctx = self._info.context_length
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(len(tokens), n_ctx)
        stream = TokenStream(iter(()), cancel)
        stream._events = self._decode(tokens, params, stream)
        return stream

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._llm.close()

    # -- internals ---------------------------------------------------------------------------

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def _decode(
        self, prompt_tokens: list[int], params: GenerationParams, stream: TokenStream
    ) -> Iterator[TokenEvent]:
        budget = min(params.max_tokens, self._info.context_length - len(prompt_tokens))
        recorder = StepRecorder()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = params.stop
        hold = max((len(s) for s in stops), default=1) - 1
        emitted = 0  # characters of `text` already yielded
        text = ""
        produced = 0
        reason: FinishReason = "length"
        from llama_cpp import LogitsProcessorList

        with self._lock:
            self._llm.set_seed(params.seed if params.seed is not None else self._seed)
            # Re-evaluate the whole prompt every time: reusing a cached prefix splits the
            # prompt into different batches, which changes float rounding and so greedy output.
            self._llm.reset()  # type: ignore[no-untyped-call]
            generator = self._llm.generate(
                prompt_tokens,
                top_k=0 if params.temperature > 0 else 1,
                top_p=params.top_p,
                min_p=0.0,
                temp=params.temperature,
                repeat_penalty=1.0,
                logits_processor=LogitsProcessorList([recorder]),
            )
            try:
                while produced < budget:
                    if stream.cancel_event.is_set():
                        reason = "cancelled"
                        break
                    token = next(generator)
                    if self._is_eog(self._vocab, token):
                        reason = "stop"
                        break
                    produced += 1
                    piece = self._llm.detokenize([token])
                    text += decoder.decode(piece)
                    logprob, entropy = recorder.logprob(token), recorder.entropy
                    cut = find_stop(text, stops, emitted)
                    if cut is not None:
                        text = text[:cut]
                        reason = "stop"
                    safe = len(text) if cut is not None else max(emitted, len(text) - hold)
                    # Every token yields one event (possibly with empty text) so that
                    # confidence sees every token; held-back text arrives with a later one.
                    yield TokenEvent(text[emitted:safe], token, logprob, entropy)
                    emitted = safe
                    if cut is not None:
                        break
            finally:
                generator.close()
            if reason != "stop":
                text += decoder.decode(b"", final=True)
        if emitted < len(text):
            # flush what was held back for a stop string that never completed
            yield TokenEvent(text[emitted:], -1, 0.0, 0.0)
        stream.finish(reason, Usage(len(prompt_tokens), produced))

