"""The OpenAI chat/completions protocol, shared by every engine that speaks it.

`OpenAIEngine` (any server: `mlc_llm serve`, llama.cpp's server, vLLM, Ollama) and `MlcEngine`
(MLC in process, whose Python API returns the same objects) both build requests with
`build_request` and turn the streamed chunks into `TokenEvent`s with `ChunkAssembler`.

Confidence from a server means what it means everywhere in Tandem:
- `logprob` is the server's log-probability of the chosen token. llama.cpp's servers and
  vLLM (default `logprobs_mode`) report it under the raw model distribution, i.e. before
  temperature and top-p, like the in-process engines.
- `entropy` cannot be computed exactly from the `top_logprobs` a server returns (at most 20
  of the vocabulary; 5 for a raw prompt, whose legacy completions API allows no more).
  `entropy_lower_bound` gives the tightest bound those numbers allow:
  every token outside the top k has a probability no larger than the k-th, so the tail
  contributes at least `-tail_mass * log(p_k)` nats.
- a server that returns no log-probabilities yields events whose `logprob` and `entropy` are
  NaN: "no confidence", never a made-up number.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kernels.base import FinishReason, GenerationParams, Message, Prompt, TokenEvent, Usage
from kernels.errors import ContextOverflowError, EngineError

UNKNOWN_TOKEN_ID: Final = 2**31 - 1
"""`TokenEvent.token_id` of a real model step whose vocabulary id the server did not report.

