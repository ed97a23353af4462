"""Usage counters in Redis: limits shared by every gateway replica.

Keys: `tandem:rpm:{device}:{minute}` (expires after 2 minutes), `tandem:tok:{device}:{day}`
and `tandem:req:{device}:{day}` (expire after 2 days), and `tandem:charge:{id}` (2 days) for
each charge re-sent after Redis failed, so that it is added once however often it is sent.
Durability is Redis's (RDB/AOF).
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cloud_gateway.errors import StoreUnavailable

_MINUTE_TTL = 120
_DAY_TTL = 2 * 86_400

# KEYS: the token counter, the charge's marker; ARGV: tokens, TTL. Atomic: the marker is set
# if and only if the tokens are added.
_ADD_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RedisUsageStore:
    """A `UsageStore` on Redis: one round trip (a pipeline) per request."""

    def __init__(self, redis: Redis, prefix: str = "tandem:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def count_request(self, device: str, minute: int, day: int) -> tuple[int, int]:
        """Count one request; return (requests this minute across replicas, tokens today)."""
        p = self._prefix
        rpm_key = f"{p}rpm:{device}:{minute}"
        req_key = f"{p}req:{device}:{day}"
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(rpm_key)
        pipe.expire(rpm_key, _MINUTE_TTL)
        pipe.incr(req_key)
        pipe.expire(req_key, _DAY_TTL)
        pipe.get(f"{p}tok:{device}:{day}")
        try:
            requests, _, _, _, tokens = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable("the rate-limit store is unreachable; retry later") from exc
        return int(requests), int(tokens or 0)

    async def add_tokens(
        self, device: str, day: int, tokens: int, charge_id: str | None = None
    ) -> None:
        """Add a finished request's tokens to the day's shared total (once per `charge_id`)."""
        key = f"{self._prefix}tok:{device}:{day}"
        if charge_id is not None:
            marker = f"{self._prefix}charge:{charge_id}"
            try:
                await self._redis.eval(_ADD_ONCE, 2, key, marker, tokens, _DAY_TTL)
            except RedisError as exc:
                raise StoreUnavailable("the rate-limit store is unreachable") from exc
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.incrby(key, tokens)
        pipe.expire(key, _DAY_TTL)
        try:
            await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable("the rate-limit store is unreachable") from exc

    async def close(self) -> None:
        """The Redis client is owned by the app; nothing to release here."""
