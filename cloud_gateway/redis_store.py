"""What the Redis-backed stores share: a Redis error as the client's 503, and the write probe.

A Redis that answers `PING` may still refuse every write: a read-only replica (after a
failover, or a `redis_url` pointing at one) answers `READONLY`, a full one under
`maxmemory-policy noeviction` answers `OOM`. The replay cache and the counters write on every
request, so readiness and the startup check write too (`write_probe`), and an error Redis
answered is not reported as "unreachable".
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from cloud_gateway.errors import StoreUnavailable

_PROBE_PREFIX = "tandem:ready:"
_PROBE_TTL_MS = 5_000
_CAUSE_CHARS = 300


def answered(exc: RedisError) -> bool:
    """True if Redis answered with an error (READONLY, OOM, ...), False if it did not answer
    (refused, timed out, connection lost)."""
    return isinstance(exc, ResponseError)


def describe(exc: RedisError) -> str:
    """`ReadOnlyError: You can't write against a read only replica.`, for logs (Redis error
    messages name no request content; the URL's password is never in them)."""
    return f"{type(exc).__name__}: {exc}"[:_CAUSE_CHARS]


def store_unavailable(store: str, exc: RedisError) -> StoreUnavailable:
    """The client's `503 store_unavailable` for a Redis error of `store` ("the replay store"),
    carrying the error for the log (`StoreUnavailable.cause`)."""
    if answered(exc):
        message = f"{store} refused the request; retry later"
    else:
        message = f"{store} is unreachable; retry later"
    return StoreUnavailable(message, cause=describe(exc))


async def write_probe(redis: Redis) -> None:
    """Write a key of its own that expires in 5 s (`SET tandem:ready:<random> 1 PX 5000`);
    raises the `RedisError` of a Redis that cannot take writes."""
    await redis.set(_PROBE_PREFIX + secrets.token_hex(8), b"1", px=_PROBE_TTL_MS)
