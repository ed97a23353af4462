"""MLC in process. `mlc_llm` cannot be installed here (it is not on PyPI), so:
- the import guard is tested for real (the package really is missing);
- the engine's adapter is driven by a stand-in `MLCEngine` that yields chunk objects in MLC's
  own shape (pydantic models with `model_dump()`), the one mock in these tests, used because
  the real thing cannot run here. The chunk-to-event code it feeds is the shared OpenAI
  protocol code that `test_engine_openai.py` runs against a real server.
"""

from __future__ import annotations

import math
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernels import (
    ContextOverflowError,
    EngineUnavailableError,
    GenerationParams,
    Message,
    ModelNotFoundError,
    generate,
)
from kernels.mlc_engine import MlcEngine
from kernels.registry import load_engine, resolve


class Chunk:
    """Stands in for MLC's pydantic response objects."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def model_dump(self) -> dict[str, Any]:
        return self._data


def token_chunk(text: str, logprob: float, alternatives: list[float]) -> Chunk:
    top = [{"token": text, "logprob": logprob}] + [
        {"token": f"alt{i}", "logprob": lp} for i, lp in enumerate(alternatives)
    ]
    entry = {"token": text, "logprob": logprob, "bytes": None, "top_logprobs": top}
    return Chunk({"id": "x", "choices": [{"index": 0, "delta": {"content": text},
                  "logprobs": {"content": [entry]}, "finish_reason": None}]})  # fmt: skip


class StandInMLCEngine:
    """Replays a fixed answer the way `mlc_llm.MLCEngine` streams it."""

    instances: list[StandInMLCEngine] = []

    def __init__(self, model: str, device: str = "auto", mode: str = "local") -> None:
        self.model, self.calls, self.aborted = model, [], []  # type: ignore[var-annotated]
        self.closed_streams = 0
        self.chat = types.SimpleNamespace(completions=self)
        self.completions = self
        self.tokenizer = types.SimpleNamespace(encode=lambda text: list(range(len(text.split()))))
        StandInMLCEngine.instances.append(self)

    def create(self, **body: Any) -> Iterator[Chunk]:
        self.calls.append(body)
        return self._stream(body)

    def _stream(self, body: dict[str, Any]) -> Iterator[Chunk]:
        text = body.get("prompt") or body["messages"][-1]["content"]
        if len(text) > 100:
            raise ValueError(
                f"Request prompt has {len(text)} tokens in total, larger than the model input "
                "length limit 100."
            )
        try:
            for word in (" Red", " Green", " Blue", " and", " more")[: body["max_tokens"]]:
                yield token_chunk(word, -0.5, [-1.5, -2.5])
            finish = "length" if body["max_tokens"] <= 5 else "stop"
            yield Chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            yield Chunk({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}})
        finally:
            self.closed_streams += 1

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def terminate(self) -> None:
        pass


@pytest.fixture()
def mlc_folder(tmp_path: Path) -> Path:
    (tmp_path / "mlc-chat-config.json").write_text("{}")
    return tmp_path


@pytest.fixture()
def mlc(mlc_folder: Path) -> MlcEngine:
    stand_in = types.ModuleType("mlc_llm")
    stand_in.MLCEngine = StandInMLCEngine  # type: ignore[attr-defined]
    return MlcEngine(resolve(f"mlc:{mlc_folder}"), mlc=stand_in)


def test_missing_mlc_llm_is_a_clear_error(mlc_folder: Path, tmp_path: Path) -> None:
    # mlc_llm is not installable here: this is the real import failing
    with pytest.raises(EngineUnavailableError, match="not on PyPI.*mlc_llm serve"):
        load_engine(f"mlc:{mlc_folder}")
    with pytest.raises(ModelNotFoundError, match="mlc-chat-config.json"):
        resolve(f"mlc:{tmp_path / 'nowhere'}")


def test_chat_streams_events_with_confidence_and_usage(mlc: MlcEngine) -> None:
    gen = generate(mlc, [Message("user", "Name colours")], GenerationParams(max_tokens=5))
    assert gen.text == " Red Green Blue and more"
    assert gen.finish_reason == "length" and gen.usage.prompt_tokens == 9
    assert [t.logprob for t in gen.tokens] == [-0.5] * 5
    assert all(0 < t.entropy < math.log(50) for t in gen.tokens)
    (call,) = StandInMLCEngine.instances[-1].calls
    assert call["logprobs"] is True and call["top_logprobs"] == 20
    assert call["stream_options"] == {"include_usage": True}


def test_raw_prompt_uses_completions_with_mlc_logprob_fields(mlc: MlcEngine) -> None:
    generate(mlc, "Colours:", GenerationParams(max_tokens=2))
    call = StandInMLCEngine.instances[-1].calls[-1]
    assert call["prompt"] == "Colours:"
    assert call["logprobs"] is True and call["top_logprobs"] == 5  # completions: 5 at most


def test_cancellation_aborts_the_request(mlc: MlcEngine) -> None:
    cancel = threading.Event()
    stream = mlc.stream([Message("user", "go")], GenerationParams(max_tokens=50), cancel)
    for seen, _event in enumerate(stream, start=1):
        if seen == 2:
            cancel.set()
    engine = StandInMLCEngine.instances[-1]
    assert stream.finish_reason == "cancelled"
    assert stream.usage is not None and stream.usage.completion_tokens == 2
    assert engine.aborted == [engine.calls[-1]["request_id"]]
    assert engine.closed_streams == 1


def test_over_long_prompt_is_a_context_overflow(mlc: MlcEngine) -> None:
    with pytest.raises(ContextOverflowError, match="context is 100"):
        mlc.stream("x" * 150, GenerationParams(max_tokens=2))
