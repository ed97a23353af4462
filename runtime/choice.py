"""Multiple choice on the device, with a calibrated probability that the answer is right.

`LocalChooser` answers a multiple-choice question with the local model (by option
log-likelihood, `kernels.options.OptionScorer`) and turns the signals that scoring leaves
on the device into P(right) with a `runtime.calibration.CalibratedConfidence`. Below
`threshold` the caller should escalate (`Choice.escalate`); the chooser never calls the
cloud itself.

The bundled calibration (`runtime/data/calibration-arc.json`) is the one
`benchmarks.cascade --format arc --limit 0` fitted on all 1,576 ARC-Easy items, with
SmolLM2-135M answering and Gemma 3 270M as the on-device peer: out of fold it reaches
AUROC 0.784 for "the local answer is right" (docs/confidence.md). Weights fitted on one
model's signals mean nothing for another's, so the chooser uses the models the file names
and refuses others.

    with LocalChooser() as chooser:
        c = chooser.choose("Which gas do plants take in?", ["oxygen", "carbon dioxide"])
        c.option, c.p_correct, c.escalate
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kernels import GenerationParams, Message
from kernels.base import check_text
from kernels.options import OptionScorer
from runtime.calibration import (
    MC_FEATURES,
    PEER_FEATURES,
    CalibratedConfidence,
    CalibrationError,
    mc_features,
    peer_features,
)
from runtime.errors import OffloadError

if TYPE_CHECKING:
    from runtime.facade import Runtime

_DATA = Path(__file__).resolve().parent / "data"
# Bundled fits (`python -m benchmarks.cascade --format arc --limit 0`), by name:
# "arc" reads SmolLM2 and a Gemma 3 270M peer (out-of-fold AUROC 0.784); "arc-light" reads
# SmolLM2 alone (AUROC 0.688) and never loads the peer: measured on 40 ARC-Easy questions,
# +168 MB resident instead of +516 MB, 0.20-0.21 s per question instead of 0.37-0.38
# (2 threads, alternated in one run).
BUNDLED_CALIBRATIONS = {"arc": _DATA / "calibration-arc.json",
                        "arc-light": _DATA / "calibration-arc-light.json"}
DEFAULT_CALIBRATION = BUNDLED_CALIBRATIONS["arc"]
DEFAULT_MODEL = "bundled:smollm2-135m"


@dataclass(frozen=True, slots=True)
class Choice:
    """The device's answer to one multiple-choice question."""

    index: int  # 0-based position of the chosen option
    option: str
    p_correct: float  # calibrated probability that `option` is right
    threshold: float
    signals: dict[str, float]  # the named signals the calibration read
    model: str
    peer: str  # "" when the calibration uses no peer model
    question_cut: int = 0  # tokens of the question's start the device could not read

    @property
    def escalate(self) -> bool:
        """True when the device is not confident enough: ask the cloud instead."""
        return self.p_correct < self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "escalate": self.escalate}


def calibration_path(spec: str | Path | None) -> Path:
    """The file a calibration spec names: "bundled:NAME" (`BUNDLED_CALIBRATIONS`), a path,
    or None / "" for the bundled ARC-Easy fit with the peer."""
    text = str(spec or "")
    if not text:
        return DEFAULT_CALIBRATION
    if text.startswith("bundled:"):
        name = text.removeprefix("bundled:")
        if name not in BUNDLED_CALIBRATIONS:
            raise CalibrationError(f"calibration: no bundled fit named {name!r} (bundled: "
                                   f"{', '.join(f'bundled:{n}' for n in BUNDLED_CALIBRATIONS)})")
        return BUNDLED_CALIBRATIONS[name]
    return Path(text)


