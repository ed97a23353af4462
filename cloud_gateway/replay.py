"""Replay protection: a timestamp window plus a store of nonces seen within that window.

An envelope is accepted once: its timestamp must be within `window_s` of the gateway's clock,
and its (device, nonce) must not have been seen in the last `2 * window_s` seconds (any older
envelope already fails the timestamp check, so nonces need not be kept longer).
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


class ReplayGuard:
    """Checks an envelope's timestamp and nonce; raises `StaleTimestamp` / `ReplayedNonce`."""

    def __init__(self, store: NonceStore, window_s: float = 60.0) -> None:
        self.store = store
        self.window_s = window_s

    def check_timestamp(self, ts_ms: int, now: float) -> None:
        """Raise `StaleTimestamp` when the envelope's clock is off by more than the window."""
        # In integer milliseconds: ts_ms is any JSON integer, which may not fit a float.
        skew_ms = ts_ms - int(now * 1000)
        if abs(skew_ms) > self.window_s * 1000:
            skew = f"{skew_ms / 1000:+.0f} s" if abs(skew_ms) < 10**15 else "centuries"
            raise StaleTimestamp(
                f"envelope timestamp is {skew} from the gateway clock "
                f"(window ±{self.window_s:.0f} s)"
            )

    async def check_nonce(self, device_id: str, nonce: bytes) -> None:
        """Raise `ReplayedNonce` when this device already used this nonce."""
        if not await self.store.remember(device_id.encode() + b"\x00" + nonce, 2 * self.window_s):
            raise ReplayedNonce("this envelope was already received")
