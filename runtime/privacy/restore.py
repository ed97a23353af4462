"""Putting the original values back into the cloud's answer, whole or streamed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.privacy.placeholders import (
    MAX_LENGTH,
    PLACEHOLDER,
    could_continue,
    is_strict,
    parse,
)
from runtime.privacy.vault import Vault


@dataclass(frozen=True, slots=True)
class Restored:
    """`text` with every known placeholder replaced by its value.

    `unknown_placeholders` lists (in order, without repeats) placeholders the vault never
    issued: they stay in the text as the model wrote them.
    """

    text: str
    restored: int
    unknown_placeholders: tuple[str, ...]


def restore(text: str, vault: Vault) -> Restored:
    """Replace every placeholder of `vault` in `text`, however its case or spacing changed."""
    return _restore_after("", text, vault)


def _restore_after(before: str, text: str, vault: Vault) -> Restored:
    """`restore(text)` for a text that follows `before` (already restored): a bare
    placeholder needs a word boundary, which the end of `before` may deny ("my_" +
    "IP_1")."""
    unknown: list[str] = []
    count = 0
    parts: list[str] = []
    whole = before + text
    pos = len(before)
    for match in PLACEHOLDER.finditer(whole, pos):
        label, number = parse(match)
        value = vault.value(label, number)
        if value is None:
            if is_strict(match) and match.group() not in unknown:
                unknown.append(match.group())
            continue
        count += 1
        parts.append(whole[pos : match.start()])
        parts.append(value)
        pos = match.end()
    parts.append(whole[pos:])
    return Restored("".join(parts), count, tuple(unknown))


class StreamRestorer:
    """Restores a streamed answer chunk by chunk, holding back a possible split placeholder.

    `feed()` returns the text that is safe to show now; `flush()` returns the rest at the
    end of the stream. At most `MAX_LENGTH` characters are ever held back.
    """

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._pending = ""
        self._last = ""  # the last character emitted, as the cloud wrote it
        self._unknown: list[str] = []
        self.restored = 0

    @property
    def unknown_placeholders(self) -> tuple[str, ...]:
        return tuple(self._unknown)

    def feed(self, chunk: str) -> str:
        """Add a chunk of the answer; return what can be emitted (restored) so far."""
        text = self._pending + chunk
        cut = _safe_cut(text, self._last)
        self._pending = text[cut:]
        return self._restore(text[:cut])

    def flush(self) -> str:
        """End of stream: return whatever was held back, restored."""
        text, self._pending = self._pending, ""
        return self._restore(text)

    def _restore(self, text: str) -> str:
        if not text:
            return ""
        result = _restore_after(self._last, text, self._vault)
        self._last = text[-1]
        self.restored += result.restored
        self._unknown.extend(u for u in result.unknown_placeholders if u not in self._unknown)
        return result.text


def _safe_cut(text: str, before: str = "") -> int:
    """Index up to which `text` can be restored now: before any tail that may still grow.

    `before` is the last character already emitted: a chunk's start is a word boundary
    only if that is not a word character, as in the whole text.
    """
    floor = max(0, len(text) - MAX_LENGTH)
    for start in range(floor, len(text)):
        ch = text[start]
        opener = ch in "<[\\&"  # also the escaped openers, as in "\<" and "&lt;"
        prev = text[start - 1] if start else before
        bare = ch.isalpha() and not (prev.isalnum() or prev == "_")
        if (opener or bare) and could_continue(text[start:]):
            return start
    # A complete bare placeholder at the very end may still gain digits ("PERSON_1" + "2").
    m = _BARE_END.search(before + text, len(before))
    if m and PLACEHOLDER.fullmatch(m.group()):
        return m.start() - len(before)
    return len(text)


_BARE_END = re.compile(r"\b[A-Za-z][A-Za-z_]*_?\d+$")
