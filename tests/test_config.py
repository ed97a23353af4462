"""Configuration: TOML + TANDEM_* environment, validated with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import TandemConfig, load_config
from runtime.errors import ConfigError
from runtime.offload import OffloadConfig


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tandem.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file() -> None:
    cfg = load_config(env={})
    assert cfg == TandemConfig()
    assert cfg.model.spec == "bundled:smollm2-135m"
    assert cfg.runtime.mode == "prefer-local"


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[model]\nthreads = 3\nspec = "a.gguf"\n[server]\nport = 9000\n')
    cfg = load_config(path, env={"TANDEM_MODEL_THREADS": "4", "TANDEM_RUNTIME_MODE": "local-only"},
                      overrides={"server.port": 9100})
    assert cfg.model.threads == 4  # env beats file
    assert cfg.model.spec == "a.gguf"
    assert cfg.runtime.mode == "local-only"
    assert cfg.server.port == 9100  # overrides beat both


def test_privacy_allow_values_from_file_and_environment(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[privacy]\nallow_values = ["Ernest Hemingway", "a, b"]\n')
    assert load_config(path, env={}).privacy.allow_values == ("Ernest Hemingway", "a, b")
    env = {"TANDEM_PRIVACY_ALLOW_VALUES": "Ernest Hemingway, Acme ,"}
    assert load_config(env=env).privacy.allow_values == ("Ernest Hemingway", "Acme")
    with pytest.raises(ConfigError, match="allow_values: an empty value"):
        load_config(_toml(tmp_path, '[privacy]\nallow_values = [""]\n'), env={})


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[generation]\nmax_tokens = 7\n")
    assert load_config(env={"TANDEM_CONFIG": str(path)}).generation.max_tokens == 7


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[model]\nthreds = 2\n", {}, "unknown config key model.threds"),
        ("[modle]\n", {}, r"unknown config section \[modle\]"),
        ('[model]\nthreads = "two"\n', {}, "model.threads must be an integer, not 'two'"),
        ("[generation]\ntemperature = true\n", {}, "generation.temperature must be a number"),
        ('[runtime]\nmode = "sometimes"\n', {}, "runtime.mode must be one of"),
        ("[runtime]\nconfidence_threshold = 1.5\n", {}, r"runtime.confidence_threshold must be in"),
        ("[server]\nport = 70000\n", {}, "server.port must be in 0..65535"),
        ("", {"TANDEM_SERVER_PORT": "eighty"}, "TANDEM_SERVER_PORT must be an integer"),
        ("", {"TANDEM_MODEL_COLOUR": "red"}, "unknown environment variable TANDEM_MODEL_COLOUR"),
        ("model = 3\n", {}, "config key model must be a table"),
        ("[model\n", {}, "is not valid TOML"),
        ("[runtime]\nearly_escalation_tokens = [16, 8]\nearly_escalation_margins = [0.1, 0.1]\n",
         {}, "runtime.early_escalation_tokens / runtime.early_escalation_margins: "
             "EarlyEscalation checkpoints must have increasing token counts"),
        ("", {"TANDEM_RUNTIME_EARLY_ESCALATION_TOKENS": "8,16"},
         r"runtime.early_escalation_margins: .*one margin per checkpoint: 2 token counts, "
         r"16 margins"),
        ("[runtime]\nearly_escalation_tokens = [4, 8, 16, 32]\n"
         "early_escalation_margins = [0.7, 0.4, 1.5, 0.3]\n", {},
         r"runtime.early_escalation_margins: .*margins must each be in \[0, 1\]"),
        ("[runtime]\nearly_escalation_tokens = [0, 8]\nearly_escalation_margins = [0.1, 0.1]\n",
         {}, "runtime.early_escalation_margins: .*tokens must be at least 1"),
        ("[runtime]\n_early_escalation = 1\n", {}, "unknown config key runtime._early_escalation"),
        ("[generation]\ntemperature = inf\n", {},
         "generation.temperature must be a finite number, not inf"),
        ("[generation]\ntemperature = nan\n", {},
         "generation.temperature must be a finite number, not nan"),
        ("", {"TANDEM_OFFLOAD_DEADLINE_S": "nan"},
         "TANDEM_OFFLOAD_DEADLINE_S must be a finite number, not 'nan'"),
        ("", {"TANDEM_MONITOR_PUSHED_TTL_S": "-inf"},
         "TANDEM_MONITOR_PUSHED_TTL_S must be a finite number, not '-inf'"),
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_toml(tmp_path, text), env=env)


def test_model_seed_is_unset_unless_configured(tmp_path: Path) -> None:
    """Unset (None): each sampled request without a seed draws a fresh one; the key left out
    of the file, or TANDEM_MODEL_SEED empty (which also unsets a seed from the file)."""
    assert load_config(env={}).model.seed is None
    for seed in (0, 7, 2**32 - 1):
        path = _toml(tmp_path, f"[model]\nseed = {seed}\n")
        assert load_config(path, env={}).model.seed == seed
    path = _toml(tmp_path, "[model]\nseed = 7\n")
    assert load_config(path, env={"TANDEM_MODEL_SEED": "12"}).model.seed == 12
    assert load_config(path, env={"TANDEM_MODEL_SEED": ""}).model.seed is None


def test_a_bad_model_seed_is_refused_and_the_range_error_says_how_to_unset_it(
    tmp_path: Path,
) -> None:
    hint = r"must be in 0\.\.4294967295 \(or left out: a fresh random seed per request\)$"
    for text, env, message in [
        ("[model]\nseed = -1\n", {}, f"^model.seed {hint}"),
        ("[model]\nseed = 4294967296\n", {}, f"^model.seed {hint}"),
        ("", {"TANDEM_MODEL_SEED": "-1"}, f"^model.seed {hint}"),
        # TOML has no null, and the config takes no "random" / -1 spelling: unset = left out
        ('[model]\nseed = "random"\n', {}, "model.seed must be an integer, not 'random'"),
        ('[model]\nseed = ""\n', {}, "model.seed must be an integer, not ''"),
        ("[model]\nseed = 1.5\n", {}, "model.seed must be an integer, not 1.5"),
        ("[model]\nseed = true\n", {}, "model.seed must be an integer, not True"),
        ("", {"TANDEM_MODEL_SEED": "random"},
         "TANDEM_MODEL_SEED must be an integer, not 'random'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(_toml(tmp_path, text), env=env)


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"config file not found: {tmp_path / 'nope.toml'}"):
        load_config(tmp_path / "nope.toml", env={})


def test_early_escalation_checkpoints_from_config() -> None:
    rule = load_config(env={}).runtime.early_escalation
    assert rule is not None
    got = [(c.tokens, c.margin) for c in rule.checkpoints]
    assert len(got) == 16 and got[:3] == [(4, 0.72), (8, 0.4), (12, 0.36)]
    assert got[-1] == (192, 0.08)
    cfg = load_config(env={"TANDEM_RUNTIME_EARLY_ESCALATION_TOKENS": "4,12",
                           "TANDEM_RUNTIME_EARLY_ESCALATION_MARGINS": "0.5,0.25"})
    rule = cfg.runtime.early_escalation
    assert rule is not None
    assert [(c.tokens, c.margin) for c in rule.checkpoints] == [(4, 0.5), (12, 0.25)]
    off = load_config(env={"TANDEM_RUNTIME_EARLY_ESCALATION_TOKENS": "",
                           "TANDEM_RUNTIME_EARLY_ESCALATION_MARGINS": ""})
    assert off.runtime.early_escalation is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[policy]\ndaily_cloud_cost = 1.0\n",
         "policy.daily_cloud_cost needs policy.cloud_cost_per_1k_tokens"),
        ('[runtime]\ntelemetry_path = "off"\n[policy]\ndaily_cloud_tokens = 1000\n',
         "counted from telemetry, and runtime.telemetry_path is \"off\""),
        ('[runtime]\ntelemetry_path = "off"\n[policy]\ndaily_cloud_cost = 1.0\n'
         "cloud_cost_per_1k_tokens = 0.01\n", "counted from telemetry"),
    ],
)
def test_a_cloud_budget_that_could_never_fill_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_toml(tmp_path, text), env={})


def test_a_cloud_budget_with_telemetry_and_a_price_loads(tmp_path: Path) -> None:
    config = load_config(_toml(tmp_path, "[policy]\ndaily_cloud_cost = 1.0\n"
                                         "cloud_cost_per_1k_tokens = 0.01\n"), env={})
    assert config.policy.daily_cloud_cost == 1.0


@pytest.mark.parametrize("key", ["deadline_s", "connect_timeout_s", "backoff_s",
                                 "breaker_reset_s", "keys_ttl_s"])
def test_offload_times_must_be_finite(key: str) -> None:
    with pytest.raises(ValueError, match="must be finite numbers"):
        OffloadConfig(**{key: float("nan")})


def test_a_directory_as_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    assert str(err.value) == f"config file {tmp_path} is a directory, not a TOML file"


def test_a_binary_config_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "tandem.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(err.value) == f"config file {path} is not valid TOML: not UTF-8 text (byte 0)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[policy]\ncloud_task_cues = ["coding"]\n',
         r"policy.cloud_task_cues: unknown cue coding \(known: code, math, translation\)"),
        ("[monitor]\npushed_ttl_s = -5\n", "monitor.pushed_ttl_s must be > 0"),
        ('[runtime]\ntelemetry_path = "OFF"\n[policy]\ndaily_cloud_tokens = 10\n',
         "counted from telemetry"),
        ('[model]\nengine = "auto"\n', "unknown config key model.engine"),  # never read
    ],
)
def test_settings_that_could_never_take_effect_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_toml(tmp_path, text), env={})
