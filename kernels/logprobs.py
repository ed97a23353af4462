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
    # Not np.dot: that goes to BLAS, whose threads fight llama.cpp's for the cores (3x slower).
    mean_logit = float((shifted * x).sum()) / total
    return lse, max(0.0, lse - mean_logit)


def log_softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """The full log-softmax (used by tests and by engines that expose whole distributions)."""
    x = logits.astype(np.float64, copy=False)
    peak = float(x.max())
    out: npt.NDArray[np.float64] = x - (peak + math.log(float(np.exp(x - peak).sum())))
    return out


class StepRecorder:
    """Records each step's log-sum-exp and entropy from its logits.

    Two ways in: as a llama-cpp-python logits processor (`__call__`, which returns the logits
    unchanged, so sampling is exactly what it would be without it), or `observe()` on a view
    of the step's logits read straight from the context after sampling (what the llama.cpp
    engine does: the processor path makes llama-cpp-python build a numpy record array per
    step, which costs more than the statistics themselves).
    Work per step is a few vectorised passes over preallocated float32 buffers (~35 us for
    a 49k vocabulary): the decode loop's budget is a few per cent of ~7 ms per token.
    """

    __slots__ = ("logits", "_work", "lse", "entropy")

    def __init__(self) -> None:
        self.logits: npt.NDArray[np.float32] | None = None
        self._work: npt.NDArray[np.float32] | None = None
        self.lse = math.nan
        self.entropy = math.nan

    def __call__(
        self, _input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        if self.logits is None or self.logits.shape != scores.shape:
            self.logits = np.empty(scores.shape, dtype=np.float32)
            self._work = np.empty(scores.shape, dtype=np.float32)
        x, work = self.logits, self._work
        assert work is not None
        # Later samplers in the chain reorder the buffer in place: keep our own copy.
        np.copyto(x, scores)
        peak = float(x.max())
        np.subtract(x, peak, out=work)
        np.exp(work, out=work)
        total = float(work.sum(dtype=np.float64))
        self.lse = peak + math.log(total)
        np.multiply(work, x, out=work)  # not np.dot: BLAS threads would fight llama.cpp's
        self.entropy = max(0.0, self.lse - float(work.sum(dtype=np.float64)) / total)
        return scores

    def logprob(self, token_id: int) -> float:
        if self.logits is None:
            return math.nan
        return float(self.logits[token_id]) - self.lse

    def observe(self, logits: npt.NDArray[np.float32]) -> None:
        """Record a step from a read-only view of its logits (no copy is kept)."""
        if self._work is None or self._work.shape != logits.shape:
            self._work = np.empty(logits.shape, dtype=np.float32)
        work = self._work
        peak = float(logits.max())
        np.subtract(logits, peak, out=work)
        np.exp(work, out=work)
        # float32 sums (numpy sums pairwise: ~1e-6 relative here) and einsum, not np.dot
        # (BLAS threads would fight llama.cpp's): ~35 us per step for a 49k vocabulary.
        total = float(work.sum())
        self.lse = peak + math.log(total)
        self.entropy = max(0.0, self.lse - float(np.einsum("i,i->", work, logits)) / total)
        self.logits = logits
