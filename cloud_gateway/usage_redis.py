"""Usage counters in Redis: limits shared by every gateway replica.

Keys: `tandem:rpm:{device}:{minute}` (expires after 2 minutes), `tandem:tok:{device}:{day}`
and `tandem:req:{device}:{day}` (expire after 2 days), and `tandem:charge:{id}`, the marker
that makes a charge count once however often it is sent: kept an hour after a charge's first
attempt (its reply may be lost with the connection, and the charge is then sent again under
the same id), 2 days after a re-sent one. Durability is Redis's (RDB/AOF).
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cloud_gateway.redis_store import store_unavailable

_MINUTE_TTL = 120
_DAY_TTL = 2 * 86_400
# How long a first attempt's marker lives: a reply lost in a Redis outage shorter than this
# is charged once when the charge is sent again. One small key per request for an hour.
FIRST_ATTEMPT_TTL = 3_600

# KEYS: the token counter, the charge's marker; ARGV: tokens, the marker's TTL, the counter's
# TTL. The marker is set if and only if the tokens are added: the increment goes first, since
# a script that fails part-way keeps the writes made before (Redis has no rollback), and a
# marker set before a refused INCRBY (a count out of range) would drop the charge's re-send.
# Scripts run atomically, so nothing comes between the EXISTS and the SET.
_ADD_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 0
"""


class RedisUsageStore:
    """A `UsageStore` on Redis: one round trip (a pipeline) per request."""

    def __init__(self, redis: Redis, prefix: str = "tandem:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._add_once = redis.register_script(_ADD_ONCE)  # EVALSHA: the script sent once

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
            raise store_unavailable("the rate-limit store", exc) from exc
        return int(requests), int(tokens or 0)

    async def add_tokens(
        self, device: str, day: int, tokens: int, charge_id: str | None = None,
        *, first_attempt: bool = False,
    ) -> None:
        """Add a finished request's tokens to the day's shared total, once per `charge_id`
        (for an hour after a `first_attempt`, for 2 days after a re-sent charge). Without an
        id the charge is a first attempt under a fresh one (`RateLimiter` always gives one)."""
        key = f"{self._prefix}tok:{device}:{day}"
        if charge_id is None:
            charge_id, first_attempt = uuid.uuid4().hex, True
        marker = f"{self._prefix}charge:{charge_id}"
        ttl = FIRST_ATTEMPT_TTL if first_attempt else _DAY_TTL
        try:
            await self._add_once(keys=[key, marker], args=[tokens, ttl, _DAY_TTL])
        except RedisError as exc:
            raise store_unavailable("the rate-limit store", exc) from exc

    async def close(self) -> None:
        """The Redis client is owned by the app; nothing to release here."""
