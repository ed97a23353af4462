"""The ONNX Runtime GenAI engine with the real SmolLM2 and Gemma 3 270M, converted from the
bundled GGUFs.

The conversions run once per machine (`kernels.convert.cached_onnx`: ~70 s and ~130 s here);
without the convert extra and no converted model in the cache these tests skip, saying why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kernels import (
    ContextOverflowError,
    GenerationParams,
    Message,
    ModelNotFoundError,
    generate,
)
from kernels.logprobs import log_softmax
from kernels.onnx_engine import MANIFEST, OnnxEngine, sliding_window
from kernels.registry import load_engine, resolve

og = pytest.importorskip("onnxruntime_genai", reason="needs onnxruntime-genai==0.18.0")

QUESTION = [Message("user", "Name three colours.")]


def _converted(spec: str) -> Path:
    """`spec` as int4 ONNX, converted from its bundled GGUF once per machine (skip if that
    cannot be done here)."""
    from kernels.convert import ConvertUnavailableError, cached_onnx

    try:
        return cached_onnx(spec)
    except ConvertUnavailableError as exc:
        pytest.skip(f"no converted model and no convert extra to make one: {exc}")


@pytest.fixture(scope="module")
def onnx_dir() -> Path:
    """SmolLM2-135M as int4 ONNX."""
    return _converted("bundled:smollm2-135m")


@pytest.fixture(scope="module")
def onnx(onnx_dir: Path) -> Iterator[OnnxEngine]:
    eng = load_engine(str(onnx_dir), context_length=1024, seed=0)
    assert isinstance(eng, OnnxEngine)
    yield eng
    eng.close()


def test_converted_folder_resolves_as_an_onnx_chat_model(onnx_dir: Path) -> None:
    model = resolve(str(onnx_dir))
    assert model.format == "onnx" and model.chat is True
    assert model.id == "smollm2-135m-onnx-int4"


def test_chat_template_is_applied(onnx: OnnxEngine) -> None:
    text = onnx.render(QUESTION)
    assert text.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nName three colours.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert onnx.render("raw prompt") == "raw prompt"
    assert onnx.info.engine == "onnxruntime-genai" and onnx.info.extra["precision"] == "int4"


def test_greedy_generation_is_repeatable(onnx: OnnxEngine) -> None:
    params = GenerationParams(max_tokens=24, temperature=0.0)
    first = generate(onnx, QUESTION, params)
    second = generate(onnx, QUESTION, params)
    assert first.text == second.text and first.text
    assert [t.token_id for t in first.tokens] == [t.token_id for t in second.tokens]
    assert first.finish_reason == "length"
    assert first.usage.completion_tokens == len(first.tokens) == 24


def test_seeded_sampling_is_repeatable_and_seed_dependent(onnx: OnnxEngine) -> None:
    a = generate(onnx, QUESTION, GenerationParams(max_tokens=16, temperature=1.0, seed=1))
    b = generate(onnx, QUESTION, GenerationParams(max_tokens=16, temperature=1.0, seed=1))
    c = generate(onnx, QUESTION, GenerationParams(max_tokens=16, temperature=1.0, seed=2))
    assert [t.token_id for t in a.tokens] == [t.token_id for t in b.tokens]
    assert [t.token_id for t in a.tokens] != [t.token_id for t in c.tokens]


POEM = [Message("user", "Write a short poem about the sea.")]
SAMPLED = GenerationParams(max_tokens=24, temperature=1.0)


@pytest.fixture(scope="module")
def unseeded_onnx(onnx_dir: Path) -> Iterator[OnnxEngine]:
    eng = load_engine(str(onnx_dir), context_length=1024)
    assert isinstance(eng, OnnxEngine)
    yield eng
    eng.close()


def test_without_any_seed_each_sampled_request_is_a_fresh_draw(
    unseeded_onnx: OnnxEngine, onnx: OnnxEngine
) -> None:
    """No request seed and no `model.seed`: a new sample each time (onnx is seeded 0)."""
    texts = [generate(unseeded_onnx, POEM, SAMPLED).text for _ in range(3)]
    assert len(set(texts)) >= 2, texts
    fixed = generate(onnx, POEM, SAMPLED).text
    assert generate(onnx, POEM, SAMPLED).text == fixed
    assert set(texts) - {fixed}  # not a fall-back to seed 0
    own = [generate(e, POEM, dataclasses.replace(SAMPLED, seed=11)).text
           for e in (onnx, unseeded_onnx)]
    assert own[0] == own[1]
    greedy = GenerationParams(max_tokens=12)
    assert generate(unseeded_onnx, POEM, greedy).text == generate(unseeded_onnx, POEM, greedy).text


def test_every_seed_samples_repeatably(onnx_dir: Path) -> None:
    """onnxruntime-genai takes a signed 32-bit seed (2**31 and up failed to convert, and a
    negative one means random): the top of `model.seed`'s range and request seeds beyond
    int32 still give repeatable samples."""
    eng = load_engine(str(onnx_dir), context_length=256, seed=2**32 - 1)
    try:
        for params in (SAMPLED, dataclasses.replace(SAMPLED, seed=2**31),
                       dataclasses.replace(SAMPLED, seed=-5)):
            first, second = (generate(eng, POEM, params) for _ in range(2))
            assert [t.token_id for t in first.tokens] == [t.token_id for t in second.tokens]
    finally:
        eng.close()


def test_logprobs_equal_the_log_softmax_of_a_teacher_forced_run(
    onnx: OnnxEngine, onnx_dir: Path
) -> None:
    """Feed prompt + generated tokens one by one through a separate og.Generator: the
    log-softmax of its logits at each chosen token is what the engine reported."""
    prompt = onnx.tokenize(onnx.render(QUESTION))
    gen = generate(onnx, QUESTION, GenerationParams(max_tokens=10))
    model = og.Model(str(onnx_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + 16)
    forced = og.Generator(model, params)
    forced.append_tokens(np.asarray(prompt, dtype=np.int32))
    for event in gen.tokens:
        lsm = log_softmax(np.asarray(forced.get_logits(), dtype=np.float32).reshape(-1))
        assert event.logprob == pytest.approx(float(lsm[event.token_id]), abs=1e-4)
        assert event.entropy == pytest.approx(float(-(np.exp(lsm) * lsm).sum()), abs=1e-4)
        assert event.token_id == int(lsm.argmax())  # greedy picked the mode
        forced.append_tokens(np.asarray([event.token_id], dtype=np.int32))


def test_entropy_and_logprob_of_each_token_are_in_range(onnx: OnnxEngine) -> None:
    gen = generate(onnx, QUESTION, GenerationParams(max_tokens=8))
    vocab = int(onnx.info.extra["vocab"])
    for event in gen.tokens:
        assert -math.log(vocab) <= event.logprob <= 0.0
        assert 0.0 <= event.entropy <= math.log(vocab)


def test_stop_string_ends_generation_and_is_not_emitted(onnx: OnnxEngine) -> None:
    free = generate(onnx, QUESTION, GenerationParams(max_tokens=40))
    stop = free.text.split()[2]
    stopped = generate(onnx, QUESTION, GenerationParams(max_tokens=40, stop=(stop,)))
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert free.text.startswith(stopped.text)
    assert free.text[len(stopped.text) :].startswith(stop)


def test_max_tokens_bounds_the_answer(onnx: OnnxEngine) -> None:
    gen = generate(onnx, "Once upon a time", GenerationParams(max_tokens=7))
    assert gen.finish_reason == "length" and gen.usage.completion_tokens == 7


def test_cancellation_mid_stream_stops_after_the_current_token(onnx: OnnxEngine) -> None:
    cancel = threading.Event()
    stream = onnx.stream(QUESTION, GenerationParams(max_tokens=200), cancel)
    for seen, _event in enumerate(stream, start=1):
        if seen == 5:
            cancel.set()
    assert stream.finish_reason == "cancelled"
    assert stream.usage is not None and stream.usage.completion_tokens == 5
    assert generate(onnx, QUESTION, GenerationParams(max_tokens=3)).usage.completion_tokens == 3


def test_prompt_longer_than_context_is_refused(onnx: OnnxEngine) -> None:
    with pytest.raises(ContextOverflowError, match="context is 1024"):
        onnx.stream("word " * 1100, GenerationParams(max_tokens=4))


def test_an_empty_raw_prompt_is_a_clear_error(onnx: OnnxEngine) -> None:
    # as in the llama.cpp engine (a 400 from the device API); was an EngineError from the first
    # step ("input_ids is empty"), which the device API answers with a 503 to retry
    with pytest.raises(ValueError, match="the prompt is empty"):
        onnx.stream("", GenerationParams(max_tokens=4))


def test_count_tokens_matches_the_prompt_usage(onnx: OnnxEngine) -> None:
    gen = generate(onnx, QUESTION, GenerationParams(max_tokens=1))
    assert onnx.count_tokens(onnx.render(QUESTION)) == gen.usage.prompt_tokens


def test_bos_is_added_by_hand_when_the_model_needs_it(onnx_dir: Path, tmp_path: Path) -> None:
    """Gemma's trap: onnxruntime-genai never adds BOS. A manifest saying add_bos makes the
    engine prepend it once (not twice when the text already starts with it)."""
    copy = tmp_path / "model"
    shutil.copytree(onnx_dir, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps({**manifest, "add_bos": True}))
    eng = OnnxEngine(resolve(str(copy)), context_length=256)
    try:
        assert eng.tokenize("hello")[0] == 1  # SmolLM2's BOS id
        assert eng.tokenize("hello")[1:] == eng.tokenize("<|im_start|>hello")[1:]
        assert eng.tokenize("<|im_start|>hello").count(1) == 1
    finally:
        eng.close()


def test_using_a_closed_engine_is_an_engine_error(onnx_dir: Path) -> None:
    from kernels import EngineError

    # close() drops the tokenizer and model: using them afterwards was an AttributeError
    eng = OnnxEngine(resolve(str(onnx_dir)), context_length=256)
    made_before = eng.stream("Hi", GenerationParams(max_tokens=2))
    eng.close()
    eng.close()  # idempotent
    for use in (lambda: eng.count_tokens("hi"), lambda: eng.render(QUESTION),
                lambda: eng.stream(QUESTION, GenerationParams(max_tokens=2)),
                lambda: next(made_before)):
        with pytest.raises(EngineError, match="the engine is closed"):
            use()


def test_sliding_window_is_read_from_either_config_layout() -> None:
    assert sliding_window({"decoder": {"sliding_window": {"window_size": 512}}}) == 512
    assert sliding_window({"decoder": {"sliding_window": 256}}) == 256
    assert sliding_window({"decoder": {}}) == 0


def test_missing_folder_and_non_model_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        load_engine(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="unsupported model.*genai_config.json"):
        load_engine(str(tmp_path))


def test_a_half_read_stream_blocks_neither_a_second_stream_nor_close(onnx_dir: Path) -> None:
    import threading

    from kernels import EngineError

    eng = OnnxEngine(resolve(str(onnx_dir)), context_length=256)
    first = eng.stream(QUESTION, GenerationParams(max_tokens=8))
    next(first)  # the engine's lock used to stay held here, across the yield
    second = list(eng.stream(QUESTION, GenerationParams(max_tokens=3)))  # hung before
    assert 1 <= len([e for e in second if e.token_id >= 0]) <= 3
    closer = threading.Thread(target=eng.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive()  # close() waited for the half-read stream before
    with pytest.raises(EngineError, match="the engine is closed"):
        list(first)  # its next step finds the model gone


# -- Gemma 3 270M (base, Q4_K_M), converted through the builder's RoPE shim -------------------


@pytest.fixture(scope="module")
def gemma_dir() -> Path:
    """Gemma 3 270M as int4 ONNX (~2 min to convert)."""
    return _converted("bundled:gemma3-270m")


def test_converted_gemma3_is_a_base_model_with_its_bos_and_window(gemma_dir: Path) -> None:
    manifest = json.loads((gemma_dir / MANIFEST).read_text())
    assert manifest["id"] == "gemma3-270m-onnx-int4" and manifest["chat"] is False
    assert manifest["add_bos"] is True and manifest["source"]["architecture"] == "gemma3"
    assert manifest["check"]["tokens"] >= 1 and manifest["check"]["mean_logprob"] <= 0
    genai = json.loads((gemma_dir / "genai_config.json").read_text())["model"]
    assert genai["type"] == "gemma3_text" and genai["vocab_size"] == 262144
    assert sliding_window(genai) == 512
    # five sliding layers, then a global one
    assert genai["decoder"]["sliding_window"]["layers"] == [i for i in range(18) if i % 6 != 5]


def test_gemma3_tokens_are_llama_cpps_bos_included(gemma_dir: Path) -> None:
    onnx = OnnxEngine(resolve(str(gemma_dir)), context_length=1024)
    gguf = load_engine("bundled:gemma3-270m", context_length=1024)
    try:
        assert not onnx.info.chat and onnx.render(QUESTION) == gguf.render(QUESTION)
        for text in ("The capital of France is", "def fibonacci(n):\n    return",
                     "日本語 ünïcode 🙂", onnx.render(QUESTION)):
            ids = onnx.tokenize(text)
            assert ids[0] == 2 and ids.count(2) == 1  # <bos>, once
            assert ids == gguf.tokenize(text)  # type: ignore[attr-defined]
    finally:
        onnx.close()
        gguf.close()


def test_gemma3_generates_past_its_sliding_window(gemma_dir: Path) -> None:
    onnx = OnnxEngine(resolve(str(gemma_dir)), context_length=2048)
    try:
        prompt = " ".join(f"Box {i} is on shelf {i % 7}." for i in range(100)) + " Box 3 is on"
        assert onnx.count_tokens(prompt) > 700  # the 512-token window is exceeded
        gen = generate(onnx, prompt, GenerationParams(max_tokens=6))
        assert len(gen.tokens) == 6 and gen.text.strip()
        assert all(-50 < t.logprob <= 0 and math.isfinite(t.entropy) for t in gen.tokens)
        short = generate(onnx, "Water boils at", GenerationParams(max_tokens=4))
        assert short.text.strip()  # max_length is kept at the window, not 4 + 4 tokens
    finally:
        onnx.close()
