"""Linux sysfs sensors: thermal zones, CPU cooling devices, power supplies.

Formats follow the kernel ABI (Documentation/ABI/testing/sysfs-class-thermal and
sysfs-class-power): temperatures in millidegrees Celsius, energy in µWh, power in µW,
charge in µAh, current in µA. The root is configurable so tests read recorded trees.
Parsers take the text of the files and are pure; the probes only read files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.monitor.snapshot import BatteryState, ThermalState, plausible_celsius

# Tegra's PMIC-Die zone is a fixed 100 °C placeholder, not a measurement.
_PLACEHOLDER_ZONES = frozenset({"pmic-die"})
# Cooling devices that act by slowing the CPU/GPU; fans and TCC offsets are not throttling.
_CPU_COOLING_PREFIXES = (
    "processor",
    "intel_powerclamp",
    "thermal-cpufreq",
    "cpufreq",
    "thermal-devfreq",
    "devfreq",
)
_POWER_SUPPLY_FILES = (
    "type",
    "scope",
    "present",
    "online",
    "status",
    "capacity",
    "energy_now",
    "energy_full",
    "power_now",
    "charge_now",
    "charge_full",
    "current_now",
    "time_to_empty_now",
    "time_to_empty_avg",
)
_PLUGGED_STATUSES = frozenset({"charging", "full", "not charging"})


@dataclass(frozen=True, slots=True)
class PowerSupply:
    """One `/sys/class/power_supply/NAME` entry, in SI-friendly units; absent values None."""

    name: str
    type: str
    online: bool | None
    present: bool | None
    is_device_scope: bool  # a peripheral's battery (a mouse), not the system's
    status: str | None
    capacity_percent: float | None
    energy_now_wh: float | None
    energy_full_wh: float | None
    power_w: float | None
    charge_now_ah: float | None
    charge_full_ah: float | None
    current_a: float | None
    time_to_empty_s: float | None

    @property
    def is_battery(self) -> bool:
        return self.type.lower() == "battery"

    def percent(self) -> float | None:
        """Charge level 0-100, from `capacity` or else from energy / charge counters."""
        if self.capacity_percent is not None:
            return self.capacity_percent
        for now, full in (
            (self.energy_now_wh, self.energy_full_wh),
            (self.charge_now_ah, self.charge_full_ah),
        ):
            if now is not None and full:
                return min(100.0, 100.0 * now / full)
        return None


def _number(text: str | None, scale: float = 1.0) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value * scale if math.isfinite(value) else None


def _flag(text: str | None) -> bool | None:
    value = _number(text)
    return None if value is None else value != 0


def parse_power_supply(name: str, attrs: Mapping[str, str]) -> PowerSupply:
    """Build a `PowerSupply` from the text of its attribute files (missing files omitted)."""
    status = attrs.get("status", "").strip() or None
    capacity = _number(attrs.get("capacity"))
    return PowerSupply(
        name=name,
        type=attrs.get("type", "").strip() or "Unknown",
        online=_flag(attrs.get("online")),
        present=_flag(attrs.get("present")),
        is_device_scope=attrs.get("scope", "").strip().lower() == "device",
        status=status,
        capacity_percent=None if capacity is None else max(0.0, min(100.0, capacity)),
        energy_now_wh=_number(attrs.get("energy_now"), 1e-6),
        energy_full_wh=_number(attrs.get("energy_full"), 1e-6),
        power_w=_abs(_number(attrs.get("power_now"), 1e-6)),
        charge_now_ah=_number(attrs.get("charge_now"), 1e-6),
        charge_full_ah=_number(attrs.get("charge_full"), 1e-6),
        # Some drivers sign the current (negative while discharging); only the size matters.
        current_a=_abs(_number(attrs.get("current_now"), 1e-6)),
        time_to_empty_s=_seconds(attrs.get("time_to_empty_now"))
        or _seconds(attrs.get("time_to_empty_avg")),
    )


def _seconds(text: str | None) -> float | None:
    value = _number(text)
    return None if value is None or value < 0 else value  # drivers write -1 for "unknown"


def _abs(value: float | None) -> float | None:
    return None if value is None else abs(value)


def battery_from_supplies(supplies: Sequence[PowerSupply]) -> BatteryState | None:
    """Combine power supplies into the system battery; None when there is no battery."""
    batteries = [s for s in supplies if _is_system_battery(s)]
    if not batteries:
        return None
    plugged = _plugged_in(supplies, batteries)
    return BatteryState(
        percent=_combined_percent(batteries),
        plugged_in=plugged,
        seconds_left=_seconds_left(batteries) if plugged is False else None,
        source="sysfs",
    )


def _is_system_battery(supply: PowerSupply) -> bool:
    return (
        supply.is_battery
        and not supply.is_device_scope
        and supply.present is not False
        and supply.percent() is not None
    )


def _combined_percent(batteries: Sequence[PowerSupply]) -> float:
    now = [b.energy_now_wh for b in batteries]
    full = [b.energy_full_wh for b in batteries]
    if len(batteries) > 1 and all(n is not None for n in now) and all(full):
        # Two batteries of different sizes: weigh by energy, as the OS battery icon does. An
        # empty one (0 Wh now: ThinkPads drain the external one first) still weighs.
        return round(100.0 * sum(n or 0.0 for n in now) / sum(f or 0.0 for f in full), 1)
    percents = [p for p in (b.percent() for b in batteries) if p is not None]
    return round(sum(percents) / len(percents), 1)


def _plugged_in(supplies: Sequence[PowerSupply], batteries: Sequence[PowerSupply]) -> bool | None:
    external = [s.online for s in supplies if not s.is_battery and s.online is not None]
    if any(external):
        return True
    statuses = {(b.status or "").lower() for b in batteries}
    if statuses & _PLUGGED_STATUSES:
        return True
    if external or "discharging" in statuses:
        return False
    return None


def _seconds_left(batteries: Sequence[PowerSupply]) -> float | None:
    if len(batteries) == 1 and batteries[0].time_to_empty_s:
        return batteries[0].time_to_empty_s
    # Batteries drain one after the other or together: total stock over total rate either way.
    by_energy = [(b.energy_now_wh, b.power_w) for b in batteries]
    by_charge = [(b.charge_now_ah, b.current_a) for b in batteries]
    for pairs in (by_energy, by_charge):
        stock = [s for s, _ in pairs if s is not None]
        rate = sum(r or 0.0 for _, r in pairs)
        if len(stock) == len(pairs) and rate > 0:
            return float(round(3600.0 * sum(stock) / rate))
    return None


def parse_thermal_zone(zone_type: str, temp: str) -> tuple[str, float] | None:
    """(zone name, °C) from a zone's `type` and `temp` (millidegrees); None if implausible."""
    celsius = _number(temp, 1e-3)
    name = zone_type.strip() or "unknown"
    if celsius is None or name.lower() in _PLACEHOLDER_ZONES:
        return None
    return (name, round(celsius, 3)) if plausible_celsius(celsius) else None


