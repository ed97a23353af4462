"""The placeholder syntax: written strictly (`<PERSON_1>`), read leniently.

Cloud models echo placeholders back imperfectly: `<person_1>`, `< PERSON 1 >`, `[PERSON_1]`,
`\\<PERSON_1\\>`, `&lt;PERSON_1&gt;`, or bare `PERSON_1`, `person_1`, `PERSON1`. `PLACEHOLDER`
accepts all of those; `could_continue` tells a streaming reader whether the end of a chunk
may be the first half of one.
"""

from __future__ import annotations

import re

from runtime.privacy.entities import ENTITY_TYPES, RAW

LABELS: tuple[str, ...] = (*ENTITY_TYPES, RAW)
_BY_KEY = {label.replace("_", "").casefold(): label for label in LABELS}
_LABEL_RE = "|".join(label.replace("_", "[_ ]?") for label in sorted(LABELS, key=len, reverse=True))
_UPPER_RE = "|".join(sorted(LABELS, key=len, reverse=True))
# Brackets as written, or escaped by Markdown (`\<...\>`) or HTML (`&lt;...&gt;`): an
# escaped form counts only with both ends escaped, since a plain `<PERSON_1>` may follow a
# backslash of the text itself.
_BRACKETED = (
    r"(?:(?P<md>\\[<\[])|(?P<html>&lt;)|[<\[])"
    rf"\s*(?P<label>(?i:{_LABEL_RE}))\s*[_\- ]?\s*(?P<num>\d{{1,6}})\s*"
    r"(?(md)\\[>\]]|(?(html)&gt;|[>\]]))"
)
# Bare forms: upper case with or without the underscore (`PERSON_1`, `PERSON1`), or any
# other case with it (`Person_1`, `person_1`). All but `PERSON_1` can be ordinary words
# (`IP6`, `date_1` in code): see `is_strict`.
_BARE = rf"(?:(?P<bare>{_UPPER_RE})(?P<sep>_?)|(?P<lenient>(?i:{_UPPER_RE}))_)(?P<bnum>\d{{1,6}})"
# Redaction vaults every match in the input as RAW; a bare form inside a word ("validate_1")
# only where replacing a value next to it gives it a word boundary (filter._escape_exposed).
PLACEHOLDER = re.compile(rf"{_BRACKETED}|\b{_BARE}\b")
MAX_LENGTH = 48  # longest lenient placeholder a stream reader waits for


def format_placeholder(label: str, number: int) -> str:
    """The canonical placeholder for the `number`-th value of type `label`."""
    return f"<{label}_{number}>"


def parse(match: re.Match[str]) -> tuple[str, int]:
    """(label, number) of a `PLACEHOLDER` match."""
    if match.group("bare"):
        return match.group("bare"), int(match.group("bnum"))
    key = re.sub(r"[_ ]", "", match.group("label") or match.group("lenient")).casefold()
    return _BY_KEY[key], int(match.group("num") or match.group("bnum"))


def is_strict(match: re.Match[str]) -> bool:
    """A bracketed or `LABEL_n` form: reported when the vault did not issue it. The other
    bare forms are restored only when issued, and otherwise left as ordinary words."""
    return not match.group("lenient") and (match.group("bare") is None or bool(match.group("sep")))


# The start of a placeholder: an opener (maybe half of `\<` or `&lt;`), a label's first
# letters, spacing and digits, and maybe half of a closer (`\` of `\>`, `&g` of `&gt;`).
_OPEN_PARTIAL = re.compile(
    r"\\|&(?:lt?)?"
    r"|(?:\\?[<\[]|&lt;)\s*(?P<letters>[A-Za-z_ ]*?)\s*(?:[_\- ]?\s*\d*\s*)?(?:\\|&(?:gt?)?)?"
)
_BARE_PARTIAL = re.compile(r"(?P<letters>[A-Za-z][A-Za-z_]*?)(?:_\d*)?|(?P<upper>[A-Z][A-Z_]*?)\d*")


def could_continue(tail: str) -> bool:
    """True if `tail` (the end of the text so far) may grow into a placeholder."""
    if not tail or len(tail) > MAX_LENGTH:
        return False
    if tail[0] in "<[\\&":
        m = _OPEN_PARTIAL.fullmatch(tail)
        if m is None:
            return False
        return m.group("letters") is None or _label_prefix(m.group("letters"), fold=True)
    m = _BARE_PARTIAL.fullmatch(tail)
    if m is None:
        return False
    if m.group("upper") is not None:
        return _label_prefix(m.group("upper"), fold=False)
    letters = m.group("letters")
    return _label_prefix(letters, fold=not letters.isupper())


def _label_prefix(letters: str, *, fold: bool) -> bool:
    key = re.sub(r"[_ ]", "", letters)
    if fold:
        key = key.casefold()
        return any(k.startswith(key) for k in _BY_KEY)
    return any(label.replace("_", "").startswith(key) for label in LABELS)
