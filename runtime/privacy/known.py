"""Values already known to be personal, wherever they recur in a conversation.

Detection depends on context: "my PIN is 4821" finds the PIN, but "4821 is easy to guess"
in the answer that comes back as the next request's history holds no cue. So once a value
is known, from any message of the request or from the conversation's vault, every
occurrence of it in every message is redacted with it:

- occurrences are whole words (`Acme` is not found inside `Acmeville`); matching keeps
  case and reads the folded text (`fold_for_detection`), and white space of any width
  joins a value's words ("Zyxa  Quorn" is "Zyxa Quorn" written with two spaces: a
  placeholder of its own, since values are kept exactly as written);
- a value needs three letters or digits ("Li", "12" recur by chance), and a value of at
  most four digits (a CVV, a PIN) counts only as a number of its own: not as a group of a
  longer number ("1,123", "123.45", "555 123 4567", "09/123");
- a person's name of several words makes each of its words a known value too, as a
  person of its own ("Zyxa Quorn", then "Sure, Zyxa" and "sign it Quorn": three
  placeholders), unless the word is short, a title, particle or function word ("Mr",
  "van"), or a common English word that is also a name ("Will", "Rich"); a lower-case
  word only with the name lists loaded and when English does not use it;
- an occurrence inside a longer value that will be replaced is left to it (a PIN inside
  a phone number); otherwise it wins (longest, then earliest, among known values) and
  what it overlaps is trimmed around it, so no part of a known value is sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.privacy.entities import PERSON, RAW, Span, _Disjoint, _remainders, rank

if TYPE_CHECKING:  # the name lists load only with a filter that needs them
    from runtime.privacy.gazetteer import NameLists

MIN_CHARS = 3  # letters or digits a value needs to be looked for elsewhere
SHORT_NUMBER = 4  # values of at most this many digits (and nothing else) stand alone
_GLUE = frozenset(" .,:/-")  # what joins the digit groups of a longer number
_NAME_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")


@dataclass(frozen=True, slots=True)
class Known:
    """One known value as the detectors read it (folded), and how to find it."""

    label: str
    words: tuple[str, ...]  # joined by white space of any width
    head: bool  # starts with a word character: no word character may come before it
    tail: bool  # ends with one: none may come after it
    number: bool  # a short number: no digit group may come before or after it either

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """(start, end) of each occurrence in `text`, left to right, not overlapping."""
        first = self.words[0]
        pos = text.find(first)
        while pos != -1:
            end = self._rest(text, pos + len(first))
            if end is not None and self._bounded(text, pos, end):
                yield pos, end
                pos = text.find(first, end)
            else:
                pos = text.find(first, pos + 1)

    def _rest(self, text: str, end: int) -> int | None:
        for word in self.words[1:]:
            gap = end
            while gap < len(text) and text[gap].isspace():
                gap += 1
            if gap == end or not text.startswith(word, gap):
                return None
            end = gap + len(word)
        return end

    def _bounded(self, text: str, start: int, end: int) -> bool:
        before = text[start - 1] if start else ""
        after = text[end] if end < len(text) else ""
        if self.head and _word(before) or self.tail and _word(after):
            return False
        if self.number:  # "1,123", "123.45", "555 123 4567"
            if before in _GLUE and start >= 2 and text[start - 2].isdigit():
                return False
            if after in _GLUE and text[end + 1 : end + 2].isdigit():
                return False
        return True


def _word(char: str) -> bool:
    """A character `\\w` matches: a letter, digit or underscore of any script."""
    return bool(char) and (char.isalnum() or char == "_")


def known_values(values: Iterable[tuple[str, str]], lists: NameLists | None = None) -> list[Known]:
    """The matchers for `(label, value)` pairs (and the words of people's names), each
    value folded as the detectors read it (`fold_for_detection`).

    A value known under several labels takes the highest-ranked one. RAW (placeholder
    look-alikes) is left out: those are found in each text by their shape.
    """
    labels: dict[str, str] = {}

    def note(label: str, key: str) -> None:
        if sum(c.isalnum() for c in key) < MIN_CHARS:
            return
        old = labels.get(key)
        if old is None or rank(label) > rank(old):
            labels[key] = label

    for label, value in values:
        if label == RAW:
            continue
        key = " ".join(value.split())
        note(label, key)
        if label == PERSON:
            for part in name_parts(key, lists):
                note(PERSON, part)
    return [
        Known(
            label,
            tuple(key.split()),
            head=_word(key[0]),
            tail=_word(key[-1]),
            number=key.isdigit() and len(key) <= SHORT_NUMBER,
        )
        for key, label in sorted(labels.items(), key=lambda kv: (-len(kv[0]), kv[0]))
    ]


def name_parts(name: str, lists: NameLists | None) -> list[str]:
    """The words of a person's name of several words that identify the person alone."""
    from runtime.privacy.gazetteer import fold
    from runtime.privacy.names import _PARTICLES, NOT_NAMES

    words = _NAME_WORD.findall(name)
    if len(words) < 2:
        return []
    parts = []
    for word in words:
        key = fold(word)
        if len(word) < MIN_CHARS or key in NOT_NAMES or key in _PARTICLES:
            continue
        if lists is not None and lists.is_common(word):
            continue  # "Will", "Rich": a word first, a name only next to another
        if not word[0].isupper() and (lists is None or lists.is_english(word)):
            continue  # lower case: only a word English does not use ("okafor")
        parts.append(word)
    return parts


def occurrences(known: Sequence[Known], folded: str) -> list[Span]:
    """Every occurrence of a known value in `folded` (a text as the detectors read it)."""
    return [
        Span(start, end, value.label, "known")
        for value in known
        for start, end in value.find(folded)
    ]


def merge(
    detected: Sequence[Span],
    recurring: Sequence[Span],
    text: str,
    replaced: Callable[[Span], bool],
) -> list[Span]:
    """`detected` (resolved) and the occurrences of known values, without overlaps.

    An occurrence inside a detected span that `replaced` says will be replaced is left to
    it. Otherwise occurrences win over detections (longest, then earliest, among
    themselves), and what they overlap is trimmed around them; placeholder look-alikes
    (RAW) win over everything, as in `resolve`.
    """
    if not recurring:
        return list(detected)
    ordered = sorted(recurring, key=lambda s: (-(s.end - s.start), s.start))
    own = _Disjoint()
    for span in ordered:
        _add(own, span, text)
    covering = [d for d in detected if d.label != RAW and replaced(d)]
    left: list[Span] = []
    kept = _Disjoint()
    for d in detected:
        if d.label == RAW:
            kept.add(d)
    for span in own.spans:
        if any(d.start <= span.start and span.end <= d.end for d in covering):
            left.append(span)
        else:
            _add(kept, span, text)
    for d in detected:
        if d.label != RAW:
            _add(kept, d, text)
    # A detection that covered an occurrence may have been trimmed by another one since.
    for span in left:
        if not _covered(span, kept.overlapping(span), replaced):
            for piece in _remainders(span, kept.overlapping(span), text):
                kept.add(piece)
    return kept.spans


def _add(kept: _Disjoint, span: Span, text: str) -> None:
    clashes = kept.overlapping(span)
    if not clashes:
        kept.add(span)
        return
    for piece in _remainders(span, clashes, text):
        kept.add(piece)


def _covered(span: Span, clashes: Sequence[Span], replaced: Callable[[Span], bool]) -> bool:
    pos = span.start
    for clash in clashes:  # sorted by start
        if clash.start > pos or not replaced(clash):
            return False
        pos = max(pos, clash.end)
    return pos >= span.end
