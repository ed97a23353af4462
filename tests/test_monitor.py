"""The `Monitor`: caching, pushed signals, absent sensors, command-based probes, rendering."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest

from runtime.config import MonitorConfig
from runtime.errors import ConfigError
from runtime.monitor import (
    BatteryState,
    CpuState,
    MemoryState,
    Monitor,
    NetworkState,
    PushedSignals,
    Snapshot,
    ThermalState,
    combine_thermal,
    render_snapshot,
)
from runtime.monitor.commands import CommandRunner
from runtime.monitor.sysfs import SysfsBatteryProbe, SysfsThermalProbe
from runtime.monitor.tegrastats import TegrastatsThermalProbe
from runtime.monitor.vcgencmd import VcgencmdThermalProbe

DATA = Path(__file__).parent / "data" / "monitor"
LAPTOP = DATA / "sysfs_laptop"
MISSING = "tandem-test-no-such-command"


class FakeClock:
    """An injected monotonic clock, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingThermalProbe(SysfsThermalProbe):
    """The real sysfs probe, counting how often the monitor asks it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0

    def read_thermal(self) -> ThermalState | None:
        self.reads += 1
        return super().read_thermal()


def _laptop_monitor(clock: FakeClock, pushed_ttl_s: float = 300.0) -> Monitor:
    return Monitor(
        battery_probes=[SysfsBatteryProbe(LAPTOP)],
        thermal_probes=[SysfsThermalProbe(LAPTOP)],
        clock=clock,
        pushed_ttl_s=pushed_ttl_s,
    )


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


# --- snapshot and cache -------------------------------------------------------------------


def test_snapshot_reports_cpu_memory_and_probed_sensors() -> None:
    with _laptop_monitor(FakeClock()) as monitor:
        snap = monitor.snapshot()
    assert snap.cpu.count == psutil.cpu_count() == len(snap.cpu.per_core)
    assert all(0.0 <= p <= 100.0 for p in snap.cpu.per_core)
    assert 0 < snap.memory.available_bytes <= snap.memory.total_bytes
    assert snap.memory.process_rss_bytes > 0
    assert snap.battery == BatteryState(76.5, False, 23410.0, "sysfs")
    assert snap.thermal == ThermalState(58.0, "x86_pkg_temp", False, True, "sysfs")
    assert snap.network == NetworkState(None, None, None, None)
    assert snap.to_dict()["battery"]["percent"] == 76.5


def test_cached_snapshot_is_the_same_object_within_the_interval() -> None:
    clock = FakeClock()
    probe = CountingThermalProbe(LAPTOP)
    with Monitor(thermal_probes=[probe], cache_interval_s=1.0, clock=clock) as monitor:
        first = monitor.snapshot()
        clock.now += 0.9
        assert monitor.snapshot() is first
        assert probe.reads == 1
        clock.now += 0.2
        second = monitor.snapshot()
        assert second is not first
        assert probe.reads == 2


def test_max_age_overrides_the_cache_interval() -> None:
    clock = FakeClock()
    with Monitor(cache_interval_s=60.0, clock=clock) as monitor:
        first = monitor.snapshot()
        clock.now += 5.0
        assert monitor.snapshot() is first
        assert monitor.snapshot(max_age_s=10.0) is first
        assert monitor.snapshot(max_age_s=1.0) is not first


def test_concurrent_readers_share_one_refresh() -> None:
    probe = CountingThermalProbe(LAPTOP)
    results: list[Snapshot] = []
    with Monitor(thermal_probes=[probe], cache_interval_s=3600.0) as monitor:
        start = threading.Barrier(8)

        def read() -> None:
            start.wait()
            results.append(monitor.snapshot())

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert probe.reads == 1


def test_negative_cache_interval_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="monitor.cache_interval_s"):
        Monitor(cache_interval_s=-1.0)


def test_first_battery_probe_with_an_answer_wins_and_thermal_probes_merge() -> None:
    monitor = Monitor(
        battery_probes=[SysfsBatteryProbe(DATA / "sysfs_rpi4"), SysfsBatteryProbe(LAPTOP)],
        thermal_probes=[
            SysfsThermalProbe(DATA / "sysfs_rpi4"),
            SysfsThermalProbe(DATA / "sysfs_handheld_charging"),
        ],
    )
    with monitor:
        snap = monitor.snapshot()
    assert snap.battery is not None and snap.battery.percent == 76.5
    # The Pi zone is hotter; the handheld's cooling device says "throttling now".
    assert snap.thermal == ThermalState(48.312, "cpu-thermal", True, True, "sysfs")


def test_combine_thermal_prefers_known_values() -> None:
    merged = combine_thermal(
        [
            ThermalState(None, None, False, False, "vcgencmd"),
            ThermalState(61.0, "CPU", None, None, "tegrastats"),
        ]
    )
    assert merged == ThermalState(61.0, "CPU", False, False, "vcgencmd+tegrastats")
    assert combine_thermal([]) is None


# --- absent sensors -------------------------------------------------------------------------


def test_absent_sensors_read_as_none_not_errors(tmp_path: Path) -> None:
    if psutil.sensors_battery() is not None or psutil.sensors_temperatures():
        pytest.skip("this machine has a battery or hardware temperatures; needs one without")
    cfg = MonitorConfig(sysfs_root=str(tmp_path), vcgencmd=MISSING, tegrastats=MISSING)
    with Monitor.from_config(cfg) as monitor:
        snap = monitor.snapshot()
    assert snap.battery is None
    assert snap.thermal is None
    assert snap.network == NetworkState(None, None, None, None)


def test_missing_command_is_absent_and_never_retried() -> None:
    runner = CommandRunner(MISSING)
    assert runner.run("get_throttled") is None
    assert runner.available is False
    assert CommandRunner("").available is False


def test_failing_command_is_absent(tmp_path: Path) -> None:
    failing = _script(tmp_path, "vcgencmd", f"cat {DATA}/vcgencmd/vchi_failed.txt\nexit 255\n")
    assert VcgencmdThermalProbe(failing).read_thermal() is None
    assert CommandRunner(failing).available is True  # it exists: worth asking again later


def test_hanging_command_is_absent_after_its_timeout(tmp_path: Path) -> None:
    # A wrapper whose child hangs: the runner must kill the whole group, not wait for it.
    hanging = _script(tmp_path, "vcgencmd", "sleep 30\n")
    assert CommandRunner(hanging, timeout_s=0.2).run("get_throttled") is None


# --- command probes on recorded output -----------------------------------------------------


def test_vcgencmd_probe_reads_throttling_and_temperature(tmp_path: Path) -> None:
    fake = _script(
        tmp_path,
        "vcgencmd",
        'case "$1" in\n'
        f"  get_throttled) cat {DATA}/vcgencmd/get_throttled_0x50005.txt ;;\n"
        f"  measure_temp) cat {DATA}/vcgencmd/measure_temp.txt ;;\n"
        "  *) exit 1 ;;\n"
        "esac\n",
    )
    assert VcgencmdThermalProbe(fake).read_thermal() == ThermalState(
        48.3, "soc", True, True, "vcgencmd"
    )


def test_tegrastats_probe_follows_the_latest_line(tmp_path: Path) -> None:
    # Prints recorded AGX Orin lines like `tegrastats --interval N`, then keeps running.
    fake = _script(tmp_path, "tegrastats", f"cat {DATA}/tegrastats/agx_orin.txt\nexec sleep 60\n")
    probe = TegrastatsThermalProbe(fake, interval_s=1.0)
    try:
        assert probe.wait_for_samples(2)
        assert probe.read_thermal() == ThermalState(51.437, "GPU", None, None, "tegrastats")
        sample = probe.latest_sample()
        assert sample is not None and sample.ram_used_mb == 3460
    finally:
        probe.close()
    assert probe.read_thermal() is None  # closed: no stale readings


def test_tegrastats_missing_is_absent() -> None:
    probe = TegrastatsThermalProbe(MISSING)
    assert probe.read_thermal() is None
    assert probe.wait_for_samples(1, timeout_s=1.0) is False
    probe.close()


def test_tegrastats_that_exits_is_absent(tmp_path: Path) -> None:
    fake = _script(tmp_path, "tegrastats", f"cat {DATA}/tegrastats/orin_nano.txt\n")
    probe = TegrastatsThermalProbe(fake)
    try:
        probe.wait_for_samples(2, timeout_s=10.0)  # returns once the tool has exited
        assert probe.read_thermal() is None
    finally:
        probe.close()


def test_stale_tegrastats_sample_is_absent(tmp_path: Path) -> None:
    clock = FakeClock()
    fake = _script(tmp_path, "tegrastats", f"cat {DATA}/tegrastats/xavier_nx.txt\nexec sleep 60\n")
    probe = TegrastatsThermalProbe(fake, stale_after_s=5.0, clock=clock)
    try:
        assert probe.wait_for_samples(2)
        assert probe.read_thermal() == ThermalState(51.5, "CPU", None, None, "tegrastats")
        clock.now += 6.0
        assert probe.read_thermal() is None
    finally:
        probe.close()


# --- pushed signals --------------------------------------------------------------------------


def test_pushed_battery_overrides_sysfs_then_expires() -> None:
    clock = FakeClock()
    with _laptop_monitor(clock, pushed_ttl_s=300.0) as monitor:
        probed = monitor.snapshot()
        monitor.push(PushedSignals(battery_percent=42.0, plugged_in=True))
        pushed = monitor.snapshot()
        # Applied at once, on the cached hardware readings (same taken_at).
        assert pushed.taken_at == probed.taken_at
        assert pushed.battery == BatteryState(42.0, True, None, "pushed")
        clock.now += 301.0
        assert monitor.snapshot().battery == BatteryState(76.5, False, 23410.0, "sysfs")


def test_partial_push_keeps_the_probed_fields() -> None:
    with _laptop_monitor(FakeClock()) as monitor:
        monitor.push(PushedSignals(plugged_in=True))
        battery = monitor.snapshot().battery
    assert battery == BatteryState(76.5, True, None, "pushed+sysfs")


def test_pushed_battery_without_any_probe() -> None:
    with Monitor() as monitor:
        assert monitor.snapshot().battery is None
        monitor.push(PushedSignals(battery_percent=18.0, plugged_in=False, seconds_left=2700))
        assert monitor.snapshot().battery == BatteryState(18.0, False, 2700, "pushed")
        monitor.push(PushedSignals(plugged_in=True))
        assert monitor.snapshot().battery == BatteryState(18.0, True, None, "pushed")


def test_pushed_thermal_overrides_and_fields_expire_separately() -> None:
    clock = FakeClock()
    with _laptop_monitor(clock, pushed_ttl_s=60.0) as monitor:
        monitor.push(PushedSignals(temperature_c=71.0, throttling=True))
        assert monitor.snapshot().thermal == ThermalState(71.0, "pushed", True, True, "pushed")
        clock.now += 40.0
        monitor.push(PushedSignals(throttling=False))
        clock.now += 30.0  # the temperature is now 70 s old, the throttling flag 30 s
        assert monitor.snapshot().thermal == ThermalState(
            58.0, "x86_pkg_temp", False, True, "pushed+sysfs"
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"battery_percent": 101}, "battery_percent must be between 0 and 100"),
        ({"battery_percent": -0.5}, "battery_percent must be between 0 and 100"),
        ({"seconds_left": -1}, "seconds_left must be at least 0"),
        ({"temperature_c": float("nan")}, "temperature_c must be a finite number"),
        ({"temperature_c": 400.0}, "temperature_c must be between -50 and 150"),
        ({"battery_percent": "80"}, "battery_percent must be a number"),
        ({"battery_percent": True}, "battery_percent must be a number"),
        ({"plugged_in": 1}, "plugged_in must be true or false"),
        ({"throttling": "yes"}, "throttling must be true or false"),
        ({"battery": 80}, "unknown signal"),
    ],
)
def test_pushed_signals_are_validated(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PushedSignals.from_dict(fields)


def test_pushed_signals_from_json_like_dict() -> None:
    signals = PushedSignals.from_dict({"battery_percent": 55, "plugged_in": False})
    assert signals == PushedSignals(battery_percent=55, plugged_in=False)
    assert not signals.is_empty() and PushedSignals().is_empty()


# --- rendering -------------------------------------------------------------------------------


def test_render_snapshot_says_each_resource_in_one_line() -> None:
    snap = Snapshot(
        taken_at=1_700_000_000.0,
        cpu=CpuState(37.5, (50.0, 25.0), 2, 0.42),
        memory=MemoryState(3 * 1024**3, 8 * 1024**3, 180 * 1024**2),
        battery=BatteryState(76.5, False, 23410.0, "sysfs"),
        thermal=ThermalState(58.0, "x86_pkg_temp", False, True, "sysfs"),
        network=NetworkState("http://127.0.0.1:8443", True, 12.34, 1_699_999_997.0),
    )
    assert render_snapshot(snap, now=1_700_000_000.0) == (
        "CPU       37.5% over 2 cores [50 25]  load 0.42\n"
        "Memory   3.0 GiB free of 8.0 GiB, process 180 MiB\n"
        "Battery  76%, on battery, 6h30m left (sysfs)\n"
        "Thermal  58.0 °C (x86_pkg_temp), throttling no, since boot yes [sysfs]\n"
        "Gateway  http://127.0.0.1:8443: reachable, RTT 12.3 ms (checked 3 s ago)"
    )


def test_render_snapshot_names_absent_sensors() -> None:
    snap = Snapshot(
        taken_at=0.0,
        cpu=CpuState(0.0, (0.0,), 1, None),
        memory=MemoryState(1024**3, 2 * 1024**3, 0),
        battery=None,
        thermal=None,
        network=NetworkState(None, None, None, None),
    )
    lines = render_snapshot(snap, now=0.0).splitlines()
    assert lines[2:] == ["Battery  none", "Thermal  no sensors", "Gateway  not configured"]
