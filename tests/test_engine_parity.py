"""SmolLM2 through llama.cpp (GGUF Q4_1) and ONNX Runtime GenAI (int4 converted from it).

The quantisations differ, so greedy outputs are compared as token agreement, not equality,
and confidence as a correlation. Floors sit below the values measured here (docs/engines.md)
so that they catch a broken engine or conversion, not float noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.engines import PARITY_PROMPTS, parity
from kernels import Engine, GenerationParams, Message, generate
from kernels.registry import load_engine

pytest.importorskip("onnxruntime_genai", reason="needs onnxruntime-genai==0.18.0")


@pytest.fixture(scope="module")
def onnx(engine: Engine) -> Iterator[Engine]:
    from kernels.convert import ConvertUnavailableError, cached_onnx

    try:
        folder: Path = cached_onnx("bundled:smollm2-135m")
    except ConvertUnavailableError as exc:
        pytest.skip(f"no converted model and no convert extra to make one: {exc}")
    eng = load_engine(str(folder), context_length=1024)
    yield eng
    eng.close()


def test_both_engines_score_confidence_alike_on_the_prompt_set(
    engine: Engine, onnx: Engine
) -> None:
    result = parity(engine, onnx)
    assert result["prompts"] == len(PARITY_PROMPTS)
    # measured here: agreement 0.13, correlation 0.72 (k_quant_last int4)
    assert result["token_agreement"] >= 0.1
    assert result["confidence_correlation"] >= 0.5
    means = result["mean_confidence"]
    assert abs(means["reference"] - means["other"]) < 0.15


def test_first_token_distribution_is_close(engine: Engine, onnx: Engine) -> None:
    """Same prompt, first step: the two engines put similar mass on their chosen tokens."""
    params = GenerationParams(max_tokens=1)
    gaps = []
    for prompt in PARITY_PROMPTS:
        messages = [Message("user", prompt)]
        a = generate(engine, messages, params).tokens[0]
        b = generate(onnx, messages, params).tokens[0]
        gaps.append(abs(a.entropy - b.entropy))
    assert sum(gaps) / len(gaps) < 1.0  # nats
