"""The router seam: a `Router` scores prompts by how much the cloud model is needed.

A score is a real number, higher meaning "send this one to the cloud first"; only the order
of scores matters to the evaluation, and a calibrated threshold turns it into a decision.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from runtime.errors import TandemError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Outcome classes of a labelled prompt: bit 0 = weak (local) right, bit 1 = strong right.
BOTH_WRONG, WEAK_ONLY, STRONG_ONLY, BOTH_RIGHT = 0, 1, 2, 3


def outcome_classes(weak: npt.ArrayLike, strong: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Each prompt's outcome class from the two models' correctness."""
    w = np.asarray(weak, dtype=np.uint8)
    out: npt.NDArray[np.uint8] = (w + 2 * np.asarray(strong, dtype=np.uint8)).astype(np.uint8)
    return out


def right_probabilities(outcome_probs: FloatArray) -> tuple[FloatArray, FloatArray]:
    """P(weak right) and P(strong right) per row of outcome probabilities."""
    p = np.asarray(outcome_probs, dtype=np.float64)
    return p[:, WEAK_ONLY] + p[:, BOTH_RIGHT], p[:, STRONG_ONLY] + p[:, BOTH_RIGHT]


def softmax_rows(logits: FloatArray) -> FloatArray:
    """Row-wise softmax (one outcome distribution per row); an -inf logit gets 0."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    out: FloatArray = p / p.sum(axis=1, keepdims=True)
    return out


class RouterError(TandemError):
    """Base of the router's errors."""


class RouterFileError(RouterError):
    """A router file is missing, unreadable, of another format or version."""


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
_NPY_MAGIC = b"\x93NUM"


def read_npz(path: Path, what: str) -> dict[str, npt.NDArray[Any]]:
    """Every array of the .npz file at `path` (no pickles), or `RouterFileError` naming the
    file as the `what` it should have been: missing, truncated, or not an .npz archive at
    all (a CSV, an .npy array). Read through our own handle: `np.load(path)` leaks its file
    when the archive is truncated."""
    try:
        with path.open("rb") as fh:
            # np.load's own test for a zip (it would read an .npy array, or offer to unpickle
            # anything else): checked here, so the error says what the file is instead
            magic = fh.read(4)
            if magic not in _ZIP_MAGIC:
                raise ValueError("an .npy array, not an .npz archive"
                                 if magic == _NPY_MAGIC else "not an .npz archive")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as npz:
                return {str(k): npz[k] for k in npz.files}
    except FileNotFoundError:
        raise RouterFileError(f"{what} not found: {path}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RouterFileError(f"{path} is not a {what}: {exc}") from exc


class RouterDataError(RouterError):
    """Labelled routing data is missing a column, malformed, or too small to learn from."""


class Router(Protocol):
    """Anything that ranks prompts by their need of the strong (cloud) model."""

    @property
    def name(self) -> str: ...

    def score(self, prompts: Sequence[str]) -> FloatArray:
        """One score per prompt; higher means the cloud model is more needed."""
        ...


@dataclass(frozen=True, slots=True)
class RouterVerdict:
    """A router's opinion on one prompt, as the policy consumes it.

    `score` is the router's ranking score (for the learned router: the expected accuracy
    gain of the cloud model over the local one); the router says "cloud" when
    `score > threshold`. `p_strong_wins` is the calibrated probability that the cloud model
    is right where the local one is wrong; `p_local_right` and `p_cloud_right` that each is
    right (the online bandit's context). Each is None when the router does not estimate it.
    """

    router: str
    score: float
    threshold: float
    p_strong_wins: float | None = None
    p_local_right: float | None = None
    p_cloud_right: float | None = None

    @property
    def wants_cloud(self) -> bool:
        return self.score > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "score": self.score,
            "threshold": self.threshold,
            "p_strong_wins": self.p_strong_wins,
            "p_local_right": self.p_local_right,
            "p_cloud_right": self.p_cloud_right,
            "wants_cloud": self.wants_cloud,
        }
