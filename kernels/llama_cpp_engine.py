"""The default engine: GGUF models through llama-cpp-python.

Decoding runs our own loop over `Llama.generate` (token ids in, token ids out) rather than
`create_completion`, so that each token carries its log-probability and the entropy of its
step (from `StepRecorder`, a logits processor), stop strings are matched on the decoded text,
and cancellation is checked between tokens.
"""

from __future__ import annotations

import codecs
import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
from kernels.common import (
    StopText,
    check_context,
    default_threads,
    render_transcript,
    sampling_seed,
)
from kernels.errors import EngineError, ModelNotFoundError
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
        seed: int | None = None,
    ) -> None:
        """`seed`: what a request without its own seed samples with (None: a fresh random
        seed per request)."""
        import llama_cpp
        from llama_cpp import Llama

        from kernels.llama_log import route_llama_logs

        route_llama_logs()
        if not model.path.is_file():
            raise ModelNotFoundError(f"model file not found: {model.path}")
        n_threads = threads or default_threads()
        # Every llama.cpp compute call runs on this one thread. llama.cpp is built with
        # OpenMP, which keeps a pool of worker threads per calling thread: a second calling
        # thread means a second pool, and the two fight for the cores (measured: decode
        # falls from ~140 to ~75 tok/s on 2 cores once a second thread has decoded).
        self._pinned = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
        try:
            self._llm = self._pinned.submit(
                Llama,
                model_path=str(model.path),
                n_ctx=context_length,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                # every decode sets its own seed (_decode); this one is never sampled with
                seed=llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed,
                verbose=False,
            ).result()
        except (ValueError, RuntimeError) as exc:
            self._pinned.shutdown(wait=False)
            raise EngineError(f"llama.cpp could not load {model.path}: {exc}") from exc
        self._model = model
        self._seed = seed
        self._lock = threading.Lock()
        self._closed = False  # set under the lock: the model's memory is freed on close
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._vocab = self._llm._model.vocab
        self._pieces: dict[tuple[int, bool], bytes] = {}  # token_to_piece, cached
        self._formatter: Jinja2ChatFormatter | None = None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if model.chat and template:
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llm.token_eos()),
                bos_token=self._token_text(self._llm.token_bos()),
                add_generation_prompt=True,
            )

        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._info = ModelInfo(
            id=model.id,
            path=str(model.path),
            engine="llama.cpp",
            # llama.cpp rounds a small context up (128 -> 256) while the Python wrapper's
            # token buffer keeps the size asked for: the smaller one is what fits
            context_length=min(context_length, self._llm.n_ctx()),
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
        self._check_open()
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
        if not tokens:  # llama-cpp-python would fail an assert deep in its sampler
            raise ValueError("the prompt is empty: there is nothing to continue")
        check_context(len(tokens), self._info.context_length)
        stream = TokenStream(iter(()), cancel)
        stream._events = _Pinned(self, self._decode(tokens, params, stream))
        return stream

    def close(self) -> None:
        """Free the model (idempotent); any later call raises EngineError, not a crash."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):
                self._pinned.submit(self._llm.close).result()
        self._pinned.shutdown(wait=True)

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        # llama.cpp dereferences freed memory (a segfault) if the model is used after close
        if self._closed:
            raise EngineError("the engine is closed")

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="ignore")

    def _piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token. Not `Llama.detokenize`: in llama-cpp-python 0.3.36 it reads
        every piece through a 32-byte buffer and silently drops a longer one (SmolLM2 has 47
        such tokens, e.g. a newline and 32 spaces of indentation, Gemma 3 has 379)."""
        key = (token, special)
        piece = self._pieces.get(key)
        if piece is None:
            import ctypes

            import llama_cpp

            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, special)
                if n >= 0:
                    piece = buf.raw[:n]
                    break
                size = -n  # too small: llama.cpp says how large a buffer the piece needs
            self._pieces[key] = piece
        return piece

    def _decode(
        self, prompt_tokens: list[int], params: GenerationParams, stream: TokenStream
    ) -> Iterator[TokenEvent]:
        budget = min(params.max_tokens, self._info.context_length - len(prompt_tokens))
        recorder = StepRecorder()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = StopText(params.stop)
        produced = 0
        reason: FinishReason = "length"
        import llama_cpp
        import numpy as np

        ctx = self._llm._ctx.ctx
        vocab_size = self._llm.n_vocab()

        # the caller (`_Pinned`) holds self._lock; this body runs on the pinned thread
        self._llm.set_seed(sampling_seed(params.seed, self._seed))
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
        )
        try:
            while produced < budget:
                if stream.cancel_event.is_set():
                    reason = "cancelled"
                    break
                token = next(generator)
                # The logits that chose `token` stay in the context until the next decode:
                # read them in place (not logits_all=True, which costs ~6x decode time).
                recorder.observe(np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(ctx, -1), shape=(vocab_size,)))
                if self._is_eog(self._vocab, token):
                    reason = "stop"
                    break
                produced += 1
                shown = text.add(decoder.decode(self._piece(token)))
                # Every token yields one event (possibly with empty text) so that
                # confidence sees every token; held-back text arrives with a later one.
                yield TokenEvent(shown, token, recorder.logprob(token), recorder.entropy)
                if text.stopped:
                    reason = "stop"
                    break
        finally:
            generator.close()
        # flush what was held back for a stop string that never completed
        rest = text.rest(decoder.decode(b"", final=True) if reason != "stop" else "")
        if rest:
            yield TokenEvent(rest, -1, 0.0, 0.0)
        stream.finish(reason, Usage(len(prompt_tokens), produced))



