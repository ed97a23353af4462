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
    unknown: list[str] = []
    count = 0

    def put_back(match: re.Match[str]) -> str:
        nonlocal count
        label, number = parse(match)
        value = vault.value(label, number)
        if value is None:
            if is_strict(match) and match.group() not in unknown:
                unknown.append(match.group())
            return match.group()
        count += 1
        return value

    restored = PLACEHOLDER.sub(put_back, text)
    return Restored(restored, count, tuple(unknown))


class StreamRestorer:
    """Restores a streamed answer chunk by chunk, holding back a possible split placeholder.

    `feed()` returns the text that is safe to show now; `flush()` returns the rest at the
    end of the stream. At most `MAX_LENGTH` characters are ever held back.
    """

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._pending = ""
        self._unknown: list[str] = []
        self.restored = 0

    @property
    def unknown_placeholders(self) -> tuple[str, ...]:
        return tuple(self._unknown)

    def feed(self, chunk: str) -> str:
        """Add a chunk of the answer; return what can be emitted (restored) so far."""
        text = self._pending + chunk
        cut = _safe_cut(text)
        self._pending = text[cut:]
        return self._restore(text[:cut])

    def flush(self) -> str:
        """End of stream: return whatever was held back, restored."""
        text, self._pending = self._pending, ""
        return self._restore(text)

    def _restore(self, text: str) -> str:
        if not text:
            return ""
        result = restore(text, self._vault)
        self.restored += result.restored
        self._unknown.extend(u for u in result.unknown_placeholders if u not in self._unknown)
        return result.text


def _safe_cut(text: str) -> int:
    """Index up to which `text` can be restored now: before any tail that may still grow."""
    floor = max(0, len(text) - MAX_LENGTH)
    for start in range(floor, len(text)):
        ch = text[start]
        opener = ch in "<[\\&"  # also the escaped openers, as in "\<" and "&lt;"
        bare = ch.isalpha() and (
            start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_")
        )
        if (opener or bare) and could_continue(text[start:]):
            return start
    # A complete bare placeholder at the very end may still gain digits ("PERSON_1" + "2").
    m = re.search(r"\b[A-Za-z][A-Za-z_]*_?\d+$", text)
    if m and PLACEHOLDER.fullmatch(m.group()):
        return m.start()
    return len(text)
