"""The server engine against a scriptable fake OpenAI-compatible server (tests/fake_openai.py):
streams abandoned early or stalled, and servers that answer with malformed output."""

from __future__ import annotations

import threading

from kernels import GenerationParams, Message, TokenEvent
from kernels.openai_engine import OpenAIEngine
from tests.fake_openai import fake_openai

QUESTION = [Message("user", "Name three colours.")]


def test_a_stream_closed_before_its_first_token_drops_the_connection() -> None:
    with fake_openai() as (fake, url):
        fake.generate = fake.stall
        eng = OpenAIEngine(url, "fake", top_logprobs=0)
        try:
            stream = eng.stream(QUESTION, GenerationParams(max_tokens=50))  # sent now
            stream.close()  # never iterated: the server must still be told to stop
            assert fake.disconnected.wait(10)
        finally:
            eng.close()


def test_cancel_from_another_thread_ends_a_stalled_stream() -> None:
    with fake_openai() as (fake, url):
        fake.generate = fake.stall
        eng = OpenAIEngine(url, "fake", top_logprobs=0)
        try:
            cancel = threading.Event()
            stream = eng.stream(QUESTION, GenerationParams(max_tokens=50), cancel)
            seen: list[TokenEvent] = []
            errors: list[BaseException] = []
            first = threading.Event()

            def read() -> None:
                try:
                    for event in stream:
                        seen.append(event)
                        first.set()
                except BaseException as exc:  # noqa: BLE001 - asserted below
                    errors.append(exc)

            reader = threading.Thread(target=read)
            reader.start()
            assert first.wait(10)  # the one token before the stall
            cancel.set()  # as the runtime does; the server now sends nothing for 60 s
            reader.join(10)
            assert not reader.is_alive()
            assert errors == []
            assert [e.text for e in seen] == ["Hi"]
            assert stream.finish_reason == "cancelled"
            assert stream.usage is not None and stream.usage.completion_tokens == 1
            assert fake.disconnected.wait(10)
        finally:
            eng.close()


def test_close_from_another_thread_ends_a_stalled_stream() -> None:
    with fake_openai() as (fake, url):
        fake.generate = fake.stall
        eng = OpenAIEngine(url, "fake", top_logprobs=0)
        try:
            stream = eng.stream(QUESTION, GenerationParams(max_tokens=50))
            done = threading.Event()
            first = threading.Event()

            def read() -> None:
                for _ in stream:
                    first.set()
                done.set()

            reader = threading.Thread(target=read)
            reader.start()
            assert first.wait(10)
            stream.close()  # was "generator already executing"
            reader.join(10)
            assert done.is_set() and stream.finish_reason == "cancelled"
            assert fake.disconnected.wait(10)
        finally:
            eng.close()
