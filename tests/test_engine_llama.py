"""The llama.cpp engine with the real bundled model."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from kernels import (
    ContextOverflowError,
    Engine,
    GenerationParams,
    Message,
    ModelNotFoundError,
    collect,
    generate,
)
from kernels.llama_log import _Lines
from kernels.logprobs import log_softmax, step_stats
from kernels.options import OptionScorer
from kernels.registry import resolve

QUESTION = [Message("user", "Name three colours.")]


def test_bundled_smollm2_resolves_to_the_packaged_gguf() -> None:
    model = resolve("bundled:smollm2-135m")
    assert model.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.path.stat().st_size > 90_000_000
    assert model.chat is True


def test_unknown_bundled_model_and_missing_path_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="unknown bundled model 'bundled:nope'"):
        resolve("bundled:nope")
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        resolve(str(tmp_path / "missing.gguf"))
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="unsupported model"):
        resolve(str(other))


def test_chat_template_is_applied(engine: Engine) -> None:
    text = engine.render(QUESTION)
    assert text.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nName three colours.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert engine.render("raw prompt") == "raw prompt"


def test_seeded_greedy_generation_is_repeatable(engine: Engine) -> None:
    params = GenerationParams(max_tokens=24, temperature=0.0, seed=7)
    first = generate(engine, QUESTION, params)
    second = generate(engine, QUESTION, params)
    assert first.text == second.text
    assert [t.token_id for t in first.tokens] == [t.token_id for t in second.tokens]
    assert first.usage.completion_tokens == len(first.tokens) == 24
    assert first.finish_reason == "length"


def test_seeded_sampling_is_repeatable_and_seed_dependent(engine: Engine) -> None:
    a = generate(engine, QUESTION, GenerationParams(max_tokens=24, temperature=1.0, seed=1))
    b = generate(engine, QUESTION, GenerationParams(max_tokens=24, temperature=1.0, seed=1))
    c = generate(engine, QUESTION, GenerationParams(max_tokens=24, temperature=1.0, seed=2))
    assert a.text == b.text
    assert [t.token_id for t in a.tokens] != [t.token_id for t in c.tokens]


# An open prompt at temperature 1 over the whole vocabulary: 24 sampled tokens from two
# independent seeds coincide with negligible probability.
POEM = [Message("user", "Write a short poem about the sea.")]
SAMPLED = GenerationParams(max_tokens=24, temperature=1.0)


def test_without_any_seed_each_sampled_request_is_a_fresh_draw(unseeded_engine: Engine) -> None:
    """No request seed and no `model.seed`: "regenerate" gives a new answer, as OpenAI's API;
    a request's own seed still repeats, and greedy decoding does not depend on seeds."""
    texts = [generate(unseeded_engine, POEM, SAMPLED).text for _ in range(3)]
    assert len(set(texts)) >= 2, texts
    seeded = dataclasses.replace(SAMPLED, seed=11)
    assert generate(unseeded_engine, POEM, seeded).text == \
        generate(unseeded_engine, POEM, seeded).text
    greedy = GenerationParams(max_tokens=12)
    assert generate(unseeded_engine, POEM, greedy).text == \
        generate(unseeded_engine, POEM, greedy).text


def test_the_engine_seed_repeats_unseeded_requests_and_a_request_seed_wins(
    engine: Engine, unseeded_engine: Engine
) -> None:
    texts = [generate(engine, POEM, SAMPLED).text for _ in range(3)]  # engine seed 0
    assert len(set(texts)) == 1
    assert generate(unseeded_engine, POEM, dataclasses.replace(SAMPLED, seed=0)).text == texts[0]
    own = [generate(e, POEM, dataclasses.replace(SAMPLED, seed=11)).text
           for e in (engine, unseeded_engine)]
    assert own[0] == own[1] != texts[0]
    # and without a seed the unseeded engine does not fall back to any fixed one
    assert {generate(unseeded_engine, POEM, SAMPLED).text for _ in range(3)} - {texts[0]}


def test_logprobs_match_llama_cpp_logits_all(engine: Engine) -> None:
    """The processor's log-probs equal llama-cpp-python's own (logits_all=True) within 1e-3."""
    from llama_cpp import Llama

    prompt = engine.render(QUESTION)
    ours = generate(engine, prompt, GenerationParams(max_tokens=12))
    ref_llm = Llama(model_path=engine.info.path, n_ctx=1024, logits_all=True, verbose=False)
    try:
        ref = ref_llm.create_completion(
            prompt, max_tokens=12, temperature=0.0, logprobs=1, top_k=1
        )
    finally:
        ref_llm.close()
    ref_lp = ref["choices"][0]["logprobs"]["token_logprobs"]  # type: ignore[index]
    assert ref["choices"][0]["text"] == ours.text  # type: ignore[index]
    assert len(ref_lp) == len(ours.tokens)
    for mine, theirs in zip(ours.tokens, ref_lp, strict=True):
        assert mine.logprob == pytest.approx(float(theirs), abs=1e-3)


