"""The OpenAI-protocol code shared by the server engine and the in-process MLC engine.

Inputs are chunks in the exact shapes real servers send (llama-cpp-python's chat and
completions streams, vLLM's `token_id:N` tokens, MLC's chat-style completion log-probs).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import ContextOverflowError, EngineError, GenerationParams, Message
from kernels.logprobs import log_softmax
from kernels.openai_protocol import (
    UNKNOWN_TOKEN_ID,
    ChunkAssembler,
    CompletionBudgetError,
    build_request,
    entropy_lower_bound,
    iter_sse,
    server_error,
)


def chat_chunk(content: str | None, tokens: list[tuple[str, float]] | None, finish=None):
    logprobs = None
    if tokens is not None:
        logprobs = {
            "content": [
                {"token": t, "logprob": lp, "bytes": None,
                 "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}]}
                for t, lp in tokens
            ]
        }  # fmt: skip
    delta = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                         "finish_reason": finish}]}  # fmt: skip


def test_chat_request_asks_for_logprobs_and_top_logprobs() -> None:
    params = GenerationParams(max_tokens=7, temperature=0.0, seed=3, stop=("###",))
    req = build_request([Message("user", "hi")], params, model="m", top_logprobs=5)
    assert req.path == "chat/completions" and req.chat
    assert req.body["messages"] == [{"role": "user", "content": "hi"}]
    assert req.body["logprobs"] is True and req.body["top_logprobs"] == 5
    assert req.body["max_tokens"] == 7 and req.body["seed"] == 3 and req.body["stop"] == ["###"]
    assert req.body["stream"] is True and req.body["stream_options"] == {"include_usage": True}


def test_raw_prompt_goes_to_completions_with_the_legacy_logprobs_int() -> None:
    req = build_request("Once", GenerationParams(), model="m", top_logprobs=20)
    assert req.path == "completions" and req.body["prompt"] == "Once"
    # at most 5: the OpenAI API's limit there (`mlc_llm serve` refuses more with a 422)
    assert req.body["logprobs"] == 5 and "top_logprobs" not in req.body
    fewer = build_request("Once", GenerationParams(), model="m", top_logprobs=3)
    assert fewer.body["logprobs"] == 3
    plain = build_request("Once", GenerationParams(), model="m", top_logprobs=0)
    assert "logprobs" not in plain.body


def test_sse_parser_skips_comments_and_stops_at_done() -> None:
    lines = [
        ": ping - 2026-01-01",
        "",
        'data: {"a": 1}',
        "",
        "event: message",
        'data: {"b":',
        "data: 2}",
        "",
        "data: [DONE]",
        "",
        'data: {"after": true}',
        "",
    ]
    assert list(iter_sse(lines)) == [{"a": 1}, {"b": 2}]


def test_malformed_event_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="malformed event"):
        list(iter_sse(["data: {not json", ""]))


def test_each_logprob_entry_becomes_one_event_and_texts_add_up() -> None:
    asm = ChunkAssembler()
    events = asm.feed(chat_chunk(" Red", [(" Red", -1.25)]))
    # a chunk where the server held " most" back (it could start the stop string)
    events += asm.feed(chat_chunk("", [(" most", -0.5)]))
    # two tokens released in one chunk
    events += asm.feed(chat_chunk(" most obvious", [(" obvious", -1.5), (",", -0.25)]))
    events += asm.feed(chat_chunk(None, None, finish="stop"))
    assert [e.logprob for e in events] == [-1.25, -0.5, -1.5, -0.25]
    assert "".join(e.text for e in events) == " Red most obvious"
    assert [e.text for e in events] == [" Red", "", "", " most obvious"]
    assert all(e.token_id == UNKNOWN_TOKEN_ID for e in events)
    assert asm.finish_reason == "stop" and asm.steps == 4 and asm.saw_logprobs


def test_chunks_without_logprobs_give_no_confidence() -> None:
    asm = ChunkAssembler()
    events = asm.feed(chat_chunk("Hello", None)) + asm.feed(chat_chunk(None, None, "length"))
    assert len(events) == 1 and events[0].text == "Hello"
    assert math.isnan(events[0].logprob) and math.isnan(events[0].entropy)
    assert not asm.saw_logprobs and asm.finish_reason == "length"


def test_legacy_completion_logprobs_and_usage_chunk() -> None:
    asm = ChunkAssembler()
    chunk = {
        "choices": [{
            "index": 0, "text": " Paris", "finish_reason": None,
            "logprobs": {"tokens": [" Paris"], "token_logprobs": [-0.25],
                         "top_logprobs": [{" Paris": -0.25, " the": -2.0}], "text_offset": [24]},
        }]
    }  # fmt: skip
    (event,) = asm.feed(chunk)
    assert event.text == " Paris" and event.logprob == -0.25
    assert event.entropy == pytest.approx(entropy_lower_bound([-0.25, -2.0]))
    asm.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
    assert asm.usage is not None and (asm.usage.prompt_tokens, asm.usage.completion_tokens) == (
        5,
        1,
    )


def test_server_token_ids_are_used_when_given() -> None:
    asm = ChunkAssembler()
    vllm = {"token": "token_id:791", "logprob": -0.1, "top_logprobs": []}
    llama_server = {"token": " x", "id": 42, "logprob": -0.2, "top_logprobs": []}
    chunk = {"choices": [{"index": 0, "delta": {"content": "ab"},
                          "logprobs": {"content": [vllm, llama_server]}}]}  # fmt: skip
    assert [e.token_id for e in asm.feed(chunk)] == [791, 42]


def test_error_chunk_and_overflow_messages_of_each_server() -> None:
    with pytest.raises(EngineError, match="out of memory"):
        ChunkAssembler().feed({"error": {"message": "out of memory"}})
    cases = {
        "Requested tokens (1100) exceed context window of 1024": (1100, 1024),
        "the request (1100 tokens) exceeds the available context size (1024 tokens)": (1100, 1024),
        "This model's maximum context length is 1024 tokens. However, you requested 1100 tokens "
        "(1090 in the messages, 10 in the completion).": (1090, 1024),
        "Request prompt has 1100 tokens in total, larger than the model input length limit 1024.": (
            1100,
            1024,
        ),
    }
    for message, (prompt, ctx) in cases.items():
        error = server_error({"message": message}, 400)
        assert isinstance(error, ContextOverflowError), message
        assert (error.prompt_tokens, error.context_length) == (prompt, ctx)
    assert str(server_error("boom", 500)) == "the server answered 500: boom"


def test_a_vllm_refusal_of_a_fitting_prompt_is_about_the_completion_budget() -> None:
    error = server_error({"message": (
        "This model's maximum context length is 2048 tokens. However, you requested 2156 tokens "
        "(1900 in the messages, 256 in the completion). Please reduce the length.")}, 400)
    assert isinstance(error, CompletionBudgetError)
    assert not isinstance(error, ContextOverflowError)  # the prompt fits
    assert (error.prompt_tokens, error.room) == (1900, 148)
    assert "ask for at most 148" in str(error)


def test_entropy_bound_is_exact_for_a_whole_distribution() -> None:
    lsm = log_softmax(np.array([2.0, 1.0, 0.5, -1.0]))
    true = float(-(np.exp(lsm) * lsm).sum())
    assert entropy_lower_bound(lsm.tolist()) == pytest.approx(true, abs=1e-9)
    assert math.isnan(entropy_lower_bound([]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-12, 12), min_size=25, max_size=300),
    st.integers(min_value=1, max_value=20),
)
def test_entropy_bound_never_exceeds_the_true_entropy(logits: list[float], k: int) -> None:
    lsm = log_softmax(np.array(logits))
    true = float(-(np.exp(lsm) * lsm).sum())
    top = sorted(lsm.tolist(), reverse=True)[:k]
    bound = entropy_lower_bound(top)
    assert 0.0 <= bound <= true + 1e-9


def test_entropy_bound_ignores_tokens_of_probability_zero() -> None:
    # a server may report -inf for a top token it gives no mass: 0 * -inf is NaN, and
    # the bound used to come out as 0.0 (certain) whatever the other tokens said
    assert entropy_lower_bound([-0.1, -3.0, -math.inf]) == pytest.approx(
        entropy_lower_bound([-0.1, -3.0]))
    assert entropy_lower_bound([-0.1, -3.0]) > 0.1
    assert math.isnan(entropy_lower_bound([-math.inf]))
