"""Values of the resource monitor: one frozen `Snapshot` per read."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Outside this range a sensor is reporting a sentinel or is broken, not a temperature.
PLAUSIBLE_C = (-40.0, 150.0)


def plausible_celsius(value: float) -> bool:
    """Whether a reading can be a real temperature (False for NaN, sentinels, broken sensors)."""
    low, high = PLAUSIBLE_C
    return low <= value <= high


@dataclass(frozen=True, slots=True)
class CpuState:
    percent: float  # overall utilisation since the previous read, 0-100
    per_core: tuple[float, ...]
    count: int
    load_avg_1m: float | None


@dataclass(frozen=True, slots=True)
class MemoryState:
    available_bytes: int
    total_bytes: int
    process_rss_bytes: int


@dataclass(frozen=True, slots=True)
class BatteryState:
    percent: float
    plugged_in: bool | None
    seconds_left: float | None  # None: unknown or charging
    source: str  # "psutil", "sysfs", "pushed", ...


@dataclass(frozen=True, slots=True)
class ThermalState:
    hottest_c: float | None
    hottest_zone: str | None
    throttling_now: bool | None
    throttled_since_boot: bool | None
    source: str  # "sysfs", "vcgencmd", "tegrastats", "pushed", ...


@dataclass(frozen=True, slots=True)
class NetworkState:
    gateway_url: str | None
    reachable: bool | None  # None: no gateway configured, or not checked yet
    rtt_ms: float | None
    checked_at: float | None  # unix time of the last check


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The device's resources at `taken_at` (unix time). Absent sensors are None."""

    taken_at: float
    cpu: CpuState
    memory: MemoryState
    battery: BatteryState | None
    thermal: ThermalState | None
    network: NetworkState

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
