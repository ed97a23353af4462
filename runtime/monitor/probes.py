"""The seams of the monitor: one small `Protocol` per kind of sensor.

A probe answers `None` when its sensor is absent (no battery, not a Raspberry Pi, no
`tegrastats`): a missing sensor is the normal case on most devices, never an error.
Every implementation lives in its own module (`sysfs`, `psutil_probes`, `vcgencmd`,
`tegrastats`, `network`).
"""

from __future__ import annotations

from typing import Protocol

from runtime.monitor.snapshot import BatteryState, NetworkState, ThermalState


class BatteryProbe(Protocol):
    """Reads the battery, if the device has one."""

    def read_battery(self) -> BatteryState | None:
        """The battery now, or None when there is no battery (or it cannot be read)."""
        ...

    def close(self) -> None:
        """Release whatever the probe holds (processes, threads); idempotent."""
        ...


class ThermalProbe(Protocol):
    """Reads temperatures and throttling, from whatever sensor the probe knows."""

    def read_thermal(self) -> ThermalState | None:
        """The thermal state now, or None when this probe's sensor is absent."""
        ...

    def close(self) -> None:
        """Release whatever the probe holds (processes, threads); idempotent."""
        ...


class NetworkProbe(Protocol):
    """Knows whether the gateway is reachable; never blocks a reader."""

    def read_network(self) -> NetworkState:
        """The last known state of the gateway (cheap: no I/O)."""
        ...

    def report(self, ok: bool, rtt_ms: float | None) -> NetworkState:
        """Record an outcome observed by the caller (an offload that worked or failed)."""
        ...

    def close(self) -> None:
        """Stop any background checking; idempotent."""
        ...
