"""`Runtime.choose`: the multiple-choice cascade through the policy and a real gateway.

The device side is real (SmolLM2 answering, Gemma 3 270M as peer, the bundled calibration);
the cloud model is a scripted upstream behind a real gateway on loopback, because what is
tested is the route (when to escalate, what leaves the device, how the reply is read), not
a cloud model's knowledge.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kernels import Engine
from runtime.choice import ChoiceResult, LocalChooser, cloud_prompt, parse_reply
from runtime.config import RuntimeConfig, load_config
from runtime.errors import OffloadError, QueueFullError
from runtime.facade import Runtime
from runtime.offload import OffloadConfig
from tests.conftest_gateway import GatewayFactory, RunningGateway
from tests.device_server import serve_in_thread
from tests.test_runtime_cloud import EchoUpstream

SKY = "What colour is the sky on a clear day?"
SKY_OPTIONS = ["green", "blue", "red"]


class ScriptedUpstream(EchoUpstream):
    """A cloud model that replies `reply` to everything and records what it was sent."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    def _answer(self, request: dict[str, Any]) -> str:
        self.requests.append(request)
        return self.reply


@pytest.fixture(scope="module")
def chooser() -> Iterator[LocalChooser]:
    with LocalChooser(threads=1) as c:
        yield c


def make_runtime(engine: Engine, chooser: LocalChooser, gw: RunningGateway | None = None, *,
                 mode: str = "prefer-local", threshold: float = 0.5) -> Runtime:
    cfg = load_config(env={}).replace(
        runtime=RuntimeConfig(mode=mode, choice_threshold=threshold,  # type: ignore[arg-type]
                              telemetry_path=tempfile.mkdtemp() + "/telemetry.sqlite3"),
        offload=OffloadConfig(url=gw.url, credential=gw.home.credential, deadline_s=20.0)
        if gw else OffloadConfig(),
    )
    return Runtime(cfg, engine=engine, chooser=chooser)


def _gateway(start_gateway: GatewayFactory, reply: str) -> tuple[RunningGateway, ScriptedUpstream]:
    upstream = ScriptedUpstream(reply)
    return start_gateway(upstream=upstream), upstream


@pytest.mark.parametrize(
    ("reply", "index"),
    [("B", 1), ("The answer is C.", 2), ("(A)", 0), ("carbon dioxide", 1), ("E", None),
     ("I am not sure.", None), ("oxygen or carbon dioxide", None), ("**D**", 3),
     ("B. carbon dioxide", 1), ("C) nitrogen", 2), ("Answer: D", 3), ("option a", None),
     ("A gas we breathe out: carbon dioxide", 1), ("A lighter-than-air gas: helium", 3),
     ("I think the answer is B", 1), ("I would say helium", 3)],
)
def test_a_cloud_reply_is_read_as_an_option(reply: str, index: int | None) -> None:
    assert parse_reply(reply, ["oxygen", "carbon dioxide", "nitrogen", "helium"]) == index


@pytest.mark.parametrize(
    ("reply", "index"),
    [("Option A is wrong; the answer is B.", 1), ("Not A or D. Answer: C", 2),
     ("The answer is A. No, wait: the answer is D.", 3), ("Choice A fails, so option is B", 1),
     ("Option C: the answer is E, so B", 2)],  # E is out of range: no statement counts
)
def test_a_stated_answer_outranks_a_letter_named_in_passing(reply: str, index: int) -> None:
    assert parse_reply(reply, ["oxygen", "carbon dioxide", "nitrogen", "helium"]) == index


def test_a_sentence_opening_capital_is_not_a_letter_even_when_in_range() -> None:
    ten = [f"option {n}" for n in range(9)] + ["a dog"]
    assert parse_reply("I am not sure.", ten) is None  # I would be the ninth letter
    assert parse_reply("A dog, clearly.", ["a cat", "a dog"]) == 1
    assert parse_reply("A", ["a cat", "a dog"]) == 0


def test_the_cloud_sees_lettered_options_and_a_one_letter_request() -> None:
    assert cloud_prompt(" Which? ", ["x", "y"]) == (
        "Which?\n\nA. x\nB. y\n\nAnswer with the letter of the correct option only.")


