"""The routing policy: one row per trigger, precedence rows, traces and logging."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import replace
from typing import Any

import pytest

from kernels import Engine
from runtime.config import MODES, Mode
from runtime.cues import task_cues
from runtime.errors import OffloadError, PrivacyBlockError
from runtime.monitor.snapshot import (
    BatteryState,
    CpuState,
    MemoryState,
    NetworkState,
    Snapshot,
    ThermalState,
)
from runtime.policy import (
    BANDIT,
    BATTERY,
    BUDGET,
    CIRCUIT,
    LATENCY,
    MEMORY,
    OFFLINE,
    PRIVACY,
    ROUTER,
    TASK_CUE,
    THERMAL,
    BudgetState,
    Decision,
    LatencyEstimates,
    PolicyConfig,
    PolicyInputs,
    RequestFeatures,
    decide,
)
from runtime.router.base import RouterVerdict
from runtime.router.online import ROUTER_FEATURES, BanditVerdict

GIB = 2**30
ALL_RULES = (PRIVACY, OFFLINE, CIRCUIT, BUDGET, MEMORY, THERMAL, BATTERY, LATENCY, ROUTER,
             TASK_CUE, BANDIT)
CONTEXT = (1.0, 0.4, 0.9)  # bias, P(local right), P(cloud right)


def calm_snapshot() -> Snapshot:
    """A device with nothing wrong: charged and plugged, cool, roomy, online."""
    return Snapshot(
        taken_at=0.0,
        cpu=CpuState(percent=10.0, per_core=(10.0, 10.0), count=2, load_avg_1m=0.2),
        memory=MemoryState(available_bytes=8 * GIB, total_bytes=16 * GIB,
                           process_rss_bytes=GIB // 2),
        battery=BatteryState(percent=80.0, plugged_in=True, seconds_left=None, source="test"),
        thermal=ThermalState(hottest_c=45.0, hottest_zone="cpu", throttling_now=False,
                             throttled_since_boot=False, source="test"),
        network=NetworkState(gateway_url="https://gw.example", reachable=True, rtt_ms=40.0,
                             checked_at=0.0),
    )


def calm(mode: Mode = "prefer-local") -> PolicyInputs:
    return PolicyInputs(
        mode=mode,
        request=RequestFeatures(prompt_tokens=200, expected_output_tokens=100),
        snapshot=calm_snapshot(),
        router=RouterVerdict(router="test", score=0.01, threshold=0.1, p_strong_wins=0.1),
        bandit=BanditVerdict("local", ucb_local=0.8, ucb_cloud=0.7, context=CONTEXT, updates=40,
                             features=ROUTER_FEATURES),
        latency=LatencyEstimates(local_tokens_per_s=50.0, local_prompt_tokens_per_s=500.0,
                                 cloud_rtt_ms=100.0, cloud_tokens_per_s=80.0),
    )


def with_snapshot(inputs: PolicyInputs, **parts: Any) -> PolicyInputs:
    return replace(inputs, snapshot=replace(inputs.snapshot, **parts))


# Each trigger, made to fire on the calm inputs; (inputs, config) modifications.
def battery_low(i: PolicyInputs) -> PolicyInputs:
    return with_snapshot(i, battery=BatteryState(12.0, False, 900.0, "test"))


def throttled(i: PolicyInputs) -> PolicyInputs:
    return with_snapshot(i, thermal=ThermalState(88.0, "cpu", True, True, "test"))


def memory_short(i: PolicyInputs) -> PolicyInputs:
    return with_snapshot(i, memory=MemoryState(200 * 2**20, 2 * GIB, GIB // 2))


def offline(i: PolicyInputs) -> PolicyInputs:
    return with_snapshot(i, network=NetworkState("https://gw.example", False, None, 0.0))


def circuit_open(i: PolicyInputs) -> PolicyInputs:
    return replace(i, circuit_open=True)


def privacy_blocked(i: PolicyInputs) -> PolicyInputs:
    return replace(i, privacy_block="a national ID number")


def budget_spent(i: PolicyInputs) -> PolicyInputs:
    return replace(i, budget=BudgetState(cloud_tokens_used=99_900))


def money_spent(i: PolicyInputs) -> PolicyInputs:
    return replace(i, budget=BudgetState(cloud_cost_used=0.999))


def slow_locally(i: PolicyInputs) -> PolicyInputs:
    # 100 tokens at 2 tok/s = 50 s locally vs ~1.4 s in the cloud, target 5 s.
    return replace(i, latency=replace(i.latency, local_tokens_per_s=2.0))


def router_says_cloud(i: PolicyInputs) -> PolicyInputs:
    return replace(i, router=RouterVerdict("test", score=0.4, threshold=0.1, p_strong_wins=0.5))


def bandit_says_cloud(i: PolicyInputs) -> PolicyInputs:
    return replace(i, bandit=BanditVerdict("cloud", 0.6, 0.9, CONTEXT, updates=40,
                                             features=ROUTER_FEATURES))


def code_task(i: PolicyInputs) -> PolicyInputs:
    return replace(i, request=replace(i.request, task_cues=("code",)))


CONFIG = PolicyConfig(daily_cloud_tokens=100_000, daily_cloud_cost=1.0,
                      cloud_cost_per_1k_tokens=0.01, latency_target_ms=5_000.0,
                      cloud_task_cues=("code",), bandit=True)
PUSHERS = {BATTERY: battery_low, THERMAL: throttled, MEMORY: memory_short,
           LATENCY: slow_locally, ROUTER: router_says_cloud, TASK_CUE: code_task,
           BANDIT: bandit_says_cloud}
BLOCKERS = {OFFLINE: offline, CIRCUIT: circuit_open, PRIVACY: privacy_blocked,
            BUDGET: budget_spent}


ROWS = [
    # (row id, mode, change, expected route, rule expected to fire)
    ("calm prefer-local cascades", "prefer-local", None, "cascade", None),
    ("calm prefer-cloud goes out", "prefer-cloud", None, "cloud", None),
    ("calm cloud-only goes out", "cloud-only", None, "cloud", None),
    ("calm local-only stays", "local-only", None, "local", None),
    ("battery low and unplugged", "prefer-local", battery_low, "cloud", BATTERY),
    ("thermal throttling", "prefer-local", throttled, "cloud", THERMAL),
    ("memory short for the context", "prefer-local", memory_short, "cloud", MEMORY),
    ("latency target unmeetable locally", "prefer-local", slow_locally, "cloud", LATENCY),
    ("router says strong model needed", "prefer-local", router_says_cloud, "cloud", ROUTER),
    ("task cue sent to the cloud", "prefer-local", code_task, "cloud", TASK_CUE),
    ("bandit picks the cloud", "prefer-local", bandit_says_cloud, "cloud", BANDIT),
    ("offline keeps prefer-cloud local", "prefer-cloud", offline, "local", OFFLINE),
    ("circuit open keeps prefer-cloud local", "prefer-cloud", circuit_open, "local", CIRCUIT),
    ("privacy block keeps prefer-cloud local", "prefer-cloud", privacy_blocked, "local",
     PRIVACY),
    ("token budget spent keeps prefer-cloud local", "prefer-cloud", budget_spent, "local",
     BUDGET),
    ("money budget spent keeps prefer-cloud local", "prefer-cloud", money_spent, "local",
     BUDGET),
    ("offline refuses cloud-only", "cloud-only", offline, "refuse", OFFLINE),
    ("privacy block refuses cloud-only", "cloud-only", privacy_blocked, "refuse", PRIVACY),
    ("low battery cannot move local-only", "local-only", battery_low, "local", BATTERY),
    ("router cannot move local-only", "local-only", router_says_cloud, "local", ROUTER),
    ("bandit cannot move local-only", "local-only", bandit_says_cloud, "local", BANDIT),
    ("offline prefer-local stays local, no cascade", "prefer-local", offline, "local",
     OFFLINE),
]


@pytest.mark.parametrize(("mode", "change", "route", "rule"),
                         [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_each_trigger_routes_as_specified(
    mode: Mode, change: Any, route: str, rule: str | None
) -> None:
    inputs = calm(mode)
    if change is not None:
        inputs = change(inputs)
    decision = decide(inputs, CONFIG)
    assert decision.route == route
    assert decision.fired == ((rule,) if rule else ())


BANDIT_OFF = replace(CONFIG, bandit=False)
BANDIT_ROWS = [
    # (row id, mode, change, config, expected route, rules expected to fire)
    ("bandit picks the cloud: cloud", "prefer-local", bandit_says_cloud, CONFIG, "cloud",
     (BANDIT,)),
    ("bandit picks the cloud, privacy block: local", "prefer-local",
     lambda i: privacy_blocked(bandit_says_cloud(i)), CONFIG, "local", (PRIVACY, BANDIT)),
    ("bandit picks the cloud, budget spent: local", "prefer-local",
     lambda i: budget_spent(bandit_says_cloud(i)), CONFIG, "local", (BUDGET, BANDIT)),
    ("bandit picks the cloud, bandit off: no row fired", "prefer-local", bandit_says_cloud,
     BANDIT_OFF, "cascade", ()),
    ("bandit picks local: cascade", "prefer-local", None, CONFIG, "cascade", ()),
    ("bandit picks local, prefer-cloud still goes out", "prefer-cloud", None, CONFIG, "cloud",
     ()),
    ("task cue named before the bandit", "prefer-local",
     lambda i: code_task(bandit_says_cloud(i)), CONFIG, "cloud", (TASK_CUE, BANDIT)),
]


@pytest.mark.parametrize(("mode", "change", "config", "route", "fired"),
                         [r[1:] for r in BANDIT_ROWS], ids=[r[0] for r in BANDIT_ROWS])
def test_bandit_rule_routes_as_specified(
    mode: Mode, change: Any, config: PolicyConfig, route: str, fired: tuple[str, ...]
) -> None:
    inputs = calm(mode)
    if change is not None:
        inputs = change(inputs)
    decision = decide(inputs, config)
    assert decision.route == route
    assert decision.fired == fired


def test_bandit_trace_carries_both_upper_bounds_and_the_context() -> None:
    decision = decide(bandit_says_cloud(calm()), CONFIG)
    entry = next(e for e in decision.trace if e.rule == BANDIT)
    assert (entry.value, entry.threshold) == (0.9, 0.6)
    assert entry.detail == ("bandit picks the cloud (upper bounds cloud 0.900 vs local 0.600, "
                            "40 updates)")
    assert decision.reason == f"mode prefer-local: {entry.detail}; the cloud answers"
    payload = decision.to_dict()["bandit"]
    assert payload["arm"] == "cloud" and payload["ucb"] == {"local": 0.6, "cloud": 0.9}
    assert payload["context"] == list(CONTEXT) and payload["features"] == list(ROUTER_FEATURES)


def test_bandit_off_leaves_no_bandit_in_the_decision() -> None:
    decision = decide(bandit_says_cloud(calm()), BANDIT_OFF)
    entry = next(e for e in decision.trace if e.rule == BANDIT)
    assert entry.detail == "bandit off" and not entry.fired
    assert decision.to_dict()["bandit"] is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("bandit_alpha", -0.5, "policy.bandit_alpha must be a finite number >= 0"),
    ("bandit_alpha", float("nan"), "policy.bandit_alpha"),
    ("bandit_cloud_cost", 1.5, r"policy.bandit_cloud_cost must be in \[0, 1\]"),
    ("bandit_cloud_cost", -0.1, "policy.bandit_cloud_cost"),
])
def test_policy_config_rejects_bandit_values_out_of_range(field: str, value: float,
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        values: dict[str, Any] = {field: value}
        PolicyConfig(**values)


def test_battery_low_while_plugged_in_does_not_fire() -> None:
    inputs = with_snapshot(calm(), battery=BatteryState(12.0, True, None, "test"))
    decision = decide(inputs, CONFIG)
    assert decision.route == "cascade"
    assert BATTERY not in decision.fired


@pytest.mark.parametrize(
    ("percent", "plugged", "fired", "detail"),
    [
        (12.0, None, True, "battery 12% and its plug state unknown"),
        (19.99, False, True, "battery 19.99% and unplugged"),
        (20.0, False, False, "battery 20%"),
        (50.0, None, False, "battery 50%"),
        (12.0, True, False, "battery 12% (plugged in)"),
    ],
)
def test_battery_rule_at_its_edges(percent: float, plugged: bool | None, fired: bool,
                                   detail: str) -> None:
    inputs = with_snapshot(calm(), battery=BatteryState(percent, plugged, None, "test"))
    entry = {e.rule: e for e in decide(inputs, CONFIG).trace}[BATTERY]
    assert (entry.fired, entry.detail) == (fired, detail)


def test_latency_target_met_locally_keeps_the_device() -> None:
    config = replace(CONFIG, latency_target_ms=60_000.0)
    decision = decide(slow_locally(calm()), config)
    assert decision.route == "cascade"
    entry = next(e for e in decision.trace if e.rule == LATENCY)
    assert entry.value == pytest.approx(100 / 2.0 * 1000 + 200 / 500.0 * 1000)
    assert entry.threshold == 60_000.0


def test_prefer_local_without_cascade_answers_locally() -> None:
    assert decide(calm(), replace(CONFIG, cascade=False)).route == "local"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("others", [tuple(PUSHERS), tuple(BLOCKERS), (*PUSHERS, *BLOCKERS)],
                         ids=["pushers", "blockers", "everything"])
def test_privacy_block_beats_every_other_trigger(mode: Mode, others: tuple[str, ...]) -> None:
    inputs = privacy_blocked(calm(mode))
    for rule in others:
        inputs = {**PUSHERS, **BLOCKERS}[rule](inputs)
    decision = decide(inputs, CONFIG)
    assert decision.route != "cloud" and decision.route != "cascade"
    # local-only never looks past its mode; every other mode names the privacy block.
    assert ("privacy" in decision.reason) == (mode != "local-only")
    if mode == "cloud-only":
        assert decision.route == "refuse"
        assert isinstance(decision.error(), PrivacyBlockError)
    else:
        assert decision.route == "local"
        assert decision.error() is None
    assert PRIVACY in decision.fired


def test_cloud_only_offline_refusal_is_an_offload_error() -> None:
    decision = decide(offline(calm("cloud-only")), CONFIG)
    error = decision.error()
    assert isinstance(error, OffloadError)
    assert "unreachable" in str(error)


def test_blocker_beats_pusher_in_prefer_local() -> None:
    decision = decide(budget_spent(memory_short(calm())), CONFIG)
    assert decision.route == "local"
    assert set(decision.fired) == {BUDGET, MEMORY}
    assert "budget" in decision.reason


def test_trace_records_every_rule_with_values_and_thresholds() -> None:
    decision = decide(router_says_cloud(battery_low(calm())), CONFIG)
    assert tuple(e.rule for e in decision.trace) == ALL_RULES
    by_rule = {e.rule: e for e in decision.trace}
    assert by_rule[BATTERY].value == 12.0 and by_rule[BATTERY].threshold == 20.0
    assert by_rule[ROUTER].value == 0.4 and by_rule[ROUTER].threshold == 0.1
    assert by_rule[MEMORY].threshold == pytest.approx(300 * 65_536 + 268_435_456)
    assert decision.reason.startswith("mode prefer-local: battery 12% and unplugged")
    payload = decision.to_dict()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["fired"] == [BATTERY, ROUTER]
    assert payload["router"]["wants_cloud"] is True
    assert [t["rule"] for t in payload["trace"]] == list(ALL_RULES)


def test_decision_is_logged_with_its_trace(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tandem.policy"):
        decision = decide(throttled(calm()), CONFIG)
    (record,) = [r for r in caplog.records if r.name == "tandem.policy"]
    logged = json.loads(record.getMessage().removeprefix("policy decision "))
    assert logged == json.loads(json.dumps(decision.to_dict(), sort_keys=True))


def test_disabled_limits_do_not_fire() -> None:
    inputs = budget_spent(slow_locally(router_says_cloud(calm())))
    config = PolicyConfig(use_router=False)  # no budget, no latency target, router off
    decision = decide(inputs, config)
    assert decision.route == "cascade"
    assert decision.fired == ()


def test_missing_sensors_do_not_fire() -> None:
    inputs = with_snapshot(calm(), battery=None, thermal=None,
                           network=NetworkState(None, None, None, None))
    inputs = replace(inputs, router=None, latency=LatencyEstimates())
    decision = decide(inputs, CONFIG)
    assert decision.route == "cascade"
    assert decision.fired == ()


def test_policy_config_rejects_negative_limits() -> None:
    with pytest.raises(ValueError, match="policy.latency_target_ms"):
        PolicyConfig(latency_target_ms=-1.0)


def test_policy_config_uses_only_config_loadable_types() -> None:
    allowed = {"str", "int", "float", "bool", "tuple[str, ...]"}
    assert {str(f.type) for f in dataclasses.fields(PolicyConfig)} <= allowed


def test_decision_values_are_frozen() -> None:
    decision = decide(calm(), CONFIG)
    assert isinstance(decision, Decision)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.route = "cloud"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("prompt", "cues"),
    [
        ("Fix this python bug: ```x = 1```", ("code",)),
        ("Solve 3 + 4 = x and translate the answer to French", ("math", "translation")),
        ("Tell me about the weather in spring.", ()),
    ],
)
def test_task_cues_of_a_prompt(prompt: str, cues: tuple[str, ...]) -> None:
    assert task_cues(prompt) == cues


def test_measured_prefill_speed_leaves_out_the_time_queued(engine: Engine) -> None:
    from runtime.config import RuntimeConfig, load_config
    from runtime.facade import Runtime
    from runtime.result import Timings
    from tests.test_router_telemetry import _result

    cfg = load_config(env={}).replace(runtime=RuntimeConfig(telemetry_path="off"))
    with Runtime(cfg, engine=engine) as rt:
        # 100 prompt tokens, first token 1 s after the request of which 0.9 s in the queue
        result = dataclasses.replace(
            _result("a", "local"), usage=dataclasses.replace(_result("a", "local").usage,
                                                               prompt_tokens=100),
            timings=Timings(queued_ms=900.0, ttft_ms=1000.0, total_ms=1500.0,
                            tokens_per_s=20.0))
        rt._observe_speed(result)
        assert rt._speed["local_prefill"] == pytest.approx(1000.0)  # not 100 tokens/s
