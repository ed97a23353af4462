"""Per-device rate limits and quotas: requests per minute and tokens per (UTC) day.

Counting lives behind `UsageStore` (SQLite for one gateway, Redis for replicas); the policy
(what is over the limit and for how long) lives here. Windows are fixed: a minute bucket for
requests and a UTC-day bucket for tokens, so `Retry-After` is the time to the next bucket.
"""

from __future__ import annotations

import math
from typing import Protocol

from cloud_gateway.errors import RateLimited

MINUTE = 60
DAY = 86_400


class UsageStore(Protocol):
    """Counts requests and tokens per device. Implementations: SQLite, Redis."""

    async def count_request(self, device: str, minute: int, day: int) -> tuple[int, int]:
        """Count one request; return (requests in this minute including it, tokens today)."""
        ...

    async def add_tokens(self, device: str, day: int, tokens: int) -> None:
        """Add the tokens a finished request used."""
        ...

    async def close(self) -> None: ...


class RateLimiter:
    """Raises `RateLimited` (429 + Retry-After) when a device is over a limit; 0 = unlimited."""

    def __init__(self, store: UsageStore, requests_per_minute: int, tokens_per_day: int) -> None:
        self.store = store
        self.requests_per_minute = requests_per_minute
        self.tokens_per_day = tokens_per_day

    async def admit(self, device: str, now: float) -> None:
        """Count this request against the device's limits, or raise `RateLimited`."""
        minute, day = int(now // MINUTE), int(now // DAY)
        requests, tokens = await self.store.count_request(device, minute, day)
        if self.tokens_per_day and tokens >= self.tokens_per_day:
            raise RateLimited(
                f"this device used its {self.tokens_per_day} tokens for today",
                retry_after_s=math.ceil((day + 1) * DAY - now),
                limit="tokens_per_day",
            )
        if self.requests_per_minute and requests > self.requests_per_minute:
            raise RateLimited(
                f"this device is over {self.requests_per_minute} requests per minute",
                retry_after_s=math.ceil((minute + 1) * MINUTE - now),
                limit="requests_per_minute",
            )

    async def record(self, device: str, tokens: int, now: float) -> None:
        """Charge the tokens of a finished request to today's quota."""
        if tokens > 0:
            await self.store.add_tokens(device, int(now // DAY), tokens)
