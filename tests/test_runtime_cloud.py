"""The runtime's cloud path through a real gateway on loopback: modes, fallback, privacy."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_gateway.fixed_upstream import ANSWER
from kernels import Engine, Message, TokenEvent, TokenStream, Usage
from runtime.cloud import CloudPath
from runtime.config import RuntimeConfig, TandemConfig, load_config
from runtime.errors import ModeError, OffloadError, PrivacyBlockError
from runtime.facade import ResultStream, Runtime
from runtime.local import LocalPiece
from runtime.offload import OffloadConfig
from runtime.privacy import PrivacyConfig
from tests.conftest_gateway import GatewayFactory, RunningGateway, free_port

Q = [{"role": "user", "content": "Name a fruit."}]


class EchoUpstream:
    """A stand-in cloud model (the gateway's Upstream seam) that repeats what it was sent.

    It records every request the gateway forwarded, i.e. exactly what left the device.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def _answer(self, request: dict[str, Any]) -> str:
        self.requests.append(request)
        return "You said: " + str(request["messages"][-1]["content"])

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        text = self._answer(request)
        return {"id": "x", "object": "chat.completion", "created": 0, "model": "echo",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": len(text.split()),
                          "total_tokens": 5 + len(text.split())}}

    async def stream(self, request: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        text = self._answer(request)
        words = text.split(" ")
        for i in range(0, len(words), 2):  # 2 words a chunk: placeholders split across chunks
            piece = (" " if i else "") + " ".join(words[i : i + 2])
            yield json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                              "model": "echo", "choices": [{"index": 0,
                              "delta": {"content": piece}, "finish_reason": None}]}).encode()
        yield json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                          "model": "echo", "choices": [{"index": 0, "delta": {},
                          "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 5, "completion_tokens": len(words),
                                    "total_tokens": 5 + len(words)}}).encode()

    async def ready(self) -> tuple[bool, str]:
        return True, ""

    async def close(self) -> None:
        return None


def make_runtime(
    engine: Engine, gw_url: str, credential: str, *, mode: str = "prefer-local",
    threshold: float = 0.5, upstream_model: str = "", privacy: PrivacyConfig | None = None,
    deadline_s: float = 20.0, send_draft: bool = False,
    early: tuple[tuple[int, ...], tuple[float, ...]] = ((), ()),
    **offload: Any,
) -> Runtime:
    cfg: TandemConfig = load_config(env={})
    cfg = cfg.replace(
        runtime=RuntimeConfig(mode=mode, confidence_threshold=threshold,  # type: ignore[arg-type]
                              telemetry_path=tempfile.mkdtemp() + "/telemetry.sqlite3",
                              send_draft=send_draft, early_escalation_tokens=early[0],
                              early_escalation_margins=early[1]),
        offload=OffloadConfig(url=gw_url, credential=credential, deadline_s=deadline_s,
                              **offload),
        privacy=privacy or PrivacyConfig(),
    )
    rt = Runtime(cfg, engine=engine)
    if upstream_model:  # the fixed upstream picks its behaviour from the request's model
        assert rt.cloud is not None
        rt.cloud = CloudPath(rt.cloud.client, cfg.privacy, model=upstream_model)
    return rt


@pytest.fixture
def echo(start_gateway: GatewayFactory) -> Iterator[tuple[RunningGateway, EchoUpstream]]:
    upstream = EchoUpstream()
    yield start_gateway(upstream=upstream), upstream


def test_prefer_cloud_answers_from_the_cloud(engine: Engine, gateway: RunningGateway) -> None:
    with make_runtime(engine, gateway.url, gateway.home.credential) as rt:
        result = rt.generate(Q, mode="prefer-cloud")
    assert result.source == "cloud"
    assert result.text == ANSWER
    assert result.reason == "mode prefer-cloud: the cloud answers"
    assert result.usage.completion_tokens == len(ANSWER.split())
    assert not result.confidence.available


def test_cloud_only_streams_the_cloud_answer(engine: Engine, gateway: RunningGateway) -> None:
    with make_runtime(engine, gateway.url, gateway.home.credential) as rt:
        stream = rt.stream(Q, mode="cloud-only")
        pieces = list(stream)
    assert "".join(pieces) == ANSWER and len(pieces) > 1
    assert stream.result is not None and stream.result.source == "cloud"


def test_a_cloud_stream_closed_early_is_still_logged(engine: Engine,
                                                     gateway: RunningGateway) -> None:
    with make_runtime(engine, gateway.url, gateway.home.credential) as rt:
        stream = rt.stream(Q, mode="cloud-only")
        assert next(stream)
        stream.close()  # the caller stops reading: the pieces the cloud sent still happened
        assert rt.telemetry is not None
        row = rt.telemetry.answer(stream.id)
        assert row is not None
        assert (row["source"], row["finish_reason"]) == ("cloud", "cancelled")
        rt.feedback(stream.id, good=False)  # a closed answer can still be judged


