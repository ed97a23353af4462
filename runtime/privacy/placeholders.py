"""The placeholder syntax: written strictly (`<PERSON_1>`), read leniently.

Cloud models echo placeholders back imperfectly: `<person_1>`, `< PERSON 1 >`, `[PERSON_1]`,
or bare `PERSON_1`. `PLACEHOLDER` accepts all of those; `could_continue` tells a streaming
reader whether the end of a chunk may be the first half of one.
"""

from __future__ import annotations

import re

from runtime.privacy.entities import ENTITY_TYPES, RAW

LABELS: tuple[str, ...] = (*ENTITY_TYPES, RAW)
_BY_KEY = {label.replace("_", "").casefold(): label for label in LABELS}
_LABEL_RE = "|".join(label.replace("_", "[_ ]?") for label in sorted(LABELS, key=len, reverse=True))
PLACEHOLDER = re.compile(
    rf"[<\[]\s*(?P<label>(?i:{_LABEL_RE}))\s*[_\- ]?\s*(?P<num>\d{{1,6}})\s*[>\]]"
    rf"|\b(?P<bare>{'|'.join(sorted(LABELS, key=len, reverse=True))})_(?P<bnum>\d{{1,6}})\b"
)
# What redaction escapes in the input: every PLACEHOLDER match, and bare forms even inside a
# word ("PERSON_1KaR"), since replacing the word's tail could give them a word boundary.
ESCAPE = re.compile(
    rf"[<\[]\s*(?P<label>(?i:{_LABEL_RE}))\s*[_\- ]?\s*(?P<num>\d{{1,6}})\s*[>\]]"
    rf"|(?P<bare>{'|'.join(sorted(LABELS, key=len, reverse=True))})_(?P<bnum>\d{{1,6}})"
)
MAX_LENGTH = 48  # longest lenient placeholder a stream reader waits for


def format_placeholder(label: str, number: int) -> str:
    """The canonical placeholder for the `number`-th value of type `label`."""
    return f"<{label}_{number}>"


def parse(match: re.Match[str]) -> tuple[str, int]:
    """(label, number) of a `PLACEHOLDER` match."""
    if match.group("bare"):
        return match.group("bare"), int(match.group("bnum"))
    key = re.sub(r"[_ ]", "", match.group("label")).casefold()
    return _BY_KEY[key], int(match.group("num"))


_OPEN_PARTIAL = re.compile(r"[<\[]\s*(?P<letters>[A-Za-z_ ]*?)\s*(?:[_\- ]?\s*\d*\s*)?")
_BARE_PARTIAL = re.compile(r"(?P<letters>[A-Z][A-Z_]*?)(?:_\d*)?")


def could_continue(tail: str) -> bool:
    """True if `tail` (the end of the text so far) may grow into a placeholder."""
    if not tail or len(tail) > MAX_LENGTH:
        return False
    if tail[0] in "<[":
        m = _OPEN_PARTIAL.fullmatch(tail)
        return m is not None and _label_prefix(m.group("letters"), fold=True)
    m = _BARE_PARTIAL.fullmatch(tail)
    return m is not None and _label_prefix(m.group("letters"), fold=False)


def _label_prefix(letters: str, *, fold: bool) -> bool:
    key = re.sub(r"[_ ]", "", letters)
    if fold:
        key = key.casefold()
        return any(k.startswith(key) for k in _BY_KEY)
    return any(label.replace("_", "").startswith(key) for label in LABELS)
