"""Routing quality metrics, as RouteLLM defines them.

Routing the top fraction c of queries (by router score) to the strong model gives
quality(c) = mean over queries of (strong correct if routed else weak correct).
PGR(c) = (quality(c) - quality(0)) / (quality(1) - quality(0)), the share of the
weak-to-strong gap recovered. APGR is the area under PGR over c in [0, 1], by the
trapezoid rule on the grid c = 0, 0.01, ..., 1. CPT(x) is the smallest cloud share whose
PGR reaches x, searched exactly over every k/n. Ties in the score are split evenly
(the expected value under a random tie-break), so a constant router scores like random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.router.base import BoolArray, FloatArray

GRID = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True, slots=True)
class RoutingCurve:
    """Quality and PGR at every number k = 0..n of queries sent to the cloud."""

    quality: FloatArray  # length n + 1
    weak_quality: float
    strong_quality: float

    @property
    def pgr(self) -> FloatArray:
        gap = self.strong_quality - self.weak_quality
        out: FloatArray = (self.quality - self.weak_quality) / gap
        return out

    def quality_at(self, fraction: float) -> float:
        """Quality with `fraction` of the queries (rounded to a count) sent to the cloud."""
        n = self.quality.size - 1
        return float(self.quality[int(round(fraction * n))])

    def apgr(self) -> float:
        """Area under PGR over the cloud share, trapezoids on `GRID`."""
        n = self.quality.size - 1
        pgr = self.pgr[np.rint(GRID * n).astype(np.int64)]
        return float(np.trapezoid(pgr, GRID))

    def cpt(self, recovered: float) -> float:
        """Smallest cloud share (0-1) whose PGR reaches `recovered` (e.g. 0.5)."""
        n = self.quality.size - 1
        hits = np.nonzero(self.pgr >= recovered - 1e-12)[0]
        return float(hits[0]) / n if hits.size else float("nan")


def routing_curve(scores: FloatArray, weak: BoolArray, strong: BoolArray) -> RoutingCurve:
    """The quality curve of routing by `scores` (descending) on these labels."""
    scores = np.asarray(scores, dtype=np.float64)
    if not scores.size == weak.size == strong.size:
        raise ValueError("scores and labels differ in length")
    n = scores.size
    gain = strong.astype(np.float64) - weak.astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    s, g = scores[order], gain[order]
    # Replace each gain by the mean gain of its tie group: the expected value of a random order.
    starts = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
    sums = np.add.reduceat(g, starts)
    sizes = np.diff(np.r_[starts, n])
    g = np.repeat(sums / sizes, sizes)
    weak_q, strong_q = float(weak.mean()), float(strong.mean())
    if weak_q == strong_q:
        raise ValueError("weak and strong models have the same accuracy: PGR is undefined")
    quality = weak_q + np.r_[0.0, np.cumsum(g)] / n
    return RoutingCurve(quality=quality, weak_quality=weak_q, strong_quality=strong_q)


def oracle_scores(weak: BoolArray, strong: BoolArray) -> FloatArray:
    """The oracle's order: strong-only-right first, then ties, then weak-only-right last."""
    out: FloatArray = strong.astype(np.float64) - weak.astype(np.float64)
    return out
