"""The per-conversation map between personal values and their placeholders.

A `Vault` lives on the device for one conversation. It cannot be pickled or copied, and
its `repr` shows counts only: nothing in it is meant to reach a log or the wire.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import NoReturn

from runtime.privacy.placeholders import format_placeholder


class Vault:
    """Value <-> placeholder map for one conversation; thread-safe.

    The same (type, value) always gets the same placeholder; numbers count per type from 1
    (`<PERSON_1>`, `<PERSON_2>`, `<EMAIL_1>`). Values are kept exactly as written, so that
    restoring a redacted text gives back the original byte for byte.
    """

    __slots__ = ("_lock", "_by_value", "_by_placeholder", "_next")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_value: dict[tuple[str, str], tuple[str, int]] = {}
        self._by_placeholder: dict[tuple[str, int], str] = {}
        self._next: Counter[str] = Counter()

    def placeholder(self, label: str, value: str) -> str:
        """The placeholder for `value` of type `label`, assigning the next number if new."""
        with self._lock:
            known = self._by_value.get((label, value))
            if known is None:
                self._next[label] += 1
                known = (label, self._next[label])
                self._by_value[(label, value)] = known
                self._by_placeholder[known] = value
        return format_placeholder(*known)

    def value(self, label: str, number: int) -> str | None:
        """The original value behind `<label_number>`, or None if this vault never issued it."""
        with self._lock:
            return self._by_placeholder.get((label, number))

    def known(self) -> list[tuple[str, str]]:
        """Every (type, value) the vault holds, in the order they were issued.

        For the filter, which redacts every later occurrence of a known value (a value
        found by its context once, "PIN is 4821", is redacted wherever it recurs); like the
        vault itself, what it returns must never leave the device or reach a log.
        """
        with self._lock:
            return [(label, value) for (label, _n), value in self._by_placeholder.items()]

    def counts(self) -> dict[str, int]:
        """How many distinct values of each type the vault holds (no values)."""
        with self._lock:
            return dict(sorted(self._next.items()))

    def clear(self) -> None:
        """Forget every value (end of conversation)."""
        with self._lock:
            self._by_value.clear()
            self._by_placeholder.clear()
            self._next.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_placeholder)

    def __repr__(self) -> str:
        return f"Vault({self.counts()})"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("a privacy Vault never leaves the device: it cannot be pickled or copied")
