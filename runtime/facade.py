"""The `Runtime` facade: one call from messages to a `Result` that says where and why.

    rt = Runtime.from_config(load_config())
    result = rt.generate([{"role": "user", "content": "Hi"}], mode="local-only")
    for piece in (stream := rt.stream(messages)):
        print(piece, end="")
    stream.result  # the Result, once the stream is exhausted

Thread-safe: the HTTP API calls it from worker threads. The local engine runs one
generation at a time; at most `runtime.queue_size` further requests wait for it, beyond
which `QueueFullError` is raised at call time (before any token).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kernels import Engine, GenerationParams, Message
from kernels.registry import load_engine
from runtime.cloud import CloudPath, Prepared
from runtime.confidence import NO_CONFIDENCE, Confidence, RunningConfidence
from runtime.config import MODES, Mode, TandemConfig
from runtime.errors import ModeError, OffloadError, QueueFullError
from runtime.local import LocalRun
from runtime.monitor import Monitor
from runtime.monitor.snapshot import Snapshot
from runtime.offload import OffloadClient
from runtime.policy import (
    BudgetState,
    LatencyEstimates,
    PolicyInputs,
    RequestFeatures,
    decide,
)
from runtime.result import Result, Timings, Usage
from runtime.router.base import RouterVerdict
from runtime.router.online import OnlineRouter, context_vector
from runtime.router.online import default_path as default_bandit_path
from runtime.telemetry import Telemetry

if TYPE_CHECKING:
    from runtime.router.learned import LearnedRouter

log = logging.getLogger("tandem.runtime")

MessagesLike = Sequence[Message | Mapping[str, Any]]
Route = Literal["local", "cloud", "cascade"]


def to_messages(messages: MessagesLike) -> list[Message]:
    """Validate chat messages given as `Message`s or OpenAI-style dicts."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {role, content} objects")
    if not messages:
        raise ValueError("messages must not be empty")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, Message):
            out.append(m)
            continue
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be an object with role and content")
        try:
            out.append(Message.from_dict(dict(m)))
        except ValueError as exc:
            raise ValueError(f"messages[{i}]: {exc}") from None
    return out


COLLECT_PACE_S = 0.05  # see Runtime.stream(pace_s=...)


class ResultStream(Iterator[str]):
    """Text deltas of an answer as they are produced; `result` is set once exhausted.

    `cancel()` (any thread) stops generation after the current token; `close()` releases the
    engine at once. Iterating to the end, or closing, is required to free the queue slot.
    """

    def __init__(self, cancel: threading.Event, slot: _Slot | None = None, *, rid: str = "",
                 context: _Context | None = None) -> None:
        self._pieces: Iterator[str] = iter(())
        self._cancel = cancel
        self._slot = slot
        self.id = rid  # known before the first token (the API's response id)
        self.context = context
        self.pace_s = 0.0  # see Runtime.stream
        self.result: Result | None = None

    def __iter__(self) -> ResultStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self._cancel.set()
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        if self._slot is not None:
            self._slot.release()  # a stream closed before its first token never ran its finally

    def collect(self) -> Result:
        for _ in self:
            pass
        assert self.result is not None
        return self.result


class _Slot:
    """One admitted request's place in the local queue; release is idempotent."""

    __slots__ = ("_runtime", "_held")

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._held = True

    def release(self) -> None:
        with self._runtime._admit_lock:
            if self._held:
                self._held = False
                self._runtime._admitted -= 1


@dataclass(frozen=True, slots=True)
class _Context:
    """What `_finish` needs to label and log a result."""

    rid: str
    prompt: str
    plan: Plan