def test_local_only_answers_on_the_device_with_p_right(engine: Engine,
                                                        chooser: LocalChooser) -> None:
    with make_runtime(engine, chooser, mode="local-only") as rt:
        r = rt.choose(SKY, SKY_OPTIONS)
    assert (r.source, r.index, r.option, r.local_index) == ("local", 1, "blue", 1)
    assert r.p_correct is not None and 0 < r.p_correct < 1
    assert r.reason == "mode local-only: the device answers"
    assert json.loads(json.dumps(r.to_dict()))["option"] == "blue"


def test_a_question_too_long_for_the_device_says_what_it_did_not_read(
    engine: Engine, chooser: LocalChooser
) -> None:
    long = "Some background, at length. " * 120 + SKY  # ~730 tokens; the scorer holds 512
    with make_runtime(engine, chooser, mode="local-only") as rt:
        r = rt.choose(long, SKY_OPTIONS)
        short = rt.choose(SKY, SKY_OPTIONS)
    assert r.question_cut > 100
    assert r.reason == ("mode local-only: the device answers (the device read the question "
                        f"without its first {r.question_cut} tokens, to fit its context)")
    assert r.to_dict()["question_cut"] == r.question_cut
    assert short.question_cut == 0 and short.reason == "mode local-only: the device answers"


def test_prefer_local_keeps_a_confident_answer_and_escalates_an_unsure_one(
        engine: Engine, chooser: LocalChooser, start_gateway: GatewayFactory) -> None:
    gw, upstream = _gateway(start_gateway, "The answer is C.")
    with make_runtime(engine, chooser, gw, threshold=0.0) as rt:
        kept = rt.choose(SKY, SKY_OPTIONS)
    assert kept.source == "local" and kept.option == "blue"
    assert "calibrated P(right)" in kept.reason and ">= threshold 0.00" in kept.reason
    assert upstream.requests == []  # nothing left the device
    with make_runtime(engine, chooser, gw, threshold=1.0) as rt:
        assert rt.telemetry is not None
        before = rt.telemetry.cloud_tokens_today()
        up = rt.choose(SKY, SKY_OPTIONS)
        row = rt.telemetry.answer(up.id)
        rt.feedback(up.id, good=True, note="right")
        judged = rt.telemetry.answer(up.id)
        spent = rt.telemetry.cloud_tokens_today() - before
    assert isinstance(up, ChoiceResult) and up.id.startswith("choice-")
    # logged like any answer: its cloud tokens count toward the budget, and it takes feedback
    assert row is not None and judged is not None
    assert (row["source"], row["finish_reason"], row["mode"]) == ("cloud", "choice", "prefer-local")
    assert row["confidence"] == pytest.approx(up.p_correct)
    assert row["prompt"] == cloud_prompt(SKY, SKY_OPTIONS)
    assert up.usage == {"prompt_tokens": 5, "completion_tokens": 4}  # the upstream's count
    assert spent == 9
    assert (judged["feedback"], judged["feedback_note"]) == (1, "right")
    assert (up.source, up.index, up.option, up.local_index) == ("cloud", 2, "red", 1)
    assert "< threshold 1.00, escalated to the cloud" in up.reason
    assert up.p_correct == kept.p_correct  # the device's view of its own answer, reported
    assert up.decision is not None and up.decision["route"] == "cascade"
    sent = upstream.requests[-1]["messages"][-1]["content"]
    assert sent == cloud_prompt(SKY, SKY_OPTIONS)


def test_a_reply_naming_no_option_leaves_the_device_answer(
        engine: Engine, chooser: LocalChooser, start_gateway: GatewayFactory) -> None:
    gw, _ = _gateway(start_gateway, "Hard to say.")
    with make_runtime(engine, chooser, gw, threshold=1.0) as rt:
        r = rt.choose(SKY, SKY_OPTIONS)
        assert (r.source, r.option) == ("local", "blue")
        assert "the cloud's reply named no option: 'Hard to say.'" in r.reason
        with pytest.raises(OffloadError, match="named no option"):
            rt.choose(SKY, SKY_OPTIONS, mode="cloud-only")


def test_cloud_only_answers_from_the_cloud_and_personal_data_stays(
        engine: Engine, chooser: LocalChooser, start_gateway: GatewayFactory) -> None:
    gw, upstream = _gateway(start_gateway, "A")
    question = "Jane (jane.doe@example.com) asks: which planet is largest?"
    with make_runtime(engine, chooser, gw) as rt:
        r = rt.choose(question, ["Jupiter", "Mars"], mode="cloud-only")
    assert (r.source, r.option, r.p_correct, r.local_index) == ("cloud", "Jupiter", None, None)
    sent = json.dumps(upstream.requests)
    assert "jane.doe@example.com" not in sent and "<EMAIL_1>" in sent
    assert r.redactions["counts"]["EMAIL"] == 1