def test_cloud_only_fails_clearly_when_the_gateway_is_down(engine: Engine,
                                                           gateway_home: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with make_runtime(engine, dead, gateway_home.credential, retries=0) as rt, \
            pytest.raises(OffloadError, match="cannot connect to the gateway|is unreachable"):
        rt.generate(Q, mode="cloud-only")


def test_prefer_cloud_falls_back_to_local_and_the_breaker_opens(engine: Engine,
                                                                gateway_home: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with make_runtime(engine, dead, gateway_home.credential, retries=0,
                      breaker_failures=2) as rt:
        reasons = [rt.generate(Q, mode="prefer-cloud", params=rt.params(max_tokens=4)).reason
                   for _ in range(3)]
        sources = {rt.generate(Q, mode="prefer-cloud", params=rt.params(max_tokens=2)).source}
    assert sources == {"local"}
    assert "the cloud failed" in reasons[0] or "unreachable" in reasons[0]
    assert any("circuit open" in r or "unreachable" in r for r in reasons[1:])


def test_local_only_config_never_connects_to_the_gateway(engine: Engine) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    accepted = 0

    def count() -> None:
        nonlocal accepted
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted += 1
            conn.close()

    threading.Thread(target=count, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with make_runtime(engine, url, "tdc1.unused", mode="local-only") as rt:
            assert rt.cloud is None
            for mode in (None, "local-only"):
                result = rt.generate(Q, mode=mode, params=rt.params(max_tokens=3))
                assert result.source == "local"
            time.sleep(0.5)  # give a stray background probe the chance to show itself
    finally:
        listener.close()
    assert accepted == 0


def test_a_runtime_started_local_only_refuses_a_cloud_mode_and_says_why(
    engine: Engine, gateway: RunningGateway
) -> None:
    import dataclasses

    with make_runtime(engine, gateway.url, gateway.home.credential, mode="local-only") as rt:
        cfg = rt.config
        with pytest.raises(ValueError, match=r"cannot change runtime\.mode \(to or from "
                                             r"local-only, with a gateway configured\)"):
            rt.config = cfg.replace(runtime=dataclasses.replace(cfg.runtime,
                                                                mode="prefer-cloud"))
        assert rt.config is cfg  # was taken, and every request then failed
        with pytest.raises(ModeError, match="this runtime started in local-only mode"):
            rt.generate(Q, mode="prefer-cloud")  # was: "no gateway is configured" (it is)


def test_per_request_local_only_sends_nothing(engine: Engine, echo: Any) -> None:
    gw, upstream = echo
    with make_runtime(engine, gw.url, gw.home.credential, threshold=1.0) as rt:
        result = rt.generate(Q, mode="local-only", params=rt.params(max_tokens=4))
    assert result.source == "local" and upstream.requests == []


def test_low_confidence_escalates_and_high_confidence_stays(engine: Engine,
                                                            gateway: RunningGateway) -> None:
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=1.0) as rt:
        up = rt.generate(Q, params=rt.params(max_tokens=8))
    assert up.source == "cloud" and up.text == ANSWER
    assert "< threshold 1.00, escalated to the cloud" in up.reason
    assert up.confidence.available  # the local draft's confidence is reported
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=0.0) as rt:
        stay = rt.generate(Q, params=rt.params(max_tokens=8))
    assert stay.source == "local" and ">= threshold 0.00" in stay.reason


class _Silent:
    """The real engine, whose answers come out empty (every token generated, none shown:
    as when a model's first token is its end-of-text)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.info = engine.info

    def render(self, prompt: Any) -> str:
        return self._engine.render(prompt)

    def count_tokens(self, text: str) -> int:
        return self._engine.count_tokens(text)

    def stream(self, prompt: Any, params: Any, cancel: Any = None) -> TokenStream:
        inner = self._engine.stream(prompt, params, cancel)
        out = TokenStream(iter(()), cancel)

        def drained() -> Iterator[TokenEvent]:
            for _ in inner:
                pass
            out.finish(inner.finish_reason, inner.usage)
            yield from ()

        out._events = drained()
        return out

    def close(self) -> None:
        pass


def test_an_empty_local_answer_escalates_whatever_its_score(engine: Engine,
                                                           gateway: RunningGateway) -> None:
    silent: Any = _Silent(engine)
    with make_runtime(silent, gateway.url, gateway.home.credential, threshold=0.0) as rt:
        whole = rt.generate(Q, params=rt.params(max_tokens=8))
        stream = rt.stream(Q, params=rt.params(max_tokens=8))
        streamed = "".join(stream)
    assert (whole.source, whole.text) == ("cloud", ANSWER)
    assert whole.reason == ("mode prefer-local: the device's answer is empty, escalated to "
                            "the cloud")
    assert streamed == ANSWER
    assert stream.result is not None and stream.result.source == "cloud"


def test_streamed_cascade_decides_on_the_first_tokens(engine: Engine,
                                                      gateway: RunningGateway) -> None:
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=1.0) as rt:
        story = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
        stream = rt.stream(story, params=rt.params(max_tokens=200))
        text = "".join(stream)
    assert stream.result is not None
    assert stream.result.source == "cloud" and text == ANSWER
    assert "over the first 16 tokens" in stream.result.reason
    assert stream.result.confidence.tokens == 16  # local decoding stopped at the decision


def test_a_kept_streamed_answer_reports_the_confidence_it_was_kept_on(
        engine: Engine, gateway: RunningGateway) -> None:
    story = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=0.0) as rt:
        stream = rt.stream(story, params=rt.params(max_tokens=96))
        "".join(stream)
        result = stream.result
        assert result is not None and result.source == "local"
        held = int(result.reason.split(" over the first ")[1].split()[0])
        # greedy: the first `held` tokens alone are the opening the decision was made on
        opening = rt.generate(story, mode="local-only", params=rt.params(max_tokens=held))
    assert held >= 16 and opening.confidence.tokens == held
    assert (f"local confidence {opening.confidence.score:.2f} over the first {held} tokens "
            ">= threshold 0.00, the device answers") in result.reason
    # the Result's own confidence is the whole answer's
    assert result.confidence.tokens == 96 and result.confidence != opening.confidence


def test_a_whole_answer_cascade_stops_decoding_once_clearly_unconfident(
        engine: Engine, gateway: RunningGateway) -> None:
    story = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=1.0,
                      early=((4,), (0.0,))) as rt:
        early = rt.generate(story, params=rt.params(max_tokens=200))
    assert early.source == "cloud" and early.text == ANSWER
    assert "(early escalation), escalated to the cloud" in early.reason
    # judged on the first tokens the consumer saw (decoding may have run a little ahead)
    assert 4 <= early.confidence.tokens < 60  # far below the 200-token budget
    assert "margin 0.00 at checkpoint 4 (early escalation)" in early.reason
    # a checkpoint whose margin cannot be met (score < 0) passes; the next one fires
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=1.0,
                      early=((4, 12), (1.0, 0.0))) as rt:
        later = rt.generate(story, params=rt.params(max_tokens=200))
    assert later.source == "cloud" and "at checkpoint 12 (early escalation)" in later.reason
    assert 12 <= later.confidence.tokens < 60
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=1.0,
                      early=((), ())) as rt:
        full = rt.generate(story, params=rt.params(max_tokens=48))
    assert full.source == "cloud" and "early" not in full.reason
    assert full.confidence.tokens == 48  # the whole local answer was generated and judged


def test_personal_data_leaves_as_placeholders_and_comes_back(engine: Engine, echo: Any) -> None:
    gw, upstream = echo
    secret = "Mail jane.doe@example.com or call +1 415 555 0132 about card 4111 1111 1111 1111."
    with make_runtime(engine, gw.url, gw.home.credential) as rt:
        plain = rt.generate([{"role": "user", "content": secret}], mode="cloud-only")
        stream = rt.stream([{"role": "user", "content": secret}], mode="cloud-only")
        streamed = "".join(stream)
    sent = json.dumps(upstream.requests)
    for value in ("jane.doe@example.com", "555 0132", "4111 1111 1111 1111"):
        assert value not in sent
    assert "<EMAIL_1>" in sent and "<PHONE_1>" in sent and "<CARD_1>" in sent
    assert plain.text == "You said: " + secret
    assert streamed == "You said: " + secret
    assert plain.redactions["counts"] == {"CARD": 1, "EMAIL": 1, "PHONE": 1}
    assert stream.result is not None and stream.result.redactions == plain.redactions


def test_privacy_block_keeps_the_request_local(engine: Engine, echo: Any) -> None:
    gw, upstream = echo
    ssn = [{"role": "user", "content": "My SSN is 536-90-4399, is it valid?"}]
    privacy = PrivacyConfig(block_types=("SSN",))
    with make_runtime(engine, gw.url, gw.home.credential, privacy=privacy) as rt:
        local = rt.generate(ssn, mode="prefer-cloud", params=rt.params(max_tokens=4))
        with pytest.raises(PrivacyBlockError, match="contains SSN"):
            rt.generate(ssn, mode="cloud-only")
    assert local.source == "local"
    assert "privacy keeps it on the device (contains SSN)" in local.reason
    assert local.redactions["blocked"] == "contains SSN"
    assert upstream.requests == []


def test_a_hanging_cloud_is_abandoned_at_the_deadline(engine: Engine,
                                                      gateway: RunningGateway) -> None:
    with make_runtime(engine, gateway.url, gateway.home.credential, upstream_model="hang",
                      deadline_s=1.5) as rt:
        started = time.monotonic()
        result = rt.generate(Q, mode="prefer-cloud", params=rt.params(max_tokens=4))
        elapsed = time.monotonic() - started
    assert result.source == "local"
    assert "did not answer within the 1.5 s deadline" in result.reason
    assert elapsed < 1.5 + 30  # the local answer follows the deadline, not the hang


def test_gateway_killed_mid_stream_the_device_finishes_the_answer(
    engine: Engine, start_gateway: GatewayFactory
) -> None:
    gw = start_gateway()
    with make_runtime(engine, gw.url, gw.home.credential, upstream_model="slow",
                      deadline_s=10) as rt:
        # 16: more than the cloud's whole answer, so the device always has some left to add
        stream = rt.stream(Q, mode="prefer-cloud", params=rt.params(max_tokens=16))
        first = next(stream)
        gw.server.stop()  # the gateway dies while the answer is half streamed
        rest = "".join(stream)
    result = stream.result
    assert result is not None
    assert result.source == "local"
    assert "the cloud failed" in result.reason and "continues the answer" in result.reason
    assert result.text == first + rest
    assert ANSWER.startswith(first)


def _killed_after_the_first_piece(rt: Runtime, gw: RunningGateway,
                                  max_tokens: int) -> tuple[ResultStream, str, str]:
    """Stream a prefer-cloud answer, kill the gateway after its first piece: (the stream,
    the cloud's text the client got, the device's)."""
    stream = rt.stream(Q, mode="prefer-cloud", params=rt.params(max_tokens=max_tokens))
    pieces = [next(stream)]
    gw.server.stop()  # the gateway dies while the answer is half streamed
    pieces.extend(stream)
    cloud = "".join(p for p in pieces if not isinstance(p, LocalPiece))
    device = "".join(p for p in pieces if isinstance(p, LocalPiece))
    assert "".join(pieces) == cloud + device  # the cloud's text first, then the device's
    return stream, cloud, device


def test_a_continuation_after_a_cloud_failure_keeps_to_max_tokens_and_counts_usage(
    engine: Engine, start_gateway: GatewayFactory
) -> None:
    gw = start_gateway()
    rendered = engine.render([Message(role="user", content=Q[0]["content"])])
    prompt = engine.count_tokens(rendered)
    with make_runtime(engine, gw.url, gw.home.credential, upstream_model="slow",
                      deadline_s=10) as rt:
        stream, cloud, device = _killed_after_the_first_piece(rt, gw, max_tokens=24)
    result = stream.result
    assert result is not None and result.source == "local" and cloud and ANSWER.startswith(cloud)
    assert "continues the answer" in result.reason
    sent = engine.count_tokens(rendered + cloud) - prompt  # the cloud's tokens, as read
    assert result.token_logprobs is not None
    local = len(result.token_logprobs)  # the device's own tokens
    assert local <= 24 - sent  # only what was left of max_tokens
    # the prompt is the request's (not with the cloud's text), the completion both parts
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (prompt,
                                                                            sent + local)
    assert result.usage.completion_tokens <= 24


def test_a_cloud_answer_cut_at_max_tokens_is_not_continued(
    engine: Engine, start_gateway: GatewayFactory
) -> None:
    gw = start_gateway()
    rendered = engine.render([Message(role="user", content=Q[0]["content"])])
    with make_runtime(engine, gw.url, gw.home.credential, upstream_model="slow",
                      deadline_s=10) as rt:
        # the fixed upstream ignores max_tokens: its first word already uses up the 1 token
        stream, cloud, device = _killed_after_the_first_piece(rt, gw, max_tokens=1)
    result = stream.result
    assert result is not None and device == ""
    assert (result.source, result.finish_reason, result.text) == ("cloud", "length", cloud)
    assert ANSWER.startswith(cloud)
    assert "the cloud failed" in result.reason
    assert result.reason.endswith("the answer had reached max_tokens")
    prompt = engine.count_tokens(rendered)
    assert result.usage.prompt_tokens == prompt
    assert result.usage.completion_tokens == engine.count_tokens(rendered + cloud) - prompt


def test_device_api_reports_the_cloud_source(engine: Engine, gateway: RunningGateway) -> None:
    import openai

    from tests.device_server import serve_in_thread

    with make_runtime(engine, gateway.url, gateway.home.credential) as rt, \
            serve_in_thread(rt) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        resp = client.chat.completions.create(
            model="tandem", messages=Q, extra_body={"tandem": {"mode": "cloud-only"}}  # type: ignore[arg-type]
        )
    assert resp.choices[0].message.content == ANSWER
    assert (resp.model_extra or {})["tandem"]["source"] == "cloud"




def test_decision_trace_reaches_the_result_and_resources_push_to_the_cloud(
    engine: Engine, gateway: RunningGateway
) -> None:
    from runtime.monitor import PushedSignals

    with make_runtime(engine, gateway.url, gateway.home.credential) as rt:
        rt.monitor.push(PushedSignals(battery_percent=9.0, plugged_in=False))
        result = rt.generate(Q, params=rt.params(max_tokens=4))
    assert result.source == "cloud"
    assert result.reason == "mode prefer-local: battery 9% and unplugged; the cloud answers"
    decision = result.decision
    assert decision is not None and decision["route"] == "cloud"
    assert decision["fired"] == ["battery_low"]
    rules = {e["rule"]: e for e in decision["trace"]}
    assert rules["battery_low"]["value"] == 9.0 and rules["battery_low"]["threshold"] == 20.0
    assert rules["privacy_block"]["fired"] is False


def test_cloud_budget_spent_keeps_prefer_cloud_local(engine: Engine,
                                                     gateway: RunningGateway) -> None:
    from runtime.policy import PolicyConfig

    with make_runtime(engine, gateway.url, gateway.home.credential) as rt:
        # this prompt is ~33 local tokens + 4 expected; the fixed upstream reports 21 used
        rt.config = rt.config.replace(policy=PolicyConfig(daily_cloud_tokens=45))
        first = rt.generate(Q, mode="prefer-cloud", params=rt.params(max_tokens=4))
        second = rt.generate(Q, mode="prefer-cloud", params=rt.params(max_tokens=4))
    assert first.source == "cloud"
    assert second.source == "local"
    assert "the daily cloud budget is spent (21 + " in second.reason


def test_cloud_money_budget_counts_the_days_earlier_answers(engine: Engine,
                                                             gateway: RunningGateway) -> None:
    from runtime.policy import PolicyConfig

    with make_runtime(engine, gateway.url, gateway.home.credential) as rt:
        # 21 tokens used by the first answer, ~37 projected by the next: at 1.0 per 1k
        # tokens, 0.021 + 0.037 > 0.045, while the next alone (0.037) would fit
        rt.config = rt.config.replace(policy=PolicyConfig(daily_cloud_cost=0.045,
                                                          cloud_cost_per_1k_tokens=1.0))
        first = rt.generate(Q, mode="prefer-cloud", params=rt.params(max_tokens=4))
        second = rt.generate(Q, mode="prefer-cloud", params=rt.params(max_tokens=4))
    assert first.source == "cloud"
    assert second.source == "local"
    assert "the daily cloud budget is spent (0.0" in second.reason
    budget = {e["rule"]: e for e in first.decision["trace"]}["budget"]
    assert budget["fired"] is False and budget["threshold"] == 0.045
    assert "within the daily cloud budget (0.0" in budget["detail"]


def test_an_unusable_router_file_routes_without_it_and_says_why(
    engine: Engine, gateway: RunningGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from runtime.policy import PolicyConfig

    bad = tmp_path / "router.npz"
    bad.write_text("prompt,weak,strong\n")  # a CSV where the router file should be
    with make_runtime(engine, gateway.url, gateway.home.credential) as rt:
        rt.config = rt.config.replace(policy=PolicyConfig(router_path=str(bad)))
        with caplog.at_level("WARNING", logger="tandem.runtime"):
            first = rt.generate(Q, mode="cloud-only", params=rt.params(max_tokens=4))
            second = rt.generate(Q, mode="prefer-cloud", params=rt.params(max_tokens=4))
    assert (first.source, second.source) == ("cloud", "cloud")
    assert first.decision is not None and second.decision is not None
    for decision in (first.decision, second.decision):
        router = {e["rule"]: e for e in decision["trace"]}["router"]
        assert router["fired"] is False
        assert router["detail"].startswith("no router: policy.router_path unusable")
        assert "not an .npz archive" in router["detail"]
    warnings = [r for r in caplog.records if "router_path unusable" in r.getMessage()]
    assert len(warnings) == 1  # the same file is not retried on every request


def test_a_huge_max_tokens_is_planned_as_what_the_context_can_hold(
    engine: Engine, gateway: RunningGateway
) -> None:
    from runtime.policy import PolicyConfig

    with make_runtime(engine, gateway.url, gateway.home.credential) as rt:
        policy = PolicyConfig(kv_bytes_per_token=1_000_000, memory_reserve_bytes=0)
        rt.config = rt.config.replace(policy=policy)
        plan = rt.plan([Message(role="user", content="Name a fruit.")], "prefer-local",
                       rt.params(max_tokens=10**6), rt.monitor.snapshot())
    assert plan.decision is not None
    memory = {e["rule"]: e for e in plan.decision["trace"]}["memory_short"]
    # prompt + expected output = the local context at most, not 10^6 + prompt tokens
    assert memory["threshold"] == engine.info.context_length * 1_000_000


def test_escalation_can_carry_the_local_draft(engine: Engine, echo: Any) -> None:
    from runtime.cloud import DRAFT_INSTRUCTION

    gw, upstream = echo
    with make_runtime(engine, gw.url, gw.home.credential, threshold=1.0,
                      send_draft=True) as rt:
        result = rt.generate(Q, params=rt.params(max_tokens=6))
    assert result.source == "cloud"
    assert "the local draft went along to be refined" in result.reason
    sent = upstream.requests[-1]["messages"]
    assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "user"]
    assert sent[-2]["content"].strip()  # the draft
    assert sent[-1]["content"] == DRAFT_INSTRUCTION


def test_the_draft_is_off_by_default(engine: Engine, echo: Any) -> None:
    gw, upstream = echo
    with make_runtime(engine, gw.url, gw.home.credential, threshold=1.0) as rt:
        rt.generate(Q, params=rt.params(max_tokens=6))
    assert [m["role"] for m in upstream.requests[-1]["messages"]] == ["user"]


def test_concurrent_requests_cannot_overshoot_the_cloud_budget(
    engine: Engine, gateway: RunningGateway
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from runtime.policy import PolicyConfig

    with make_runtime(engine, gateway.url, gateway.home.credential,
                      upstream_model="slow") as rt:
        # ~37 tokens projected per request: the budget holds one. Four planned at once used
        # to see the same (empty) spending and all go to the cloud.
        rt.config = rt.config.replace(policy=PolicyConfig(daily_cloud_tokens=45))
        params = rt.params(max_tokens=4)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(
                lambda _: rt.generate(Q, mode="prefer-cloud", params=params), range(4)))
        assert rt.telemetry is not None
        spent = rt.telemetry.cloud_tokens_today()
        assert rt._reserved.total() == 0  # every reservation released with its answer
    assert sorted(r.source for r in results) == ["cloud", "local", "local", "local"]
    assert all("the daily cloud budget is spent" in r.reason
               for r in results if r.source == "local")
    assert 0 < spent <= 45


def test_a_half_streamed_cloud_answer_counts_toward_the_budget(
    engine: Engine, start_gateway: GatewayFactory
) -> None:
    gw = start_gateway()
    with make_runtime(engine, gw.url, gw.home.credential, upstream_model="slow") as rt:
        assert rt.telemetry is not None
        stream = rt.stream(Q, mode="prefer-cloud", params=rt.params(max_tokens=24))
        first = next(stream)
        gw.server.stop()
        rest = "".join(stream)
        result = stream.result
        assert result is not None and result.source == "local"  # the device continued it
        # The cloud read the prompt and wrote the first piece: that was spent there.
        assert first and result.text.startswith(first)
        usage = result.usage
        assert usage.prompt_tokens < result.cloud_tokens < usage.prompt_tokens + \
            usage.completion_tokens  # the prompt and the prefix, not the device's own part
        assert rt.telemetry.cloud_tokens_today() == result.cloud_tokens
        assert rest  # the device added to it
        # A verdict on a mostly cloud-written answer does not label the local model.
        rt.feedback(result.id, False)
        assert list(rt.telemetry.training_rows()) == []


class _Scripted:
    """Stand-in local engine (the real engine's template and tokenizer, scripted text at low
    log-probs, so the cascade escalates with a draft of known content)."""

    def __init__(self, engine: Engine, text: str) -> None:
        self._engine = engine
        self.info = engine.info
        self.words = [w + " " for w in text.split()]

    def render(self, prompt: Any) -> str:
        return self._engine.render(prompt)

    def count_tokens(self, text: str) -> int:
        return self._engine.count_tokens(text)

    def stream(self, prompt: Any, params: Any, cancel: Any = None) -> TokenStream:
        out = TokenStream(iter(()), cancel)
        words = self.words[: params.max_tokens]

        def events() -> Iterator[TokenEvent]:
            for i, word in enumerate(words):
                if out.cancel_event.is_set():
                    out.finish("cancelled", Usage(10, i))
                    return
                yield TokenEvent(word, 100 + i, -2.5, 2.5)
            out.finish("stop", Usage(10, len(words)))

        out._events = events()
        return out

    def close(self) -> None:
        pass


def test_a_draft_on_a_stay_local_topic_stays_on_the_device(engine: Engine, echo: Any) -> None:
    gw, upstream = echo
    scripted: Any = _Scripted(engine, "Constant thirst can be a sign of diabetes; get a "
                                      "blood test.")
    with make_runtime(scripted, gw.url, gw.home.credential, threshold=0.99, send_draft=True,
                      privacy=PrivacyConfig(stay_local_categories=("health",))) as rt:
        result = rt.generate([{"role": "user", "content": "I am thirsty all the time. Why?"}],
                             params=rt.params(max_tokens=40))
    # The question may leave; the draft names a health topic and may not.
    assert result.source == "cloud"
    assert "the local draft stayed on the device (stay-local topic health)" in result.reason
    sent = json.dumps(upstream.requests[-1]["messages"])
    assert "diabetes" not in sent and [m["role"] for m in upstream.requests[-1]["messages"]] \
        == ["user"]


def test_what_the_draft_had_redacted_is_reported(engine: Engine, echo: Any) -> None:
    gw, upstream = echo
    scripted: Any = _Scripted(engine, "Write to help@acme-support.com for help.")
    with make_runtime(scripted, gw.url, gw.home.credential, threshold=0.99,
                      send_draft=True) as rt:
        result = rt.generate([{"role": "user", "content": "How do I reach Acme support?"}],
                             params=rt.params(max_tokens=40))
    assert "help@acme-support.com" not in json.dumps(upstream.requests[-1])
    assert result.source == "cloud" and result.redactions["counts"] == {"EMAIL": 1}


def test_stop_strings_leave_the_device_redacted(engine: Engine, echo: Any) -> None:
    gw, upstream = echo
    chat = [{"role": "user", "content": "Continue the chat.\nJane Doe: hi Bob Smith, call me "
                                        "on +1 415 555 0132\nBob Smith: hello\nJane Doe:"}]
    with make_runtime(engine, gw.url, gw.home.credential) as rt:
        rt.generate(chat, mode="cloud-only",
                    params=rt.params(max_tokens=16, stop=("\nBob Smith:", "+1 415 555 0132")))
    sent = upstream.requests[-1]
    assert "Bob Smith" not in json.dumps(sent) and "555 0132" not in json.dumps(sent)
    # The stops name what the cloud sees: the placeholders of the same values.
    person, phone = sent["stop"]
    assert person.startswith("\n<PERSON_") and person.endswith(">:") and person[1:-1] in \
        sent["messages"][0]["content"]
    assert phone.startswith("<PHONE_") and phone in sent["messages"][0]["content"]


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
def test_a_cancel_while_escalating_ends_the_cloud_call(
    engine: Engine, gateway: RunningGateway, streaming: bool
) -> None:
    scripted: Any = _Scripted(engine, "a b c d e f g h i j")
    with make_runtime(scripted, gateway.url, gateway.home.credential, threshold=0.99,
                      upstream_model="hang", deadline_s=60.0) as rt:
        from runtime.request import CancelEvent

        cancel = CancelEvent()  # as the device API's (a plain Event is seen between pieces)
        threading.Timer(1.0, cancel.set).start()
        started = time.monotonic()
        if streaming:
            stream = rt.stream(Q, params=rt.params(max_tokens=40), cancel=cancel)
            "".join(stream)
            result = stream.result
        else:
            result = rt.generate(Q, params=rt.params(max_tokens=40), cancel=cancel)
        took = time.monotonic() - started
    # It waited out the 60 s cloud deadline before; the bound is loose on purpose.
    assert took < 30
    assert result is not None and result.finish_reason == "cancelled"
    assert result.source == "cloud" and result.reason.startswith("mode prefer-local: ")


def test_a_cloud_answer_without_usage_is_counted_by_the_device(
    engine: Engine, gateway: RunningGateway
) -> None:
    with make_runtime(engine, gateway.url, gateway.home.credential,
                      upstream_model="nousage") as rt:
        assert rt.telemetry is not None
        whole = rt.generate(Q, mode="cloud-only")
        stream = rt.stream(Q, mode="cloud-only")
        "".join(stream)
        streamed = stream.result
        today = rt.telemetry.cloud_tokens_today()
        prompt = engine.count_tokens(engine.render([Message("user", "Name a fruit.")]))
    assert streamed is not None
    for result in (whole, streamed):
        # The device's own count (its tokenizer), not 0: the budget must see the spending.
        assert result.usage.prompt_tokens == prompt
        assert result.usage.completion_tokens == engine.count_tokens(result.text) > 0
        assert result.cloud_tokens == result.usage.prompt_tokens + \
            result.usage.completion_tokens
    assert today == whole.cloud_tokens + streamed.cloud_tokens


STORY = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]


def _budget_for_one(engine: Engine, messages: list[dict[str, str]], max_tokens: int) -> tuple[
        int, int]:
    """(what the budget rule projects for `messages`, a daily token budget that holds one
    such projection but not a second request after the fixed upstream's answer (21 tokens))."""
    from runtime.facade import to_messages

    projection = engine.count_tokens(engine.render(to_messages(messages))) + max_tokens
    return projection, projection + 8


@pytest.mark.parametrize("max_tokens", [4, 40], ids=["after-the-answer", "at-the-decision"])
def test_streamed_cascades_planned_at_once_cannot_escalate_past_the_budget(
    engine: Engine, gateway: RunningGateway, max_tokens: int
) -> None:
    from runtime.policy import PolicyConfig

    projection, budget = _budget_for_one(engine, STORY, max_tokens)
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=1.0) as rt:
        rt.config = rt.config.replace(policy=PolicyConfig(daily_cloud_tokens=budget))
        params = rt.params(max_tokens=max_tokens)
        # Both planned before either escalates: each plan saw nothing spent. A cascade's
        # escalation used to go ahead whatever the budget said by then.
        first, second = rt.stream(STORY, params=params), rt.stream(STORY, params=params)
        assert "".join(first) == ANSWER
        text = "".join(second)
        assert rt.telemetry is not None
        spent = rt.telemetry.cloud_tokens_today()
        assert rt._reserved.total() == 0  # the escalation's reservation went with its answer
    a, b = first.result, second.result
    assert a is not None and b is not None
    assert a.source == "cloud" and a.cloud_tokens == 21
    assert b.source == "local" and text == b.text and b.text
    assert b.cloud_tokens == 0 and spent == 21 <= budget
    assert b.reason.startswith("mode prefer-local: local confidence ")
    assert b.reason.endswith(
        f"< threshold 1.00, not escalated: the daily cloud budget is spent (21 + {projection} "
        f"> {budget} tokens); the device answers")
    if max_tokens == 40:  # refused at the decision: the device went on with its answer
        assert "over the first 16 tokens" in b.reason and b.confidence.tokens > 16
    assert a.decision is not None and b.decision is not None
    assert a.decision["route"] == b.decision["route"] == "cascade"
    assert a.decision["escalation"]["fired"] is False
    assert a.decision["escalation"]["value"] == projection  # 0 spent + its projection
    refused = b.decision["escalation"]
    assert (refused["rule"], refused["fired"], refused["value"], refused["threshold"]) == (
        "budget", True, 21 + projection, budget)


@pytest.mark.parametrize("early", [((), ()), ((4,), (0.0,))], ids=["whole", "early"])
def test_whole_answer_cascades_planned_at_once_cannot_escalate_past_the_budget(
    engine: Engine, gateway: RunningGateway,
    early: tuple[tuple[int, ...], tuple[float, ...]],
) -> None:
    from runtime.policy import PolicyConfig

    _, budget = _budget_for_one(engine, STORY, 24)
    results: list[Any] = []
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=1.0,
                      early=early) as rt:
        rt.config = rt.config.replace(policy=PolicyConfig(daily_cloud_tokens=budget))
        params = rt.params(max_tokens=24)
        workers = [threading.Thread(target=lambda: results.append(
            rt.generate(STORY, params=params))) for _ in range(2)]
        with rt._engine_lock:  # neither generates before both are planned (and queued)
            for w in workers:
                w.start()
            deadline = time.monotonic() + 30
            while rt.queue_depth < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        for w in workers:
            w.join(120)
        assert rt.telemetry is not None
        spent = rt.telemetry.cloud_tokens_today()
        assert rt._reserved.total() == 0
    assert sorted(r.source for r in results) == ["cloud", "local"]
    assert spent == 21 <= budget
    kept = next(r for r in results if r.source == "local")
    # judged whole (an early checkpoint refused by the budget does not stop the decoding)
    assert kept.confidence.tokens > 4 and kept.cloud_tokens == 0
    assert "< threshold 1.00, not escalated: the daily cloud budget is spent (" in kept.reason
    assert kept.decision is not None and kept.decision["escalation"]["fired"] is True


