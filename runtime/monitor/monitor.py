"""`Monitor`: one cached, thread-safe `Snapshot` of the device's resources.

A refresh reads CPU and memory through psutil and asks every battery and thermal probe;
absent sensors simply answer None. Between refreshes (`cache_interval_s`) a read is one
attribute load and one clock call. Pushed signals and gateway outcomes are overlaid on the
cached snapshot at once, so they never wait for the next refresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import psutil

from runtime.errors import ConfigError
from runtime.monitor.network import GatewayProbe
from runtime.monitor.probes import BatteryProbe, NetworkProbe, ThermalProbe
from runtime.monitor.psutil_probes import (
    PsutilBatteryProbe,
    PsutilThermalProbe,
    read_cpu,
    read_memory,
)
from runtime.monitor.pushed import PushedSignals, PushedStore, overlay_battery, overlay_thermal
from runtime.monitor.snapshot import (
    BatteryState,
    CpuState,
    MemoryState,
    NetworkState,
    Snapshot,
    ThermalState,
)
from runtime.monitor.sysfs import SysfsBatteryProbe, SysfsThermalProbe
from runtime.monitor.tegrastats import TegrastatsThermalProbe
from runtime.monitor.vcgencmd import VcgencmdThermalProbe

if TYPE_CHECKING:  # config imports the offload client, which imports the monitor
    from runtime.config import MonitorConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
_NO_GATEWAY = NetworkState(None, None, None, None)


@dataclass(frozen=True, slots=True)
class _Probed:
    """What one refresh read from the hardware, before pushed signals are overlaid."""

    taken_at: float
    cpu: CpuState
    memory: MemoryState
    battery: BatteryState | None
    thermal: ThermalState | None


def combine_thermal(readings: Sequence[ThermalState]) -> ThermalState | None:
    """Merge several probes' thermal states: the hottest zone, throttling if any probe says so."""
    if not readings:
        return None
    with_temp = [r for r in readings if r.hottest_c is not None]
    hottest = max(with_temp, key=lambda r: r.hottest_c or 0.0) if with_temp else None
    return ThermalState(
        hottest_c=hottest.hottest_c if hottest else None,
        hottest_zone=hottest.hottest_zone if hottest else None,
        throttling_now=_any_known(r.throttling_now for r in readings),
        throttled_since_boot=_any_known(r.throttled_since_boot for r in readings),
        source="+".join(dict.fromkeys(r.source for r in readings)),
    )


def _any_known(values: Iterable[bool | None]) -> bool | None:
    known = [v for v in values if v is not None]
    return any(known) if known else None


