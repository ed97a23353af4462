"""The gateway's own configuration: defaults < `TANDEM_GATEWAY_*` environment < CLI flags.

The gateway does not import the device runtime, so it has its own small loader. A variable
with the `TANDEM_GATEWAY_` prefix that names no field here is refused, as the device's config
refuses an unknown `TANDEM_<SECTION>_<KEY>`: a misspelt `TANDEM_GATEWAY_TOKENS_PER_DAYS`
would otherwise leave the quota at its default without a word. The one exception is the
variable `upstream_api_key_env` names, should it carry the prefix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cloud_gateway.errors import ConfigurationError

ENV_PREFIX = "TANDEM_GATEWAY_"
MAX_CLOCK_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything `tandem gateway serve` needs. Paths "" mean the default under `state_dir`."""

    host: str = "127.0.0.1"
    port: int = 8089
    # keys/, devices.sqlite3, usage.sqlite3; "" = $XDG_STATE_HOME/tandem/gateway
    # ($XDG_STATE_HOME unset or empty: ~/.local/state), like the device's state files
    state_dir: str = ""
    # Upstream: "" = the embedded engine from `kernels` (engine_spec); else an OpenAI-compatible
    # base URL such as http://127.0.0.1:8000/v1 (vLLM, llama.cpp server, a hosted API).
    upstream_url: str = ""
    upstream_model: str = ""  # replaces the request's "model" when set
    upstream_api_key_env: str = "TANDEM_UPSTREAM_API_KEY"  # the env var holding the API key
    upstream_timeout_s: float = 120.0  # a whole answer; for a stream, the longest silence
    upstream_connect_timeout_s: float = 5.0
    upstream_max_connections: int = 256
    engine_spec: str = "bundled:smollm2-135m"
    engine_threads: int = 0  # 0..1024, 0 = one per usable CPU (the device's model.threads)
    engine_context_length: int = 2048  # 64..1048576 (the device's model.context_length)
    redis_url: str = ""  # "" = in-process replay cache and SQLite usage; redis://... = shared
    # One Redis command (or connect) that takes longer fails: a Redis that stops answering
    # without refusing connections is then a 503, as a Redis that is down, not a hung request.
    # A `socket_timeout` in redis_url's query wins.
    redis_timeout_s: float = 2.0
    clock_window_s: float = 60.0  # accepted |gateway clock - envelope timestamp|; <= 1 hour
    max_body_bytes: int = 1_048_576
    max_tokens_cap: int = 4096  # a request's max_tokens is clamped to this
    requests_per_minute: int = 120  # per device; 0 = unlimited
    tokens_per_day: int = 1_000_000  # per device, UTC day; 0 = unlimited
    device_cache_s: float = 1.0  # a revocation takes effect within this
    # SQLite usage is written at most this often (and at shutdown); charges the usage store
    # could not take (Redis down) are retried this often
    usage_flush_s: float = 1.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # inf and nan pass every comparison below that matters the wrong way (an infinite
            # clock window turns the timestamp check off), so they are refused first.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigurationError(
                    f"gateway config {f.name}={value!r} is invalid: it must be a finite number"
                )
        checks = {
            "port": 0 <= self.port <= 65535,
            "upstream_timeout_s": self.upstream_timeout_s > 0,
            "upstream_connect_timeout_s": self.upstream_connect_timeout_s > 0,
            "upstream_max_connections": self.upstream_max_connections > 0,
            # The ranges the device's runtime takes (runtime.config.ModelConfig): checked here
            # too, or a bad value would fail only when the embedded model first loads.
            "engine_threads": 0 <= self.engine_threads <= 1024,
            "engine_context_length": 64 <= self.engine_context_length <= 1 << 20,
            # Beyond an hour, a device clock would be wrong enough to matter elsewhere (TLS),
            # and every nonce is kept 3 windows (replay.NONCE_TTL_WINDOWS).
            "clock_window_s": 0 < self.clock_window_s <= MAX_CLOCK_WINDOW_S,
            "max_body_bytes": self.max_body_bytes >= 1024,
            "max_tokens_cap": self.max_tokens_cap >= 1,
            "requests_per_minute": self.requests_per_minute >= 0,
            "tokens_per_day": self.tokens_per_day >= 0,
            "device_cache_s": self.device_cache_s >= 0,
            "usage_flush_s": self.usage_flush_s > 0,
            "redis_timeout_s": self.redis_timeout_s > 0,
            "log_level": self.log_level.lower() in ("debug", "info", "warning", "error"),
        }
        ranges = {"engine_threads": "0..1024 (0 = one per usable CPU)",
                  "engine_context_length": "64..1048576"}
        for key, ok in checks.items():
            if not ok:
                must = f": it must be in {ranges[key]}" if key in ranges else ""
                raise ConfigurationError(
                    f"gateway config {key}={getattr(self, key)!r} is invalid{must}"
                )
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError("gateway config redis_url must start with redis://")
        if self.upstream_url and not _is_http_url(self.upstream_url):
            # Caught here, not at the first request: every chat would fail until a restart.
            raise ConfigurationError(
                f"gateway config upstream_url={self.upstream_url!r} must be an http:// or "
                "https:// URL with a host, such as http://127.0.0.1:8000/v1"
            )

    @property
    def state_path(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir).expanduser()
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "tandem" / "gateway"


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def load_gateway_config(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> GatewayConfig:
    """Build the config from `TANDEM_GATEWAY_<FIELD>` variables, then `overrides` (CLI flags).

    `overrides` values that are None are skipped (an unset flag).
    """
    env = os.environ if env is None else env
    hints = typing.get_type_hints(GatewayConfig)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(GatewayConfig):
        var = ENV_PREFIX + f.name.upper()
        if var in env:
            values[f.name] = _parse(var, hints[f.name], env[var])
    for key, value in (overrides or {}).items():
        if key not in hints:
            raise ConfigurationError(f"unknown gateway config key {key}")
        if value is not None:
            values[key] = value
    default_key_env = next(f.default for f in dataclasses.fields(GatewayConfig)
                           if f.name == "upstream_api_key_env")
    key_env = str(values.get("upstream_api_key_env", default_key_env))
    _refuse_unknown(env, key_env)
    return GatewayConfig(**values)


# Device settings people look for under the gateway's prefix (the device's `[offload]`).
_DEVICE_KEYS = {"URL": "offload.url", "CREDENTIAL": "offload.credential"}


def _refuse_unknown(env: Mapping[str, str], key_env: str) -> None:
    """A `ConfigurationError` for the first `TANDEM_GATEWAY_*` variable that names no
    field (`key_env`, the upstream API key's variable, is allowed whatever its name)."""
    fields = [f.name.upper() for f in dataclasses.fields(GatewayConfig)]
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var == key_env:
            continue
        name = var[len(ENV_PREFIX):]
        if name in fields:
            continue
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        if name in _DEVICE_KEYS:
            key = _DEVICE_KEYS[name]
            hint = (f"; the device's {key} is TANDEM_{key.replace('.', '_').upper()}, "
                    "not a gateway setting")
        raise ConfigurationError(
            f"unknown environment variable {var}{hint} (the gateway reads "
            f"{ENV_PREFIX}<FIELD> for: {', '.join(fields)})"
        )


def _parse(var: str, annotation: Any, text: str) -> Any:
    try:
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
    except ValueError:
        kind = "an integer" if annotation is int else "a number"
        raise ConfigurationError(f"{var} must be {kind}, not {text!r}") from None
    return text
