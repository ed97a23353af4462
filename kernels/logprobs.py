"""Per-step distribution statistics computed from raw logits.

llama.cpp only keeps every step's logits with `logits_all=True`, which costs ~6x decode
time. Instead a logits processor sees each step's logits once, before sampling, and
records the log-sum-exp and the entropy; the chosen token's log-probability is then
`logit[token] - logsumexp`, the log-softmax evaluated at one point.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def step_stats(logits: npt.NDArray[np.floating]) -> tuple[float, float]:
    """Return (logsumexp, entropy in nats) of the softmax over `logits`."""
    x = logits.astype(np.float64, copy=False)
    peak = float(x.max())
    shifted = np.exp(x - peak)
    total = float(shifted.sum())
    lse = peak + math.log(total)
    # H = lse - E_p[x]; computing it this way needs one pass and no log of tiny p.
    mean_logit = float(np.dot(shifted, x)) / total
    return lse, max(0.0, lse - mean_logit)


def log_softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """The full log-softmax (used by tests and by engines that expose whole distributions)."""
    x = logits.astype(np.float64, copy=False)
    peak = float(x.max())
    out: npt.NDArray[np.float64] = x - (peak + math.log(float(np.exp(x - peak).sum())))
    return out


class StepRecorder:
    """A llama-cpp-python logits processor that records each step's statistics.

    It returns the logits unchanged, so sampling is exactly what it would be without it.
    """

    __slots__ = ("logits", "lse", "entropy")

    def __init__(self) -> None:
        self.logits: npt.NDArray[np.float32] | None = None
        self.lse = math.nan
        self.entropy = math.nan

    def __call__(
        self, _input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        # Later samplers in the chain reorder the buffer in place: keep our own copy.
        self.logits = np.array(scores, dtype=np.float32, copy=True)
        self.lse, self.entropy = step_stats(self.logits)
        return scores

    def logprob(self, token_id: int) -> float:
        if self.logits is None:
            return math.nan
        return float(self.logits[token_id]) - self.lse
