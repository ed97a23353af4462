"""Labelled routing data: prompts with the weak (local) and strong (cloud) model's correctness.

The file format is CSV (optionally gzip-compressed, by the `.gz` suffix) with a header and
the columns `prompt`, `weak`, `strong` (1/0 or true/false), and optionally `group` (or
`subject`): a label used to hold out whole groups when evaluating.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.router.base import BoolArray, RouterDataError

_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})


@dataclass(frozen=True, slots=True)
class RoutingData:
    """Parallel columns of a labelled routing set."""

    prompts: tuple[str, ...]
    weak: BoolArray  # the local (weak) model answered correctly
    strong: BoolArray  # the cloud (strong) model answered correctly
    groups: tuple[str, ...]  # "" where the file has no group column

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, index: Sequence[int] | np.ndarray) -> RoutingData:
        """The rows at `index`, in that order."""
        idx = np.asarray(index, dtype=np.int64)
        return RoutingData(
            prompts=tuple(self.prompts[i] for i in idx),
            weak=self.weak[idx],
            strong=self.strong[idx],
            groups=tuple(self.groups[i] for i in idx),
        )


def _flag(path: Path, line: int, column: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise RouterDataError(
        f"{path}:{line}: column {column} must be 1/0 or true/false, not {value!r}"
    )


def load_routing_data(path: str | Path) -> RoutingData:
    """Read a labelled routing CSV (see the module docstring); errors name file and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RouterDataError(f"cannot read routing data {path}: {exc.strerror}") from exc
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise RouterDataError(f"{path} is not a valid gzip file") from exc
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    fields = set(reader.fieldnames or ())
    missing = {"prompt", "weak", "strong"} - fields
    if missing:
        raise RouterDataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    group_col = "group" if "group" in fields else "subject" if "subject" in fields else None
    prompts: list[str] = []
    weak: list[bool] = []
    strong: list[bool] = []
    groups: list[str] = []
    for line, row in enumerate(reader, start=2):
        prompts.append(row["prompt"])
        weak.append(_flag(path, line, "weak", row["weak"]))
        strong.append(_flag(path, line, "strong", row["strong"]))
        groups.append(row[group_col] if group_col else "")
    if not prompts:
        raise RouterDataError(f"{path}: no rows")
    return RoutingData(tuple(prompts), np.array(weak), np.array(strong), tuple(groups))
