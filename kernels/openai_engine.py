"""Any OpenAI-compatible server as an engine: `mlc_llm serve`, llama.cpp's server, vLLM, Ollama.

Synchronous (httpx) and streaming (SSE). Every request asks for `logprobs` and
`top_logprobs`; whether the server honours that is found out once, at load, and published
as `info.has_logprobs` (see `kernels.openai_protocol` for what the numbers mean).
Cancellation closes the HTTP stream, which is how a client tells any of these servers to
stop decoding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx

from kernels.base import (
    FinishReason,
    GenerationParams,
    ModelInfo,
    Prompt,
    TokenEvent,
    TokenStream,
    Usage,
)
from kernels.common import check_context
from kernels.errors import (
    EngineError,
    EngineUnavailableError,
    ModelNotFoundError,
)
from kernels.openai_protocol import (
    DEFAULT_TOP_LOGPROBS,
    ChunkAssembler,
    CompletionBudgetError,
    Request,
    build_request,
    iter_sse,
    render_messages,
    server_error,
)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`openai:http://host:port/v1#model` -> (base URL, model or None for the server's first)."""
    rest = spec.removeprefix("openai:")
    url, _, model = rest.partition("#")
    if not url.startswith(("http://", "https://")):
        raise ModelNotFoundError(
            f"bad server spec {spec!r}: expected openai:http://HOST:PORT/v1#MODEL"
        )
    return url.rstrip("/"), (model or None)