class LocalChooser:
    """The local model answers multiple-choice questions; a fitted model says how surely.

    `calibration`: a `CalibratedConfidence`, or a spec for `calibration_path` (default: the
    bundled ARC-Easy fit with the peer; "bundled:arc-light" for SmolLM2 alone). The
    answering model and the peer are the ones the calibration was fitted with (its `meta`);
    passing `model`/`peer` that differ raises `CalibrationError`.
    Loads one `Llama` per model (`kernels.options.OptionScorer`); call from one thread.
    """

    def __init__(
        self,
        calibration: CalibratedConfidence | str | Path | None = None,
        *,
        threshold: float = 0.5,
        threads: int = 0,
        model: str | None = None,
        peer: str | None = None,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], not {threshold}")
        cal = (calibration if isinstance(calibration, CalibratedConfidence)
               else CalibratedConfidence.load(calibration_path(calibration)))
        fitted_model = str(cal.meta.get("model", ""))
        fitted_peer = str(cal.meta.get("peer", ""))
        model = model or fitted_model or DEFAULT_MODEL
        if fitted_model and model != fitted_model:
            raise CalibrationError(
                f"calibration: fitted on {fitted_model}'s signals, not {model}'s "
                "(fit one for it with `python -m benchmarks.cascade --model ...`)")
        unknown = [f for f in cal.features if f not in MC_FEATURES and f not in PEER_FEATURES]
        if unknown:
            raise CalibrationError(f"calibration: unknown signal(s) {', '.join(unknown)} "
                                   "(not in MC_FEATURES or PEER_FEATURES)")
        needs_peer = any(f in PEER_FEATURES for f in cal.features)
        if needs_peer:
            peer = peer or fitted_peer
            if not peer:
                raise CalibrationError("calibration: it reads peer signals but names no peer "
                                       "model (meta.peer); pass peer=")
            if fitted_peer and peer != fitted_peer:
                raise CalibrationError(
                    f"calibration: fitted with peer {fitted_peer}, not {peer}")
        elif peer:
            raise CalibrationError("calibration: it reads no peer signals; drop peer=")
        self.calibration = cal
        self.threshold = threshold
        self.model = model
        self.peer = peer if needs_peer and peer else ""
        self._scorer = OptionScorer(model, threads)
        self._peer: OptionScorer | None = None
        try:
            if self.peer:
                self._peer = OptionScorer(self.peer, threads)
        except BaseException:
            self._scorer.close()
            raise

    def choose(self, question: str, options: Sequence[str]) -> Choice:
        """The local answer to `question` among `options`, and P(it is right)."""
        question, opts = check_question(question, options)
        own = self._scorer.score(question, opts)
        signals = mc_features(own, question, opts)
        if self._peer is not None:
            peer = self._peer.score(question, opts, unconditional=False, familiarity=False)
            signals |= peer_features(own, peer)
        p = self.calibration.predict(signals)  # names a missing signal if the file wants one
        wanted = {name: signals[name] for name in self.calibration.features}
        return Choice(index=own.chosen, option=opts[own.chosen], p_correct=p,
                      threshold=self.threshold,
                      signals=wanted, model=self.model, peer=self.peer,
                      question_cut=own.dropped_tokens)

    def close(self) -> None:
        self._scorer.close()
        if self._peer is not None:
            self._peer.close()

    def __enter__(self) -> LocalChooser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the multiple-choice cascade in the runtime ------------------------------------------------

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CLOUD_INSTRUCTION = "Answer with the letter of the correct option only."
# A reply that is a letter ("B", "(B)", "B.") or opens with one and punctuation ("B. nitrogen",
# "B) …"), or says "the answer is B" / "option B". A capital starting a sentence ("A dog…",
# "I am not sure") is not a letter.
_LETTER_REPLIES = (
    re.compile(r"^\(?([A-Z])\)?[.):]?$"),
    re.compile(r"^\(?([A-Z])(?:\)|[.:])"),
    re.compile(r"\b(?:answer|option|choice)(?:\s+is)?[\s:]*\(?([A-Z])\b(?![\w'’])",
               re.IGNORECASE),
)
# A statement of the answer ("the answer is B", "Answer: B", "the correct option is B"): it
# outranks a letter mentioned in passing ("Option A is wrong; the answer is B.").
_ANSWER_STATEMENT = re.compile(
    r"\b(?:answer|option|choice)(?:\s+is|\s*:)\s*\(?([A-Z])\b(?![\w'’])", re.IGNORECASE)


