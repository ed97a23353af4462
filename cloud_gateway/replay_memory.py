"""The in-process nonce store: for a single gateway process."""

from __future__ import annotations

import time
from collections import deque


class MemoryNonceStore:
    """A dict of nonce -> expiry, purged in arrival order (every entry has the same TTL)."""

    def __init__(self, max_entries: int = 2_000_000) -> None:
        self._expiry: dict[bytes, float] = {}
        self._order: deque[tuple[float, bytes]] = deque()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._expiry)

    async def remember(self, key: bytes, ttl_s: float) -> bool:
        """True if `key` is new (and now remembered for `ttl_s`), False if seen and unexpired."""
        now = time.monotonic()
        self._purge(now)
        expiry = self._expiry.get(key)
        if expiry is not None and expiry > now:
            return False
        if len(self._expiry) >= self._max:
            # Refusing is safer than forgetting: a full store must not re-admit replays.
            return False
        self._expiry[key] = now + ttl_s
        self._order.append((now + ttl_s, key))
        return True

    def _purge(self, now: float) -> None:
        order, expiry = self._order, self._expiry
        while order and order[0][0] <= now:
            _, key = order.popleft()
            if expiry.get(key, now + 1) <= now:
                del expiry[key]

    async def close(self) -> None:
        self._expiry.clear()
        self._order.clear()
