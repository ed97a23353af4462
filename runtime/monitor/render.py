"""Human-readable views of a `Snapshot`, for `tandem monitor` (the CLI only prints them)."""

from __future__ import annotations

import time

from runtime.monitor.snapshot import BatteryState, NetworkState, Snapshot, ThermalState

_GIB = 1024**3
_MIB = 1024**2


def render_snapshot(snapshot: Snapshot, now: float | None = None) -> str:
    """A short multi-line text: one line per resource, absent sensors said plainly."""
    now = time.time() if now is None else now
    cpu = snapshot.cpu
    cores = " ".join(f"{p:.0f}" for p in cpu.per_core)
    load = f"  load {cpu.load_avg_1m:.2f}" if cpu.load_avg_1m is not None else ""
    mem = snapshot.memory
    lines = [
        f"CPU      {cpu.percent:5.1f}% over {cpu.count} cores [{cores}]{load}",
        f"Memory   {mem.available_bytes / _GIB:.1f} GiB free of {mem.total_bytes / _GIB:.1f} GiB"
        f", process {mem.process_rss_bytes / _MIB:.0f} MiB",
        f"Battery  {_battery(snapshot.battery)}",
        f"Thermal  {_thermal(snapshot.thermal)}",
        f"Gateway  {_network(snapshot.network, now)}",
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _battery(battery: BatteryState | None) -> str:
    if battery is None:
        return "none"
    plugged = {True: "plugged in", False: "on battery", None: "power source unknown"}
    text = f"{battery.percent:.0f}%, {plugged[battery.plugged_in]}"
    if battery.seconds_left is not None:
        text += f", {_duration(battery.seconds_left)} left"
    return f"{text} ({battery.source})"


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def _thermal(thermal: ThermalState | None) -> str:
    if thermal is None:
        return "no sensors"
    temp = "temperature unknown"
    if thermal.hottest_c is not None:
        temp = f"{thermal.hottest_c:.1f} °C ({thermal.hottest_zone or 'unnamed zone'})"
    throttle = (
        f"throttling {_yes_no(thermal.throttling_now)}"
        f", since boot {_yes_no(thermal.throttled_since_boot)}"
    )
    return f"{temp}, {throttle} [{thermal.source}]"


def _network(network: NetworkState, now: float) -> str:
    if network.gateway_url is None:
        return "not configured"
    if network.reachable is None:
        return f"{network.gateway_url}: not checked yet"
    status = "reachable" if network.reachable else "unreachable"
    rtt = f", RTT {network.rtt_ms:.1f} ms" if network.rtt_ms is not None else ""
    age = ""
    if network.checked_at is not None:
        age = f" (checked {max(0.0, now - network.checked_at):.0f} s ago)"
    return f"{network.gateway_url}: {status}{rtt}{age}"