class Monitor:
    """The device's resources, cached for `cache_interval_s`; safe to share between threads."""

    def __init__(
        self,
        battery_probes: Sequence[BatteryProbe] = (),
        thermal_probes: Sequence[ThermalProbe] = (),
        network: NetworkProbe | None = None,
        *,
        cache_interval_s: float = 1.0,
        pushed_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if cache_interval_s < 0:
            raise ConfigError(f"monitor.cache_interval_s must be >= 0, not {cache_interval_s}")
        if pushed_ttl_s <= 0:
            raise ConfigError(f"monitor.pushed_ttl_s must be > 0, not {pushed_ttl_s}")
        self._battery_probes = tuple(battery_probes)
        self._thermal_probes = tuple(thermal_probes)
        self._network = network
        self._cache_interval_s = cache_interval_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._pushed = PushedStore(pushed_ttl_s, clock)
        self._process = psutil.Process()
        self._lock = threading.Lock()
        # (snapshot, monotonic time of the refresh, raw readings): swapped as one reference.
        self._cached: tuple[Snapshot, float, _Probed] | None = None
        self._warned: set[int] = set()
        self._closed = False
        read_cpu()  # prime psutil's counters: its first non-blocking read is meaningless

    @classmethod
    def from_config(cls, cfg: MonitorConfig, gateway_url: str | None = None) -> Monitor:
        """A monitor with every standard probe, checking `gateway_url` in the background."""
        root = cfg.sysfs_root
        network = None
        if gateway_url:
            network = GatewayProbe(gateway_url, cfg.network_interval_s, cfg.network_timeout_s)
        monitor = cls(
            battery_probes=(SysfsBatteryProbe(root), PsutilBatteryProbe()),
            thermal_probes=(
                SysfsThermalProbe(root),
                PsutilThermalProbe(),
                VcgencmdThermalProbe(cfg.vcgencmd),
                TegrastatsThermalProbe(cfg.tegrastats, interval_s=max(cfg.cache_interval_s, 0.5)),
            ),
            network=network,
            cache_interval_s=cfg.cache_interval_s,
            pushed_ttl_s=cfg.pushed_ttl_s,
        )
        if network is not None:
            network.start()
        return monitor

    def snapshot(self, max_age_s: float | None = None) -> Snapshot:
        """The resources now, or a snapshot at most `max_age_s` old (default: cache interval)."""
        limit = self._cache_interval_s if max_age_s is None else max_age_s
        cached = self._cached
        if cached is not None and self._clock() - cached[1] <= limit:
            return cached[0]
        with self._lock:
            cached = self._cached  # another thread may have refreshed while we waited
            if cached is not None and self._clock() - cached[1] <= limit:
                return cached[0]
            refreshed_at = self._clock()
            probed = self._probe()
            snapshot = self._compose(probed)
            self._cached = (snapshot, refreshed_at, probed)
            return snapshot

    def push(self, signals: PushedSignals) -> None:
        """Record signals from the app; fresh ones win over probes until `pushed_ttl_s` passes."""
        self._pushed.push(signals)
        self._recompose()

    def report_gateway(self, ok: bool, rtt_ms: float | None = None) -> NetworkState:
        """Record an offload outcome so reachability reflects it right away."""
        if self._network is None:
            return _NO_GATEWAY
        state = self._network.report(ok, rtt_ms)
        self._recompose()
        return state

    def check_gateway(self) -> NetworkState:
        """Check the gateway now (blocking up to about twice the network timeout)."""
        if not isinstance(self._network, GatewayProbe):
            return self._network.read_network() if self._network else _NO_GATEWAY
        state = self._network.check_now()
        self._recompose()
        return state

    def close(self) -> None:
        """Stop background threads and helper processes; idempotent."""
        if self._closed:
            return
        self._closed = True
        probes: list[BatteryProbe | ThermalProbe | NetworkProbe] = [
            *self._battery_probes,
            *self._thermal_probes,
        ]
        if self._network is not None:
            probes.append(self._network)
        for probe in probes:
            self._safe(probe, probe.close)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _probe(self) -> _Probed:
        battery = None
        for battery_probe in self._battery_probes:
            battery = self._safe(battery_probe, battery_probe.read_battery)
            if battery is not None:
                break
        readings = [
            reading
            for thermal_probe in self._thermal_probes
            if (reading := self._safe(thermal_probe, thermal_probe.read_thermal)) is not None
        ]
        return _Probed(
            taken_at=self._wall_clock(),
            cpu=read_cpu(),
            memory=read_memory(self._process),
            battery=battery,
            thermal=combine_thermal(readings),
        )

    def _compose(self, probed: _Probed) -> Snapshot:
        pushed = self._pushed.fresh()
        return Snapshot(
            taken_at=probed.taken_at,
            cpu=probed.cpu,
            memory=probed.memory,
            battery=overlay_battery(probed.battery, pushed),
            thermal=overlay_thermal(probed.thermal, pushed),
            network=self._network.read_network() if self._network else _NO_GATEWAY,
        )

    def _recompose(self) -> None:
        # Keep the hardware readings (and their age), redo only the cheap overlay.
        with self._lock:
            if self._cached is not None:
                _, refreshed_at, probed = self._cached
                self._cached = (self._compose(probed), refreshed_at, probed)

    def _safe(self, probe: object, read: Callable[[], T]) -> T | None:
        """Run a probe; a probe bug costs its reading (logged once), never the snapshot."""
        try:
            return read()
        except Exception:
            if id(probe) not in self._warned:
                self._warned.add(id(probe))
                name = type(probe).__name__
                log.warning("probe %s failed; its reading is dropped", name, exc_info=True)
            return None