def test_a_failed_cloud_leaves_the_device_answer(
        engine: Engine, chooser: LocalChooser, start_gateway: GatewayFactory) -> None:
    gw, _ = _gateway(start_gateway, "B")
    with make_runtime(engine, chooser, gw, threshold=1.0) as rt:
        gw.server.stop()  # the gateway goes away after the runtime was set up
        r = rt.choose(SKY, SKY_OPTIONS, mode="prefer-cloud")
    assert (r.source, r.option) == ("local", "blue")
    assert "the device answers" in r.reason


@pytest.mark.parametrize(
    ("question", "options", "message"),
    [("", ["a", "b"], "question must be a non-empty string"),
     ("Which?", "ab", "options must be a list of strings"),
     ("Which?", ["a"], "need at least 2 options, got 1"),
     ("Which?", [str(i) for i in range(27)], "at most 26 options, got 27")],
)
def test_bad_questions_fail_before_anything_runs(engine: Engine, chooser: LocalChooser,
                                                 question: str, options: Any,
                                                 message: str) -> None:
    with make_runtime(engine, chooser, mode="local-only") as rt, \
            pytest.raises(ValueError, match=message):
        rt.choose(question, options)


def test_the_device_api_answers_multiple_choice(
        engine: Engine, chooser: LocalChooser, start_gateway: GatewayFactory) -> None:
    gw, _ = _gateway(start_gateway, "C")
    with make_runtime(engine, chooser, gw, threshold=1.0) as rt, serve_in_thread(rt) as url:
        ok = httpx.post(f"{url}/v1/choose", json={"question": SKY, "options": SKY_OPTIONS},
                        timeout=60)
        local = httpx.post(f"{url}/v1/choose", json={"question": SKY, "options": SKY_OPTIONS},
                           headers={"X-Tandem-Mode": "local-only"}, timeout=60)
        bad = [httpx.post(f"{url}/v1/choose", json=body, timeout=60) for body in (
            {"question": SKY, "options": "blue"}, {"question": SKY, "options": ["blue"]},
            {"options": SKY_OPTIONS}, {"question": SKY, "options": SKY_OPTIONS, "mode": "x"})]
    assert ok.status_code == 200
    body = ok.json()
    assert (body["source"], body["option"], body["local_index"]) == ("cloud", "red", 1)
    assert "escalated to the cloud" in body["reason"]
    assert local.json()["source"] == "local" and local.json()["option"] == "blue"
    assert [r.status_code for r in bad] == [400, 400, 400, 400]
    assert bad[0].json()["error"]["param"] == "options"
    assert "need at least 2 options, got 1" in bad[1].json()["error"]["message"]
    assert bad[2].json()["error"]["param"] == "question"
    assert bad[3].json()["error"]["code"] == "mode_unavailable"


def test_a_full_multiple_choice_queue_is_refused(engine: Engine, chooser: LocalChooser) -> None:
    cfg = load_config(env={}).replace(runtime=RuntimeConfig(
        mode="local-only", queue_size=0, telemetry_path="off"))
    with Runtime(cfg, engine=engine, chooser=chooser) as rt:
        results: list[ChoiceResult] = []
        with rt._chooser_lock:  # a question is running: the next one waits on the models
            first = threading.Thread(target=lambda: results.append(rt.choose(SKY, SKY_OPTIONS)))
            first.start()
            deadline = time.monotonic() + 30
            while rt._choice_queue.depth < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(QueueFullError, match=r"multiple-choice queue is full \(0 waiting"):
                rt.choose(SKY, SKY_OPTIONS)
        first.join(60)
        assert [r.option for r in results] == ["blue"]
        assert rt._choice_queue.depth == 0
        assert rt.choose(SKY, SKY_OPTIONS).option == "blue"  # room again