def check_question(question: str, options: Sequence[str]) -> tuple[str, list[str]]:
    """The question and options trimmed of surrounding whitespace, as the device scores them
    and the cloud reads them (`cloud_prompt`), or ValueError naming what is wrong.

    Options that differ only in surrounding whitespace or case are refused: the device would
    score them as different answers, and a cloud reply could name one only by its letter.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    if isinstance(options, str):
        raise ValueError("options must be a list of strings, not one string")
    opts = list(options)
    if len(opts) < 2:
        raise ValueError(f"need at least 2 options, got {len(opts)}")
    if len(opts) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options, got {len(opts)}")
    check_text(question, "question")
    for i, o in enumerate(opts):
        if not isinstance(o, str) or not o.strip():
            raise ValueError(f"option {i} must be a non-empty string")
        check_text(o, f"option {i}")
    first: dict[str, int] = {}
    for i, o in enumerate(opts):
        j = first.setdefault(o.strip().casefold(), i)
        if j != i:
            raise ValueError(f"options {j} and {i} are the same answer ({opts[j]!r} and "
                             f"{o!r}, ignoring case and surrounding spaces)")
    return question.strip(), [o.strip() for o in opts]


def cloud_prompt(question: str, options: Sequence[str]) -> str:
    """The question as the cloud model sees it: lettered options, a one-letter reply asked."""
    lines = [question.strip(), ""]
    lines += [f"{LETTERS[i]}. {o.strip()}" for i, o in enumerate(options)]
    return "\n".join([*lines, "", CLOUD_INSTRUCTION])


def parse_reply(reply: str, options: Sequence[str]) -> int | None:
    """The option a cloud reply names, or None when it names none (or several).

    A letter in range counts when the reply is one ("B", "(B)"), states it ("The answer is
    B", "Answer: B"; the last such statement wins over any other letter), opens with one
    followed by punctuation ("B. nitrogen") or names one ("option B"); otherwise the reply
    must contain exactly one option's text.
    """
    text = reply.strip().replace("*", "").replace("`", "").strip()
    stated = [m.group(1) for m in _ANSWER_STATEMENT.finditer(text)
              if m.group(1).isupper() and LETTERS.index(m.group(1)) < len(options)]
    if stated:
        return LETTERS.index(stated[-1])  # the last statement: a reply may correct itself
    for pattern in _LETTER_REPLIES:
        m = pattern.search(text)
        if m is not None and m.group(1).isupper() and LETTERS.index(m.group(1)) < len(options):
            return LETTERS.index(m.group(1))
    folded = text.casefold()
    hits = [i for i, o in enumerate(options) if o.strip().casefold() in folded]
    return hits[0] if len(hits) == 1 else None


@dataclass(frozen=True, slots=True)
class ChoiceResult:
    """A multiple-choice answer from the runtime: which option, where it came from, why."""

    id: str  # "choice-…": the id `POST /v1/feedback` takes
    index: int
    option: str
    source: Literal["local", "cloud"]
    mode: str
    reason: str
    p_correct: float | None  # the device's calibrated P(its own answer is right); None: not asked
    local_index: int | None  # the device's own choice (differs from `index` after escalation)
    cloud_model: str = ""
    usage: dict[str, int] = field(default_factory=dict)  # the cloud call's tokens (local: {})
    redactions: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] | None = None  # the policy's decision and trace
    total_ms: float = 0.0
    # tokens of a long question's start the device cut to fit its context (it read the end,
    # with the options); the reason says so too
    question_cut: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _CloudNoOption(Exception):
    """The cloud replied, but its reply names no option."""


def run_choice(rt: Runtime, question: str, options: Sequence[str],
               mode: str | None = None) -> ChoiceResult:
    """`Runtime.choose`: the policy decides the route, as for any request.

    local: the device's chooser answers. cascade (prefer-local): the chooser answers, and a
    calibrated P(right) below `runtime.choice_threshold` escalates the question to the cloud,
    unless the daily cloud budget is spent by then (the device's answer stands).
    cloud: the cloud answers; if it fails (or names no option) the device answers, except in
    cloud-only mode, which raises. The question goes through the privacy filter like any
    request; a privacy block keeps it on the device.
    """
    question, opts = check_question(question, options)
    chosen = rt._mode(mode)
    started = time.perf_counter()
    msgs = [Message("user", cloud_prompt(question, opts))]
    params = GenerationParams(max_tokens=16, temperature=0.0)
    plan = rt.plan(msgs, chosen, params, rt.monitor.snapshot())
    threshold = rt.config.runtime.choice_threshold

    usage: dict[str, int] = {}

    def done(index: int, source: Literal["local", "cloud"], reason: str,
             local: Choice | None, cloud_model: str = "") -> ChoiceResult:
        cut = 0 if local is None else local.question_cut
        if cut:
            reason += (f" (the device read the question without its first {cut} tokens, "
                       "to fit its context)")
        result = ChoiceResult(
            id=f"choice-{uuid.uuid4().hex[:24]}", index=index, option=opts[index],
            source=source, mode=chosen, reason=reason,
            p_correct=None if local is None else local.p_correct,
            local_index=None if local is None else local.index, cloud_model=cloud_model,
            usage=dict(usage), redactions=dict(plan.prepared.redactions) if plan.prepared else {},
            decision=plan.decision, total_ms=(time.perf_counter() - started) * 1000,
            question_cut=cut)
        rt._record_choice(result, msgs[0].content, plan.reservation)
        return result

    def ask_cloud() -> tuple[int, str]:
        assert rt.cloud is not None and plan.prepared is not None
        text, reply = rt.cloud.complete(plan.prepared)
        # tokens spent count toward the daily budget even when the reply names no option
        usage.update(prompt_tokens=int(reply.usage.get("prompt_tokens", 0)),
                     completion_tokens=int(reply.usage.get("completion_tokens", 0)))
        index = parse_reply(text, opts)
        if index is None:
            raise _CloudNoOption(f"the cloud's reply named no option: {text[:80]!r}")
        return index, reply.model

    def local_choice() -> Choice:
        return rt.chooser.choose(question, opts)

    if plan.route == "cloud":
        try:
            index, model = ask_cloud()
            return done(index, "cloud", plan.reason, None, model)
        except (OffloadError, _CloudNoOption) as exc:
            if not plan.fallback:
                raise OffloadError(str(exc)) from exc
            c = local_choice()
            return done(c.index, "local", f"{plan.reason}, but {_failure(exc)}; the device "
                        "answers", c)
    c = local_choice()
    if plan.route == "local":
        return done(c.index, "local", plan.reason, c)
    if not c.p_correct < threshold:
        return done(c.index, "local", f"mode {chosen}: calibrated P(right) {c.p_correct:.2f} "
                    f">= threshold {threshold:.2f}, the device answers", c)
    why = f"mode {chosen}: calibrated P(right) {c.p_correct:.2f} < threshold {threshold:.2f}"
    # The plan reserved nothing: claim the escalation's tokens on the daily cloud budget now
    # (`done` logs the answer with the new plan's decision and releases its reservation).
    plan, spent = rt._escalation_budget(plan)
    if spent:
        return done(c.index, "local", f"{why}, not escalated: {spent}; the device answers", c)
    try:
        index, model = ask_cloud()
    except (OffloadError, _CloudNoOption) as exc:
        return done(c.index, "local", f"{why}, but {_failure(exc)}; the device answers", c)
    return done(index, "cloud", f"{why}, escalated to the cloud", c, model)


def _failure(exc: Exception) -> str:
    return str(exc) if isinstance(exc, _CloudNoOption) else f"the cloud failed ({exc})"
