"""Raspberry Pi firmware sensors through `vcgencmd`: throttling flags and SoC temperature.

`vcgencmd get_throttled` prints `throttled=0x50005`; the bits are documented by Raspberry Pi
(https://www.raspberrypi.com/documentation/computers/os.html#get_throttled). Bits 0-3 say what
is happening now, bits 16-19 whether it has happened since boot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.monitor.commands import DEFAULT_TIMEOUT_S, CommandRunner
from runtime.monitor.snapshot import ThermalState

_THROTTLED = re.compile(r"throttled=(0[xX][0-9a-fA-F]+|\d+)")
_TEMP = re.compile(r"temp=(-?\d+(?:\.\d+)?)'C")

UNDER_VOLTAGE = 1 << 0
FREQ_CAPPED = 1 << 1
THROTTLED = 1 << 2
SOFT_TEMP_LIMIT = 1 << 3
_SINCE_BOOT_SHIFT = 16
# What limits the ARM cores' speed: capping, throttling, the soft temperature limit.
_LIMITING = FREQ_CAPPED | THROTTLED | SOFT_TEMP_LIMIT


@dataclass(frozen=True, slots=True)
class ThrottleFlags:
    """The decoded `get_throttled` bit field."""

    bits: int

    def _now(self, bit: int) -> bool:
        return bool(self.bits & bit)

    def _since_boot(self, bit: int) -> bool:
        return bool(self.bits & (bit << _SINCE_BOOT_SHIFT))

    @property
    def under_voltage_now(self) -> bool:
        return self._now(UNDER_VOLTAGE)

    @property
    def freq_capped_now(self) -> bool:
        return self._now(FREQ_CAPPED)

    @property
    def throttled_now(self) -> bool:
        return self._now(THROTTLED)

    @property
    def soft_temp_limit_now(self) -> bool:
        return self._now(SOFT_TEMP_LIMIT)

    @property
    def under_voltage_since_boot(self) -> bool:
        return self._since_boot(UNDER_VOLTAGE)

    @property
    def throttling_now(self) -> bool:
        """The firmware is holding the CPU below its normal speed right now."""
        return self._now(_LIMITING)

    @property
    def throttled_since_boot(self) -> bool:
        """The CPU has been held back at some point since boot (now included)."""
        return self.throttling_now or self._since_boot(_LIMITING)


def parse_throttled(text: str) -> ThrottleFlags | None:
    """Decode `vcgencmd get_throttled` output (`throttled=0x50005`); None if unrecognised."""
    match = _THROTTLED.search(text)
    if match is None:
        return None
    value = match.group(1)
    # int(value, 0) would reject a decimal with a leading zero ("010").
    return ThrottleFlags(int(value, 16) if value[:2].lower() == "0x" else int(value, 10))


def parse_measure_temp(text: str) -> float | None:
    """Decode `vcgencmd measure_temp` output (`temp=48.3'C`) to °C; None if unrecognised."""
    match = _TEMP.search(text)
    return float(match.group(1)) if match else None


class VcgencmdThermalProbe:
    """`ThermalProbe` for Raspberry Pi boards; absent (None) everywhere else."""

    def __init__(self, command: str = "vcgencmd", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._runner = CommandRunner(command, timeout_s)

    def read_thermal(self) -> ThermalState | None:
        """Throttling flags plus the SoC temperature; None if `vcgencmd` is absent or fails."""
        out = self._runner.run("get_throttled")
        flags = parse_throttled(out) if out is not None else None
        if flags is None:
            return None
        temp_out = self._runner.run("measure_temp")
        temp = parse_measure_temp(temp_out) if temp_out is not None else None
        return ThermalState(
            hottest_c=temp,
            hottest_zone="soc" if temp is not None else None,
            throttling_now=flags.throttling_now,
            throttled_since_boot=flags.throttled_since_boot,
            source="vcgencmd",
        )

    def close(self) -> None:
        """Nothing to release: each read is one short-lived process."""
