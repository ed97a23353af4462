"""The resource monitor: CPU, memory, battery, thermal and network snapshots.

`Monitor.from_config(cfg.monitor, gateway_url)` builds a monitor with every standard probe;
`snapshot()` is cheap and cached; `push()` takes signals an app reports; `render_snapshot()`
formats a snapshot for people.
"""

from runtime.monitor.monitor import Monitor, combine_thermal
from runtime.monitor.probes import BatteryProbe, NetworkProbe, ThermalProbe
from runtime.monitor.pushed import PushedSignals
from runtime.monitor.render import render_snapshot
from runtime.monitor.snapshot import (
    BatteryState,
    CpuState,
    MemoryState,
    NetworkState,
    Snapshot,
    ThermalState,
)

__all__ = [
    "BatteryProbe",
    "BatteryState",
    "CpuState",
    "MemoryState",
    "Monitor",
    "NetworkProbe",
    "NetworkState",
    "PushedSignals",
    "Snapshot",
    "ThermalProbe",
    "ThermalState",
    "combine_thermal",
    "render_snapshot",
]
