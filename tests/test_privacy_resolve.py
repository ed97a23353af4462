"""Overlap resolution: same winners as the plain pairwise rule, at a cost linear in the findings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from runtime.privacy import PrivacyConfig, PrivacyFilter, Span
from runtime.privacy.entities import _remainders, rank, resolve

LINES = (
    "John Smith,john@x.com,2125550199\n",
    "Maria lives at 24 Clarke Avenue, call 212 555 0199 or mail maria@example.org.\n",
    "card 4111 1111 1111 1111 05/27, born 21/07/1990, IBAN DE89370400440532013000\n",
    "Dear Mr. O'Neil, see https://example.com/p?id=7 from 10.0.0.1 <PERSON_1>\n",
)


def pairwise_resolve(spans: Iterable[Span], text: str | None) -> list[Span]:
    """The rule `resolve` implements, written as the direct scan over every kept span."""
    ordered = sorted(spans, key=lambda s: (-rank(s.label), -(s.end - s.start), s.start))
    kept: list[Span] = []
    for span in ordered:
        clashes = sorted((k for k in kept if span.overlaps(k)), key=lambda s: s.start)
        if not clashes:
            kept.append(span)
        elif text is not None:
            kept.extend(_remainders(span, clashes, text))
    return sorted(kept, key=lambda s: s.start)


@pytest.fixture(scope="module")
def privacy() -> PrivacyFilter:
    return PrivacyFilter.from_config(PrivacyConfig(ner="names"))


def raw_findings(privacy: PrivacyFilter, text: str) -> list[Span]:
    """Every detector's spans before resolution (they overlap: phone in card, name in e-mail)."""
    found: list[Span] = []
    for detector in privacy.detectors:
        found.extend(detector.detect(text))
    return found


def test_resolution_of_many_overlapping_findings_matches_the_pairwise_rule(
    privacy: PrivacyFilter,
) -> None:
    text = "".join(LINES) * 150
    found = raw_findings(privacy, text)
    # A low-ranked span over each whole line loses to everything in it and is cut into pieces.
    at = 0
    for line in text.splitlines(keepends=True):
        found.append(Span(at, at + len(line) - 1, "LOCATION", "test"))
        at += len(line)
    assert len(found) > 2000
    assert resolve(found, text) == pairwise_resolve(found, text)  # losers trimmed
    assert resolve(found) == pairwise_resolve(found, None)  # losers dropped


class _CountingSpan(Span):
    """A span that counts how often resolution reads its position."""

    reads = 0

    def __getattribute__(self, name: str) -> Any:
        if name in ("start", "end"):
            _CountingSpan.reads += 1
        return super().__getattribute__(name)


def _position_reads_per_finding(lines: int) -> float:
    text = "John Smith,john@x.com,2125550199\n" * lines
    spans = []
    for i in range(lines):
        at = i * 33
        spans += [
            _CountingSpan(at, at + 10, "PERSON"),
            _CountingSpan(at + 11, at + 21, "EMAIL"),
            _CountingSpan(at + 11, at + 15, "PERSON"),  # the name inside the e-mail loses
            _CountingSpan(at + 22, at + 32, "PHONE"),
        ]
    _CountingSpan.reads = 0
    kept = resolve(spans, text)
    assert len(kept) == 3 * lines
    return _CountingSpan.reads / len(spans)


def test_resolution_cost_per_finding_does_not_grow_with_the_number_of_findings() -> None:
    # Kept spans never overlap, so a new finding is checked against its neighbours only;
    # comparing it with every kept span made 6,000 lines of findings take seconds.
    small, large = _position_reads_per_finding(50), _position_reads_per_finding(400)
    assert large <= small * 1.2
    assert large < 20
