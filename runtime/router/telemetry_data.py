"""Routing data from the device's own telemetry (`tandem router train --from-telemetry`).

The label is the user's verdict on local answers (`Telemetry.training_rows`): "good" means
the local model sufficed (weak right); "bad" means it did not, and the cloud model is
assumed to be right there (its answer to that prompt was never seen). So the learned
router's score is, in effect, the probability that a local answer would be judged bad.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.router.base import RouterDataError
from runtime.router.data import RoutingData
from runtime.router.learned import MIN_ROWS


class TelemetryDataError(RouterDataError):
    """The telemetry holds too few labelled answers, or only one verdict, to learn from."""


def telemetry_data(db: str | Path | None = None) -> RoutingData:
    """The judged local answers in telemetry database `db` (default: the device's file)."""
    from runtime.telemetry import Telemetry, TelemetryError, default_path

    path = Path(db) if db else default_path()
    if not path.is_file():  # Telemetry() would create an empty database here
        raise TelemetryDataError(f"no telemetry database at {path}")
    try:
        telemetry = Telemetry(path, read_only=True)
    except TelemetryError as exc:
        raise TelemetryDataError(str(exc)) from exc
    try:
        rows = list(telemetry.training_rows())
    finally:
        telemetry.close()
    if len(rows) < MIN_ROWS:
        raise TelemetryDataError(
            f"{path} has {len(rows)} local answers with feedback; training needs {MIN_ROWS}")
    weak = np.array([r.weak == 1 for r in rows])
    if weak.all() or not weak.any():
        verdict = "good" if weak.all() else "bad"
        raise TelemetryDataError(
            f"all {len(rows)} judged local answers in {path} are {verdict}: need both verdicts")
    return RoutingData(prompts=tuple(r.prompt for r in rows), weak=weak,
                       strong=np.array([r.strong == 1 for r in rows]),
                       groups=("",) * len(rows))
