"""Portable readings through psutil: CPU, memory, and (where the OS offers them) battery/temps."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from runtime.monitor.snapshot import (
    BatteryState,
    CpuState,
    MemoryState,
    ThermalState,
    plausible_celsius,
)


def read_cpu() -> CpuState:
    """Per-core utilisation since the previous call (non-blocking), and the 1-minute load."""
    per_core = tuple(float(p) for p in psutil.cpu_percent(percpu=True, interval=None))
    overall = round(sum(per_core) / len(per_core), 1) if per_core else 0.0
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        load = None
    return CpuState(overall, per_core, len(per_core), load)


def read_memory(process: psutil.Process) -> MemoryState:
    """System memory available/total and the resident size of `process`."""
    vm = psutil.virtual_memory()
    try:
        rss = int(process.memory_info().rss)
    except psutil.Error:
        rss = 0
    return MemoryState(int(vm.available), int(vm.total), rss)


def battery_from_psutil(battery: Any) -> BatteryState | None:
    """Convert `psutil.sensors_battery()`'s result (None when there is no battery)."""
    if battery is None:
        return None
    secs = battery.secsleft
    # psutil encodes "charging" and "unknown" as negative sentinels.
    seconds_left = float(secs) if isinstance(secs, int | float) and secs >= 0 else None
    return BatteryState(
        percent=round(max(0.0, min(100.0, float(battery.percent))), 1),  # as sysfs clamps
        plugged_in=battery.power_plugged,
        seconds_left=None if battery.power_plugged else seconds_left,
        source="psutil",
    )


def thermal_from_psutil(temps: Mapping[str, Sequence[Any]]) -> ThermalState | None:
    """The hottest plausible entry of `psutil.sensors_temperatures()` ({} when there are none);
    NaN, sentinels and broken sensors are skipped, as in sysfs."""
    readings = [
        (f"{chip}/{entry.label}" if entry.label else chip, float(entry.current))
        for chip, entries in temps.items()
        for entry in entries
        if entry.current is not None and plausible_celsius(float(entry.current))
    ]
    if not readings:
        return None
    zone, celsius = max(readings, key=lambda zc: zc[1])
    return ThermalState(round(celsius, 3), zone, None, None, "psutil")


class PsutilBatteryProbe:
    """`BatteryProbe` over `psutil.sensors_battery()` (absent on desktops and some OSes)."""

    def read_battery(self) -> BatteryState | None:
        """The battery as the OS reports it, or None."""
        reader = getattr(psutil, "sensors_battery", None)
        if reader is None:
            return None
        try:
            return battery_from_psutil(reader())
        except (OSError, RuntimeError, psutil.Error):
            return None

    def close(self) -> None:
        """Nothing to release."""


class PsutilThermalProbe:
    """`ThermalProbe` over `psutil.sensors_temperatures()` (Linux hwmon, FreeBSD)."""

    def read_thermal(self) -> ThermalState | None:
        """The hottest hardware sensor, or None (macOS and Windows have no reader)."""
        reader = getattr(psutil, "sensors_temperatures", None)
        if reader is None:
            return None
        try:
            return thermal_from_psutil(reader())
        except (OSError, RuntimeError, psutil.Error):
            return None

    def close(self) -> None:
        """Nothing to release."""
