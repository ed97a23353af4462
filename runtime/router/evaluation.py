"""How well a trained router routes labelled prompts it was not trained on.

`evaluate(router, data)` gives RouteLLM's measures over every cloud share (APGR, CPT(50 %),
CPT(80 %), quality at 20/40/60 % cloud calls; `metrics`) and what the router's own threshold
does on that data: the share it sends to the cloud and the quality that gives. It is what
`tandem router evaluate` prints, e.g. to check that a router retrained on the device's
telemetry beats the one it would replace before swapping it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.router.base import RouterDataError
from runtime.router.data import RoutingData
from runtime.router.embedding_torch import for_batches
from runtime.router.learned import LearnedRouter
from runtime.router.metrics import routing_curve

SHARES: tuple[float, ...] = (0.2, 0.4, 0.6)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A router's routing quality on one labelled set."""

    router: str  # the router's name (hashed_lr, hashed_lr_knn, ...)
    trained_rows: int
    prompts: int
    weak_accuracy: float
    strong_accuracy: float
    apgr: float
    cpt50: float  # cloud share needed to recover half the weak-to-strong gap
    cpt80: float
    quality_at: dict[float, float]  # cloud share -> accuracy (SHARES)
    threshold: float  # the router's own (calibrated) threshold ...
    cloud_share: float  # ... the share it sends to the cloud here ...
    quality: float  # ... and the accuracy that gives
    recovered: float  # (quality - weak) / (strong - weak)

    def to_dict(self) -> dict[str, Any]:
        return {
            "router": self.router, "trained_rows": self.trained_rows, "prompts": self.prompts,
            "weak_accuracy": self.weak_accuracy, "strong_accuracy": self.strong_accuracy,
            "apgr": self.apgr, "cpt50": self.cpt50, "cpt80": self.cpt80,
            "quality_at": {str(k): v for k, v in self.quality_at.items()},
            "at_threshold": {"threshold": self.threshold, "cloud_share": self.cloud_share,
                             "quality": self.quality, "recovered": self.recovered},
        }


def evaluate(router: LearnedRouter, data: RoutingData) -> Evaluation:
    """`router` on `data`. A router that uses an embedding scores with the bulk encoder
    (torch if installed). Raises `RouterDataError` when the two models are equally accurate
    on `data`: there is no gap to recover, so the measures are undefined."""
    weak, strong = data.weak, data.strong
    if weak.mean() == strong.mean():
        raise RouterDataError(f"both models are right on {weak.mean():.1%} of these "
                              f"{len(data)} prompts: no gap to recover, nothing to measure")
    router = for_batches(router)
    scores = router.score(data.prompts)
    curve = routing_curve(scores, weak, strong)
    routed = scores > router.active_threshold
    quality = float(np.where(routed, strong, weak).mean())
    return Evaluation(
        router=router.name, trained_rows=router.trained_rows, prompts=len(data),
        weak_accuracy=curve.weak_quality, strong_accuracy=curve.strong_quality,
        apgr=curve.apgr(), cpt50=curve.cpt(0.5), cpt80=curve.cpt(0.8),
        quality_at={share: curve.quality_at(share) for share in SHARES},
        threshold=router.active_threshold, cloud_share=float(routed.mean()), quality=quality,
        recovered=(quality - curve.weak_quality)
        / (curve.strong_quality - curve.weak_quality),
    )