def test_without_a_budget_an_escalation_reserves_and_records_nothing(
    engine: Engine, gateway: RunningGateway
) -> None:
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=1.0) as rt:
        taken: list[int] = []
        reserve = rt._reserved.reserve

        def counted(tokens: int) -> int:
            taken.append(tokens)
            return reserve(tokens)

        rt._reserved.reserve = counted  # type: ignore[method-assign]
        up = rt.generate(Q, params=rt.params(max_tokens=4))
    assert up.source == "cloud" and "escalated to the cloud" in up.reason
    assert taken == [] and up.decision is not None and "escalation" not in up.decision


class _BreaksMidStream(EchoUpstream):
    """A cloud model whose streamed answer fails after its first chunk ("You said:"), as an
    upstream that crashes mid-answer: the gateway ends the stream with an error trailer."""

    async def stream(self, request: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        from cloud_gateway.errors import UpstreamError

        chunks = super().stream(request)
        yield await anext(chunks)
        await chunks.aclose()
        raise UpstreamError("the model crashed")


@pytest.mark.parametrize(("streaming", "max_tokens"), [(False, 8), (True, 8), (True, 40)],
                         ids=["whole", "streamed", "streamed-early"])
def test_an_escalation_cut_off_midway_counts_what_the_cloud_spent(
    engine: Engine, start_gateway: GatewayFactory, streaming: bool, max_tokens: int
) -> None:
    upstream = _BreaksMidStream()
    gw = start_gateway(upstream=upstream)
    rendered = engine.render([Message(role="user", content=Q[0]["content"])])
    prompt = engine.count_tokens(rendered)
    received = engine.count_tokens(rendered + "You said:") - prompt
    with make_runtime(engine, gw.url, gw.home.credential, threshold=1.0) as rt:
        params = rt.params(max_tokens=max_tokens)
        if streaming:
            stream = rt.stream(Q, params=params)
            text = "".join(stream)
            result = stream.result
        else:
            result = rt.generate(Q, params=params)
            text = result.text
        assert rt.telemetry is not None
        today = rt.telemetry.cloud_tokens_today()
    assert len(upstream.requests) == 1
    assert result is not None and result.source == "local"
    assert "the cloud failed (" in result.reason and "the model crashed" in result.reason
    assert "You said" not in text  # what the user sees is still the device's answer
    # The cloud read the prompt and wrote "You said:" before failing: that much was spent.
    assert result.cloud_tokens == prompt + received
    assert today == result.cloud_tokens
    assert result.usage.prompt_tokens == prompt  # the device's own usage is unchanged
