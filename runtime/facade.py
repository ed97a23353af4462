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
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kernels import Engine, EngineError, GenerationParams, Message
from kernels.registry import load_engine
from runtime import routes
from runtime.budget import Reservations
from runtime.cloud import CloudPath
from runtime.confidence import RunningConfidence
from runtime.config import MODES, Mode, TandemConfig
from runtime.cues import task_cues
from runtime.errors import ModeError
from runtime.local import LocalRun
from runtime.monitor import Monitor
from runtime.monitor.snapshot import Snapshot
from runtime.offload import OffloadClient
from runtime.offload_keys import default_state_path as default_keys_state_path
from runtime.policy import (
    BudgetState,
    LatencyEstimates,
    PolicyConfig,
    PolicyInputs,
    RequestFeatures,
    budget_rule,
    decide,
)
from runtime.request import (
    COLLECT_PACE_S,
    Admission,
    CancelEvent,
    Plan,
    ResultStream,
    Route,
    Slot,
    StreamContext,
)
from runtime.result import Result
from runtime.router.base import RouterVerdict
from runtime.router.online import OnlineRouter, context_vector, layout
from runtime.router.online import default_path as default_bandit_path
from runtime.telemetry import Telemetry

if TYPE_CHECKING:
    from runtime.choice import Choice, ChoiceResult, LocalChooser
    from runtime.router.learned import LearnedRouter

log = logging.getLogger("tandem.runtime")

MessagesLike = Sequence[Message | Mapping[str, Any]]


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


