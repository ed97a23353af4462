"""Threshold calibration: pick the score above which a target share of requests go out.

`tandem router calibrate --target-cloud-fraction F` runs this on a calibration set the
router was not trained on; the chosen threshold is saved in the router file and every
verdict compares its score against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.router.base import FloatArray
from runtime.router.learned import LearnedRouter


def threshold_for_fraction(scores: FloatArray, fraction: float) -> float:
    """A threshold t such that the share of `scores` strictly above t is as close to
    `fraction` as the scores allow (on a tie in that closeness, the smaller share).

    t lies midway between two consecutive distinct scores, so that new scores near the
    boundary split evenly rather than all going one way; equal scores are never split, so
    with ties the share is the nearest one reachable, not `fraction` itself.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"target cloud fraction must be in [0, 1], not {fraction}")
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise ValueError("cannot calibrate on an empty set")
    # k scores above the cut, for every k a cut can give: 0, n, and each change of value
    ks = np.concatenate([[0], np.flatnonzero(s[:-1] > s[1:]) + 1, [s.size]])
    k = int(ks[np.argmin(np.abs(ks / s.size - fraction))])  # argmin: the first, smallest
    if k == 0:
        return float(np.nextafter(s[0], np.inf))
    if k == s.size:
        return float(np.nextafter(s[-1], -np.inf))
    return float((s[k - 1] + s[k]) / 2.0)


def cloud_fraction(scores: FloatArray, threshold: float) -> float:
    """The share of `scores` that a router with this threshold sends to the cloud."""
    return float(np.mean(np.asarray(scores) > threshold))


def calibrate(router: LearnedRouter, prompts: Sequence[str], fraction: float) -> LearnedRouter:
    """`router` with the threshold that sends `fraction` of `prompts` to the cloud.

    A router that uses an embedding (and has its encoder) also gets a threshold for its
    n-gram fallback's scores, so a device without the embedding model keeps the share.
    """
    threshold = threshold_for_fraction(router.score(prompts), fraction)
    fallback = None
    if router.uses_embedding:
        fallback = threshold_for_fraction(router.with_encoder(None).score(prompts), fraction)
    elif router.embedding_model:
        # Scored by the fallback now: this threshold is the fallback's; keep the full one.
        return router.with_threshold(router.threshold, threshold)
    return router.with_threshold(threshold, fallback)