def test_entropy_and_logprob_of_each_token_are_consistent(engine: Engine) -> None:
    gen = generate(engine, QUESTION, GenerationParams(max_tokens=8))
    vocab = int(engine.info.extra["vocab"])
    for event in gen.tokens:
        assert event.logprob <= 0.0
        assert 0.0 <= event.entropy <= math.log(vocab)
        # greedy: the chosen token is the mode, so -logprob can't exceed the entropy bound
        assert -event.logprob <= math.log(vocab)


def test_step_stats_equal_the_full_log_softmax() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, size=1000).astype(np.float32)
    lse, entropy = step_stats(logits)
    lsm = log_softmax(logits)
    assert float(logits[3]) - lse == pytest.approx(lsm[3], abs=1e-9)
    assert entropy == pytest.approx(float(-(np.exp(lsm) * lsm).sum()), rel=1e-9)


def test_stop_string_ends_generation_and_is_not_emitted(engine: Engine) -> None:
    free = generate(engine, QUESTION, GenerationParams(max_tokens=40))
    # stop on a piece of text the model really produces, from its second word on
    words = free.text.split()
    assert len(words) >= 3
    stop = words[2]
    stopped = generate(engine, QUESTION, GenerationParams(max_tokens=40, stop=(stop,)))
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert free.text.startswith(stopped.text)
    assert free.text[len(stopped.text) :].startswith(stop)


def test_cancellation_mid_stream_stops_after_the_current_token(engine: Engine) -> None:
    cancel = threading.Event()
    stream = engine.stream(QUESTION, GenerationParams(max_tokens=200), cancel)
    delivered = 0
    for event in stream:
        delivered += event.token_id >= 0
        if delivered == 5:
            cancel.set()
    assert stream.finish_reason == "cancelled"
    # Decoding runs ahead of the consumer, so the token in flight when cancel arrived is
    # the last one; usage counts exactly what was delivered.
    assert stream.usage is not None and stream.usage.completion_tokens == delivered
    assert 5 <= delivered < 60  # far below the 200-token budget
    # the engine is free again afterwards
    assert generate(engine, QUESTION, GenerationParams(max_tokens=3)).usage.completion_tokens == 3


def test_prompt_longer_than_context_is_refused(engine: Engine) -> None:
    long_prompt = "word " * (engine.info.context_length + 50)
    with pytest.raises(ContextOverflowError, match="context is 1024"):
        engine.stream(long_prompt, GenerationParams(max_tokens=4))


def test_count_tokens_matches_the_prompt_usage(engine: Engine) -> None:
    rendered = engine.render(QUESTION)
    gen = generate(engine, QUESTION, GenerationParams(max_tokens=1))
    assert engine.count_tokens(rendered) == gen.usage.prompt_tokens


def test_gemma_base_model_assembles_once_and_uses_completion_prompting(tmp_path: Path) -> None:
    from kernels.registry import load_engine

    model = resolve("bundled:gemma3-270m", tmp_path)
    assert model.path.parent == tmp_path / "models" and model.chat is False
    mtime = model.path.stat().st_mtime_ns
    assert resolve("bundled:gemma3-270m", tmp_path).path.stat().st_mtime_ns == mtime
    eng = load_engine("bundled:gemma3-270m", cache_dir=tmp_path, context_length=512)
    try:
        assert eng.info.chat is False
        assert eng.render(QUESTION) == "User: Name three colours.\nAssistant:"
        gen = generate(eng, "The capital of France is", GenerationParams(max_tokens=4))
        assert gen.usage.completion_tokens >= 1
        assert all(t.logprob <= 0 for t in gen.tokens)
    finally:
        eng.close()


def test_a_paced_stream_delivers_exactly_what_an_unpaced_one_does(engine: Engine) -> None:
    params = GenerationParams(max_tokens=24)
    plain = generate(engine, QUESTION, params)
    stream = engine.stream(QUESTION, params)
    stream.pace(0.05)  # handed over in batches at most every 50 ms
    paced = collect(stream)
    assert paced.text == plain.text and paced.text
    assert [t.token_id for t in paced.tokens] == [t.token_id for t in plain.tokens]
    assert paced.usage == plain.usage and paced.finish_reason == plain.finish_reason
    with pytest.raises(ValueError, match="pace"):
        engine.stream(QUESTION, params).pace(-1)