def test_a_calibration_swap_is_refused_while_the_chooser_loads(
    engine: Engine, chooser: LocalChooser, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import threading

    import runtime.choice

    loading, release = threading.Event(), threading.Event()

    class SlowChooser:  # the real chooser, handed over once the test lets it finish loading
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            loading.set()
            release.wait(10)

        def choose(self, question: str, options: Any) -> Any:
            return chooser.choose(question, options)

        def close(self) -> None:  # the shared fixture's models stay loaded
            pass

    monkeypatch.setattr(runtime.choice, "LocalChooser", SlowChooser)
    cfg = load_config(env={}).replace(runtime=RuntimeConfig(
        mode="local-only", choice_calibration="bundled:arc-light", telemetry_path="off"))
    with Runtime(cfg, engine=engine) as rt:
        answer: list[Any] = []
        worker = threading.Thread(target=lambda: answer.append(rt.choose(SKY, SKY_OPTIONS)))
        worker.start()
        assert loading.wait(10)
        swapped = cfg.replace(runtime=dataclasses.replace(cfg.runtime,
                                                          choice_calibration="bundled:arc"))
        with pytest.raises(ValueError, match="runtime.choice_calibration"):
            rt.config = swapped  # was taken: the config then named a model not loaded
        release.set()
        worker.join(10)
        assert answer and answer[0].option == "blue"
        assert rt.config.runtime.choice_calibration == "bundled:arc-light"


def test_choose_after_close_is_refused(engine: Engine, chooser: LocalChooser) -> None:
    from kernels import EngineError

    rt = make_runtime(engine, chooser, mode="local-only")
    rt.close()
    with pytest.raises(EngineError, match="the runtime is closed"):
        rt.choose(SKY, SKY_OPTIONS)  # an owned chooser used to load its models again


def test_a_cloud_reply_naming_no_option_still_counts_toward_the_budget(
        engine: Engine, chooser: LocalChooser, start_gateway: GatewayFactory) -> None:
    gw, upstream = _gateway(start_gateway, "Hard to say, honestly.")
    with make_runtime(engine, chooser, gw, threshold=1.0) as rt:
        assert rt.telemetry is not None
        r = rt.choose(SKY, SKY_OPTIONS)
        spent = rt.telemetry.cloud_tokens_today()
        row = rt.telemetry.answer(r.id)
    assert len(upstream.requests) == 1
    assert r.source == "local" and "named no option" in r.reason  # the device answers ...
    assert row is not None and row["source"] == "local"
    assert sum(r.usage.values()) > 0 and spent == sum(r.usage.values())  # ... the cloud spent


def test_questions_planned_at_once_cannot_escalate_past_the_budget(
        engine: Engine, chooser: LocalChooser, start_gateway: GatewayFactory) -> None:
    from kernels import Message
    from runtime.policy import PolicyConfig

    gw, upstream = _gateway(start_gateway, "C")  # the upstream counts 5 + 1 tokens
    prompt = engine.count_tokens(engine.render([Message("user",
                                                        cloud_prompt(SKY, SKY_OPTIONS))]))
    projection = prompt + 16  # a question's cloud call asks for 16 tokens at most
    budget = projection + 3  # one question's projection, not a second after 6 spent
    results: list[ChoiceResult] = []
    with make_runtime(engine, chooser, gw, threshold=1.0) as rt:
        rt.config = rt.config.replace(policy=PolicyConfig(daily_cloud_tokens=budget))
        workers = [threading.Thread(target=lambda: results.append(rt.choose(SKY, SKY_OPTIONS)))
                   for _ in range(2)]
        with rt._chooser_lock:  # both are planned (and queued) before either escalates
            for w in workers:
                w.start()
            deadline = time.monotonic() + 30
            while rt._choice_queue.depth < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        for w in workers:
            w.join(120)
        assert rt.telemetry is not None
        spent = rt.telemetry.cloud_tokens_today()
        assert rt._reserved.total() == 0
    assert len(upstream.requests) == 1
    assert sorted(r.source for r in results) == ["cloud", "local"]
    assert spent == 6
    kept = next(r for r in results if r.source == "local")
    assert (kept.option, kept.usage) == ("blue", {})
    assert kept.reason.endswith("< threshold 1.00, not escalated: the daily cloud budget is "
                                f"spent ({projection} + {projection} > {budget} tokens); the "
                                "device answers") or \
        kept.reason.endswith(f"spent (6 + {projection} > {budget} tokens); the device answers")
    assert kept.decision is not None and kept.decision["escalation"]["fired"] is True