Non-negative on purpose: consumers treat negative ids as text emitted without a model step
(see `LlamaCppEngine`'s flush), and a server token is a model step whose confidence counts.
"""

DEFAULT_TOP_LOGPROBS: Final = 20  # the most the OpenAI API (and vLLM by default) allows

COMPLETIONS_MAX_LOGPROBS: Final = 5
"""The most alternatives the legacy completions API's `logprobs` may ask for (OpenAI's limit;
`mlc_llm serve` refuses more with a 422): raw prompts get at most this many."""

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Request:
    """One request body and the endpoint (relative to the `/v1` base) it goes to."""

    path: str  # "chat/completions" or "completions"
    body: JSONDict

    @property
    def chat(self) -> bool:
        return self.path == "chat/completions"


def build_request(
    prompt: Prompt,
    params: GenerationParams,
    *,
    model: str,
    top_logprobs: int = DEFAULT_TOP_LOGPROBS,
    stream: bool = True,
) -> Request:
    """The request for `prompt`: chat messages go to chat/completions, raw text to completions.

    `top_logprobs=0` asks for no log-probabilities at all (for servers that reject them);
    completions get at most `COMPLETIONS_MAX_LOGPROBS` of them.
    """
    body: JSONDict = {
        "model": model,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    if isinstance(prompt, str):
        body["prompt"] = prompt
        if top_logprobs > 0:
            # the legacy completions form: an int, at most 5 (the entropy bound is looser)
            body["logprobs"] = min(top_logprobs, COMPLETIONS_MAX_LOGPROBS)
        return Request("completions", body)
    body["messages"] = [m.to_dict() for m in prompt]
    if top_logprobs > 0:
        body["logprobs"] = True
        body["top_logprobs"] = top_logprobs
    return Request("chat/completions", body)


def render_messages(messages: Sequence[Message]) -> str:
    """A plain transcript of `messages`: what a server's own chat template is applied to.

    The exact templated text is the server's business; this is used to count tokens when
    the server does not say how many the prompt had.
    """
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n".join(f"{names[m.role]}: {m.content}" for m in messages) + "\nAssistant:"


def entropy_lower_bound(top_logprobs: Iterable[float]) -> float:
    """Lower bound (nats) on the entropy of a distribution known only by its top-k log-probs.

    Exact when the top k cover the whole distribution. The tail mass r = 1 - sum(p_i) is made
    of tokens each at most as likely as the k-th, so it contributes at least -r * log(p_k).
    """
    # a log-prob of -inf is a token of probability 0: no entropy, and no bound on the tail
    lps = sorted((lp for lp in top_logprobs if math.isfinite(lp)), reverse=True)
    if not lps:
        return math.nan
    probs = [math.exp(lp) for lp in lps]
    head = -sum(p * lp for p, lp in zip(probs, lps, strict=True))
    tail = max(0.0, 1.0 - sum(probs))
    return max(0.0, head - tail * lps[-1])


_VLLM_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


@dataclass(frozen=True, slots=True)
class _Step:
    """One generated token as a server reported it."""

    text: str
    token_id: int
    logprob: float
    entropy: float


def _steps_from_chat_logprobs(logprobs: Mapping[str, Any]) -> list[_Step]:
    steps = []
    for entry in logprobs.get("content") or ():
        token = str(entry.get("token", ""))
        # a null log-prob among the alternatives is a number the server did not give: left out
        top = [lp for t in entry.get("top_logprobs") or () if isinstance(t, Mapping)
               if not math.isnan(lp := _float(t.get("logprob")))]
        steps.append(
            _Step(
                text=token,
                token_id=_token_id(entry, token),
                logprob=_float(entry.get("logprob")),
                entropy=entropy_lower_bound(top) if top else math.nan,
            )
        )
    return steps


def _steps_from_completion_logprobs(logprobs: Mapping[str, Any]) -> list[_Step]:
    if "content" in logprobs:  # MLC (and newer servers) use the chat form for completions too
        return _steps_from_chat_logprobs(logprobs)
    tokens = logprobs.get("tokens") or []
    lps = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    steps = []
    for i, token in enumerate(tokens):
        top = tops[i] if i < len(tops) and tops[i] else {}
        top_values = [lp for v in top.values() if not math.isnan(lp := _float(v))]
        steps.append(
            _Step(
                text=str(token),
                token_id=_token_id({}, str(token)),
                logprob=_float(lps[i] if i < len(lps) else None),
                entropy=entropy_lower_bound(top_values) if top_values else math.nan,
            )
        )
    return steps


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _malformed(chunk: Mapping[str, Any], why: str) -> EngineError:
    return EngineError(f"the server sent a malformed chunk ({why}): {json.dumps(chunk)[:200]}")


def _token_id(entry: Mapping[str, Any], token: str) -> int:
    """The vocabulary id when the server says it (llama-server: `id`; vLLM: `token_id:N`)."""
    raw = entry.get("id")
    if isinstance(raw, int) and raw >= 0:
        return raw
    match = _VLLM_TOKEN_ID.match(token)
    return int(match.group(1)) if match else UNKNOWN_TOKEN_ID


def _float(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    return math.nan  # null: the server gave no number for this token


_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "length": "length",
    "max_tokens": "length",
    "cancelled": "cancelled",
    "abort": "cancelled",
}


class ChunkAssembler:
    """Turns streamed chunks (parsed JSON objects) into `TokenEvent`s, one per model step.

    A chunk may carry several tokens' log-probabilities and a text delta that is not their
    plain concatenation (a server holds text back while it might be the start of a stop
    string, and cuts the stop string out). Each step gets the part of the delta that matches
    its token text; what remains goes with the chunk's last step, so the events' texts always
    add up to exactly the text the server sent.
    """

    def __init__(self) -> None:
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None
        self.steps = 0
        self.saw_logprobs = False

    def feed(self, chunk: Mapping[str, Any]) -> list[TokenEvent]:
        """Events for one chunk (possibly none); records finish reason and usage.

        A chunk of the wrong shape is the server's fault: `EngineError`, never a bare
        TypeError or ValueError (which callers would take for a mistake of their own).
        """
        if "error" in chunk:
            raise server_error(chunk["error"])
        try:
            return self._feed(chunk)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise _malformed(chunk, str(exc)) from exc

    def _feed(self, chunk: Mapping[str, Any]) -> list[TokenEvent]:
        usage = chunk.get("usage")
        # a count given as null (or not a number) is no count: the steps are counted instead
        if isinstance(usage, Mapping) and _is_count(usage.get("completion_tokens")):
            prompt = usage.get("prompt_tokens")
            self.usage = Usage(prompt if isinstance(prompt, int) and _is_count(prompt) else 0,
                               int(usage["completion_tokens"]))
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise _malformed(chunk, "choices is not a list")
        events: list[TokenEvent] = []
        for choice in choices:
            if not isinstance(choice, Mapping):
                raise _malformed(chunk, "a choice is not an object")
            index = choice.get("index") or 0
            if not _is_count(index):
                raise _malformed(chunk, "a choice's index is not a number")
            if index != 0:
                continue  # we always ask for n=1
            events.extend(self._choice_events(choice))
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = _FINISH.get(str(reason), "stop")
        return events

    def _choice_events(self, choice: Mapping[str, Any]) -> list[TokenEvent]:
        if "delta" in choice:  # chat chunk
            delta = choice.get("delta") or {}
            text = str(delta.get("content") or "")
            logprobs = choice.get("logprobs")
            steps = _steps_from_chat_logprobs(logprobs) if logprobs else []
        else:  # completions chunk
            text = str(choice.get("text") or "")
            logprobs = choice.get("logprobs")
            steps = _steps_from_completion_logprobs(logprobs) if logprobs else []
        if steps:
            self.saw_logprobs = True
        elif text:
            # No log-probs: one chunk is one step as far as we can tell ("no confidence").
            steps = [_Step(text, UNKNOWN_TOKEN_ID, math.nan, math.nan)]
        self.steps += len(steps)
        return list(_share_text(text, steps))


def _share_text(text: str, steps: Sequence[_Step]) -> Iterator[TokenEvent]:
    """Split `text` among `steps` by matching each step's token text as a prefix."""
    rest = text
    for i, step in enumerate(steps):
        if i == len(steps) - 1:
            piece = rest
        elif step.text and rest.startswith(step.text):
            piece = step.text
        else:
            piece = ""
        rest = rest[len(piece) :]
        yield TokenEvent(piece, step.token_id, step.logprob, step.entropy)


