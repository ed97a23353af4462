"""Signals pushed from outside (an Android app, through the device API) and their expiry.

A phone's app knows its battery and thermal headroom better than sysfs read from inside a
sandbox, so a fresh pushed value wins over the probes. Each field expires on its own,
`ttl_s` after it was last pushed, so an app that stops pushing falls back to the probes.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runtime.monitor.snapshot import BatteryState, ThermalState

_TEMPERATURE_RANGE_C = (-50.0, 150.0)


@dataclass(frozen=True, slots=True)
class PushedSignals:
    """Device signals an app reports; None means "not reported in this push"."""

    battery_percent: float | None = None
    plugged_in: bool | None = None
    seconds_left: float | None = None
    temperature_c: float | None = None
    throttling: bool | None = None

    def __post_init__(self) -> None:
        _check_number("battery_percent", self.battery_percent, 0.0, 100.0)
        _check_number("seconds_left", self.seconds_left, 0.0, math.inf)
        _check_number("temperature_c", self.temperature_c, *_TEMPERATURE_RANGE_C)
        for name in ("plugged_in", "throttling"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, not {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PushedSignals:
        """Build from JSON-like data (the device API); unknown keys are a `ValueError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown signal(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**dict(data))

    def is_empty(self) -> bool:
        """True when the push carries no value at all."""
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float: 1e330 written out
        finite = False
    if not finite:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:20]}… (too large)"
        raise ValueError(f"{name} must be a finite number, not {shown}")
    if not low <= value <= high:
        bound = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise ValueError(f"{name} must be {bound}, not {value!r}")


class PushedStore:
    """The latest value of each pushed field with the time it arrived; thread-safe."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError(f"pushed signals ttl must be positive, not {ttl_s!r}")
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, tuple[Any, float]] = {}

    def push(self, signals: PushedSignals) -> None:
        """Record every non-None field of `signals`, stamped now."""
        now = self._clock()
        with self._lock:
            for f in dataclasses.fields(signals):
                value = getattr(signals, f.name)
                if value is not None:
                    self._values[f.name] = (value, now)

    def fresh(self) -> PushedSignals:
        """The fields pushed within the TTL (expired ones read as None)."""
        horizon = self._clock() - self._ttl_s
        with self._lock:
            values = {k: v for k, (v, at) in self._values.items() if at >= horizon}
        return PushedSignals(**values)


def overlay_battery(probed: BatteryState | None, pushed: PushedSignals) -> BatteryState | None:
    """The probed battery with fresh pushed fields taking precedence."""
    if pushed.battery_percent is None and pushed.plugged_in is None and pushed.seconds_left is None:
        return probed
    if probed is None:
        if pushed.battery_percent is None:
            return None  # "plugged in" alone does not make a battery
        return BatteryState(
            float(pushed.battery_percent), pushed.plugged_in, _on_battery(pushed), "pushed"
        )
    percent = probed.percent if pushed.battery_percent is None else float(pushed.battery_percent)
    plugged = probed.plugged_in if pushed.plugged_in is None else pushed.plugged_in
    seconds = pushed.seconds_left
    if seconds is None and pushed.battery_percent is None:
        seconds = probed.seconds_left  # the probe's estimate still matches its own percent
    whole = pushed.battery_percent is not None and pushed.plugged_in is not None
    return BatteryState(
        percent=percent,
        plugged_in=plugged,
        seconds_left=None if plugged else seconds,
        source="pushed" if whole else f"pushed+{probed.source}",
    )


def _on_battery(pushed: PushedSignals) -> float | None:
    # "Seconds left" means time on battery: a charging device has no such number.
    return None if pushed.plugged_in else pushed.seconds_left


def overlay_thermal(probed: ThermalState | None, pushed: PushedSignals) -> ThermalState | None:
    """The probed thermal state with a fresh pushed temperature / throttling taking precedence."""
    if pushed.temperature_c is None and pushed.throttling is None:
        return probed
    base = probed or ThermalState(None, None, None, None, "pushed")
    hottest_c, zone = base.hottest_c, base.hottest_zone
    if pushed.temperature_c is not None:
        hottest_c, zone = float(pushed.temperature_c), "pushed"
    now, since_boot = base.throttling_now, base.throttled_since_boot
    if pushed.throttling is not None:
        now = pushed.throttling
        if pushed.throttling:
            since_boot = True
    whole = pushed.temperature_c is not None and pushed.throttling is not None
    return ThermalState(
        hottest_c=hottest_c,
        hottest_zone=zone,
        throttling_now=now,
        throttled_since_boot=since_boot,
        source="pushed" if whole or probed is None else f"pushed+{probed.source}",
    )