def _last_user_text(messages: Sequence[Message]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


@dataclasses.dataclass(frozen=True, slots=True)
class _LoadedRouter:
    """The router file last tried (`policy.router_path`): the router it holds, or, when it
    could not be loaded, why not and the file's mtime then (a file replaced since is tried
    again)."""

    path: str
    router: LearnedRouter | None = None
    problem: str = ""
    mtime_ns: int | None = None


class Runtime:
    """The device side of Tandem."""

    def __init__(
        self,
        config: TandemConfig,
        *,
        engine: Engine | None = None,
        monitor: Monitor | None = None,
        cloud: CloudPath | None = None,
        chooser: LocalChooser | None = None,
    ) -> None:
        self._config = config
        # Called with every finished Result (telemetry, tests); must be quick and not raise.
        self.listeners: list[Callable[[Result], None]] = []
        self._engine = engine
        self._owns_engine = engine is None  # an engine passed in belongs to the caller
        self._owns_monitor = monitor is None
        self._engine_lock = threading.Lock()  # serialises local generations
        self._load_lock = threading.Lock()
        self._queue = Admission("the local engine's", config.runtime.queue_size)
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
                keys_state_path=default_keys_state_path(),
            )
            cloud = CloudPath(client, config.privacy)
        self.cloud = cloud
        self.telemetry = Telemetry.from_setting(config.runtime.telemetry_path,
                                                config.runtime.telemetry_keep_days)
        self._router: _LoadedRouter | None = None  # loaded on first use
        self._speed: dict[str, float] = {}
        # Cloud tokens of requests still running count toward the budget (runtime.budget);
        # a reservation whose request never logs an answer lapses after the cloud deadline.
        self._reserved = Reservations(ttl_s=config.offload.deadline_s + 60.0)
        self._budget_lock = threading.Lock()  # reading the budget and reserving are one step
        # Loaded at start, so an unusable state file is reported (and set aside) at once.
        self._online: OnlineRouter | None = None
        if config.policy.bandit:
            p = config.policy
            # With a router configured, its two P(right) are the context; else prompt cues.
            self._online = OnlineRouter.open(p.bandit_path or default_bandit_path(),
                                             p.bandit_alpha, p.bandit_cloud_cost,
                                             _bandit_layout(config))
        self._feedback_lock = threading.Lock()  # an answer's first verdict teaches the bandit
        self._chooser = chooser  # multiple choice: loaded on first use unless passed in
        self._owns_chooser = chooser is None  # one passed in belongs to the caller
        self._chooser_lock = threading.Lock()  # one question at a time on its models
        # the calibration the chooser was (or is being) built with; config swaps check it
        # under `_swap_lock`, so a swap cannot slip in while the chooser starts loading
        self._chooser_calibration: str | None = None
        self._swap_lock = threading.Lock()
        self._closed = False
        self._choice_queue = Admission("the multiple-choice", config.runtime.queue_size)

    @property
    def config(self) -> TandemConfig:
        """The configuration the runtime reads each request with."""
        return self._config

    @config.setter
    def config(self, new: TandemConfig) -> None:
        """Swap the configuration of a running runtime (thresholds, policy, generation, …).

        Settings the runtime reads once, when it starts, cannot change: the model, the
        monitor, the privacy filter and the gateway (`model`, `monitor`, `privacy`,
        `offload`, and with a gateway configured `runtime.mode` to or from local-only, which
        starts without a gateway client), the queue sizes, the telemetry database and the
        bandit's state (`runtime.queue_size`, `runtime.telemetry_path` and `_keep_days`,
        `policy.bandit*`),
        and once the
        multiple-choice models are loaded, `runtime.choice_calibration`; with the bandit on,
        whether a router is configured (its context layout: `policy.router_path` set or
        cleared). A new config that changes any of them raises ValueError naming them,
        rather than being half applied; start a new Runtime for those. A new
        `policy.router_path` is loaded on next use.
        """
        with self._swap_lock:
            before, after = _read_at_start(self._config), _read_at_start(new)
            changed = [k for k in before if before[k] != after[k]]
            loaded = self._chooser_calibration
            if loaded is None and self._chooser is not None:  # passed in: as configured
                loaded = self._config.runtime.choice_calibration
            if loaded is not None and new.runtime.choice_calibration != loaded:
                changed.append("runtime.choice_calibration (the chooser is loaded)")
            if changed:
                raise ValueError(f"a running Runtime cannot change {', '.join(changed)}: they "
                                 "are read when it starts; start a new Runtime instead")
            self._config = new

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
        return self._queue.depth

    def close(self) -> None:
        """Release what the runtime created (an engine or monitor passed in stays open)."""
        self._closed = True
        with self._chooser_lock:
            if self._chooser is not None and self._owns_chooser:
                self._chooser.close()
                self._chooser = None
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

    def choose(self, question: str, options: Sequence[str], *,
               mode: str | None = None) -> ChoiceResult:
        """Answer a multiple-choice question: the device by option log-likelihood with a
        calibrated P(right), escalating below `runtime.choice_threshold` (`runtime.choice`).

        Raises `ValueError` (bad question), `ModeError`, `CalibrationError`, and in cloud-only
        mode `OffloadError` / `PrivacyBlockError`.
        """
        from runtime.choice import run_choice

        return run_choice(self, question, options, mode)

    @property
    def chooser(self) -> _LockedChooser:
        """The device's multiple-choice chooser (loads its models on first use)."""
        return _LockedChooser(self)

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
                    f"mode {mode} needs the cloud gateway, and this runtime started in "
                    "local-only mode, which never connects to it: start the runtime in "
                    "another runtime.mode (a request can still ask for local-only)"
                    if self.config.offload.configured else
                    f"mode {mode} needs a cloud gateway, and no gateway is configured "
                    "(set [offload] url and credential, or TANDEM_OFFLOAD_URL and "
                    "TANDEM_OFFLOAD_CREDENTIAL)"
                )
            return Plan("local", "mode prefer-local: the device answers; "
                        "no gateway configured to escalate to")
        prepared = cloud.prepare(messages, params)
        prompt = _last_user_text(messages)
        prompt_tokens = self._prompt_tokens(messages)
        request = RequestFeatures(
            prompt_tokens=prompt_tokens,
            # no answer outgrows the local context: a client's max_tokens of 10^6 must not
            # make the memory, budget or latency rule fire on tokens nobody can produce
            expected_output_tokens=max(1, min(
                params.max_tokens, self.engine.info.context_length - prompt_tokens)),
            task_cues=task_cues(prompt),
        )
        router, router_problem = self._router_verdict(prompt)
        online = self._online if self.config.policy.bandit else None
        # The decision keeps the context vector: feedback learns from it without recomputing.
        bandit = None if online is None else online.verdict(
            context_vector(online.features, router, request.prompt_tokens,
                           request.task_cues))
        inputs = PolicyInputs(
            mode=mode,
            request=request,
            snapshot=snapshot,
            privacy_block=prepared.blocked,
            router=router,
            router_problem=router_problem,
            bandit=bandit,
            latency=LatencyEstimates(
                local_tokens_per_s=self._speed.get("local"),
                local_prompt_tokens_per_s=self._speed.get("local_prefill"),
                cloud_tokens_per_s=self._speed.get("cloud"),
            ),
            circuit_open=not cloud.client.breaker.peek()[0],
        )
        policy = self.config.policy
        projected = request.prompt_tokens + request.expected_output_tokens
        reservation = None
        with self._budget_lock:  # no other plan reads the budget between ours and our claim
            inputs = dataclasses.replace(inputs, budget=self._budget_used())
            decision = decide(inputs, policy)
            if decision.route == "cloud" and _budget_set(policy):
                reservation = self._reserved.reserve(projected)
        error = decision.error()
        if error is not None:
            raise error
        route: Route = "local" if decision.route == "refuse" else decision.route
        return Plan(route, decision.reason, prepared, fallback=mode != "cloud-only",
                    decision=decision.to_dict(), reservation=reservation,
                    projected_tokens=projected)

    def _escalation_budget(self, plan: Plan,
                           extra_tokens: Callable[[], int] | None = None) -> tuple[Plan, str]:
        """A cascade about to escalate (its plan reserved nothing): the `budget` rule again,
        now, on today's spending and open reservations, for the plan's projection plus
        `extra_tokens()` (the draft going along; counted only when a budget is set). Within
        the budget, the projection is
        reserved like a cloud request's (released when the answer is logged, or lapsing
        after the TTL); past it, the caller must not escalate. Returns the plan with that
        reservation and the rule's verdict under its decision's `escalation`, and "" or, when
        the budget is spent, the rule's detail. With no budget set: the plan unchanged, ""."""
        policy = self.config.policy
        if not _budget_set(policy):
            return plan, ""
        tokens = plan.projected_tokens + (extra_tokens() if extra_tokens is not None else 0)
        with self._budget_lock:  # as in `plan`: no one reads the budget between ours and our claim
            entry = budget_rule(tokens, self._budget_used(), policy)
            key = None if entry.fired else self._reserved.reserve(tokens)
        decision = (None if plan.decision is None
                    else {**plan.decision, "escalation": entry.to_dict()})
        plan = dataclasses.replace(plan, decision=decision,
                                   reservation=plan.reservation if key is None else key)
        return plan, entry.detail if entry.fired else ""

    def _prompt_tokens(self, messages: Sequence[Message]) -> int:
        engine = self.engine
        return engine.count_tokens(engine.render(messages))

    def _router_verdict(self, prompt: str) -> tuple[RouterVerdict | None, str]:
        """The configured router's verdict, or None and why not. A router file that cannot
        be loaded leaves routing to the other rules (logged once, and in every trace), so a
        bad `policy.router_path` does not fail requests, cloud-only ones included."""
        policy = self.config.policy
        path = policy.router_path
        if not (policy.use_router and path):
            return None, ""
        loaded = self._router
        if loaded is not None and loaded.path == path:
            if loaded.router is not None:
                return loaded.router.verdict(prompt), ""
            if loaded.mtime_ns == _mtime_ns(path):  # the same unusable file
                return None, loaded.problem
        from runtime.router.base import RouterError

        try:
            from runtime.router.store import load_router

            router = load_router(path)
        except (RouterError, ImportError) as exc:
            why = (f"the router needs the router extra (pip install 'tandem-llm[router]'): "
                   f"{exc}" if isinstance(exc, ImportError) else str(exc))
            problem = f"policy.router_path unusable, routing without it: {why}"
            log.warning("%s", problem)
            self._router = _LoadedRouter(path, problem=problem, mtime_ns=_mtime_ns(path))
            return None, problem
        self._router = _LoadedRouter(path, router)
        return router.verdict(prompt), ""

    def _budget_used(self) -> BudgetState:
        """Today's cloud use from telemetry (a budget needs telemetry: `TandemConfig`
        refuses one with it off) plus what requests still running have reserved, and its
        cost at the configured price."""
        tokens = self.telemetry.cloud_tokens_today() if self.telemetry else 0
        tokens += self._reserved.total()
        price = self.config.policy.cloud_cost_per_1k_tokens
        return BudgetState(cloud_tokens_used=tokens, cloud_cost_used=tokens / 1000 * price)

    def _observe_speed(self, result: Result) -> None:
        """Running averages of measured speeds, for the latency rule."""
        key = result.source
        rate = result.timings.tokens_per_s
        if rate > 0:
            old = self._speed.get(key)
            self._speed[key] = rate if old is None else 0.8 * old + 0.2 * rate
        # prefill: from getting the engine to the first token (not the time queued for it)
        prefill_ms = result.timings.ttft_ms - result.timings.queued_ms
        if key == "local" and prefill_ms > 0 and result.usage.prompt_tokens:
            prefill = result.usage.prompt_tokens / (prefill_ms / 1e3)
            old = self._speed.get("local_prefill")
            self._speed["local_prefill"] = prefill if old is None else 0.8 * old + 0.2 * prefill

    def feedback(self, answer_id: str, good: bool, note: str = "") -> None:
        """Record a user's verdict on an answer (telemetry must be on).

        With `policy.bandit` on, the bandit also learns from it: the arm that actually
        answered (the answer's `source`) learns the answer's quality (the price of the cloud
        is charged when choosing), on the context its decision recorded. Only an answer's
        first verdict teaches the bandit (a LinUCB update cannot be taken back); answers
        planned without the bandit teach it nothing, nor do device answers the cloud had a
        part in (a continuation of a half-sent cloud answer). A later verdict replaces the
        stored one. A note over `telemetry.MAX_NOTE` characters is a
        ValueError.
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
            if before["source"] == "local" and before.get("cloud_tokens"):
                # The device finished what the cloud began (or the cloud's reply was
                # unusable): neither arm alone earned this verdict.
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
        cancel = cancel or CancelEvent()
        started = time.perf_counter()
        plan = self.plan(msgs, chosen, params, self.monitor.snapshot())
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        context = StreamContext(rid, _last_user_text(msgs), plan)
        if plan.route == "cloud":
            stream = ResultStream(cancel, rid=rid, context=context, pace_s=pace_s)
            stream._pieces = routes.run_cloud(self, stream, msgs, chosen, params, plan, started)
            return stream
        slot = self._admit()
        try:
            # tokenises: a context overflow raises here, before the first token
            local = LocalRun.start(self, msgs, params, cancel, pace_s=pace_s)
        except BaseException:
            slot.release()
            raise
        stream = ResultStream(cancel, slot, rid=rid, context=context, pace_s=pace_s)
        if plan.route == "cascade" and streaming:
            pieces = routes.run_cascade_stream(self, stream, slot, local, msgs, chosen, params,
                                               plan, started)
        elif plan.route == "cascade":
            pieces = routes.run_cascade(self, stream, slot, local, msgs, chosen, params, plan,
                                        started)
        else:
            pieces = routes.run_local(self, stream, slot, local, chosen, plan, started)
        stream._pieces = pieces
        return stream

    def _mode(self, mode: str | None) -> Mode:
        chosen = mode or self.config.runtime.mode
        if chosen not in MODES:
            raise ModeError(f"unknown mode {chosen!r} (one of {', '.join(MODES)})")
        return chosen  # type: ignore[return-value]

    def _admit(self) -> Slot:
        """A place in the local engine's queue (`QueueFullError` when it is full)."""
        return self._queue.admit()

    def _record_choice(self, result: ChoiceResult, prompt: str,
                       reservation: int | None = None) -> None:
        self._log_answer(lambda t: t.record_choice(result, prompt))
        self._reserved.release(reservation)

    def _log_answer(self, write: Callable[[Telemetry], None]) -> None:
        """Write an answer's telemetry row, if telemetry is on; a database error costs a
        warning, never the user's answer."""
        if self.telemetry is not None:
            try:
                write(self.telemetry)
            except sqlite3.Error as exc:
                log.warning("telemetry not recorded: %s", exc)

    def _finish(self, stream: ResultStream, result: Result) -> None:
        ctx = stream.context
        if ctx is not None:
            result = dataclasses.replace(result, id=ctx.rid, decision=ctx.plan.decision)
        stream.result = result
        self._observe_speed(result)
        if ctx is not None:
            prompt = ctx.prompt
            self._log_answer(lambda t: t.record(result, prompt))
            self._reserved.release(ctx.plan.reservation)  # logged: telemetry counts it now
        for listener in self.listeners:
            listener(result)


