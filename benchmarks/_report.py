"""Shared helpers for benchmarks: statistics, a plain table, the output folder."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtime.cli import positive_seconds

OUT_ENV = "TANDEM_BENCH_OUT"
_PACKAGE = Path(__file__).resolve().parent  # this `benchmarks` package's folder


def out_dir() -> Path:
    """Where the benchmarks write charts, fitted weights and trace caches.

    `$TANDEM_BENCH_OUT` when set; else `benchmarks/out` in a writable source checkout (this
    package beside a `pyproject.toml`); else `benchmarks-out` in the current directory: an
    installed package's folder is site-packages, often read-only and never the place for
    results.
    """
    env = os.environ.get(OUT_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    if (_PACKAGE.parent / "pyproject.toml").is_file() and os.access(_PACKAGE, os.W_OK):
        return _PACKAGE / "out"
    return Path.cwd() / "benchmarks-out"


def out_path(name: str) -> Path:
    """`name` inside `out_dir()`, which is created if need be."""
    folder = out_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(min, max) of the samples: the honest range behind a median of a few runs."""
    return (float(min(values)), float(max(values))) if values else (float("nan"),) * 2


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[k])


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table (the header alone when there are no rows)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, sep, *body])


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `low` (else a one-line usage error, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


seconds = positive_seconds  # an argparse type: seconds > 0, at most 30 days


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def strict_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def emit(summary: dict[str, Any], human: str, as_json: bool) -> None:
    """Print the human table, then (with --json) one JSON object as the last stdout line.

    The JSON is strict: a figure that could not be measured (NaN) is null.
    """
    print(human)
    if as_json:
        print(json.dumps(strict_json(summary), sort_keys=False, allow_nan=False))
    sys.stdout.flush()
