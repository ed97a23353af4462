"""How each route runs once planned: local, cascade (whole answer or streamed), cloud.

Each function is a generator of text pieces driven by a `ResultStream`; it ends by handing
the finished `Result` to `Runtime._finish` (labels, telemetry, listeners). The fallbacks
between routes live here too: an escalation whose cloud call fails is answered (or
continued) on the device, and says so in its reason.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from kernels import GenerationParams, Message
from runtime.cloud import DRAFT_INSTRUCTION
from runtime.confidence import NO_CONFIDENCE, Checkpoint, Confidence
from runtime.errors import OffloadError
from runtime.local import LocalRun
from runtime.request import CancelEvent
from runtime.result import Result, Timings, Usage

if TYPE_CHECKING:
    from runtime.cloud import Prepared
    from runtime.config import Mode
    from runtime.facade import Runtime
    from runtime.offload import CloudStream
    from runtime.request import Plan, ResultStream, Slot


def run_local(
    rt: Runtime, stream: ResultStream, slot: Slot, local: LocalRun, mode: Mode, plan: Plan,
    started: float,
) -> Iterator[str]:
    def answered() -> Result:
        return local.result(plan.reason, mode, started, rt.monitor.snapshot(), plan.prepared)

    try:
        yield from local.pieces()
    except GeneratorExit:
        _closed_early(rt, stream, answered)
        raise
    finally:
        local.close()
        slot.release()
    rt._finish(stream, answered())


def run_cascade(
    rt: Runtime, stream: ResultStream, slot: Slot, local: LocalRun, msgs: list[Message],
    mode: Mode, params: GenerationParams, plan: Plan, started: float,
) -> Iterator[str]:
    """Whole local answer, then escalate if its confidence is below the threshold.

    Early escalation (`runtime.early_escalation_tokens` / `_margins`): at the first
    checkpoint K where the running score is below threshold - margin_K, decoding stops and
    the request escalates at once (the margins keep this from escalating answers the whole
    answer's score would keep; `benchmarks.early_escalation` measures both with the same
    `EarlyEscalation` rule). The daily cloud budget is checked first: spent, decoding goes on
    and the whole answer is judged as without the early rule.
    """
    cfg = rt.config.runtime
    threshold = cfg.confidence_threshold
    rule = cfg.early_escalation
    fired: Checkpoint | None = None
    try:
        seen = 0
        for _ in local.pieces():
            if rule is not None and local.tokens < params.max_tokens:  # else nothing to save
                fired = rule.check(seen, local.running, threshold)
                seen = local.tokens
                if fired is not None:
                    plan, spent = _escalation_budget(rt, stream, plan)
                    if not spent:
                        local.cancel()  # stop decoding an answer we will not use
                        break
                    fired, rule = None, None  # the budget says no: the device goes on
    finally:
        local.close()
        slot.release()
    conf = local.confidence
    if fired is not None and not local.cancelled_by_user:
        why = (f"local confidence {conf.score:.2f} over the first {local.tokens} tokens "
               f"< threshold {threshold:.2f} - margin {fired.margin:.2f} at checkpoint "
               f"{fired.tokens} (early escalation)")
        yield from escalate(rt, stream, local, msgs, mode, params, plan, started, why,
                            claimed=True)
        return
    if not local.cancelled and not local.text.strip():
        why = "the device's answer is empty"
        yield from escalate(rt, stream, local, msgs, mode, params, plan, started, why,
                            claimed=fired is not None)
        return
    if local.cancelled or not (conf.available and conf.score < threshold):
        reason = f"mode prefer-local: {_kept(conf, threshold)}, the device answers"
        result = local.result(reason, mode, started, rt.monitor.snapshot(), plan.prepared)
        rt._finish(stream, result)
        yield result.text
        return
    why = f"local confidence {conf.score:.2f} < threshold {threshold:.2f}"
    yield from escalate(rt, stream, local, msgs, mode, params, plan, started, why)


def _kept(conf: Confidence, threshold: float, opening: str = "") -> str:
    """Why a local answer stays: its confidence clears the threshold, or there is none."""
    if not conf.available:
        return "no local confidence (the engine gave no log-probs to score)"
    return f"local confidence {conf.score:.2f}{opening} >= threshold {threshold:.2f}"


def run_cascade_stream(
    rt: Runtime, stream: ResultStream, slot: Slot, local: LocalRun, msgs: list[Message],
    mode: Mode, params: GenerationParams, plan: Plan, started: float,
) -> Iterator[str]:
    """Hold the first K local tokens; escalate if their confidence is below threshold.

    The reason of a kept answer gives the confidence the decision was made on (over the
    tokens held when it was made), not the whole answer's, which `Result.confidence`
    reports: the two differ, and the decision never saw the later tokens. An unconfident
    opening with the daily cloud budget spent is kept too, and its reason says so.
    """
    k = rt.config.runtime.stream_decide_tokens
    threshold = rt.config.runtime.confidence_threshold
    held: list[str] = []
    decided = False
    at_decision: tuple[int, Confidence] | None = None  # (tokens, confidence) when decided
    spent = ""  # why the budget refused the escalation the decision wanted
    claimed = False  # the decision claimed the escalation's tokens on the budget

    def kept() -> Result:
        tokens, conf = at_decision or (local.tokens, local.confidence)
        opening = f" over the first {tokens} tokens"
        if spent:
            reason = (f"mode prefer-local: local confidence {conf.score:.2f}{opening} < "
                      f"threshold {threshold:.2f}, {_not_escalated(spent)}")
        else:
            reason = (f"mode prefer-local: {_kept(conf, threshold, opening)}, "
                      "the device answers")
        return local.result(reason, mode, started, rt.monitor.snapshot(), plan.prepared)

    try:
        for piece in local.pieces():
            if decided:
                yield piece
                continue
            held.append(piece)
            if local.tokens >= k:
                conf = local.confidence
                if conf.available and conf.score < threshold:
                    plan, spent = _escalation_budget(rt, stream, plan)
                    if not spent:
                        claimed = True
                        local.cancel()  # early escalation: stop decoding what we won't use
                        break
                decided = True
                at_decision = (local.tokens, conf)
                yield from held  # one by one: each piece keeps its tokens
    except GeneratorExit:
        _closed_early(rt, stream, kept)
        raise
    finally:
        local.close()
        slot.release()
    conf = local.confidence
    if not decided and not local.cancelled and not "".join(held).strip():
        why = "the device's answer is empty"
        yield from escalate(rt, stream, local, msgs, mode, params, plan, started, why,
                            claimed=claimed)
        return
    if decided or local.cancelled_by_user or not (conf.available and conf.score < threshold):
        if not decided and held:
            yield from held
        rt._finish(stream, kept())
        return
    why = (f"local confidence {conf.score:.2f} over the first {local.tokens} tokens "
           f"< threshold {threshold:.2f}")
    yield from escalate(rt, stream, local, msgs, mode, params, plan, started, why,
                        claimed=claimed)


def _escalation_budget(rt: Runtime, stream: ResultStream, plan: Plan,
                       extra_tokens: Callable[[], int] | None = None) -> tuple[Plan, str]:
    """`Runtime._escalation_budget` for a streamed request: the plan it returns (with the
    escalation's reservation and budget verdict) becomes the stream's, which `_finish`
    logs and releases."""
    plan, spent = rt._escalation_budget(plan, extra_tokens)
    if stream.context is not None:
        stream.context = dataclasses.replace(stream.context, plan=plan)
    return plan, spent


def _not_escalated(spent: str) -> str:
    """The end of the reason of an answer the daily cloud budget kept on the device."""
    return f"not escalated: {spent}; the device answers"


def escalate(
    rt: Runtime, stream: ResultStream, local: LocalRun, msgs: list[Message], mode: Mode,
    params: GenerationParams, plan: Plan, started: float, why: str, *, claimed: bool = False,
) -> Iterator[str]:
    """Ask the cloud for the answer the device was unsure of (with the device's draft, if
    `runtime.send_draft`). The cloud's answer is read as a stream linked to the request's
    cancel, so a client that leaves ends the cloud call at once, not at its deadline.

    First the escalation claims its tokens on the daily cloud budget (the plan's projection,
    plus the draft's when it goes along), unless `claimed` (an early escalation claims before
    it stops the local decoding); with the budget spent, the device's answer stands.
    """
    assert rt.cloud is not None and plan.prepared is not None
    prepared = plan.prepared
    draft = local.text
    sent_msgs = msgs  # the request as the cloud reads it, for counting its tokens
    along = ""
    if rt.config.runtime.send_draft and draft.strip() and not local.cancelled:
        with_draft, kept_back = rt.cloud.with_draft(prepared, draft)
        if kept_back:
            along = f"; the local draft stayed on the device ({kept_back})"
        else:
            prepared = with_draft
            sent_msgs = [*msgs, Message("assistant", draft), Message("user", DRAFT_INSTRUCTION)]
            along = "; the local draft went along to be refined"
    if not claimed:
        def draft_tokens() -> int:  # rendered and counted only when a budget is set
            return rt._prompt_tokens(sent_msgs) - rt._prompt_tokens(msgs)

        plan, spent = _escalation_budget(
            rt, stream, plan, None if sent_msgs is msgs else draft_tokens)
        if spent:  # the device's answer stands, whole: nothing stopped its decoding
            result = local.result(f"mode prefer-local: {why}, {_not_escalated(spent)}", mode,
                                  started, rt.monitor.snapshot(), plan.prepared)
            rt._finish(stream, result)
            yield result.text
            return
    why += along
    cancel = stream._cancel
    parts: list[str] = []  # as they arrive: a stream that fails midway still spent them
    try:
        pieces, raw = rt.cloud.stream(prepared)
        for piece in _until_cancelled(pieces, raw, cancel):
            parts.append(piece)
    except OffloadError as exc:
        failed = f"mode prefer-local: {why}, but the cloud failed ({exc})"
        # The cloud read the request and wrote what came before the failure: count that
        # (the device's own answer follows, the cloud's text is not shown).
        partial = "".join(parts)
        spent_tokens = sum(_prefix_tokens(rt, sent_msgs, partial)) if partial else 0
        if cancel.is_set():  # the client left: nothing more to compute
            rt._finish(stream, dataclasses.replace(_sent(local.result(
                f"{failed}; cancelled", mode, started, rt.monitor.snapshot(), plan.prepared),
                prepared), cloud_tokens=spent_tokens))
            return
        if local.cancelled:  # early escalation stopped the local draft: finish it locally
            yield from local_after_cloud_failure(
                rt, stream, msgs, mode, params, plan, started, failed,
                cloud_tokens=spent_tokens)
            return
        result = dataclasses.replace(
            _sent(local.result(f"{failed}; the device answers", mode, started,
                               rt.monitor.snapshot(), plan.prepared), prepared),
            cloud_tokens=spent_tokens)
        rt._finish(stream, result)
        yield result.text
        return
    text = "".join(parts)
    finish = "cancelled" if cancel.is_set() else raw.finish_reason or "stop"
    result = cloud_result(
        rt, text, raw.usage, raw.model, finish, raw.timings, started,
        f"mode prefer-local: {why}, escalated to the cloud", mode,
        # the request as sent (with the draft, if it went along): its redactions are reported
        dataclasses.replace(plan, prepared=prepared), local.confidence,
        msgs=msgs, unrestored=pieces.unknown_placeholders,
    )
    rt._finish(stream, result)
    yield text


def _sent(result: Result, prepared: Prepared | None) -> Result:
    """`result`, reporting what was redacted in the request that went to the cloud (with
    the draft, if it went along), whoever answered in the end."""
    if prepared is None:
        return result
    return dataclasses.replace(result, redactions=dict(prepared.redactions))


def run_cloud(
    rt: Runtime, stream: ResultStream, msgs: list[Message], mode: Mode, params: GenerationParams,
    plan: Plan, started: float,
) -> Iterator[str]:
    assert rt.cloud is not None and plan.prepared is not None
    emitted: list[str] = []
    first: float | None = None

    def answered(finish: str) -> Result:  # the cloud's answer so far (`raw` is set by then)
        return cloud_result(
            rt, "".join(emitted), raw.usage, raw.model, finish,
            {**raw.timings, "first_text_s": (first or time.perf_counter()) - started},
            started, plan.reason, mode, plan, NO_CONFIDENCE, msgs=msgs,
            unrestored=pieces.unknown_placeholders)

    try:
        pieces, raw = rt.cloud.stream(plan.prepared)
        linked = _until_cancelled(pieces, raw, stream._cancel)
        try:
            for piece in linked:
                if first is None:
                    first = time.perf_counter()
                emitted.append(piece)
                yield piece
        except GeneratorExit:  # the tokens the cloud sent so far still count
            _closed_early(rt, stream, lambda: answered("cancelled"))
            raise
        finally:
            linked.close()
    except OffloadError as exc:
        if not plan.fallback:
            raise
        why = f"{plan.reason.split(':')[0]}: the cloud failed ({exc})"
        if emitted:
            # The answer is half shown: the device continues it rather than restarting, in
            # what is left of max_tokens (see `local_after_cloud_failure`).
            prefix = "".join(emitted)
            prompt_tokens, sent = _prefix_tokens(rt, msgs, prefix)
            if sent >= params.max_tokens:  # nothing left for the device to add
                rt._finish(stream, cloud_result(
                    rt, prefix, {"prompt_tokens": prompt_tokens, "completion_tokens": sent},
                    raw.model, "length",
                    {"first_text_s": (first or time.perf_counter()) - started}, started,
                    f"{why}; the answer had reached max_tokens", mode, plan, NO_CONFIDENCE))
                return
            yield from local_after_cloud_failure(
                rt, stream, msgs, mode, params, plan, started, why, prefix=prefix,
                prefix_tokens=(prompt_tokens, sent))
        else:
            yield from local_after_cloud_failure(
                rt, stream, msgs, mode, params, plan, started, why)
        return
    rt._finish(stream, answered(
        "cancelled" if stream._cancel.is_set() else raw.finish_reason or "stop"))


def _until_cancelled(
    pieces: Iterator[str], raw: CloudStream, cancel: threading.Event
) -> Generator[str, None, None]:
    """The cloud's text pieces until they end or the request is cancelled; the cloud stream
    is closed either way. A `CancelEvent` also ends a stream stalled between pieces."""
    if isinstance(cancel, CancelEvent):
        cancel.link(raw.cancel)
    try:
        for piece in pieces:
            yield piece
            if cancel.is_set():
                return
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def _prefix_tokens(rt: Runtime, msgs: list[Message], prefix: str) -> tuple[int, int]:
    """(the request's prompt tokens, the tokens of `prefix`, the cloud's text already sent),
    counted with the engine's tokenizer as the device reads them when it continues the
    answer (the cloud stream broke before it reported its usage)."""
    engine = rt.engine
    rendered = engine.render(msgs)
    prompt = engine.count_tokens(rendered)
    return prompt, max(1, engine.count_tokens(rendered + prefix) - prompt)


def local_after_cloud_failure(
    rt: Runtime, stream: ResultStream, msgs: list[Message], mode: Mode, params: GenerationParams,
    plan: Plan, started: float, why: str, prefix: str = "",
    prefix_tokens: tuple[int, int] = (0, 0), cloud_tokens: int = 0,
) -> Iterator[str]:
    """The device answers after the cloud failed, or continues the cloud's half-sent answer
    (`prefix`; `prefix_tokens`: the request's prompt tokens and the prefix's, from
    `_prefix_tokens`). A continuation is one answer with the cloud's part: it may add only
    what is left of `max_tokens` (the client asked for that many in all), and its usage is
    the request's prompt, not prompt + prefix as the device reads it, and the prefix's
    tokens + the device's as completion. `cloud_tokens`: what the failed cloud call spent
    when the device answers afresh (its text not shown: an escalation's cut-off answer)."""
    if prefix:
        params = dataclasses.replace(params, max_tokens=params.max_tokens - prefix_tokens[1])
    slot = rt._admit()
    try:
        local = LocalRun.start(rt, msgs, params, stream._cancel, prefix=prefix,
                               pace_s=stream.pace_s)
    except BaseException:
        slot.release()
        raise
    what = "continues the answer" if prefix else "answers"

    def answered() -> Result:
        # The request did go to the cloud (redacted): say what was redacted.
        result = _sent(local.result(f"{why}; the device {what}", mode, started,
                                    rt.monitor.snapshot(), plan.prepared, prefix=prefix),
                       plan.prepared)
        if not prefix:
            return dataclasses.replace(result, cloud_tokens=cloud_tokens)
        prompt, sent = prefix_tokens
        # The cloud read the prompt and wrote the prefix: that much was spent there.
        return dataclasses.replace(result, usage=Usage(
            prompt, sent + result.usage.completion_tokens), cloud_tokens=prompt + sent)

    try:
        yield from local.pieces()
    except GeneratorExit:
        _closed_early(rt, stream, answered)
        raise
    finally:
        local.close()
        slot.release()
    rt._finish(stream, answered())


def _closed_early(rt: Runtime, stream: ResultStream, partial: Callable[[], Result]) -> None:
    """The caller closed the stream mid-answer (`ResultStream.close()`): the answer so far
    is still finished like a cancelled one — logged in telemetry (its cloud tokens count
    toward the budget) and open to feedback — though nobody reads `stream.result`."""
    if stream.result is None:
        rt._finish(stream, partial())


def cloud_result(
    rt: Runtime, text: str, usage: Mapping[str, int], model: str, finish: str,
    timings: Mapping[str, float], started: float, reason: str, mode: Mode, plan: Plan,
    confidence: Confidence, *, msgs: Sequence[Message] | None = None,
    unrestored: Sequence[str] = (),
) -> Result:
    """A cloud answer's `Result`. An upstream that reported no usage (0 / 0) gets the
    device's count of the request (`msgs`) and of the answer instead, with the engine's
    tokenizer: the daily budget must not take such answers as free. `unrestored`: the
    placeholders the answer held that the request's vault never issued (the cloud made
    them up; they stay in the text), reported under `redactions["unrestored"]`."""
    done = time.perf_counter()
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    if prompt == 0 and completion == 0 and msgs:
        prompt = rt._prompt_tokens(msgs)
        completion = rt.engine.count_tokens(text) if text else 0
    first_s = float(timings.get("first_text_s", done - started))
    decode_s = (done - started) - first_s
    return Result(
        text=text,
        source="cloud",
        reason=reason,
        confidence=confidence,
        usage=Usage(prompt, completion),
        timings=Timings(
            queued_ms=0.0,
            ttft_ms=first_s * 1e3,
            total_ms=(done - started) * 1e3,
            tokens_per_s=(completion - 1) / decode_s if completion > 1 and decode_s > 0
            else 0.0,
        ),
        resources=rt.monitor.snapshot(),
        finish_reason="length" if finish == "length" else
        "cancelled" if finish == "cancelled" else "stop",
        model=model or "cloud",
        mode=mode,
        redactions={**(plan.prepared.redactions if plan.prepared else {}),
                    **({"unrestored": list(unrestored)} if unrestored else {})},
        cloud_tokens=prompt + completion,
    )
