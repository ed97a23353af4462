"""The gateway's aiohttp application, built by `create_app` (no globals; state under AppKeys).

Routes:
- `POST /v1/sealed/chat/completions`: a sealed envelope in, a sealed answer (or stream) out.
- `GET /v1/keys`: the current HPKE public keys, signed by the gateway identity.
- `GET /healthz` (alive), `GET /readyz` (a current key, the upstream reachable, Redis taking
  writes), `GET /metrics` (Prometheus).

Run it with `RUN_OPTIONS` (`web.run_app(app, **RUN_OPTIONS)`, or `web.AppRunner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypedDict

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cloud_gateway import charge_journal
from cloud_gateway.admission import Admission
from cloud_gateway.charge_journal import ChargeJournal
from cloud_gateway.config import GatewayConfig
from cloud_gateway.devices import DeviceDirectory, DeviceRegistry
from cloud_gateway.errors import (
    ConfigurationError,
    GatewayError,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
)
from cloud_gateway.keys import KeyRing
from cloud_gateway.limits import RateLimiter, UsageStore
from cloud_gateway.logs import LOGGER_NAME
from cloud_gateway.metrics import GatewayMetrics, create_metrics
from cloud_gateway.redis_store import answered, describe, write_probe
from cloud_gateway.replay import NonceStore, ReplayGuard
from cloud_gateway.replay_memory import MemoryNonceStore
from cloud_gateway.replay_redis import RedisNonceStore
from cloud_gateway.sealed_chat import sealed_chat
from cloud_gateway.upstream import Upstream
from cloud_gateway.upstream_engine import EngineUpstream
from cloud_gateway.upstream_http import HttpUpstream
from cloud_gateway.usage_redis import RedisUsageStore
from cloud_gateway.usage_sqlite import SqliteUsageStore
from kernels.base import Engine

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RunOptions(TypedDict):
    handler_cancellation: bool


# How the app must be served. aiohttp >= 3.9 cancels the handler of a client that disconnects
# only when asked: without it, a device that leaves while the upstream is silent leaves the
# upstream request running (and charged) until it answers or times out.
RUN_OPTIONS: Final[RunOptions] = {"handler_cancellation": True}


@dataclass(frozen=True, slots=True)
class GatewayState:
    """Everything a request handler needs, built at startup and closed at shutdown."""

    config: GatewayConfig
    keys: KeyRing
    admission: Admission
    limiter: RateLimiter
    upstream: Upstream
    metrics: GatewayMetrics
    log: logging.Logger
    redis: Redis | None = None


CONFIG_KEY = web.AppKey("config", GatewayConfig)
STATE_KEY = web.AppKey("state", GatewayState)
METRICS_KEY = web.AppKey("metrics", GatewayMetrics)


def create_app(
    config: GatewayConfig, *, engine: Engine | None = None, upstream: Upstream | None = None
) -> web.Application:
    """The gateway app. `upstream` wins over `engine`, which wins over `config.upstream_url`;
    with none of them, the engine `config.engine_spec` is loaded on first use."""
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_error_middleware])
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = create_metrics()
    app.cleanup_ctx.append(_state_context(engine, upstream))
    app.router.add_post("/v1/sealed/chat/completions", _sealed_chat)
    app.router.add_get("/v1/keys", _keys)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


def _build_upstream(config: GatewayConfig, engine: Engine | None) -> Upstream:
    if engine is not None:
        return EngineUpstream(engine, model_name=config.upstream_model)
    if config.upstream_url:
        return HttpUpstream(
            config.upstream_url,
            api_key_env=config.upstream_api_key_env,
            timeout_s=config.upstream_timeout_s,
            connect_timeout_s=config.upstream_connect_timeout_s,
            max_connections=config.upstream_max_connections,
        )

    def load() -> Engine:
        from kernels.registry import load_engine  # the model runtime only when it is used

        return load_engine(
            config.engine_spec,
            threads=config.engine_threads,
            context_length=config.engine_context_length,
        )

    return EngineUpstream(loader=load, model_name=config.upstream_model)


def _state_context(
    engine: Engine | None, given: Upstream | None
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def context(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG_KEY]
        state_dir = config.state_path
        keys = KeyRing(state_dir)
        redis: Redis | None = None
        nonces: NonceStore
        usage: UsageStore
        sqlite_usage: SqliteUsageStore | None = None
        # A store in memory forgets the nonces it saw when the process ends: envelopes
        # stamped before this start could be replays of ones accepted before it.
        not_before_ms = 0
        if config.redis_url:
            try:
                redis = Redis.from_url(
                    config.redis_url,
                    socket_timeout=config.redis_timeout_s,
                    socket_connect_timeout=config.redis_timeout_s,
                )
            except ValueError as exc:  # a port or query value that is not a number, ...
                # The message, not the URL: the URL may hold a password.
                raise ConfigurationError(f"redis_url is invalid: {exc}") from None
            try:
                # Fail at startup, not on the first request: a write, since a read-only
                # replica or a full Redis answers PING but refuses what every request does.
                await write_probe(redis)
            except RedisError as exc:
                await redis.aclose()
                what = "Redis refuses writes" if answered(exc) else "cannot reach Redis"
                raise ConfigurationError(f"{what} (redis_url): {exc}") from None
            nonces, usage = RedisNonceStore(redis), RedisUsageStore(redis)
        else:
            sqlite_usage = SqliteUsageStore(state_dir / "usage.sqlite3", config.usage_flush_s)
            nonces, usage = MemoryNonceStore(), sqlite_usage
            not_before_ms = int(time.time() * 1000)
        # Re-stat'ed as often as lookups are cached: a registry replaced on disk (a new
        # file renamed over it) is seen as soon as an edit in place would be.
        registry = DeviceRegistry(state_dir / "devices.sqlite3", recheck_s=config.device_cache_s)
        journal = _journal(state_dir / "uncharged") if charge_journal.available() else None
        limiter = RateLimiter(usage, config.requests_per_minute, config.tokens_per_day,
                              journal=journal)
        app[METRICS_KEY].uncharged_tokens.set_function(lambda: limiter.uncharged_tokens)
        upkeep = asyncio.create_task(_usage_upkeep(limiter, sqlite_usage, config.usage_flush_s))
        upstream = given if given is not None else _build_upstream(config, engine)
        app[STATE_KEY] = GatewayState(
            config=config,
            keys=keys,
            admission=Admission(
                keys=keys,
                devices=DeviceDirectory(registry, config.device_cache_s),
                replay=ReplayGuard(nonces, config.clock_window_s, not_before_ms=not_before_ms),
                limiter=limiter,
                max_tokens_cap=config.max_tokens_cap,
                upstream_model=config.upstream_model,
            ),
            limiter=limiter,
            upstream=upstream,
            metrics=app[METRICS_KEY],
            log=logging.getLogger(LOGGER_NAME),
            redis=redis,
        )
        try:
            yield
        finally:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
            if given is None:
                await upstream.close()
            await limiter.close()  # charges the store refused: a last try, then the log
            await usage.close()
            await nonces.close()
            registry.close()
            if redis is not None:
                await redis.aclose()

    return context


def _journal(folder: Path) -> ChargeJournal:
    """The charge journal, or a `ConfigurationError` naming its folder (not an `OSError`,
    which `serve` would take for a port it cannot listen on)."""
    try:
        return ChargeJournal(folder)
    except OSError as exc:
        raise ConfigurationError(f"cannot use {folder}: {exc.strerror or exc}") from None


async def _usage_upkeep(
    limiter: RateLimiter, sqlite_usage: SqliteUsageStore | None, interval_s: float
) -> None:
    """Every `interval_s`: write SQLite usage, apply charges the store refused before, and
    save those still kept to the journal."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            if sqlite_usage is not None:
                await sqlite_usage.flush_async()  # in a worker thread
            await limiter.apply_uncharged()
            limiter.persist()  # what is still kept, on disk: a crash now loses none of it
        except Exception:  # noqa: BLE001 - logged; the next round tries again
            logging.getLogger(LOGGER_NAME).exception("usage upkeep failed")


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an OpenAI-style error body with the error's own status."""
    try:
        return await handler(request)
    except ConfigurationError:  # its message names server paths: for the log, not the client
        return _internal_error(request)
    except GatewayError as exc:
        return _error_response(request, exc)
    except web.HTTPRequestEntityTooLarge:
        return _error_response(request, PayloadTooLarge("the request body is too large"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body = {
            "error": {
                "message": exc.reason,
                "type": "invalid_request_error",
                "code": exc.reason.lower().replace(" ", "_"),
            }
        }
        return web.json_response(body, status=exc.status)
    except Exception:
        return _internal_error(request)


def _internal_error(request: web.Request) -> web.Response:
    """A bare 500 for the client; the cause goes to the log (called inside `except`)."""
    logging.getLogger(LOGGER_NAME).exception(
        "unhandled error", extra={"fields": {"path": request.path}}
    )
    err = GatewayError("internal error")
    request.app[METRICS_KEY].requests.labels(err.code).inc()
    return web.json_response(err.to_body(), status=500)


def _error_response(request: web.Request, exc: GatewayError) -> web.Response:
    headers = {}
    metrics = request.app[METRICS_KEY]
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
        metrics.rate_limited.labels(exc.limit).inc()
    if exc.status < 500:
        metrics.rejections.labels(exc.code).inc()
    metrics.requests.labels(exc.code).inc()
    fields: dict[str, object] = {"path": request.path, "status": exc.status, "code": exc.code}
    if isinstance(exc, StoreUnavailable) and exc.cause:
        fields["cause"] = exc.cause  # what Redis said (or that it did not answer)
    logging.getLogger(LOGGER_NAME).info("rejected", extra={"fields": fields})
    return web.json_response(exc.to_body(), status=exc.status, headers=headers)


async def _sealed_chat(request: web.Request) -> web.StreamResponse:
    return await sealed_chat(request, request.app[STATE_KEY], time.perf_counter())


async def _keys(request: web.Request) -> web.Response:
    doc = request.app[STATE_KEY].keys.document()
    return web.json_response(doc, headers={"Cache-Control": "max-age=60"})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if not state.keys.current():
        return web.json_response({"status": "not ready", "reason": "no current key"}, status=503)
    if state.redis is not None:
        try:
            await write_probe(state.redis)  # PING passes on a Redis that refuses writes
        except RedisError as exc:
            if answered(exc):
                reason = f"redis refuses writes: {describe(exc)}"
            else:
                reason = f"redis unreachable: {type(exc).__name__}"
            return web.json_response({"status": "not ready", "reason": reason}, status=503)
    ok, reason = await state.upstream.ready()
    if not ok:
        return web.json_response({"status": "not ready", "reason": reason}, status=503)
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS_KEY].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