def _last_user_text(messages: Sequence[Message]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


_CUES = {
    "code": re.compile(r"```|\b(?:def|class|function|import|SELECT|regex|python|javascript|"
                       r"compile|stack trace|bug)\b", re.I),
    "math": re.compile(r"\d\s*[-+*/^=]\s*\d|\b(?:solve|equation|integral|derivative|"
                       r"probability|how many|calculate)\b", re.I),
    "translation": re.compile(r"\btranslat(?:e|ion)\b", re.I),
}


def task_cues(text: str) -> tuple[str, ...]:
    """Cheap task cues of a prompt (for `policy.cloud_task_cues`)."""
    return tuple(name for name, pattern in _CUES.items() if pattern.search(text))


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a request goes first, why, and what to do if the cloud fails."""

    route: Route
    reason: str
    prepared: Prepared | None = None
    fallback: bool = True  # a failed cloud call is answered locally (False for cloud-only)
    decision: dict[str, Any] | None = None  # the policy's decision and trace


class Runtime:
    """The device side of Tandem."""

    def __init__(
        self,
        config: TandemConfig,
        *,
        engine: Engine | None = None,
        monitor: Monitor | None = None,
        cloud: CloudPath | None = None,
    ) -> None:
        self.config = config
        # Called with every finished Result (telemetry, tests); must be quick and not raise.
        self.listeners: list[Callable[[Result], None]] = []
        self._engine = engine
        self._owns_engine = engine is None  # an engine passed in belongs to the caller
        self._owns_monitor = monitor is None
        self._engine_lock = threading.Lock()  # serialises local generations
        self._load_lock = threading.Lock()
        self._admitted = 0
        self._admit_lock = threading.Lock()
        # local-only never talks to the gateway: not even the monitor's reachability probe
        use_cloud = config.offload.configured and config.runtime.mode != "local-only"
        self.monitor = monitor or Monitor.from_config(
            config.monitor, gateway_url=config.offload.url if use_cloud else None
        )
        if cloud is None and use_cloud:
            client = OffloadClient(
                config.offload,
                on_outcome=self._report_gateway,
                network_state=lambda: self.monitor.snapshot().network,
            )
            cloud = CloudPath(client, config.privacy)
        self.cloud = cloud
        self.telemetry = Telemetry.from_setting(config.runtime.telemetry_path)
        self._router: LearnedRouter | None = None
        self._speed: dict[str, float] = {}
        # Loaded at start, so an unusable state file is reported (and set aside) at once.
        self._online: OnlineRouter | None = None
        if config.policy.bandit:
            p = config.policy
            self._online = OnlineRouter.open(p.bandit_path or default_bandit_path(),
                                             p.bandit_alpha, p.bandit_cloud_cost)
        self._feedback_lock = threading.Lock()  # an answer's first verdict teaches the bandit

    def _report_gateway(self, ok: bool, rtt_ms: float | None) -> None:
        self.monitor.report_gateway(ok, rtt_ms)

    @classmethod
    def from_config(cls, config: TandemConfig) -> Runtime:
        return cls(config)

    # -- resources -----------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The local engine, loaded on first use."""
        if self._engine is None:
            with self._load_lock:
                if self._engine is None:
                    m = self.config.model
                    self._engine = load_engine(
                        m.spec,
                        threads=m.threads,
                        context_length=m.context_length,
                        seed=m.seed,
                        cache_dir=m.cache_dir or None,
                    )
        return self._engine

    @property
    def queue_depth(self) -> int:
        """Local requests admitted and not finished (running + waiting)."""
        with self._admit_lock:
            return self._admitted

    def close(self) -> None:
        """Release what the runtime created (an engine or monitor passed in stays open)."""
        if self._engine is not None and self._owns_engine:
            self._engine.close()
        if self.cloud is not None:
            self.cloud.client.close()
        if self._owns_monitor:
            self.monitor.close()
        if self.telemetry is not None:
            self.telemetry.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def params(self, **overrides: Any) -> GenerationParams:
        """Generation parameters from config, with per-request overrides (None = default)."""
        g = self.config.generation
        values: dict[str, Any] = {
            "max_tokens": g.max_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "seed": self.config.model.seed,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("stop"), str):
            values["stop"] = (values["stop"],)
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        return GenerationParams(**values)

    # -- the two calls ---------------------------------------------------------------------

    def generate(
        self,
        messages: MessagesLike,
        *,
        mode: str | None = None,
        params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """Answer `messages`; see `stream` for the arguments.

        Unlike `stream`, a prefer-local cascade judges the whole local answer before
        escalating (a stream must decide after its first tokens, before showing them).
        """
        # Nobody reads the tokens one by one here: let the engine hand them over in batches.
        return self._start(messages, mode, params, cancel, streaming=False,
                           pace_s=COLLECT_PACE_S).collect()

    def stream(
        self,
        messages: MessagesLike,
        *,
        mode: str | None = None,
        params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
        pace_s: float = 0.0,
    ) -> ResultStream:
        """Start answering `messages` and return a stream of text deltas.

        `pace_s` > 0 says the caller takes text at most that often (it batches its output
        anyway, as the HTTP API does): local tokens are then handed over in batches, which
        saves a thread wakeup per token. The first and the last piece are never held back.

        Validation, the routing decision, privacy checks and queue admission happen here,
        before the first token: `ValueError` (bad messages), `ModeError`, `OffloadError`
        (cloud-only with the cloud unavailable), `PrivacyBlockError` (cloud-only with
        personal data that must stay), `QueueFullError`, `ContextOverflowError`.
        """
        if pace_s < 0:
            raise ValueError("pace_s must be >= 0")
        return self._start(messages, mode, params, cancel, streaming=True, pace_s=pace_s)

    # -- routing -----------------------------------------------------------------------------

    def plan(self, messages: Sequence[Message], mode: Mode, params: GenerationParams,
             snapshot: Snapshot) -> Plan:
        """Decide where a request goes first (`runtime.policy.decide`; redaction happens here
        when the cloud is an option, since the privacy verdict is one of the policy's inputs).
        """
        if mode == "local-only":
            return Plan("local", "mode local-only: the device answers")
        cloud = self.cloud
        if cloud is None:
            if mode in ("prefer-cloud", "cloud-only"):
                raise ModeError(
                    f"mode {mode} needs a cloud gateway, and no gateway is configured "
                    "(set [offload] url and credential, or TANDEM_OFFLOAD_URL and "
                    "TANDEM_OFFLOAD_CREDENTIAL)"
                )
            return Plan("local", "mode prefer-local: the device answers; "
                        "no gateway configured to escalate to")
        prepared = cloud.prepare(messages, params)
        prompt = _last_user_text(messages)
        request = RequestFeatures(
            prompt_tokens=self._prompt_tokens(messages),
            expected_output_tokens=params.max_tokens,
            task_cues=task_cues(prompt),
        )
        router = self._router_verdict(prompt)
        online = self._online if self.config.policy.bandit else None
        # The decision keeps the context vector: feedback learns from it without recomputing.
        bandit = None if online is None else online.verdict(
            context_vector(router, request.prompt_tokens, request.task_cues))
        inputs = PolicyInputs(
            mode=mode,
            request=request,
            snapshot=snapshot,
            privacy_block=prepared.blocked,
            router=router,
            bandit=bandit,
            budget=BudgetState(cloud_tokens_used=self._cloud_tokens_today()),
            latency=LatencyEstimates(
                local_tokens_per_s=self._speed.get("local"),
                local_prompt_tokens_per_s=self._speed.get("local_prefill"),
                cloud_tokens_per_s=self._speed.get("cloud"),
            ),
            circuit_open=not cloud.client.breaker.peek()[0],
        )
        decision = decide(inputs, self.config.policy)
        error = decision.error()
        if error is not None:
            raise error
        route: Route = "local" if decision.route == "refuse" else decision.route
        return Plan(route, decision.reason, prepared, fallback=mode != "cloud-only",
                    decision=decision.to_dict())

    def _prompt_tokens(self, messages: Sequence[Message]) -> int:
        engine = self.engine
        return engine.count_tokens(engine.render(messages))

    def _router_verdict(self, prompt: str) -> RouterVerdict | None:
        policy = self.config.policy
        if not (policy.use_router and policy.router_path):
            return None
        if self._router is None:
            from runtime.router.store import load_router

            self._router = load_router(policy.router_path)
        return self._router.verdict(prompt)

    def _cloud_tokens_today(self) -> int:
        return self.telemetry.cloud_tokens_today() if self.telemetry else 0

    def _observe_speed(self, result: Result) -> None:
        """Running averages of measured speeds, for the latency rule."""
        key = result.source
        rate = result.timings.tokens_per_s
        if rate > 0:
            old = self._speed.get(key)
            self._speed[key] = rate if old is None else 0.8 * old + 0.2 * rate
        if key == "local" and result.timings.ttft_ms > 0 and result.usage.prompt_tokens:
            prefill = result.usage.prompt_tokens / (result.timings.ttft_ms / 1e3)
            old = self._speed.get("local_prefill")
            self._speed["local_prefill"] = prefill if old is None else 0.8 * old + 0.2 * prefill

    def feedback(self, answer_id: str, good: bool, note: str = "") -> None:
        """Record a user's verdict on an answer (telemetry must be on).

        With `policy.bandit` on, the bandit also learns from it: the cost-aware reward of
        the arm that actually answered (the answer's `source`), on the context its decision
        recorded. Only an answer's first verdict teaches the bandit (a LinUCB update cannot
        be taken back); answers planned without the bandit teach it nothing.
        """
        if self.telemetry is None:
            raise ModeError('telemetry is off (runtime.telemetry_path = "off"): '
                            "feedback cannot be recorded")
        with self._feedback_lock:
            before = self.telemetry.answer(answer_id)
            self.telemetry.feedback(answer_id, good, note)
            online = self._online
            if online is None or before is None or before["feedback"] is not None:
                return
            decision = json.loads(before["decision"]) if before["decision"] else None
            try:
                online.learn(decision, str(before["source"]), good)
            except OSError as exc:  # the verdict is recorded; the next update saves again
                log.warning("bandit state not saved to %s: %s", online.path, exc)

    # -- execution ---------------------------------------------------------------------------

    def _start(
        self,
        messages: MessagesLike,
        mode: str | None,
        params: GenerationParams | None,
        cancel: threading.Event | None,
        *,
        streaming: bool,
        pace_s: float = 0.0,
    ) -> ResultStream:
        msgs = to_messages(messages)
        chosen = self._mode(mode)
        params = params or self.params()
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        plan = self.plan(msgs, chosen, params, self.monitor.snapshot())
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        context = _Context(rid, _last_user_text(msgs), plan)
        if plan.route == "cloud":
            stream = ResultStream(cancel, rid=rid, context=context)
            stream._pieces = self._run_cloud(stream, msgs, chosen, params, plan, started)
            return stream
        slot = self._admit()
        try:
            # tokenises: a context overflow raises here, before the first token
            local = LocalRun.start(self, msgs, params, cancel, pace_s=pace_s)
        except BaseException:
            slot.release()
            raise
        stream = ResultStream(cancel, slot, rid=rid, context=context)
        stream.pace_s = pace_s
        if plan.route == "cascade" and streaming:
            pieces = self._run_cascade_stream(stream, slot, local, msgs, chosen, params, plan,
                                              started)
        elif plan.route == "cascade":
            pieces = self._run_cascade(stream, slot, local, msgs, chosen, params, plan, started)
        else:
            pieces = self._run_local(stream, slot, local, chosen, plan, started)
        stream._pieces = pieces
        return stream

    def _mode(self, mode: str | None) -> Mode:
        chosen = mode or self.config.runtime.mode
        if chosen not in MODES:
            raise ModeError(f"unknown mode {chosen!r} (one of {', '.join(MODES)})")
        return chosen  # type: ignore[return-value]

    def _admit(self) -> _Slot:
        with self._admit_lock:
            # one running + queue_size waiting
            if self._admitted >= self.config.runtime.queue_size + 1:
                raise QueueFullError(
                    f"the local engine's queue is full ({self.config.runtime.queue_size} waiting)"
                )
            self._admitted += 1
        return _Slot(self)

    def _finish(self, stream: ResultStream, result: Result) -> None:
        ctx = stream.context
        if ctx is not None:
            result = dataclasses.replace(result, id=ctx.rid, decision=ctx.plan.decision)
        stream.result = result
        self._observe_speed(result)
        if self.telemetry is not None and ctx is not None:
            try:
                self.telemetry.record(result, ctx.prompt)
            except sqlite3.Error as exc:  # telemetry must never cost the user an answer
                log.warning("telemetry not recorded: %s", exc)
        for listener in self.listeners:
            listener(result)

    def _run_local(
        self, stream: ResultStream, slot: _Slot, local: LocalRun, mode: Mode, plan: Plan,
        started: float,
    ) -> Iterator[str]:
        try:
            yield from local.pieces()
        finally:
            local.close()
            slot.release()
        self._finish(stream, local.result(plan.reason, mode, started, self.monitor.snapshot(),
                                          plan.prepared))

    def _run_cascade(
        self, stream: ResultStream, slot: _Slot, local: LocalRun, msgs: list[Message],
        mode: Mode, params: GenerationParams, plan: Plan, started: float,
    ) -> Iterator[str]:
        """Whole local answer, then escalate if its confidence is below the threshold.

        Early escalation: once `early_escalation_tokens` tokens are in and their score is
        below threshold - `early_escalation_margin`, decoding stops and the request
        escalates at once (the margin keeps this from escalating answers the whole answer's
        score would keep; `benchmarks.early_escalation` measures both).
        """
        cfg = self.config.runtime
        threshold = cfg.confidence_threshold
        early_k = cfg.early_escalation_tokens
        early = False
        try:
            for _ in local.pieces():
                if early_k and local.tokens >= early_k:
                    score = local.confidence.score
                    if score < threshold - cfg.early_escalation_margin:  # NaN: never
                        early = True
                        local.cancel()  # stop decoding an answer we will not use
                        break
                    early_k = 0  # checked once
        finally:
            local.close()
            slot.release()
        conf = local.confidence
        if early and not local.cancelled_by_user:
            why = (f"local confidence {conf.score:.2f} over the first {local.tokens} tokens "
                   f"< threshold {threshold:.2f} - margin {cfg.early_escalation_margin:.2f} "
                   "(early escalation)")
            yield from self._escalate(stream, local, msgs, mode, params, plan, started, why)
            return
        if local.cancelled or not (conf.available and conf.score < threshold):
            reason = (f"mode prefer-local: local confidence {conf.score:.2f} >= threshold "
                      f"{threshold:.2f}, the device answers")
            result = local.result(reason, mode, started, self.monitor.snapshot(), plan.prepared)
            self._finish(stream, result)
            yield result.text
            return
        why = f"local confidence {conf.score:.2f} < threshold {threshold:.2f}"
        yield from self._escalate(stream, local, msgs, mode, params, plan, started, why)

    def _run_cascade_stream(
        self, stream: ResultStream, slot: _Slot, local: LocalRun, msgs: list[Message],
        mode: Mode, params: GenerationParams, plan: Plan, started: float,
    ) -> Iterator[str]:
        """Hold the first K local tokens; escalate if their confidence is below threshold."""
        k = self.config.runtime.stream_decide_tokens
        threshold = self.config.runtime.confidence_threshold
        held: list[str] = []
        decided = False
        try:
            for piece in local.pieces():
                if decided:
                    yield piece
                    continue
                held.append(piece)
                if local.tokens >= k:
                    conf = local.confidence
                    if conf.available and conf.score < threshold:
                        local.cancel()  # early escalation: stop decoding what we won't use
                        break
                    decided = True
                    yield "".join(held)
        finally:
            local.close()
            slot.release()
        conf = local.confidence
        if decided or local.cancelled_by_user or not (conf.available and conf.score < threshold):
            if not decided and held:
                yield "".join(held)
            reason = (f"mode prefer-local: local confidence {conf.score:.2f} over the first "
                      f"{min(k, local.tokens)} tokens >= threshold {threshold:.2f}, "
                      "the device answers")
            self._finish(stream, local.result(reason, mode, started, self.monitor.snapshot(),
                                              plan.prepared))
            return
        why = (f"local confidence {conf.score:.2f} over the first {local.tokens} tokens "
               f"< threshold {threshold:.2f}")
        yield from self._escalate(stream, local, msgs, mode, params, plan, started, why)

    def _escalate(
        self, stream: ResultStream, local: LocalRun, msgs: list[Message], mode: Mode,
        params: GenerationParams, plan: Plan, started: float, why: str,
    ) -> Iterator[str]:
        assert self.cloud is not None and plan.prepared is not None
        prepared = plan.prepared
        draft = local.text
        if self.config.runtime.send_draft and draft.strip() and not local.cancelled:
            prepared = self.cloud.with_draft(prepared, draft)
            why += "; the local draft went along to be refined"
        try:
            text, reply = self.cloud.complete(prepared)
        except OffloadError as exc:
            if local.cancelled:  # early escalation stopped the local draft: finish it locally
                yield from self._local_after_cloud_failure(
                    stream, msgs, mode, params, plan, started, f"{why}; cloud failed ({exc})")
                return
            result = local.result(f"mode prefer-local: {why}, but the cloud failed ({exc}); "
                                  "the device answers", mode, started, self.monitor.snapshot(),
                                  plan.prepared)
            self._finish(stream, result)
            yield result.text
            return
        result = self._cloud_result(
            text, reply.usage, reply.model, reply.finish_reason, reply.timings, started,
            f"mode prefer-local: {why}, escalated to the cloud", mode, plan, local.confidence,
        )
        self._finish(stream, result)
        yield text

    def _run_cloud(
        self, stream: ResultStream, msgs: list[Message], mode: Mode, params: GenerationParams,
        plan: Plan, started: float,
    ) -> Iterator[str]:
        assert self.cloud is not None and plan.prepared is not None
        emitted: list[str] = []
        first: float | None = None
        try:
            pieces, raw = self.cloud.stream(plan.prepared)
            try:
                for piece in pieces:
                    if first is None:
                        first = time.perf_counter()
                    emitted.append(piece)
                    yield piece
                    if stream._cancel.is_set():
                        break
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
        except OffloadError as exc:
            if not plan.fallback:
                raise
            why = f"{plan.reason.split(':')[0]}: the cloud failed ({exc})"
            if emitted:
                # The answer is half shown: the device continues it rather than restarting.
                yield from self._local_after_cloud_failure(
                    stream, msgs, mode, params, plan, started, why, prefix="".join(emitted))
            else:
                yield from self._local_after_cloud_failure(
                    stream, msgs, mode, params, plan, started, why)
            return
        self._finish(stream, self._cloud_result(
            "".join(emitted), raw.usage, raw.model, raw.finish_reason or "stop",
            {**raw.timings, "first_text_s": (first or time.perf_counter()) - started},
            started, plan.reason, mode, plan, NO_CONFIDENCE,
        ))

    def _local_after_cloud_failure(
        self, stream: ResultStream, msgs: list[Message], mode: Mode, params: GenerationParams,
        plan: Plan, started: float, why: str, prefix: str = "",
    ) -> Iterator[str]:
        slot = self._admit()
        try:
            local = LocalRun.start(self, msgs, params, stream._cancel, prefix=prefix,
                                   pace_s=stream.pace_s)
        except BaseException:
            slot.release()
            raise
        try:
            yield from local.pieces()
        finally:
            local.close()
            slot.release()
        what = "continues the answer" if prefix else "answers"
        result = local.result(f"{why}; the device {what}", mode, started,
                              self.monitor.snapshot(), plan.prepared, prefix=prefix)
        self._finish(stream, result)

    def _cloud_result(
        self, text: str, usage: Mapping[str, int], model: str, finish: str,
        timings: Mapping[str, float], started: float, reason: str, mode: Mode, plan: Plan,
        confidence: Confidence,
    ) -> Result:
        done = time.perf_counter()
        completion = int(usage.get("completion_tokens", 0))
        first_s = float(timings.get("first_text_s", done - started))
        decode_s = (done - started) - first_s
        return Result(
            text=text,
            source="cloud",
            reason=reason,
            confidence=confidence,
            usage=Usage(int(usage.get("prompt_tokens", 0)), completion),
            timings=Timings(
                queued_ms=0.0,
                ttft_ms=first_s * 1e3,
                total_ms=(done - started) * 1e3,
                tokens_per_s=(completion - 1) / decode_s if completion > 1 and decode_s > 0
                else 0.0,
            ),
            resources=self.monitor.snapshot(),
            finish_reason="length" if finish == "length" else "stop",
            model=model or "cloud",
            mode=mode,
            redactions=dict(plan.prepared.redactions) if plan.prepared else {},
        )


__all__ = ["Plan", "ResultStream", "Runtime", "RunningConfidence", "to_messages"]