def _read_at_start(config: TandemConfig) -> dict[str, Any]:
    """The settings `Runtime.__init__` reads once, by config key."""
    p = config.policy
    return {
        "model": config.model, "monitor": config.monitor, "privacy": config.privacy,
        "offload": config.offload, "runtime.queue_size": config.runtime.queue_size,
        "runtime.telemetry_path": config.runtime.telemetry_path,
        "runtime.telemetry_keep_days": config.runtime.telemetry_keep_days,
        # local-only at start builds no gateway client (and the monitor never probes it)
        "runtime.mode (to or from local-only, with a gateway configured)":
            config.runtime.mode == "local-only" if config.offload.configured else None,
        "policy.bandit": p.bandit, "policy.bandit_path": p.bandit_path,
        "policy.bandit_alpha": p.bandit_alpha, "policy.bandit_cloud_cost": p.bandit_cloud_cost,
        # The bandit's context layout follows whether a router is configured at start.
        "policy.router_path (to or from none: the bandit's context layout)":
            _bandit_layout(config) if p.bandit else None,
    }


def _budget_set(policy: PolicyConfig) -> bool:
    """A daily cloud budget is configured: only then are reservations taken."""
    return policy.daily_cloud_tokens > 0 or policy.daily_cloud_cost > 0


def _bandit_layout(config: TandemConfig) -> tuple[str, ...]:
    """The online bandit's context layout under `config`: a router configured or not."""
    return layout(bool(config.policy.use_router and config.policy.router_path))


class _LockedChooser:
    """`Runtime.chooser`: the lazily loaded `LocalChooser`, one question at a time."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def choose(self, question: str, options: Sequence[str]) -> Choice:
        """Raises `QueueFullError` when `runtime.queue_size` questions already wait."""
        from runtime.choice import LocalChooser

        rt = self._rt
        with rt._choice_queue.admit(), rt._chooser_lock:
            if rt._closed:  # it would load its models again, hundreds of MB
                raise EngineError("the runtime is closed")
            if rt._chooser is None:
                with rt._swap_lock:
                    config = rt.config
                    rt._chooser_calibration = config.runtime.choice_calibration
                try:
                    rt._chooser = LocalChooser(config.runtime.choice_calibration,
                                               threshold=config.runtime.choice_threshold,
                                               threads=config.model.threads)
                except BaseException:
                    rt._chooser_calibration = None
                    raise
            return rt._chooser.choose(question, options)


__all__ = ["Plan", "ResultStream", "Runtime", "RunningConfidence", "to_messages"]


def _mtime_ns(path: str) -> int | None:
    """A file's modification time, None when it cannot be read."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
