"""Cloud tokens promised to requests still running, so that concurrent requests cannot
overshoot the daily cloud budget.

The budget counts what telemetry has logged today (`Telemetry.cloud_tokens_today`), and an
answer is logged when it ends. Without this ledger, six requests planned at once would each
see the same spending and all go to the cloud, however little budget was left. A request
routed to the cloud reserves its projected tokens (prompt + expected output, what the budget
rule projects) when it is planned; a cascade reserves nothing then, but checks the budget
again and reserves the same projection (plus its draft, if that goes along) when it
escalates, or does not escalate if the budget cannot take it. A reservation is released
once its answer is logged. A request that fails without an answer (a cloud-only call
refused by the gateway) releases nothing: its reservation lapses after `ttl_s` (the cloud
deadline and a margin), in which time the budget is cautious by that many tokens.
Reservations are taken only while a daily budget is set.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable


class Reservations:
    """Thread-safe. `reserve` returns a key for `release`; `total` is what is still open."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._open: dict[int, tuple[int, float]] = {}  # key -> (tokens, lapses at)
        self._keys = itertools.count(1)
        self._lock = threading.Lock()

    def reserve(self, tokens: int) -> int:
        with self._lock:
            key = next(self._keys)
            self._open[key] = (tokens, self._clock() + self._ttl_s)
            return key

    def release(self, key: int | None) -> None:
        """Idempotent; None (a plan that reserved nothing) is ignored."""
        if key is not None:
            with self._lock:
                self._open.pop(key, None)

    def total(self) -> int:
        now = self._clock()
        with self._lock:
            for key in [k for k, (_, until) in self._open.items() if until <= now]:
                del self._open[key]
            return sum(tokens for tokens, _ in self._open.values())
