"""The Redis nonce store: one replay cache shared by every gateway replica."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cloud_gateway.redis_store import store_unavailable


class RedisNonceStore:
    """`SET key 1 NX PX ttl`: atomic across replicas, expired by Redis itself."""

    def __init__(self, redis: Redis, prefix: str = "tandem:nonce:") -> None:
        self._redis = redis
        self._prefix = prefix.encode()

    async def remember(self, key: bytes, ttl_s: float) -> bool:
        """True if `key` is new across all replicas, False if any replica has seen it."""
        try:
            created = await self._redis.set(
                self._prefix + key, b"1", nx=True, px=int(ttl_s * 1000)
            )
        except RedisError as exc:
            raise store_unavailable("the replay store", exc) from exc
        return bool(created)

    async def close(self) -> None:
        """The Redis client is owned by the app; nothing to release here."""