def iter_sse(lines: Iterable[str]) -> Iterator[JSONDict]:
    """Parse server-sent events (`data: {...}` lines) into JSON objects, up to `[DONE]`."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
            continue
        if line.strip() or not data:
            continue  # comments (": ping"), event/id fields, blank keep-alives
        payload = "\n".join(data)
        data = []
        if payload == "[DONE]":
            return
        yield _parse_json(payload)
    if data and (payload := "\n".join(data)) != "[DONE]":
        yield _parse_json(payload)


def _parse_json(payload: str) -> JSONDict:
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise EngineError(f"the server sent a malformed event: {payload[:200]!r}") from exc
    if not isinstance(value, dict):
        raise EngineError(f"the server sent a non-object event: {payload[:200]!r}")
    return value


_OVERFLOW_PATTERNS = (
    # llama-cpp-python: "Requested tokens (1100) exceed context window of 1024"
    re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)"),
    # llama.cpp server: "... request (1100 tokens) exceeds the available context size (1024 ..."
    re.compile(r"\((\d+) tokens\) exceeds the available context size \((\d+)"),
    # MLC (in process and `mlc_llm serve`): "Request prompt has 1100 tokens in total, larger
    # than the model input length limit 1024."
    re.compile(r"prompt has (\d+) tokens in total, larger than the model input length limit (\d+)"),
)
# vLLM: "This model's maximum context length is 1024 tokens. However, you requested 1100 ..."
_VLLM_OVERFLOW = re.compile(r"maximum context length is (\d+) tokens.*?requested (\d+)", re.S)
# ... "tokens (1000 in the messages, 100 in the completion)": the prompt's own count
_VLLM_PARTS = re.compile(r"\((\d+) in the (?:messages|prompt|input)\b.*?(\d+) in the completion")


class CompletionBudgetError(EngineError):
    """The prompt fits the context, but not with `max_tokens` more (vLLM refuses that)."""

    def __init__(self, prompt_tokens: int, completion_tokens: int, context_length: int) -> None:
        super().__init__(
            f"the prompt ({prompt_tokens} tokens) fits the model's context ({context_length}) "
            f"but not with {completion_tokens} more: ask for at most "
            f"{context_length - prompt_tokens}"
        )
        self.prompt_tokens = prompt_tokens
        self.room = context_length - prompt_tokens  # the most max_tokens the server takes


def server_error(error: object, status: int | None = None) -> EngineError:
    """The engine error for an error body: `ContextOverflowError` when that is what it says."""
    message = error.get("message", error) if isinstance(error, Mapping) else error
    text = str(message)
    for pattern in _OVERFLOW_PATTERNS:
        if match := pattern.search(text):
            return ContextOverflowError(int(match.group(1)), int(match.group(2)))
    if match := _VLLM_OVERFLOW.search(text):
        context, requested = int(match.group(1)), int(match.group(2))
        if parts := _VLLM_PARTS.search(text):
            prompt, completion = int(parts.group(1)), int(parts.group(2))
            if prompt < context:
                return CompletionBudgetError(prompt, completion, context)
            return ContextOverflowError(prompt, context)
        return ContextOverflowError(requested, context)
    prefix = f"the server answered {status}: " if status else "the server reported an error: "
    return EngineError(prefix + text[:500])