_END = object()


class _Pinned(Iterator[TokenEvent]):
    """Runs a decode generator on the engine's pinned thread, ahead of its consumer.

    The whole decode loop runs on the pinned thread and hands each event over through a
    queue, so decoding never waits for the consumer: a lockstep handoff (the consumer asking
    for each token) put two thread wakeups per token on the decode's critical path, which
    cost ~3 % of decode speed on 2 cores.

    The engine lock is taken by the consuming thread on its first `next()` (so a second
    consumer waits in its own thread, never on the pinned one) and released by the pinned
    thread when the decode ends. Cancellation is checked by the decode loop before every
    token, so a cancelled stream ends after the token being decoded; every event produced
    is still delivered, and `usage` counts exactly the tokens delivered.
    """

    def __init__(self, engine: LlamaCppEngine, gen: Iterator[TokenEvent]) -> None:
        self._engine = engine
        self._gen = gen
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._future: Future[None] | None = None
        self._abandoned = False
        self._done = False
        self._pace = 0.0
        self._next_take = 0.0  # with a pace: when the consumer next looks at the queue
        self._ended = threading.Event()

    def __iter__(self) -> _Pinned:
        return self

    def pace(self, seconds: float) -> None:
        self._pace = seconds

    def __next__(self) -> TokenEvent:
        if self._done:
            raise StopIteration
        if self._future is None:
            self._engine._lock.acquire()
            try:
                self._engine._check_open()  # a stream made before close(), read after it
                self._future = self._engine._pinned.submit(self._produce)
            except BaseException:
                self._engine._lock.release()
                self._done = True
                raise
        item = self._take()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item  # type: ignore[return-value]

    def _take(self) -> object:
        if not self._pace:
            return self._queue.get()
        try:
            return self._queue.get_nowait()  # drain what arrived since the last look
        except queue.Empty:
            pass
        wait = self._next_take - time.monotonic()
        if wait > 0:
            self._ended.wait(wait)  # a decode that ends cuts the wait short
        item = self._queue.get()
        self._next_take = time.monotonic() + self._pace
        return item

    def _produce(self) -> None:
        """The decode loop, on the pinned thread (the engine lock is held for it)."""
        put = self._queue.put
        try:
            if not self._abandoned:  # else closed before the pinned thread got to it
                for event in self._gen:
                    put(event)
                    if self._abandoned:
                        close = getattr(self._gen, "close", None)
                        if close is not None:
                            close()
                        break
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)
        finally:
            self._engine._lock.release()
            self._ended.set()

    def close(self) -> None:
        """Stop decoding (after the current token) and wait until the engine is free."""
        if self._done:
            return
        self._abandoned = True
        self._done = True
        future = self._future
        if future is not None:
            # The decode notices `_abandoned` (or the stream's cancel event) after the token
            # in flight; waiting here means the engine is free once close() returns.
            with contextlib.suppress(Exception):
                future.result()
        else:
            close = getattr(self._gen, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def __del__(self) -> None:
        # Never wait in a finalizer: a live decode holds a reference to this object, so
        # one that is being collected has either finished or never started.
        if self._future is None or self._future.done():
            self._done = True
