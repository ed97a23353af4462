"""Replay protection: a timestamp window plus a store of nonces seen within that window.

An envelope is accepted once: its timestamp must be within `window_s` of the gateway's clock,
and its (device, nonce) must not have been seen in the last `NONCE_TTL_WINDOWS * window_s`
seconds. An envelope first accepted at the far edge of one replica's window stays acceptable
by timestamp for up to 2 windows, plus however far another replica's clock lags behind the
first one's: keeping nonces 3 windows covers replicas whose clocks differ by less than a
window (docs/protocol.md, section 5). Anything older fails the timestamp check everywhere.

A store that forgets at a restart (the in-process one) cannot tell an envelope accepted
before the restart from a new one: a guard given `not_before_ms` (the process's start)
refuses every envelope stamped earlier.
"""

from __future__ import annotations

from typing import Protocol

from cloud_gateway.errors import ReplayedNonce, StaleTimestamp


class NonceStore(Protocol):
    """Remembers nonces for a while. Implementations: in-process, Redis (shared by replicas)."""

    async def remember(self, key: bytes, ttl_s: float) -> bool:
        """Record `key`; True if it was new, False if it was already there (a replay)."""
        ...

    async def close(self) -> None: ...


# How long a nonce is kept, in clock windows: 2 for the window itself, 1 for clock skew
# between replicas sharing the store.
NONCE_TTL_WINDOWS = 3


class ReplayGuard:
    """Checks an envelope's timestamp and nonce; raises `StaleTimestamp` / `ReplayedNonce`.

    `not_before_ms`: the oldest timestamp the store is sure to have seen every nonce of (the
    start of a process whose store lives in memory; 0 for a store that persists)."""

    def __init__(self, store: NonceStore, window_s: float = 60.0, *, not_before_ms: int = 0
                 ) -> None:
        self.store = store
        self.window_s = window_s
        self.not_before_ms = not_before_ms

    def check_timestamp(self, ts_ms: int, now: float) -> None:
        """Raise `StaleTimestamp` when the envelope's clock is off by more than the window."""
        # In integer milliseconds: ts_ms is any JSON integer, which may not fit a float.
        now_ms = int(now * 1000)
        skew_ms = ts_ms - now_ms
        if abs(skew_ms) > self.window_s * 1000:
            skew = f"{skew_ms / 1000:+.0f} s" if abs(skew_ms) < 10**15 else "centuries"
            raise StaleTimestamp(
                f"envelope timestamp is {skew} from the gateway clock "
                f"(window ±{self.window_s:.0f} s)",
                gateway_time_ms=now_ms,
            )
        if ts_ms < self.not_before_ms:
            # It may have been accepted before the restart, by a store now forgotten.
            raise StaleTimestamp(
                "envelope timestamp is before the gateway started; reseal and resend",
                gateway_time_ms=now_ms,
            )

    async def check_nonce(self, device_id: str, nonce: bytes) -> None:
        """Raise `ReplayedNonce` when this device already used this nonce."""
        key = device_id.encode() + b"\x00" + nonce
        if not await self.store.remember(key, NONCE_TTL_WINDOWS * self.window_s):
            raise ReplayedNonce("this envelope was already received")