def test_llama_cpp_log_lines_go_to_logging_not_stderr(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Gemma 3 makes llama.cpp warn about its sliding-window cache on every load; llama-cpp-python's
    # own callback printed that to stderr despite verbose=False
    caplog.set_level(logging.DEBUG, logger="tandem.llama_cpp")
    OptionScorer("bundled:gemma3-270m", threads=1, context_length=64)
    assert "llama_kv_cache_iswa" not in capfd.readouterr().err
    warned = [r for r in caplog.records if "using full-size SWA cache" in r.getMessage()]
    assert warned and {r.levelno for r in warned} == {logging.INFO}  # a ggml warning
    assert any(r.levelno == logging.DEBUG and r.getMessage().startswith("print_info:")
               for r in caplog.records)


def test_llama_cpp_log_pieces_join_into_lines_at_their_level(
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tandem.llama_cpp")
    lines = _Lines()
    lines.feed(4, "failed to ")  # ERROR
    lines.feed(5, "open x\n")  # CONT: the same line, the same level
    lines.feed(3, "a warning\n")
    lines.feed(2, "info without newline")
    lines.feed(3, "next\n")  # a new level flushes the unfinished line
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "failed to open x"), (logging.INFO, "a warning"),
        (logging.DEBUG, "info without newline"), (logging.INFO, "next")]


def test_a_context_smaller_than_llama_cpps_minimum_overflows_cleanly() -> None:
    from kernels.registry import load_engine

    # llama.cpp runs a 128-token context as 256, but the wrapper's token buffer holds 128:
    # a 181-token prompt passed the 256 check and failed with NumPy's "could not broadcast"
    small = load_engine("bundled:smollm2-135m", context_length=128, threads=1)
    try:
        assert small.info.context_length == 128
        with pytest.raises(ContextOverflowError, match="the model's context is 128"):
            list(small.stream([Message(role="user", content="word " * 150)],
                              GenerationParams(max_tokens=4)))
        fits = list(small.stream([Message(role="user", content="Hi")],
                                 GenerationParams(max_tokens=4)))
        assert fits
    finally:
        small.close()


def test_using_a_closed_engine_is_an_engine_error_not_a_crash() -> None:
    from kernels import EngineError
    from kernels.registry import load_engine

    # llama.cpp frees the model on close: tokenizing or decoding afterwards segfaulted
    closed = load_engine("bundled:smollm2-135m", context_length=256, threads=1)
    made_before = closed.stream("Hi", GenerationParams(max_tokens=2))
    closed.close()
    closed.close()  # idempotent
    with pytest.raises(EngineError, match="the engine is closed"):
        closed.count_tokens("hi")
    with pytest.raises(EngineError, match="the engine is closed"):
        closed.stream(QUESTION, GenerationParams(max_tokens=2))
    with pytest.raises(EngineError, match="the engine is closed"):
        next(made_before)


def test_an_empty_raw_prompt_is_a_clear_error(engine: Engine) -> None:
    # was a bare AssertionError from llama-cpp-python's sampler
    with pytest.raises(ValueError, match="the prompt is empty"):
        list(engine.stream("", GenerationParams(max_tokens=4)))


def test_the_option_scorer_refuses_a_corrupt_model_file_clearly(tmp_path: Path) -> None:
    from kernels import EngineError

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)  # the magic, then nothing usable
    with pytest.raises(EngineError, match="llama.cpp could not load"):
        OptionScorer(str(bad))  # was llama-cpp-python's bare ValueError


def test_tokens_longer_than_32_bytes_keep_their_text(engine: Engine) -> None:
    # SmolLM2 has 47 tokens over 32 bytes (64 dashes, a newline and 32 spaces, ...), which
    # llama-cpp-python 0.3.36's detokenize drops without a word: the text lost them.
    import ctypes

    import llama_cpp

    def whole_text(tokens: list[int]) -> str:  # llama.cpp's own, with a large enough buffer
        ids = (llama_cpp.llama_token * len(tokens))(*tokens)
        buf = ctypes.create_string_buffer(1 << 16)
        vocab = engine._llm._model.vocab  # type: ignore[attr-defined]
        n = llama_cpp.llama_detokenize(vocab, ids, len(tokens), buf, 1 << 16, False, False)
        assert n >= 0
        return buf.raw[:n].decode()

    prompt = "Separator lines:\n" + ("-" * 64 + "\n") * 6
    out = generate(engine, prompt, GenerationParams(max_tokens=8))
    ids = [e.token_id for e in out.tokens if e.token_id >= 0]
    assert any(len(e.text.encode()) > 32 for e in out.tokens), "expected the 64-dash token"
    assert "-" * 64 + "\n" + "-" * 64 in out.text
    assert out.text == whole_text(ids)
    code = "```python\nclass A:\n" + "    " * 8 + "x = 1\n" + "    " * 8 + "y = 2\n"
    indented = generate(engine, code, GenerationParams(max_tokens=12))
    assert indented.text == whole_text([e.token_id for e in indented.tokens if e.token_id >= 0])
