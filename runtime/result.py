"""What the runtime returns: a `Result` that says where it was computed and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kernels import FinishReason, Usage

__all__ = ["Result", "Source", "Timings", "Usage"]
from runtime.confidence import Confidence
from runtime.monitor.snapshot import Snapshot

Source = Literal["local", "cloud"]


@dataclass(frozen=True, slots=True)
class Timings:
    queued_ms: float  # waiting for the local engine (0 for the cloud)
    ttft_ms: float  # request start to first text, queueing included
    total_ms: float
    tokens_per_s: float  # completion tokens / time from first token to last

    def to_dict(self) -> dict[str, float]:
        return {
            "queued_ms": round(self.queued_ms, 3),
            "ttft_ms": round(self.ttft_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "tokens_per_s": round(self.tokens_per_s, 3),
        }


@dataclass(frozen=True, slots=True)
class Result:
    """A finished answer.

    `source` is where the returned text was computed; `reason` says why there, in one line.
    `confidence` is the local model's (NaN score for a cloud answer without a local draft).
    """

    text: str
    source: Source
    reason: str
    confidence: Confidence
    usage: Usage
    timings: Timings
    resources: Snapshot
    finish_reason: FinishReason
    model: str
    mode: str
    redactions: dict[str, Any] = field(default_factory=dict)  # {counts: {TYPE: n}, blocked}
    decision: dict[str, Any] | None = None  # the policy's decision with its trace of rules
    id: str = ""  # the answer's id (the API's response id; feedback refers to it)
    # A local answer's tokens: (the text emitted at that step, its natural-log probability
    # under the model), in order; None for a cloud answer or an engine without log-probs.
    token_logprobs: tuple[tuple[str, float], ...] | None = None
    # Tokens this answer spent in the cloud (they count toward the daily budget): a cloud
    # answer's usage, or the cloud's part of a device answer that continued it.
    cloud_tokens: int = 0

    def tandem(self) -> dict[str, Any]:
        """The `tandem` object carried by API responses."""
        return {
            "id": self.id,
            "source": self.source,
            "reason": self.reason,
            "mode": self.mode,
            "confidence": self.confidence.to_dict(),
            "redactions": dict(self.redactions),
            "timings": self.timings.to_dict(),
            "resources": self.resources.to_dict(),
            "decision": self.decision,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_dict(),
            **self.tandem(),
        }
