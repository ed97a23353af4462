"""The OpenAI-compatible server engine against a real server: llama-cpp-python's own
(`python -m llama_cpp.server`, the `[server]` extra) serving the bundled SmolLM2 GGUF on a
loopback port the test picks. The same GGUF in process (`engine` fixture) is the reference.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernels import (
    ContextOverflowError,
    Engine,
    EngineUnavailableError,
    GenerationParams,
    Message,
    ModelNotFoundError,
    generate,
)
from kernels.openai_engine import OpenAIEngine
from kernels.registry import load_engine, resolve
from runtime.confidence import score

pytest.importorskip("uvicorn", reason="needs llama-cpp-python[server]==0.3.36 (the server extra)")

QUESTION = [Message("user", "Name three colours.")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp: Path, *, logits_all: bool) -> tuple[subprocess.Popen[bytes], str]:
    """llama-cpp-python's server on a free loopback port, ready to answer."""
    port = free_port()
    log = (tmp / f"server-{port}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(resolve("bundled:smollm2-135m").path), "--model_alias", "smollm2",
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
            "--logits_all", str(logits_all).lower(), "--verbose", "false",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(600):  # the model loads in a few seconds; give up after ~60 s
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {(tmp / f'server-{port}.log').read_text()}")
        try:
            if httpx.get(f"{url}/models", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("the server did not start in 60 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_server(tmp_path_factory.mktemp("server"), logits_all=True)
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def remote(server_url: str) -> Iterator[OpenAIEngine]:
    eng = OpenAIEngine(server_url, context_length=1024)
    yield eng
    eng.close()


def test_server_engine_finds_the_model_and_its_logprobs(remote: OpenAIEngine) -> None:
    assert remote.info.id == "smollm2"
    assert remote.info.engine == "openai" and remote.info.has_logprobs is True
    assert remote.info.extra["entropy"] == "top-k lower bound"


def test_confidence_means_the_same_as_in_process(remote: OpenAIEngine, engine: Engine) -> None:
    """Same GGUF, same greedy tokens: the server's log-probs are the in-process ones (up to
    llama.cpp's prompt-cache rounding), and its entropy is a close lower bound of the true one.
    """
    params = GenerationParams(max_tokens=16)
    local = generate(engine, QUESTION, params)
    served = generate(remote, QUESTION, params)
    agree = 0
    for mine, theirs in zip(local.tokens, served.tokens, strict=False):
        if mine.text != theirs.text:
            break  # greedy ties can flip under different float rounding; compare the prefix
        agree += 1
        assert theirs.logprob == pytest.approx(mine.logprob, abs=0.2)
        assert theirs.entropy <= mine.entropy + 1e-3
        assert mine.entropy - theirs.entropy < 1.5
    assert agree >= 4
    pairs = zip(local.tokens[:agree], served.tokens[:agree], strict=True)
    gap = [m.entropy - t.entropy for m, t in pairs]
    assert sum(gap) / agree < 0.6  # top-20 bound: 0.14 nats below on average (SmolLM2)
    assert score(served.tokens).available


def test_raw_prompt_streams_from_completions_with_logprobs(remote: OpenAIEngine) -> None:
    gen = generate(remote, "The capital of France is", GenerationParams(max_tokens=6))
    assert gen.usage.completion_tokens == len(gen.tokens) == 6
    assert gen.finish_reason == "length"
    assert all(t.logprob <= 0 and t.entropy >= 0 for t in gen.tokens)
    assert gen.text.strip().startswith("Paris")


def test_stop_string_ends_generation_and_is_not_emitted(remote: OpenAIEngine) -> None:
    # a continuation with no near-ties, so prompt-cache rounding cannot change it
    prompt = "1, 2, 3, 4, 5,"
    free = generate(remote, prompt, GenerationParams(max_tokens=12))
    assert free.text.startswith(" 6, 7, 8,")
    stopped = generate(remote, prompt, GenerationParams(max_tokens=12, stop=(" 8",)))
    assert stopped.finish_reason == "stop"
    assert stopped.text == " 6, 7,"
    assert len(stopped.tokens) >= 4  # every step the server reported is an event


def test_cancellation_closes_the_stream(remote: OpenAIEngine) -> None:
    cancel = threading.Event()
    stream = remote.stream(QUESTION, GenerationParams(max_tokens=200), cancel)
    for seen, _event in enumerate(stream, start=1):
        if seen == 5:
            cancel.set()
    assert stream.finish_reason == "cancelled"
    assert stream.usage is not None and stream.usage.completion_tokens == 5
    # the server is free again afterwards
    again = generate(remote, QUESTION, GenerationParams(max_tokens=3))
    assert again.usage.completion_tokens == 3


def test_prompt_longer_than_the_server_context_is_refused(remote: OpenAIEngine) -> None:
    with pytest.raises(ContextOverflowError, match="context is 1024"):
        remote.stream("word " * 1100, GenerationParams(max_tokens=4))


def test_count_tokens_asks_the_server_tokenizer(remote: OpenAIEngine, engine: Engine) -> None:
    text = "Tandem counts tokens the way the model does."
    assert remote.count_tokens(text) == engine.count_tokens(text)


def test_registry_spec_names_server_and_model(server_url: str) -> None:
    eng = load_engine(f"openai:{server_url}#smollm2", context_length=1024)
    try:
        assert eng.info.id == "smollm2" and eng.info.path == server_url
        assert generate(eng, "Hi", GenerationParams(max_tokens=2)).usage.completion_tokens == 2
    finally:
        eng.close()


def test_unreachable_server_and_bad_spec_are_clear_errors() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(EngineUnavailableError, match=f"cannot reach.*127.0.0.1:{port}"):
        OpenAIEngine(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ModelNotFoundError, match="expected openai:http"):
        resolve("openai:localhost:8000")


def test_server_without_logprobs_gives_no_confidence(tmp_path: Path) -> None:
    """llama-cpp-python refuses log-probs without logits_all: the engine says so, and runs."""
    proc, url = start_server(tmp_path, logits_all=False)
    try:
        eng = OpenAIEngine(url)
        try:
            assert eng.info.has_logprobs is False and eng.info.extra["entropy"] == "none"
            gen = generate(eng, QUESTION, GenerationParams(max_tokens=5))
        finally:
            eng.close()
    finally:
        stop_server(proc)
    assert gen.usage.completion_tokens == 5 and gen.text
    assert all(math.isnan(t.logprob) and math.isnan(t.entropy) for t in gen.tokens)
    assert not score(gen.tokens).available
