"""The Redis nonce store: one replay cache shared by every gateway replica."""

from __future__ import annotations

from redis.asyncio import Redis


class RedisNonceStore:
    """`SET key 1 NX PX ttl`: atomic across replicas, expired by Redis itself."""

    def __init__(self, redis: Redis, prefix: str = "tandem:nonce:") -> None:
        self._redis = redis
        self._prefix = prefix.encode()

    async def remember(self, key: bytes, ttl_s: float) -> bool:
        """True if `key` is new across all replicas, False if any replica has seen it."""
        created = await self._redis.set(self._prefix + key, b"1", nx=True, px=int(ttl_s * 1000))
        return bool(created)

    async def close(self) -> None:
        """The Redis client is owned by the app; nothing to release here."""