class OpenAIEngine:
    """A model behind an OpenAI-compatible HTTP API. Safe to use from several threads."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        context_length: int = 2048,
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
        tokenizer: str | Path | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
        )
        self._base_url = base_url.rstrip("/")
        try:
            self._model = model or self._first_model()
            self._top_logprobs = top_logprobs
            self._has_logprobs = top_logprobs > 0 and self._probe_logprobs()
        except BaseException:
            self._client.close()
            raise
        self._tokenizer = _load_tokenizer(tokenizer) if tokenizer else None
        self._count_via: str | None = None  # the server's tokenize route, once found
        self._count_lock = threading.Lock()
        self._info = ModelInfo(
            id=self._model,
            path=self._base_url,
            engine="openai",
            context_length=context_length,
            chat=True,
            has_logprobs=self._has_logprobs,
            extra={
                "server": self._base_url,
                "top_logprobs": str(top_logprobs if self._has_logprobs else 0),
                "entropy": "top-k lower bound" if self._has_logprobs else "none",
            },
        )

    # -- Engine protocol -------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def render(self, prompt: Prompt) -> str:
        """Raw prompts as they are; chat as a plain transcript (the server templates it)."""
        return prompt if isinstance(prompt, str) else render_messages(list(prompt))

    def count_tokens(self, text: str) -> int:
        """Exact with a local `tokenizer.json` or a server tokenize route; else ~4 chars/token."""
        counted = self._exact_count(text)
        return counted if counted is not None else max(1, math.ceil(len(text) / 4))

    def stream(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> TokenStream:
        counted = self._exact_count(self.render(prompt))
        if counted is not None:
            # Servers refuse an over-long prompt only once the stream has begun (if at all),
            # so check it here where we can say why. For chat the transcript undercounts the
            # template, so this never refuses a prompt the server would take.
            check_context(counted, self._info.context_length)
        top = self._top_logprobs if self._has_logprobs else 0
        request = build_request(prompt, params, model=self._model, top_logprobs=top)
        # Sent now, so that a refusal (context overflow, unknown model) raises here, as the
        # in-process engines do, rather than on the first `next()`.
        try:
            response = self._send(request, own_connection=True)
        except CompletionBudgetError as exc:
            # vLLM refuses prompt + max_tokens beyond its context even when the prompt fits;
            # the in-process engines stop at the context's end, so give the answer that room
            capped = dataclasses.replace(params, max_tokens=exc.room)
            request = build_request(prompt, capped, model=self._model, top_logprobs=top)
            response = self._send(request, own_connection=True)
        stream = TokenStream(iter(()), cancel)
        stream._events = _ServerEvents(self, response, prompt, stream)
        return stream

    def close(self) -> None:
        self._client.close()

    # -- internals ---------------------------------------------------------------------------

    def _send(self, request: Request, *, own_connection: bool = False) -> httpx.Response:
        # A generation gets a connection of its own (not returned to the pool), so that a
        # cancel may shut its socket down from any thread without touching another request.
        headers = {"Connection": "close"} if own_connection else None

        def send() -> httpx.Response:
            return self._client.send(
                self._client.build_request(
                    "POST", request.path, json=request.body, headers=headers),
                stream=True,
            )

        try:
            try:
                response = send()
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A pooled keep-alive connection the server had already closed (it does so
                # after a stream that failed mid-way): closed cleanly, or reset when read
                # (ECONNRESET). Nothing was generated: send again, once.
                response = send()
        except httpx.TransportError as exc:
            raise EngineUnavailableError(
                f"cannot reach the model server at {self._base_url}: {exc}"
            ) from exc
        if response.status_code >= 400:
            try:
                body = response.read()
            finally:
                response.close()
            raise _error_from_body(body, response.status_code)
        return response

    def _first_model(self) -> str:
        try:
            response = self._client.get("models")
        except httpx.TransportError as exc:
            raise EngineUnavailableError(
                f"cannot reach the model server at {self._base_url}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise _error_from_body(response.content, response.status_code)
        try:
            listing = response.json()
        except ValueError:
            raise EngineError(
                f"the model server at {self._base_url} answered /models with no JSON: "
                f"{response.text[:100]!r}"
            ) from None
        models = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(models, list):
            raise EngineError(
                f"the model server at {self._base_url} answered /models without a data list"
            )
        if not models:
            raise ModelNotFoundError(f"the model server at {self._base_url} lists no model")
        first = models[0]
        model_id = first.get("id") if isinstance(first, dict) else None
        if not isinstance(model_id, str) or not model_id:
            raise EngineError(
                f"the model server at {self._base_url} lists a model without an id: "
                f"{str(first)[:100]}"
            )
        return model_id

    def _probe_logprobs(self) -> bool:
        """Whether the server returns log-probabilities (a one-token request finds out)."""
        from kernels.base import Message

        probe = build_request(
            [Message("user", "Hi")],
            GenerationParams(max_tokens=1),
            model=self._model,
            top_logprobs=self._top_logprobs,
        )
        try:
            response = self._send(probe)
        except _Refusal as exc:
            if exc.status in (400, 422):
                return False  # a server that rejects the logprobs fields outright
            if exc.status >= 500:  # warming up or broken: no way to know about log-probs yet
                raise EngineUnavailableError(f"the model server is not ready: {exc}") from exc
            raise  # 401, 403, a 404 route...: a fault to fix, not "no log-probs"
        assembler = ChunkAssembler()
        with contextlib.closing(response):
            try:
                for chunk in iter_sse(response.iter_lines()):
                    assembler.feed(chunk)
            except httpx.TransportError as exc:
                raise EngineUnavailableError(
                    f"the model server stream broke while probing for log-probs: {exc}"
                ) from exc
        return assembler.saw_logprobs

    def _exact_count(self, text: str) -> int | None:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return self._count_on_server(text)

    def _count_on_server(self, text: str) -> int | None:
        """The server's token count of `text`, or None when it has no working tokenize route.

        Each route is tried in turn until one answers in its own shape; that one is used from
        then on. An answer of another shape does not show that a route works: an HTML page
        (a proxy's fallback), or llama-server's `{"tokens": []}` to the vLLM body, which has
        no `content`. Nor does a count of 0 for some text: a server that ignored the body.
        """
        root = self._base_url.removesuffix("/v1")
        routes: list[tuple[str, dict[str, Any], str]] = [
            # llama-cpp-python: {"count": N}
            (f"{root}/extras/tokenize/count", {"input": text}, "count"),
            # vLLM: {"count": N, "max_model_len": M, "tokens": [...]}
            (f"{root}/tokenize", {"model": self._model, "prompt": text}, "count"),
            # llama.cpp's llama-server: {"tokens": [...]}
            (f"{root}/tokenize", {"content": text}, "tokens"),
        ]
        with self._count_lock:
            if self._count_via == "":
                return None
            if self._count_via is not None:
                routes = [r for r in routes if _route_key(r[0], r[1]) == self._count_via]
            zero = False  # a route counted 0 tokens in this text: proof of nothing
            for url, body, field in routes:
                try:
                    counted = self._ask_count(url, body, field)
                except httpx.TransportError:
                    return None
                if counted is None:
                    continue
                if counted == 0 and text:
                    zero = True
                    continue
                if counted > 0:
                    self._count_via = _route_key(url, body)
                return counted
            if not zero:
                self._count_via = ""  # none of them: estimate from now on
            return None

    def _ask_count(self, url: str, body: dict[str, Any], field: str) -> int | None:
        """The count a tokenize route gives in its reply's `field`; None if it gives none."""
        try:
            response = self._client.post(url, json=body)
        except httpx.DecodingError:
            return None  # a body that does not decode as the headers say
        if response.status_code != 200:
            return None
        try:
            data = response.json()
        except ValueError:  # not JSON (a proxy's HTML page), or not UTF-8
            return None
        value = data.get(field) if isinstance(data, dict) else None
        if field == "tokens":
            return len(value) if isinstance(value, list) else None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        return None


class _ServerEvents(Iterator[TokenEvent]):
    """The token events of one streamed response, which this object owns.

    The response is open from `stream()` on, so `close()` closes it even when no event was
    read yet (closing the connection is how a client tells these servers to stop decoding).
    A cancel may come from any thread while the reader is blocked on a stalled server: a
    watcher thread waits on the stream's cancel event and shuts the socket down, which ends
    the blocked read at once (closing the socket from another thread would not).
    """

    def __init__(self, engine: OpenAIEngine, response: httpx.Response, prompt: Prompt,
                 stream: TokenStream) -> None:
        self._response = response
        self._cancel = stream.cancel_event
        self._interrupted = False
        self._ended = threading.Event()
        self._events: Generator[TokenEvent, None, None] = self._read(engine, prompt, stream)
        threading.Thread(target=self._watch, name="openai-cancel", daemon=True).start()

    def __iter__(self) -> _ServerEvents:
        return self

    def __next__(self) -> TokenEvent:
        try:
            return next(self._events)
        except BaseException:
            self._ended.set()
            raise

    def close(self) -> None:
        """Abandon the stream: the server's connection is dropped now, from any thread."""
        self._interrupt()
        try:
            self._events.close()
        except ValueError:
            return  # being read on another thread: the interrupted read ends it there
        self._response.close()  # a generator closed before its first next() never ran
        self._ended.set()

    def _watch(self) -> None:
        while not self._ended.is_set():
            if self._cancel.wait(0.5):
                self._interrupt()
                return

    def _interrupt(self) -> None:
        self._interrupted = True
        network = self._response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            # the base class's shutdown, also for TLS: SSLSocket's drops its state first,
            # which the reading thread may be using
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _read(self, engine: OpenAIEngine, prompt: Prompt,
              stream: TokenStream) -> Generator[TokenEvent, None, None]:
        response = self._response
        assembler = ChunkAssembler()
        reason: FinishReason | None = None
        try:
            for chunk in iter_sse(response.iter_lines()):
                yield from assembler.feed(chunk)
                if self._cancel.is_set():
                    reason = "cancelled"
                    break
        except httpx.TransportError as exc:
            if not (self._interrupted or self._cancel.is_set()):
                raise EngineUnavailableError(f"the model server stream broke: {exc}") from exc
            reason = "cancelled"  # our own cancel shut the connection down
        finally:
            response.close()  # on cancel this is what tells the server to stop decoding
        if reason is None:
            if assembler.finish_reason is None:
                raise EngineError(
                    "the model server ended the stream without a finish reason (its log says why)"
                )
            reason = assembler.finish_reason
        usage = assembler.usage
        if usage is None or reason == "cancelled":
            prompt_tokens = (usage.prompt_tokens if usage
                             else engine.count_tokens(engine.render(prompt)))
            usage = Usage(prompt_tokens, assembler.steps)
        stream.finish(reason, usage)


def _route_key(url: str, body: dict[str, Any]) -> str:
    """A tokenize route: its URL and the fields of its body (two routes share /tokenize)."""
    return url + str(sorted(body))


def _error_from_body(body: bytes, status: int) -> EngineError:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        data = body.decode("utf-8", errors="replace")
    if isinstance(data, dict):
        data = data.get("error", data.get("detail", data))
    if status == 404 and "model" in str(data).lower():
        return ModelNotFoundError(f"the model server does not have that model: {data}")
    error = server_error(data, status)
    return _Refusal(str(error), status) if type(error) is EngineError else error


class _Refusal(EngineError):
    """The server refused a request with an HTTP error status (kept for the probe)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _load_tokenizer(path: str | Path) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise EngineUnavailableError(
            "counting tokens with a tokenizer.json needs the tokenizers package "
            "(pip install tokenizers)"
        ) from exc
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise ModelNotFoundError(f"tokenizer file not found: {file}")
    return Tokenizer.from_file(str(file))
