"""Labelled routing data: prompts with the weak (local) and strong (cloud) model's correctness.

The file format is CSV (optionally gzip-compressed, by the `.gz` suffix) with a header and
the columns `prompt`, `weak`, `strong` (1/0, 1.0/0.0 or true/false), and optionally `group` (or
`subject`): a label used to hold out whole groups when evaluating. Header names are matched
without case or surrounding spaces; a UTF-8 byte-order mark is ignored. A field may hold up
to 16 Mi characters (`MAX_FIELD`).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.router.base import BoolArray, RouterDataError

_TRUE = frozenset({"1", "1.0", "true", "yes"})  # "1.0": a spreadsheet's number column
_FALSE = frozenset({"0", "0.0", "false", "no"})
# The longest field read (csv's default is 128 Ki characters): prompts with a document
# pasted in are long, and a field is held in memory whole anyway.
MAX_FIELD = 16 * 1024 * 1024


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


def _flag(path: Path, line: str, column: str, value: str) -> bool:
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
        except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a corrupt stream
            raise RouterDataError(f"{path} is not a valid gzip file ({exc})") from exc
    try:  # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RouterDataError(f"{path} is not UTF-8 text (byte {exc.start}: "
                              f"{raw[exc.start:exc.start + 1]!r}); save it as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        with _field_limit(MAX_FIELD):
            return _rows(path, reader)
    except csv.Error as exc:  # a field over MAX_FIELD, a NUL byte in older Pythons, ...
        # the csv reader's own count: DictReader's is updated only once a row is read
        raise RouterDataError(f"{path}:{reader.reader.line_num}: {exc}") from None


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """csv's process-wide field size limit raised to `limit` while reading (then restored)."""
    old = csv.field_size_limit(max(limit, csv.field_size_limit()))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _rows(path: Path, reader: csv.DictReader[str]) -> RoutingData:
    """The rows of `reader` (a routing CSV at `path`), checked."""
    # Header names are matched without surrounding spaces and case ("Prompt, Weak").
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames or ()]
    fields = set(reader.fieldnames)
    missing = {"prompt", "weak", "strong"} - fields
    if missing:
        raise RouterDataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    group_col = "group" if "group" in fields else "subject" if "subject" in fields else None
    prompts: list[str] = []
    weak: list[bool] = []
    strong: list[bool] = []
    groups: list[str] = []
    end = reader.line_num  # the header's last line; prompts may span lines
    for row in reader:
        first, end = end + 1, reader.line_num  # the row's physical lines
        line = str(first) if first == end else f"{first}-{end}"
        if None in row:
            raise RouterDataError(f"{path}:{line}: more fields than the header's "
                                  f"{len(fields)} (an unquoted comma?)")
        if any(v is None for v in row.values()):
            absent = [k for k, v in row.items() if v is None]
            raise RouterDataError(f"{path}:{line}: too few fields (no {', '.join(absent)})")
        prompts.append(row["prompt"])
        weak.append(_flag(path, line, "weak", row["weak"]))
        strong.append(_flag(path, line, "strong", row["strong"]))
        groups.append(row[group_col] if group_col else "")
    if not prompts:
        raise RouterDataError(f"{path}: no rows")
    return RoutingData(tuple(prompts), np.array(weak), np.array(strong), tuple(groups))
