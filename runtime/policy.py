"""The routing policy: one pure function from a request's situation to a route.

`decide` weighs the mode, the request, the resource snapshot, the privacy verdict, the
router's verdict, the cloud budget and latency estimates. Every rule is evaluated every
time and recorded in the decision's trace (fired or not, with its value and threshold),
so a response can say exactly why it went where it went.

Precedence, whatever the mode: a privacy block keeps the request on the device; then the
cloud being unusable (offline, circuit open, budget spent); then the reasons to leave the
device (memory, heat, battery, latency, router, task cue, bandit), which only prefer-local
obeys. The bandit comes last among those: it explores, so when a rule a user set or a measured
resource also fires, that one is named as the reason.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from runtime.cues import CUE_NAMES
from runtime.errors import OffloadError, PrivacyBlockError, TandemError
from runtime.monitor.snapshot import Snapshot
from runtime.router.base import RouterVerdict
from runtime.router.online import BanditVerdict

if TYPE_CHECKING:  # runtime.config may import PolicyConfig from here: no import cycle
    from runtime.config import Mode

Route = Literal["local", "cloud", "cascade", "refuse"]
log = logging.getLogger("tandem.policy")

# Rule names, as they appear in traces and in tests.
PRIVACY, OFFLINE, CIRCUIT, BUDGET = "privacy_block", "offline", "circuit_open", "budget"
MEMORY, THERMAL, BATTERY = "memory_short", "thermal_throttling", "battery_low"
LATENCY, ROUTER, TASK_CUE, BANDIT = "latency_target", "router", "task_cue", "bandit"
CLOUD_BLOCKERS = (PRIVACY, OFFLINE, CIRCUIT, BUDGET)
CLOUD_PUSHERS = (MEMORY, THERMAL, BATTERY, LATENCY, ROUTER, TASK_CUE, BANDIT)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Policy thresholds (the `[policy]` config section). 0 disables a numeric limit."""

    battery_low_percent: float = 20.0  # unplugged and below this: leave the device
    escalate_when_throttled: bool = True
    kv_bytes_per_token: int = 65_536  # KV-cache growth per context token of the local model
    memory_reserve_bytes: int = 268_435_456  # keep this much free besides the KV cache
    daily_cloud_tokens: int = 0  # cloud tokens per day; 0 = unlimited
    daily_cloud_cost: float = 0.0  # cloud spend per day (budget currency); 0 = unlimited
    cloud_cost_per_1k_tokens: float = 0.0  # price used to project this request's cost
    latency_target_ms: float = 0.0  # answer within this; 0 = no target
    use_router: bool = True
    router_path: str = ""  # a router file from `tandem router train/calibrate`; "" = none
    cloud_task_cues: tuple[str, ...] = ()  # task cues (e.g. "code") that go to the cloud
    cascade: bool = True  # prefer-local: escalate after a low-confidence local answer
    bandit: bool = False  # the online LinUCB bandit (runtime.router.online) routes and learns
    bandit_path: str = ""  # its state file; "" = $XDG_STATE_HOME/tandem/bandit.npz
    bandit_alpha: float = 1.0  # exploration: width of the upper confidence bound
    bandit_cloud_cost: float = 0.1  # reward a cloud answer costs (a good answer earns 1)

    def __post_init__(self) -> None:
        for name in ("battery_low_percent", "kv_bytes_per_token", "memory_reserve_bytes",
                     "daily_cloud_tokens", "daily_cloud_cost", "cloud_cost_per_1k_tokens",
                     "latency_target_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"policy.{name} must be >= 0")
        unknown = sorted(set(self.cloud_task_cues) - set(CUE_NAMES))
        if unknown:  # a cue no prompt can show would never fire
            raise ValueError(f"policy.cloud_task_cues: unknown cue {', '.join(unknown)} "
                             f"(known: {', '.join(CUE_NAMES)})")
        if self.daily_cloud_cost > 0 and self.cloud_cost_per_1k_tokens == 0:
            raise ValueError("policy.daily_cloud_cost needs policy.cloud_cost_per_1k_tokens, "
                             "the price it counts cloud tokens at (0: the budget never fills)")
        # `not (a <= x <= b)` also rejects NaN, which a TOML file or variable can spell.
        if not 0 <= self.bandit_alpha < math.inf:
            raise ValueError("policy.bandit_alpha must be a finite number >= 0 "
                             "(0 = no exploration)")
        if not 0 <= self.bandit_cloud_cost <= 1:
            raise ValueError("policy.bandit_cloud_cost must be in [0, 1] "
                             "(reward units: a good answer earns 1)")


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What the policy knows about the request before generating."""

    prompt_tokens: int
    expected_output_tokens: int
    task_cues: tuple[str, ...] = ()  # e.g. ("code",), ("math",)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Cloud use so far today (limits are in `PolicyConfig`)."""

    cloud_tokens_used: int = 0
    cloud_cost_used: float = 0.0


@dataclass(frozen=True, slots=True)
class LatencyEstimates:
    """Measured speeds; None where nothing has been measured yet."""

    local_tokens_per_s: float | None = None  # decode
    local_prompt_tokens_per_s: float | None = None  # prefill
    cloud_rtt_ms: float | None = None  # None: use the monitor's network RTT
    cloud_tokens_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class PolicyInputs:
    """Everything `decide` looks at."""

    mode: Mode
    request: RequestFeatures
    snapshot: Snapshot
    privacy_block: str | None = None  # why the privacy filter keeps it local, or None
    router: RouterVerdict | None = None
    router_problem: str = ""  # why a configured router gave no verdict (its file unusable)
    bandit: BanditVerdict | None = None  # the online bandit's pick (when policy.bandit)
    budget: BudgetState = field(default_factory=BudgetState)
    latency: LatencyEstimates = field(default_factory=LatencyEstimates)
    circuit_open: bool = False


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One rule's evaluation: did it fire, on what value, against which threshold."""

    rule: str
    fired: bool
    detail: str
    value: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "fired": self.fired, "detail": self.detail,
                "value": self.value, "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class Decision:
    """Where the request goes and why. `refuse`: the mode cannot be served (see `error`)."""

    route: Route
    reason: str
    trace: tuple[TraceEntry, ...]
    mode: Mode = "prefer-local"
    router: RouterVerdict | None = None
    bandit: BanditVerdict | None = None

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(e.rule for e in self.trace if e.fired)

    def error(self) -> TandemError | None:
        """For a refusal, the error the caller raises; None otherwise."""
        if self.route != "refuse":
            return None
        if PRIVACY in self.fired:
            return PrivacyBlockError(self.reason)
        return OffloadError(self.reason)

    def to_dict(self) -> dict[str, Any]:
        """The `decision` entry of a response's `tandem` object."""
        return {
            "route": self.route,
            "reason": self.reason,
            "mode": self.mode,
            "fired": list(self.fired),
            "router": self.router.to_dict() if self.router else None,
            "bandit": self.bandit.to_dict() if self.bandit else None,
            "trace": [e.to_dict() for e in self.trace],
        }


def decide(inputs: PolicyInputs, config: PolicyConfig | None = None) -> Decision:
    """Route one request; see the module docstring for the precedence of the rules."""
    config = config or PolicyConfig()
    trace = _evaluate(inputs, config)
    fired = {e.rule: e for e in trace if e.fired}
    blocker = next((fired[r] for r in CLOUD_BLOCKERS if r in fired), None)
    pusher = next((fired[r] for r in CLOUD_PUSHERS if r in fired), None)
    mode = inputs.mode
    route: Route
    if mode == "local-only":
        route, reason = "local", "mode local-only: the device answers"
    elif mode == "cloud-only":
        if blocker is not None:
            route, reason = "refuse", f"mode cloud-only, but {blocker.detail}"
        else:
            route, reason = "cloud", "mode cloud-only: the cloud answers"
    elif blocker is not None:
        route, reason = "local", f"mode {mode}: {blocker.detail}; the device answers"
    elif mode == "prefer-cloud":
        route, reason = "cloud", "mode prefer-cloud: the cloud answers"
    elif pusher is not None:
        route, reason = "cloud", f"mode prefer-local: {pusher.detail}; the cloud answers"
    elif config.cascade:
        route, reason = "cascade", ("mode prefer-local: the device answers and escalates "
                                    "if its confidence is low")
    else:
        route, reason = "local", "mode prefer-local: the device answers"
    decision = Decision(route=route, reason=reason, trace=trace, mode=mode,
                        router=inputs.router, bandit=inputs.bandit if config.bandit else None)
    if log.isEnabledFor(logging.INFO):
        log.info("policy decision %s", json.dumps(decision.to_dict(), sort_keys=True))
    return decision


def _evaluate(inputs: PolicyInputs, config: PolicyConfig) -> tuple[TraceEntry, ...]:
    return (
        _privacy(inputs),
        _offline(inputs),
        _circuit(inputs),
        _budget(inputs, config),
        _memory(inputs, config),
        _thermal(inputs, config),
        _battery(inputs, config),
        _latency(inputs, config),
        _router(inputs, config),
        _task_cue(inputs, config),
        _bandit(inputs, config),
    )


def _privacy(inputs: PolicyInputs) -> TraceEntry:
    why = inputs.privacy_block
    if why is None:
        return TraceEntry(PRIVACY, False, "the privacy filter lets it leave")
    return TraceEntry(PRIVACY, True, f"privacy keeps it on the device ({why})")


def _offline(inputs: PolicyInputs) -> TraceEntry:
    net = inputs.snapshot.network
    if net.reachable is False:
        where = f" {net.gateway_url}" if net.gateway_url else ""
        return TraceEntry(OFFLINE, True, f"the gateway{where} is unreachable")
    state = "unknown" if net.reachable is None else "reachable"
    return TraceEntry(OFFLINE, False, f"gateway {state}")


def _circuit(inputs: PolicyInputs) -> TraceEntry:
    if inputs.circuit_open:
        return TraceEntry(CIRCUIT, True, "the cloud circuit breaker is open after failures")
    return TraceEntry(CIRCUIT, False, "circuit closed")


def _budget(inputs: PolicyInputs, config: PolicyConfig) -> TraceEntry:
    req = inputs.request
    return budget_rule(req.prompt_tokens + req.expected_output_tokens, inputs.budget, config)


def budget_rule(tokens: int, used: BudgetState, config: PolicyConfig) -> TraceEntry:
    """The `budget` rule for a cloud call projected to spend `tokens`, with `used` spent (or
    reserved) today: fired when it would pass either daily limit. The policy applies it when
    planning; a cascade applies it again when it escalates (`Runtime._escalation_budget`)."""
    if config.daily_cloud_tokens > 0:
        projected = used.cloud_tokens_used + tokens
        if projected > config.daily_cloud_tokens:
            return TraceEntry(BUDGET, True,
                              f"the daily cloud budget is spent ({used.cloud_tokens_used} + "
                              f"{tokens} > {config.daily_cloud_tokens} tokens)",
                              float(projected), float(config.daily_cloud_tokens))
    projected_cost = used.cloud_cost_used + tokens / 1000 * config.cloud_cost_per_1k_tokens
    if config.daily_cloud_cost > 0 and projected_cost > config.daily_cloud_cost:
        return TraceEntry(BUDGET, True,
                          f"the daily cloud budget is spent ({projected_cost:.4f} > "
                          f"{config.daily_cloud_cost:.4f})",
                          projected_cost, config.daily_cloud_cost)
    if config.daily_cloud_tokens == 0 and config.daily_cloud_cost == 0:
        return TraceEntry(BUDGET, False, "no cloud budget set")
    if config.daily_cloud_tokens > 0:  # value / threshold: the tokens, the binding limit
        return TraceEntry(BUDGET, False,
                          f"within the daily cloud budget ({used.cloud_tokens_used} + {tokens} "
                          f"<= {config.daily_cloud_tokens} tokens"
                          + (f"; {projected_cost:.4f} <= {config.daily_cloud_cost:.4f})"
                             if config.daily_cloud_cost > 0 else ")"),
                          float(used.cloud_tokens_used + tokens),
                          float(config.daily_cloud_tokens))
    return TraceEntry(BUDGET, False,
                      f"within the daily cloud budget ({projected_cost:.4f} <= "
                      f"{config.daily_cloud_cost:.4f})",
                      projected_cost, config.daily_cloud_cost)


def _memory(inputs: PolicyInputs, config: PolicyConfig) -> TraceEntry:
    req = inputs.request
    need = ((req.prompt_tokens + req.expected_output_tokens) * config.kv_bytes_per_token
            + config.memory_reserve_bytes)
    free = inputs.snapshot.memory.available_bytes
    fired = free < need
    detail = (f"memory short for the context ({free / 2**20:.0f} MiB free, "
              f"{need / 2**20:.0f} MiB needed)" if fired else "enough memory for the context")
    return TraceEntry(MEMORY, fired, detail, float(free), float(need))


def _thermal(inputs: PolicyInputs, config: PolicyConfig) -> TraceEntry:
    thermal = inputs.snapshot.thermal
    if thermal is None or thermal.throttling_now is None:
        return TraceEntry(THERMAL, False, "no throttling signal")
    if thermal.throttling_now and config.escalate_when_throttled:
        return TraceEntry(THERMAL, True, "the device is thermally throttled",
                          thermal.hottest_c)
    return TraceEntry(THERMAL, False, "not throttled" if not thermal.throttling_now
                      else "throttled, but escalate_when_throttled is off", thermal.hottest_c)


def _battery(inputs: PolicyInputs, config: PolicyConfig) -> TraceEntry:
    battery = inputs.snapshot.battery
    limit = config.battery_low_percent
    if battery is None:
        return TraceEntry(BATTERY, False, "no battery", None, limit)
    # An unknown plug state (psutil cannot tell, or an app pushed only the level) counts as
    # unplugged: at a low battery, saving it is the safe side.
    low = battery.percent < limit and battery.plugged_in is not True
    level = f"battery {battery.percent:g}%"  # 19.99 stays 19.99, not a rounded 20
    if low:
        detail = level + (" and unplugged" if battery.plugged_in is False
                          else " and its plug state unknown")
    else:
        detail = level + (" (plugged in)" if battery.plugged_in else "")
    return TraceEntry(BATTERY, low, detail, battery.percent, limit)


def _latency(inputs: PolicyInputs, config: PolicyConfig) -> TraceEntry:
    target = config.latency_target_ms
    if target <= 0:
        return TraceEntry(LATENCY, False, "no latency target")
    req, est = inputs.request, inputs.latency
    if not est.local_tokens_per_s:
        return TraceEntry(LATENCY, False, "local speed not measured yet", None, target)
    local_ms = req.expected_output_tokens / est.local_tokens_per_s * 1000.0
    if est.local_prompt_tokens_per_s:
        local_ms += req.prompt_tokens / est.local_prompt_tokens_per_s * 1000.0
    rtt = est.cloud_rtt_ms if est.cloud_rtt_ms is not None else inputs.snapshot.network.rtt_ms
    if rtt is None or not est.cloud_tokens_per_s:
        return TraceEntry(LATENCY, False, f"local ~{local_ms:.0f} ms; cloud speed unknown",
                          local_ms, target)
    cloud_ms = rtt + req.expected_output_tokens / est.cloud_tokens_per_s * 1000.0
    fired = local_ms > target and cloud_ms < local_ms
    verdict = "misses" if local_ms > target else "meets"
    return TraceEntry(LATENCY, fired,
                      f"local ~{local_ms:.0f} ms {verdict} the {target:.0f} ms target, "
                      f"cloud ~{cloud_ms:.0f} ms", local_ms, target)


def _router(inputs: PolicyInputs, config: PolicyConfig) -> TraceEntry:
    verdict = inputs.router
    if verdict is None or not config.use_router:
        if not config.use_router:
            return TraceEntry(ROUTER, False, "router disabled")
        return TraceEntry(ROUTER, False, f"no router: {inputs.router_problem}"
                          if inputs.router_problem else "no router")
    says = "needs" if verdict.wants_cloud else "does not need"
    return TraceEntry(ROUTER, verdict.wants_cloud and config.use_router,
                      f"router {verdict.router} says it {says} the cloud model "
                      f"(score {verdict.score:.3f} vs {verdict.threshold:.3f})",
                      verdict.score, verdict.threshold)


def _task_cue(inputs: PolicyInputs, config: PolicyConfig) -> TraceEntry:
    hits = sorted(set(inputs.request.task_cues) & set(config.cloud_task_cues))
    if hits:
        return TraceEntry(TASK_CUE, True, f"task cue {', '.join(hits)} goes to the cloud")
    return TraceEntry(TASK_CUE, False, "no cloud task cue")


def _bandit(inputs: PolicyInputs, config: PolicyConfig) -> TraceEntry:
    verdict = inputs.bandit
    if not config.bandit:
        return TraceEntry(BANDIT, False, "bandit off")
    if verdict is None:
        return TraceEntry(BANDIT, False, "bandit not consulted")
    # value / threshold: the two arms' upper confidence bounds, cloud against local
    return TraceEntry(BANDIT, verdict.wants_cloud,
                      f"bandit picks the {verdict.arm} (upper bounds cloud "
                      f"{verdict.ucb_cloud:.3f} vs local {verdict.ucb_local:.3f}, "
                      f"{verdict.updates} updates)", verdict.ucb_cloud, verdict.ucb_local)
