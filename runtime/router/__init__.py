"""Learning to collaborate: routers that decide, from the prompt alone, who should answer.

The learned router (`LearnedRouter`) is trained offline on labelled prompts
(`tandem router train`), calibrated to a target cloud share (`tandem router calibrate`)
and loaded by the runtime from a small NPZ file. `LinUcbBandit` keeps learning online from
feedback: each arm learns its answers' quality, and the cloud's price is charged when the
arms are compared. `metrics` holds RouteLLM's APGR / CPT measures.

Names are imported lazily: the policy needs only `RouterVerdict`, and must not pull in
scikit-learn (the `router` extra) on a device that runs without a learned router.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.router.bandit import BanditConfig, LinUcbBandit, cost_aware_reward, simulate
    from runtime.router.base import (
        Router,
        RouterDataError,
        RouterError,
        RouterFileError,
        RouterVerdict,
    )
    from runtime.router.calibration import calibrate, cloud_fraction, threshold_for_fraction
    from runtime.router.data import RoutingData, load_routing_data
    from runtime.router.embedding import EmbeddingUnavailable, SentenceEncoder
    from runtime.router.evaluation import Evaluation, evaluate
    from runtime.router.learned import LearnedRouter, TrainParams
    from runtime.router.metrics import RoutingCurve, oracle_scores, routing_curve
    from runtime.router.store import load_router, save_router

_WHERE = {
    "BanditConfig": "bandit", "LinUcbBandit": "bandit", "cost_aware_reward": "bandit",
    "simulate": "bandit", "Router": "base", "RouterDataError": "base", "RouterError": "base",
    "RouterFileError": "base", "RouterVerdict": "base", "calibrate": "calibration",
    "cloud_fraction": "calibration", "threshold_for_fraction": "calibration",
    "RoutingData": "data", "load_routing_data": "data", "EmbeddingUnavailable": "embedding",
    "SentenceEncoder": "embedding", "Evaluation": "evaluation", "evaluate": "evaluation",
    "LearnedRouter": "learned",
    "TrainParams": "learned", "RoutingCurve": "metrics", "oracle_scores": "metrics",
    "routing_curve": "metrics", "load_router": "store", "save_router": "store",
}
__all__ = [
    "BanditConfig",
    "EmbeddingUnavailable",
    "Evaluation",
    "LearnedRouter",
    "LinUcbBandit",
    "Router",
    "RouterDataError",
    "RouterError",
    "RouterFileError",
    "RouterVerdict",
    "RoutingCurve",
    "RoutingData",
    "SentenceEncoder",
    "TrainParams",
    "calibrate",
    "cloud_fraction",
    "cost_aware_reward",
    "evaluate",
    "load_router",
    "load_routing_data",
    "oracle_scores",
    "routing_curve",
    "save_router",
    "simulate",
    "threshold_for_fraction",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'runtime.router' has no attribute {name!r}")
    return getattr(importlib.import_module(f"runtime.router.{_WHERE[name]}"), name)
