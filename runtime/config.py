"""One typed configuration: a TOML file plus `TANDEM_*` environment variables.

Sections are frozen dataclasses; adding a section is adding a dataclass and a field on
`TandemConfig`. Values are validated against the annotations at load time, and every
error names the offending key (`model.threads`, `TANDEM_SERVER_PORT`).

Precedence: defaults < TOML file < environment. The environment variable for
`section.key` is `TANDEM_SECTION_KEY` (upper case), e.g. `TANDEM_MODEL_SPEC`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from runtime.confidence import EarlyEscalation
from runtime.errors import ConfigError
from runtime.offload import OffloadConfig
from runtime.policy import PolicyConfig
from runtime.privacy.policy import PrivacyConfig
from runtime.telemetry import is_off as telemetry_is_off

Mode = Literal["local-only", "prefer-local", "prefer-cloud", "cloud-only"]
MODES: tuple[str, ...] = get_args(Mode)


MAX_SECONDS = 30 * 86_400.0  # the longest duration any setting may take


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    spec: str = "bundled:smollm2-135m"  # bundled:NAME, a .gguf path, or an engine-specific spec
    threads: int = 0  # 0: one per CPU this process may use
    context_length: int = 2048
    # What a sampled request without its own `seed` uses. None (the key left out; in the
    # environment an empty TANDEM_MODEL_SEED): a fresh random seed per request, as OpenAI's
    # API does. A number: every such request samples with it (repeatable answers).
    seed: int | None = None
    cache_dir: str = ""  # where assembled / converted models go; "" = $XDG_CACHE_HOME/tandem

    def __post_init__(self) -> None:
        _check(bool(self.spec.strip()), "model.spec", "must not be empty (bundled:NAME or a path)")
        _check(0 <= self.threads <= 1024, "model.threads",
               "must be in 0..1024 (0 = one per usable CPU)")
        # llama.cpp takes a 32-bit context and seed: larger values were silently cut.
        _check(64 <= self.context_length <= 1 << 20, "model.context_length",
               "must be in 64..1048576")
        _check(self.seed is None or 0 <= self.seed <= 2**32 - 1, "model.seed",
               "must be in 0..4294967295 (or left out: a fresh random seed per request)")


@dataclass(frozen=True, slots=True)
class GenerationConfig:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        _check(self.max_tokens >= 1, "generation.max_tokens", "must be >= 1")
        _check(self.temperature >= 0, "generation.temperature", "must be >= 0")
        _check(0 <= self.top_p <= 1, "generation.top_p", "must be between 0 and 1 (0: greedy)")


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    mode: Mode = "prefer-local"
    confidence_threshold: float = 0.5  # prefer-local escalates below this score
    queue_size: int = 16  # requests waiting for the one local engine
    telemetry_path: str = ""  # "" = ~/.local/state/tandem/telemetry.sqlite3; "off" = none
    telemetry_keep_days: float = 0.0  # answers older than this are deleted; 0 = keep all
    stream_decide_tokens: int = 16  # a streamed prefer-local answer is judged on this many
    send_draft: bool = False  # an escalated request carries the local draft to refine
    # A whole-answer (non-streamed) prefer-local cascade stops decoding and escalates at the
    # first checkpoint (K tokens in) where the running score is below threshold - margin_K.
    # The defaults: at each K the wider of the margins `benchmarks.early_escalation` chose at
    # 96 and at 256 tokens (docs/confidence.md); () = never early.
    early_escalation_tokens: tuple[int, ...] = (
        4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 64, 96, 128, 192)
    early_escalation_margins: tuple[float, ...] = (
        0.72, 0.40, 0.36, 0.34, 0.38, 0.36, 0.32, 0.28, 0.26, 0.24, 0.24, 0.22, 0.18, 0.12,
        0.08, 0.08)
    # Multiple choice (`Runtime.choose`): escalate below this calibrated P(right), using the
    # calibration file at `choice_calibration` ("" = the bundled ARC-Easy fit).
    choice_threshold: float = 0.5
    choice_calibration: str = ""
    # Built once from the two lists above (not a config key).
    _early_escalation: EarlyEscalation | None = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(0 <= self.confidence_threshold <= 1, "runtime.confidence_threshold",
               "must be in [0, 1]")
        _check(self.queue_size >= 0, "runtime.queue_size", "must be >= 0")
        _check(math.isfinite(self.telemetry_keep_days) and self.telemetry_keep_days >= 0,
               "runtime.telemetry_keep_days", "must be a number of days >= 0 (0 = keep all)")
        _check(self.stream_decide_tokens >= 1, "runtime.stream_decide_tokens", "must be >= 1")
        _check(0 <= self.choice_threshold <= 1, "runtime.choice_threshold", "must be in [0, 1]")
        rule = None
        if self.early_escalation_tokens or self.early_escalation_margins:
            try:
                rule = EarlyEscalation.from_lists(self.early_escalation_tokens,
                                                  self.early_escalation_margins)
            except ValueError as exc:
                raise ConfigError(f"runtime.early_escalation_tokens / "
                                  f"runtime.early_escalation_margins: {exc}") from None
        object.__setattr__(self, "_early_escalation", rule)

    @property
    def early_escalation(self) -> EarlyEscalation | None:
        """The whole-answer cascade's early rule (None: decode every answer in full)."""
        return self._early_escalation


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    cache_interval_s: float = 1.0
    network_interval_s: float = 10.0
    network_timeout_s: float = 1.0
    pushed_ttl_s: float = 300.0  # signals pushed by an app expire after this
    sysfs_root: str = "/sys"
    vcgencmd: str = "vcgencmd"
    tegrastats: str = "tegrastats"

    def __post_init__(self) -> None:
        _check(self.cache_interval_s >= 0, "monitor.cache_interval_s", "must be >= 0")
        _check(self.network_interval_s > 0, "monitor.network_interval_s", "must be > 0")
        _check(self.network_timeout_s > 0, "monitor.network_timeout_s", "must be > 0")
        _check(self.pushed_ttl_s > 0, "monitor.pushed_ttl_s", "must be > 0")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8088
    max_body_bytes: int = 1_048_576
    model_name: str = "tandem"  # the id served at /v1/models
    # Streamed text is written at most this often (the first piece at once, the last at
    # once): every write wakes the server and the client, and on a 2-core device each
    # wakeup steals a core from the model's compute threads.
    stream_interval_ms: int = 50
    # Threads requests run on (0: runtime.queue_size + 32). A cloud call holds one while it
    # waits (up to offload.deadline_s); a request that finds none free is a 429 at once.
    worker_threads: int = 0

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "server.port", "must be in 0..65535")
        _check(0 <= self.worker_threads <= 1024, "server.worker_threads", "must be in 0..1024")
        _check(self.max_body_bytes >= 1024, "server.max_body_bytes", "must be >= 1024")
        _check(0 <= self.stream_interval_ms <= 1000, "server.stream_interval_ms",
               "must be in 0..1000")


