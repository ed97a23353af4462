"""The Runtime facade with the real engine: modes, results, the bounded queue."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from kernels import ContextOverflowError, Engine
from runtime.config import RuntimeConfig, load_config
from runtime.errors import ModeError, QueueFullError
from runtime.facade import Runtime
from runtime.request import Admission
from runtime.result import Result

Q = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture()
def rt(engine: Engine) -> Runtime:
    return Runtime(load_config(env={}), engine=engine)


def test_local_only_answer_says_where_and_why(rt: Runtime) -> None:
    result = rt.generate(Q, mode="local-only", params=rt.params(max_tokens=8))
    assert result.source == "local"
    assert result.mode == "local-only"
    assert result.reason == "mode local-only: the device answers"
    assert result.text and result.usage.completion_tokens <= 8
    assert 0 <= result.confidence.score <= 1
    assert result.timings.ttft_ms <= result.timings.total_ms
    assert result.resources.memory.total_bytes > 0
    assert result.model == "bundled:smollm2-135m"


def test_stream_pieces_join_to_the_result_text(rt: Runtime) -> None:
    stream = rt.stream(Q, params=rt.params(max_tokens=12))
    pieces = list(stream)
    assert stream.result is not None
    assert "".join(pieces) == stream.result.text
    assert stream.result.mode == "prefer-local"


@pytest.mark.parametrize("mode", ["prefer-cloud", "cloud-only"])
def test_cloud_modes_without_a_gateway_fail_clearly(rt: Runtime, mode: str) -> None:
    with pytest.raises(ModeError, match="no gateway is configured"):
        rt.generate(Q, mode=mode)


def test_unknown_mode_and_bad_messages(rt: Runtime) -> None:
    with pytest.raises(ModeError, match="unknown mode 'sideways'"):
        rt.generate(Q, mode="sideways")
    with pytest.raises(ValueError, match="messages must not be empty"):
        rt.generate([])
    with pytest.raises(ValueError, match=r"messages\[0\]: message role"):
        rt.generate([{"role": "wizard", "content": "x"}])


def test_context_overflow_is_raised_before_any_token_and_frees_the_slot(rt: Runtime) -> None:
    with pytest.raises(ContextOverflowError):
        rt.stream([{"role": "user", "content": "word " * 5000}])
    assert rt.queue_depth == 0


def test_queue_admits_one_running_plus_queue_size(engine: Engine) -> None:
    cfg = load_config(env={}).replace(runtime=RuntimeConfig(queue_size=1))
    rt = Runtime(cfg, engine=engine)
    first = rt.stream(Q, params=rt.params(max_tokens=200))
    next(first)  # running
    second = rt.stream(Q, params=rt.params(max_tokens=2))  # waiting
    assert rt.queue_depth == 2
    with pytest.raises(QueueFullError, match="queue is full"):
        rt.stream(Q)
    first.cancel()
    assert first.collect().finish_reason == "cancelled"
    assert second.collect().usage.completion_tokens <= 2
    assert rt.queue_depth == 0


def test_streams_dropped_unread_give_their_queue_slots_back(engine: Engine) -> None:
    import gc

    cfg = load_config(env={}).replace(runtime=RuntimeConfig(queue_size=1,
                                                            telemetry_path="off"))
    with Runtime(cfg, engine=engine) as rt:
        streams = [rt.stream(Q, params=rt.params(max_tokens=2)) for _ in range(2)]
        assert rt.queue_depth == 2
        del streams  # never iterated, never closed: no generator `finally` ever runs
        gc.collect()
        assert rt.queue_depth == 0  # was 2 for the runtime's life: every request refused
        assert rt.generate(Q, params=rt.params(max_tokens=2)).text


def test_a_queue_holds_one_running_plus_its_size_and_a_slot_frees_once() -> None:
    queue = Admission("the test", 1)
    first, second = queue.admit(), queue.admit()
    assert queue.depth == 2
    with pytest.raises(QueueFullError, match=r"^the test queue is full \(1 waiting\)$"):
        queue.admit()
    first.release()
    first.release()  # idempotent: the second release frees nothing
    assert queue.depth == 1
    with queue.admit():
        assert queue.depth == 2
    assert queue.depth == 1
    second.release()
    assert queue.depth == 0


def test_a_stream_closed_before_its_first_token_frees_its_slot(rt: Runtime) -> None:
    stream = rt.stream(Q)
    assert rt.queue_depth == 1
    stream.close()
    assert rt.queue_depth == 0


def test_listeners_see_every_result_and_cancel_works_across_threads(rt: Runtime) -> None:
    seen: list[Result] = []
    rt.listeners.append(seen.append)
    cancel = threading.Event()
    stream = rt.stream(Q, params=rt.params(max_tokens=300), cancel=cancel)
    next(stream)
    threading.Thread(target=cancel.set).start()
    result = stream.collect()
    assert result.finish_reason == "cancelled"
    assert seen == [result]


def test_a_running_runtime_takes_new_thresholds_but_not_what_it_read_at_start(
        rt: Runtime) -> None:
    from runtime.policy import PolicyConfig

    cfg = rt.config
    live = cfg.replace(runtime=dataclasses.replace(cfg.runtime, confidence_threshold=0.9),
                       policy=PolicyConfig(daily_cloud_tokens=10))
    rt.config = live  # read per request: taken
    assert rt.config.runtime.confidence_threshold == 0.9
    with pytest.raises(ValueError, match=r"cannot change runtime\.queue_size, "
                                         r"runtime\.telemetry_path: they are read"):
        rt.config = cfg.replace(runtime=dataclasses.replace(cfg.runtime, queue_size=2,
                                                            telemetry_path="off"))
    with pytest.raises(ValueError, match="cannot change model"):
        rt.config = cfg.replace(model=dataclasses.replace(cfg.model, threads=7))
    assert rt.config is live  # a refused config leaves the old one whole


def test_model_seed_decides_whether_a_repeated_sampled_request_repeats() -> None:
    """`model.seed` unset (the default): asked again, the same sampled request gets a fresh
    answer (OpenAI's API without `seed`); set: the same answer. A request's seed wins."""
    poem = [{"role": "user", "content": "Write a short poem about the sea."}]
    env = {"TANDEM_MODEL_CONTEXT_LENGTH": "1024", "TANDEM_RUNTIME_TELEMETRY_PATH": "off"}
    with Runtime(load_config(env=env)) as fresh:  # loads its own engine from the config
        def answers(rt: Runtime, n: int = 3, **params: int) -> list[str]:
            return [rt.generate(poem, mode="local-only", params=rt.params(
                max_tokens=24, temperature=1.0, **params)).text for _ in range(n)]

        assert len(set(answers(fresh))) >= 2
        assert fresh.config.model.seed is None
        seeded = Runtime(load_config(env={**env, "TANDEM_MODEL_SEED": "5"}),
                         engine=fresh.engine)
        with seeded:
            fixed = answers(seeded)
            assert len(set(fixed)) == 1
            assert answers(fresh, 1, seed=5) == fixed[:1]
            own = answers(seeded, 2, seed=9)
            assert own == answers(fresh, 1, seed=9) * 2 and own[0] != fixed[0]
