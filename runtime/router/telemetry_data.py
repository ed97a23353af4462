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


def telemetry_data(db: str | Path | None = None, keep_days: float = 0.0) -> RoutingData:
    """The judged local answers in telemetry database `db` (default: the device's file);
    with `keep_days` > 0 (`runtime.telemetry_keep_days`) only those of the last that many
    days, as the runtime's retention keeps them (an older verdict no longer trains)."""
    from runtime.telemetry import Telemetry, TelemetryError, default_path

    path = Path(db) if db else default_path()
    if not path.is_file():  # Telemetry() would create an empty database here
        raise TelemetryDataError(f"no telemetry database at {path}")
    try:
        telemetry = Telemetry(path, read_only=True)
    except TelemetryError as exc:
        raise TelemetryDataError(str(exc)) from exc
    try:
        rows = list(telemetry.training_rows(keep_days))
        # only to say why there are too few: the judged answers outside the retention
        too_old = (sum(1 for _ in telemetry.training_rows(0)) - len(rows)
                   if keep_days and len(rows) < MIN_ROWS else 0)
    finally:
        telemetry.close()
    if len(rows) < MIN_ROWS:
        older = (f" ({too_old} more are older than runtime.telemetry_keep_days = {keep_days:g} "
                 "days)" if too_old else "")
        raise TelemetryDataError(f"{path} has {len(rows)} local answers with feedback{older}; "
                                 f"training needs {MIN_ROWS}")
    weak = np.array([r.weak == 1 for r in rows])
    if weak.all() or not weak.any():
        verdict = "good" if weak.all() else "bad"
        raise TelemetryDataError(
            f"all {len(rows)} judged local answers in {path} are {verdict}: need both verdicts")
    return RoutingData(prompts=tuple(r.prompt for r in rows), weak=weak,
                       strong=np.array([r.strong == 1 for r in rows]),
                       groups=("",) * len(rows))
