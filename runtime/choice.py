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

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kernels.options import OptionScorer
from runtime.calibration import (
    PEER_FEATURES,
    CalibratedConfidence,
    CalibrationError,
    mc_features,
    peer_features,
)

DEFAULT_CALIBRATION = Path(__file__).resolve().parent / "data" / "calibration-arc.json"
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

    @property
    def escalate(self) -> bool:
        """True when the device is not confident enough: ask the cloud instead."""
        return self.p_correct < self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "escalate": self.escalate}


class LocalChooser:
    """The local model answers multiple-choice questions; a fitted model says how surely.

    `calibration`: a `CalibratedConfidence` or a path to its JSON (default: the bundled
    ARC-Easy fit). The answering model and the peer are the ones the calibration was fitted
    with (its `meta`); passing `model`/`peer` that differ raises `CalibrationError`.
    Loads one `Llama(logits_all=True)` per model; call from one thread.
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
               else CalibratedConfidence.load(calibration or DEFAULT_CALIBRATION))
        fitted_model = str(cal.meta.get("model", ""))
        fitted_peer = str(cal.meta.get("peer", ""))
        model = model or fitted_model or DEFAULT_MODEL
        if fitted_model and model != fitted_model:
            raise CalibrationError(
                f"calibration: fitted on {fitted_model}'s signals, not {model}'s "
                "(fit one for it with `python -m benchmarks.cascade --model ...`)")
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
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        opts = list(options)
        if len(opts) < 2:
            raise ValueError(f"need at least 2 options, got {len(opts)}")
        for i, o in enumerate(opts):
            if not isinstance(o, str) or not o.strip():
                raise ValueError(f"option {i} must be a non-empty string")
        own = self._scorer.score(question, opts)
        signals = mc_features(own, question, opts)
        if self._peer is not None:
            signals |= peer_features(own, self._peer.score(question, opts, unconditional=False))
        p = self.calibration.predict(signals)  # names a missing signal if the file wants one
        wanted = {name: signals[name] for name in self.calibration.features}
        return Choice(index=own.chosen, option=opts[own.chosen], p_correct=p,
                      threshold=self.threshold,
                      signals=wanted, model=self.model, peer=self.peer)

    def close(self) -> None:
        self._scorer.close()
        if self._peer is not None:
            self._peer.close()

    def __enter__(self) -> LocalChooser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