@dataclass(frozen=True, slots=True)
class TandemConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        policy = self.policy
        if telemetry_is_off(self.runtime.telemetry_path) and (policy.daily_cloud_tokens
                                                     or policy.daily_cloud_cost):
            raise ConfigError("policy.daily_cloud_tokens / daily_cloud_cost are counted from "
                              'telemetry, and runtime.telemetry_path is "off": set a '
                              "telemetry path or no budget")

    def replace(self, **sections: Any) -> TandemConfig:
        """A copy with some sections replaced (each a section instance)."""
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict[str, Any]:
        """The config keys by section (what a TOML file or the environment can set)."""
        out = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            for k in dataclasses.fields(getattr(self, f.name)):
                if not k.init:
                    del out[f.name][k.name]
        return out


ENV_PREFIX = "TANDEM_"


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TandemConfig:
    """Load and validate the configuration.

    `path`: a TOML file (None: `$TANDEM_CONFIG` if set, else defaults only).
    `env`: the environment to read `TANDEM_*` keys from (default: `os.environ`).
    `overrides`: dotted keys (`"model.spec"`) applied last, e.g. from CLI flags.
    """
    env = os.environ if env is None else env
    raw: dict[str, dict[str, Any]] = {}
    if path is None and env.get("TANDEM_CONFIG"):
        path = env["TANDEM_CONFIG"]
    if path is not None:
        raw = _read_toml(Path(path))
    sections = {f.name: f for f in dataclasses.fields(TandemConfig)}
    for name, table in raw.items():
        if name not in sections:
            raise ConfigError(f"unknown config section [{name}] (known: {', '.join(sections)})")
        if not isinstance(table, dict):
            raise ConfigError(f"config key {name} must be a table [{name}]")
    _apply_env(raw, env, sections)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in sections or not key:
            raise ConfigError(f"unknown config key {dotted}")
        raw.setdefault(section, {})[key] = value
    built = {name: _build_section(name, f.type, raw.get(name, {})) for name, f in sections.items()}
    return TandemConfig(**built)


MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; /dev/zero or a wrong file is not one


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES} bytes: not a "
                              "config file")
        # Editors on Windows save UTF-8 with a byte-order mark, which TOML does not allow.
        return tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: not UTF-8 text "
                          f"(byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _section_class(annotation: Any) -> type[Any]:
    hints = typing.get_type_hints(TandemConfig)
    cls = annotation if isinstance(annotation, type) else None
    if cls is None:
        for value in hints.values():
            if getattr(value, "__name__", None) == annotation:
                cls = value
    if cls is None or not dataclasses.is_dataclass(cls):
        raise ConfigError(f"internal: section type {annotation!r} is not a dataclass")
    return cls


def _apply_env(
    raw: dict[str, dict[str, Any]], env: Mapping[str, str], sections: Mapping[str, Any]
) -> None:
    for name, f in sections.items():
        cls = _section_class(f.type)
        known = {sf.name for sf in dataclasses.fields(cls) if sf.init}
        prefix = f"{ENV_PREFIX}{name.upper()}_"
        for var, value in env.items():
            if not var.startswith(prefix):
                continue
            key = var[len(prefix) :].lower()
            if key not in known:
                raise ConfigError(f"unknown environment variable {var} (no key {name}.{key})")
            raw.setdefault(name, {})[key] = _EnvString(var, value)


class _EnvString(str):
    """A value read from the environment: parsed to the field's type, named by its variable."""

    var: str

    def __new__(cls, var: str, value: str) -> _EnvString:
        obj = super().__new__(cls, value)
        obj.var = var
        return obj


def _build_section(name: str, annotation: Any, table: Mapping[str, Any]) -> Any:
    cls = _section_class(annotation)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            known_s = ", ".join(sorted(known))
            raise ConfigError(f"unknown config key {name}.{key} (known: {known_s})")
        label = value.var if isinstance(value, _EnvString) else f"{name}.{key}"
        values[key] = _coerce(label, hints[key], value)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section [{name}]: {exc}") from exc


def _coerce(label: str, annotation: Any, value: Any) -> Any:
    from_env = isinstance(value, _EnvString)
    origin = get_origin(annotation)
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{label} must be one of {choices}, not {str(value)!r}")
        return str(value)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if from_env and value == "" or value is None:
            return None
        return _coerce(label, args[0], value)
    if origin in (tuple, list):
        if from_env:
            var = value.var
            value = [_EnvString(var, v.strip()) for v in str(value).split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{label} must be a list, not {type(value).__name__}")
        (item,) = get_args(annotation)[:1]
        return tuple(_coerce(label, item, v) for v in value)
    if annotation is bool:
        if from_env:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{label} must be true or false, not {str(value)!r}")
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, not {value!r}")
        return value
    if annotation is int:
        if from_env:
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{label} must be an integer, not {str(value)!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label} must be an integer, not {value!r}")
        return value
    if annotation is float:
        if from_env:
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"{label} must be a number, not {str(value)!r}") from None
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{label} must be a number, not {value!r}")
        else:
            number = float(value)
        # TOML and float() accept inf and nan; no setting means either (nan defeats every check)
        if not math.isfinite(number):
            shown = repr(str(value)) if from_env else repr(value)
            raise ConfigError(f"{label} must be a finite number, not {shown}")
        if label.lower().endswith("_s") and number > MAX_SECONDS:
            # 1e300 s passed every check, then overflowed a socket timeout or a thread wait
            raise ConfigError(f"{label} must be at most {MAX_SECONDS:.0f} seconds (30 days), "
                              f"not {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string, not {value!r}")
        return str(value)
    raise ConfigError(f"internal: unsupported config type {annotation!r} for {label}")