def cooling_device_throttling(device_type: str, cur_state: str) -> bool | None:
    """Whether a cooling device is slowing a processor now; None if it is not a CPU/GPU limiter."""
    if not device_type.strip().lower().startswith(_CPU_COOLING_PREFIXES):
        return None
    state = _number(cur_state)
    return None if state is None else state > 0


def thermal_from_readings(
    zones: Iterable[tuple[str, float]],
    cooling: Iterable[bool | None],
    throttle_counts: Iterable[float],
) -> ThermalState | None:
    """Combine zone temperatures, cooling devices and x86 throttle counters; None if all empty."""
    zone_list = list(zones)
    states = [c for c in cooling if c is not None]
    counts = list(throttle_counts)
    if not zone_list and not states and not counts:
        return None
    hottest = max(zone_list, key=lambda zc: zc[1]) if zone_list else None
    now = any(states) if states else None
    # Cooling devices only tell "now"; the x86 counters also remember since boot.
    since_boot: bool | None = True if now else None
    if counts:
        since_boot = bool(now) or any(c > 0 for c in counts)
    return ThermalState(
        hottest_c=hottest[1] if hottest else None,
        hottest_zone=hottest[0] if hottest else None,
        throttling_now=now,
        throttled_since_boot=since_boot,
        source="sysfs",
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:  # absent file, or a driver answering EINVAL/ENODATA: no reading
        return None


class SysfsThermalProbe:
    """`ThermalProbe` over `ROOT/class/thermal` and x86 `thermal_throttle` counters."""

    def __init__(self, root: str | Path = "/sys") -> None:
        self._root = Path(root)

    def read_thermal(self) -> ThermalState | None:
        """The hottest thermal zone and CPU throttling; None when sysfs has neither."""
        thermal = self._root / "class" / "thermal"
        zones: list[tuple[str, float]] = []
        for zone in sorted(thermal.glob("thermal_zone*")):
            zone_type, temp = _read(zone / "type"), _read(zone / "temp")
            if zone_type is not None and temp is not None:
                parsed = parse_thermal_zone(zone_type, temp)
                if parsed is not None:
                    zones.append(parsed)
        cooling: list[bool | None] = []
        for device in sorted(thermal.glob("cooling_device*")):
            device_type, state = _read(device / "type"), _read(device / "cur_state")
            if device_type is not None and state is not None:
                cooling.append(cooling_device_throttling(device_type, state))
        counts: list[float] = []
        cpus = self._root / "devices" / "system" / "cpu"
        for counter in sorted(cpus.glob("cpu[0-9]*/thermal_throttle/*_throttle_count")):
            value = _number(_read(counter))
            if value is not None:
                counts.append(value)
        return thermal_from_readings(zones, cooling, counts)

    def close(self) -> None:
        """Nothing to release."""


class SysfsBatteryProbe:
    """`BatteryProbe` over `ROOT/class/power_supply`."""

    def __init__(self, root: str | Path = "/sys") -> None:
        self._root = Path(root)

    def read_supplies(self) -> list[PowerSupply]:
        """Every power supply under the root, parsed."""
        supplies = []
        for entry in sorted((self._root / "class" / "power_supply").glob("*")):
            attrs = {}
            for name in _POWER_SUPPLY_FILES:
                text = _read(entry / name)
                if text is not None:
                    attrs[name] = text
            if "type" in attrs:
                supplies.append(parse_power_supply(entry.name, attrs))
        return supplies

    def read_battery(self) -> BatteryState | None:
        """The system battery; None without one (a desktop, or mains only)."""
        return battery_from_supplies(self.read_supplies())

    def close(self) -> None:
        """Nothing to release."""
