"""What a detector finds: a typed `Span` of the text, and the entity types the filter knows."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# The placeholder labels, also the type names used by the policy and the config.
PERSON = "PERSON"
EMAIL = "EMAIL"
PHONE = "PHONE"
CARD = "CARD"
CARD_CVV = "CARD_CVV"  # the card's verification value (CVV/CVC/CID): never to leave as is
CARD_EXPIRY = "CARD_EXPIRY"  # a card's expiry date (MM/YY), labelled or printed after the number
IBAN = "IBAN"
SSN = "SSN"
NATIONAL_ID = "NATIONAL_ID"
IP = "IP"
URL = "URL"
DATE = "DATE"
SECRET = "SECRET"
ADDRESS = "ADDRESS"
LOCATION = "LOCATION"
ORG = "ORG"
RAW = "RAW"  # text that already looked like a placeholder in the input (kept reversible)

ENTITY_TYPES: tuple[str, ...] = (
    PERSON, EMAIL, PHONE, CARD, CARD_CVV, CARD_EXPIRY, IBAN, SSN, NATIONAL_ID, IP, URL, DATE,
    SECRET, ADDRESS, LOCATION, ORG,
)  # fmt: skip
STRUCTURED_TYPES: frozenset[str] = frozenset(
    {EMAIL, PHONE, CARD, CARD_CVV, CARD_EXPIRY, IBAN, SSN, NATIONAL_ID, IP}
)

# When two detections overlap, the higher rank wins (then the longer one): validated
# structured values beat pattern guesses, which beat name heuristics.
_RANK: dict[str, int] = {
    RAW: 100, SECRET: 90, EMAIL: 85, URL: 80, IBAN: 75, CARD: 70, CARD_CVV: 68, CARD_EXPIRY: 67,
    SSN: 65, NATIONAL_ID: 60, IP: 55, DATE: 50, ADDRESS: 47, PHONE: 45, PERSON: 25, ORG: 20,
    LOCATION: 15,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Span:
    """`text[start:end]` is a value of entity type `label`, found by `source`."""

    start: int
    end: int
    label: str
    source: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"bad span [{self.start}, {self.end})")

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end


class Detector(Protocol):
    """One kind of detector: returns the spans it finds, in any order, possibly overlapping."""

    def detect(self, text: str) -> list[Span]:
        """The spans of `text` this detector recognises."""
        ...


@runtime_checkable
class ContextDetector(Detector, Protocol):
    """A costly detector that can skip what the detectors before it already explained."""

    def detect_after(self, text: str, found: Sequence[Span]) -> list[Span]:
        """The spans of `text` it recognises, given the spans `found` so far."""
        ...


def rank(label: str) -> int:
    """Priority of a label when detections overlap (unknown labels rank lowest)."""
    return _RANK.get(label, 0)


def resolve(spans: Iterable[Span], text: str | None = None) -> list[Span]:
    """Non-overlapping spans sorted by start: the highest-ranked, then longest, wins.

    With `text`, a losing span is trimmed around the winners instead of dropped (an
    address that contains a phone number keeps its other parts).
    """
    ordered = sorted(spans, key=lambda s: (-rank(s.label), -(s.end - s.start), s.start))
    kept = _Disjoint()
    for span in ordered:
        clashes = kept.overlapping(span)
        if not clashes:
            kept.add(span)
        elif text is not None:
            for piece in _remainders(span, clashes, text):
                kept.add(piece)
    return kept.spans


class _Disjoint:
    """Non-overlapping spans sorted by start, so a clash check is a bisection, not a scan."""

    __slots__ = ("_ends", "_starts", "spans")

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._starts: list[int] = []
        self._ends: list[int] = []  # sorted too, since the spans never overlap

    def overlapping(self, span: Span) -> list[Span]:
        """The kept spans that overlap `span`, sorted by start."""
        i = bisect.bisect_right(self._ends, span.start)
        j = bisect.bisect_left(self._starts, span.end, lo=i)
        return self.spans[i:j]

    def add(self, span: Span) -> None:
        """Keep `span`, which must not overlap a kept span."""
        i = bisect.bisect_left(self._starts, span.start)
        self.spans.insert(i, span)
        self._starts.insert(i, span.start)
        self._ends.insert(i, span.end)


def _remainders(span: Span, clashes: list[Span], text: str) -> Iterator[Span]:
    """The parts of `span` outside `clashes` that still hold two letters or digits."""
    pos = span.start
    for clash in clashes:  # sorted by start
        yield from _piece(span, pos, clash.start, text)
        pos = max(pos, clash.end)
    yield from _piece(span, pos, span.end, text)


def _piece(span: Span, start: int, end: int, text: str) -> Iterator[Span]:
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    if sum(c.isalnum() for c in text[start:end]) >= 2:
        yield Span(start, end, span.label, span.source)


def merge_adjacent(spans: Sequence[Span], text: str, joiners: str = " \t") -> list[Span]:
    """Join same-label spans separated only by `joiners` characters (e.g. an address's parts)."""
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start):
        if merged:
            last = merged[-1]
            gap = text[last.end : span.start]
            if last.label == span.label and span.start >= last.end and gap.strip(joiners) == "":
                merged[-1] = Span(last.start, max(last.end, span.end), last.label, last.source)
                continue
        merged.append(span)
    return merged
