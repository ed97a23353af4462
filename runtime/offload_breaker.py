"""A circuit breaker: after N consecutive cloud failures, skip the cloud for T seconds.

After T seconds one trial call is let through (half-open); its success closes the breaker,
its failure opens it for another T seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    """Thread-safe; `clock` is injectable so that tests need not sleep."""

    def __init__(
        self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = max(1, failures)
        self._reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    def check(self) -> tuple[bool, float]:
        """(True, 0) if a call may go ahead, else (False, seconds until the next trial)."""
        with self._lock:
            answer = self._state()
            if answer == (True, 0.0) and self._opened_at is not None:
                self._trial_running = True  # half-open: exactly one trial call
            return answer

    def peek(self) -> tuple[bool, float]:
        """Like `check` but without claiming the half-open trial (for status displays)."""
        with self._lock:
            return self._state()

    def _state(self) -> tuple[bool, float]:
        """Closed, cooling down, or half-open with or without a trial running (lock held)."""
        if self._opened_at is None:
            return True, 0.0
        wait = self._opened_at + self._reset_s - self._clock()
        if wait > 0:
            return False, wait
        return (False, self._reset_s) if self._trial_running else (True, 0.0)

    @property
    def failures(self) -> int:
        return self._failures

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_running or self._failures >= self._threshold:
                self._opened_at = self._clock()
            self._trial_running = False

    def release(self) -> None:
        """A call ended without saying anything about the cloud's health (e.g. a 429)."""
        with self._lock:
            self._trial_running = False
