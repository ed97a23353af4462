"""Parsers of the resource monitor, fed with recorded real-format samples (tests/data/monitor)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import pytest

from runtime.monitor.psutil_probes import battery_from_psutil, thermal_from_psutil
from runtime.monitor.snapshot import BatteryState, ThermalState
from runtime.monitor.sysfs import (
    SysfsBatteryProbe,
    SysfsThermalProbe,
    battery_from_supplies,
    cooling_device_throttling,
    parse_power_supply,
    parse_thermal_zone,
)
from runtime.monitor.tegrastats import CoreLoad, parse_tegrastats_line, thermal_from_sample
from runtime.monitor.vcgencmd import parse_measure_temp, parse_throttled

DATA = Path(__file__).parent / "data" / "monitor"


class sbattery(NamedTuple):  # noqa: N801 - psutil's documented result shape
    """`psutil.sensors_battery()`'s documented fields (psutil's own type is private)."""

    percent: float
    secsleft: int
    power_plugged: bool | None


class shwtemp(NamedTuple):  # noqa: N801
    """One `psutil.sensors_temperatures()` entry, as documented."""

    label: str
    current: float
    high: float | None
    critical: float | None


def _sample(name: str) -> str:
    return (DATA / name).read_text()


def _lines(name: str) -> list[str]:
    return _sample(f"tegrastats/{name}").splitlines()


# --- vcgencmd ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "under_voltage_now", "throttling_now", "since_boot"),
    [
        ("0x0", False, False, False),
        ("0x50000", False, False, True),
        ("0x50005", True, True, True),
        ("0x80008", False, True, True),
        ("0x20002", False, True, True),
        ("0x10000", False, False, False),  # a past voltage dip alone is not throttling
    ],
)
def test_get_throttled_bits_decode_to_now_and_since_boot(
    bits: str, under_voltage_now: bool, throttling_now: bool, since_boot: bool
) -> None:
    flags = parse_throttled(_sample(f"vcgencmd/get_throttled_{bits}.txt"))
    assert flags is not None
    assert flags.bits == int(bits, 16)
    assert flags.under_voltage_now is under_voltage_now
    assert flags.throttling_now is throttling_now
    assert flags.throttled_since_boot is since_boot


def test_get_throttled_0x50005_sets_exactly_its_bits() -> None:
    flags = parse_throttled(_sample("vcgencmd/get_throttled_0x50005.txt"))
    assert flags is not None
    assert (flags.under_voltage_now, flags.freq_capped_now) == (True, False)
    assert (flags.throttled_now, flags.soft_temp_limit_now) == (True, False)
    assert flags.under_voltage_since_boot is True


@pytest.mark.parametrize(
    ("text", "bits"),
    [("throttled=010", 10), ("throttled=0", 0), ("throttled=0X50005", 0x50005)],
)
def test_get_throttled_reads_decimal_with_leading_zeros_and_hex(text: str, bits: int) -> None:
    flags = parse_throttled(text)
    assert flags is not None
    assert flags.bits == bits


def test_soft_temp_limit_sample_reports_the_limit_not_under_voltage() -> None:
    flags = parse_throttled(_sample("vcgencmd/get_throttled_0x80008.txt"))
    assert flags is not None
    assert flags.soft_temp_limit_now is True
    assert flags.under_voltage_now is False


@pytest.mark.parametrize(
    ("name", "celsius"), [("measure_temp.txt", 48.3), ("measure_temp_hot.txt", 81.8)]
)
def test_measure_temp_reads_degrees(name: str, celsius: float) -> None:
    assert parse_measure_temp(_sample(f"vcgencmd/{name}")) == celsius


def test_vcgencmd_error_text_parses_to_nothing() -> None:
    text = _sample("vcgencmd/vchi_failed.txt")
    assert parse_throttled(text) is None
    assert parse_measure_temp(text) is None


# --- tegrastats ---------------------------------------------------------------------------


def test_jetson_nano_line_gives_ram_cores_gpu_and_temperatures() -> None:
    sample = parse_tegrastats_line(_lines("jetson_nano.txt")[1])
    assert sample is not None
    assert (sample.ram_used_mb, sample.ram_total_mb) == (1877, 3956)
    assert (sample.swap_used_mb, sample.swap_total_mb) == (0, 1978)
    assert sample.cores == tuple(CoreLoad(p, 1479) for p in (48.0, 35.0, 41.0, 52.0))
    assert sample.gpu_percent == 99.0
    assert dict(sample.temperatures) == {
        "PLL": 36.5,
        "CPU": 41.5,
        "PMIC": 100.0,
        "GPU": 39.0,
        "AO": 44.5,
        "thermal": 40.25,
    }
    # PMIC's fixed 100 °C is a placeholder: the hottest real zone is AO.
    assert sample.hottest() == ("AO", 44.5)


def test_offline_cores_are_none() -> None:
    sample = parse_tegrastats_line(_lines("jetson_nano.txt")[2])
    assert sample is not None
    assert sample.cores == (CoreLoad(12.0, 921), None, None, CoreLoad(10.0, 921))


def test_jetson_tx2_line_with_denver_cores_off() -> None:
    sample = parse_tegrastats_line(_lines("jetson_tx2.txt")[0])
    assert sample is not None
    assert (sample.ram_used_mb, sample.ram_total_mb) == (2211, 7852)
    assert [c is None for c in sample.cores] == [False, True, True, False, False, False]
    assert sample.hottest() == ("PLL", 35.0)
    assert ("Tdiode", 32.5) in sample.temperatures


def test_xavier_nx_lines_under_load() -> None:
    idle, busy = (parse_tegrastats_line(line) for line in _lines("xavier_nx.txt"))
    assert idle is not None and busy is not None
    assert len(idle.cores) == 6 and idle.cores[4:] == (None, None)
    assert busy.cores[0] == CoreLoad(87.0, 1907)
    assert busy.gpu_percent == 61.0
    assert busy.hottest() == ("CPU", 51.5)


def test_agx_orin_line_drops_powered_down_sensors() -> None:
    first, second = (parse_tegrastats_line(line) for line in _lines("agx_orin.txt"))
    assert first is not None and second is not None
    assert (first.ram_used_mb, first.ram_total_mb) == (3456, 30623)
    assert len(first.cores) == 12
    assert first.cores[4] == CoreLoad(0.0, 2201)
    zones = dict(first.temperatures)
    assert "CV0" not in zones and "GPU" not in zones  # printed as -256C: sensor off
    assert zones["SOC2"] == 42.281
    assert first.hottest() == ("CPU", 45.593)
    assert first.gpu_percent == 0.0
    assert second.gpu_percent == 72.0
    assert dict(second.temperatures)["GPU"] == 51.437


def test_orin_nano_jetpack6_lowercase_zones() -> None:
    sample = parse_tegrastats_line(_lines("orin_nano.txt")[0])
    assert sample is not None
    assert (sample.ram_used_mb, sample.ram_total_mb) == (2133, 7620)
    assert sample.cores == tuple(CoreLoad(p, 729) for p in (1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    assert dict(sample.temperatures) == {
        "cpu": 47.5,
        "soc2": 46.093,
        "soc0": 46.125,
        "gpu": 46.468,
        "tj": 47.5,
        "soc1": 45.781,
    }


def test_tegrastats_sample_becomes_a_thermal_state_without_throttling_info() -> None:
    sample = parse_tegrastats_line(_lines("xavier_nx.txt")[1])
    assert sample is not None
    assert thermal_from_sample(sample) == ThermalState(51.5, "CPU", None, None, "tegrastats")


@pytest.mark.parametrize("line", ["", "tegrastats: command line error", "NVDEC off APE 25"])
def test_lines_without_readings_are_not_samples(line: str) -> None:
    assert parse_tegrastats_line(line) is None


# --- sysfs ------------------------------------------------------------------------------


def test_laptop_tree_combines_two_batteries_and_ignores_the_mouse() -> None:
    battery = SysfsBatteryProbe(DATA / "sysfs_laptop").read_battery()
    # Energy-weighted: (36.52 + 18.20) Wh of (48.05 + 23.48) Wh; 54.72 Wh at 8.415 W.
    assert battery == BatteryState(
        percent=76.5, plugged_in=False, seconds_left=23410.0, source="sysfs"
    )


def test_an_empty_second_battery_still_weighs_in_the_combined_charge() -> None:
    # ThinkPads drain the external battery first: BAT1 at 0 Wh, BAT0 full. Weighed by energy
    # that is 48.05 of 71.53 Wh, not the mean of 100 % and 0 %.
    supplies = SysfsBatteryProbe(DATA / "sysfs_laptop").read_supplies()
    bat0_full = supplies[1].energy_full_wh
    drained = [
        dataclasses.replace(s, energy_now_wh=0.0) if s.name == "BAT1"
        else dataclasses.replace(s, energy_now_wh=bat0_full) if s.name == "BAT0"
        else s
        for s in supplies
    ]
    assert battery_from_supplies(drained).percent == 67.2  # type: ignore[union-attr]
    nearly = [dataclasses.replace(s, energy_now_wh=1e-6) if s.name == "BAT1" else s
              for s in drained]
    assert battery_from_supplies(nearly).percent == 67.2  # type: ignore[union-attr]


def test_laptop_tree_lists_every_supply() -> None:
    supplies = SysfsBatteryProbe(DATA / "sysfs_laptop").read_supplies()
    assert [s.name for s in supplies] == ["AC", "BAT0", "BAT1", "hidpp_battery_0"]
    bat0 = supplies[1]
    assert bat0.energy_now_wh == pytest.approx(36.52)
    assert bat0.power_w == pytest.approx(8.415)
    assert supplies[3].is_device_scope is True


def test_laptop_tree_thermal_hottest_zone_and_past_throttling() -> None:
    thermal = SysfsThermalProbe(DATA / "sysfs_laptop").read_thermal()
    assert thermal == ThermalState(
        hottest_c=58.0,
        hottest_zone="x86_pkg_temp",
        throttling_now=False,  # Processor at 0, powerclamp at -1; TCC Offset and Fan ignored
        throttled_since_boot=True,  # core_throttle_count 3 on cpu1
        source="sysfs",
    )


def test_ac_only_tree_has_no_battery() -> None:
    assert SysfsBatteryProbe(DATA / "sysfs_desktop_ac_only").read_battery() is None
    thermal = SysfsThermalProbe(DATA / "sysfs_desktop_ac_only").read_thermal()
    assert thermal == ThermalState(41.0, "x86_pkg_temp", False, False, "sysfs")


def test_charging_handheld_is_plugged_in_with_no_time_left_and_throttling_now() -> None:
    root = DATA / "sysfs_handheld_charging"
    assert SysfsBatteryProbe(root).read_battery() == BatteryState(64.0, True, None, "sysfs")
    assert SysfsThermalProbe(root).read_thermal() == ThermalState(
        39.4, "cpu-0-0-usr", True, True, "sysfs"
    )


def test_raspberry_pi_tree_has_a_zone_and_no_battery() -> None:
    root = DATA / "sysfs_rpi4"
    assert SysfsBatteryProbe(root).read_battery() is None
    assert SysfsThermalProbe(root).read_thermal() == ThermalState(
        48.312, "cpu-thermal", None, None, "sysfs"
    )


def test_jetson_tree_skips_the_pmic_placeholder() -> None:
    thermal = SysfsThermalProbe(DATA / "sysfs_jetson_nano").read_thermal()
    assert thermal is not None
    assert (thermal.hottest_zone, thermal.hottest_c) == ("CPU-therm", 41.0)


def test_missing_sysfs_tree_means_absent_sensors(tmp_path: Path) -> None:
    assert SysfsBatteryProbe(tmp_path / "nothing").read_battery() is None
    assert SysfsThermalProbe(tmp_path / "nothing").read_thermal() is None


def test_discharging_battery_with_charge_counters_estimates_time_left() -> None:
    battery = parse_power_supply(
        "battery",
        {
            "type": "Battery\n",
            "status": "Discharging\n",
            "charge_now": "2000000\n",
            "charge_full": "4000000\n",
            "current_now": "-500000\n",
        },
    )
    # No capacity file: 2.0 Ah of 4.0 Ah; 2.0 Ah at 0.5 A lasts 4 h.
    assert battery_from_supplies([battery]) == BatteryState(50.0, False, 14400.0, "sysfs")


def test_driver_time_to_empty_wins_over_the_estimate() -> None:
    battery = parse_power_supply(
        "cw2015-battery",
        {"type": "Battery", "status": "Discharging", "capacity": "81", "time_to_empty_now": "9000"},
    )
    assert battery_from_supplies([battery]) == BatteryState(81.0, False, 9000.0, "sysfs")


def test_negative_driver_time_to_empty_is_unknown_not_negative_seconds() -> None:
    battery = parse_power_supply(
        "cw2015-battery",
        {"type": "Battery", "status": "Discharging", "capacity": "81", "time_to_empty_now": "-1"},
    )
    assert battery.time_to_empty_s is None
    assert battery_from_supplies([battery]) == BatteryState(81.0, False, None, "sysfs")


def test_unknown_status_without_adapters_leaves_plugged_in_unknown() -> None:
    battery = parse_power_supply("BAT0", {"type": "Battery", "status": "Unknown", "capacity": "55"})
    assert battery_from_supplies([battery]) == BatteryState(55.0, None, None, "sysfs")


@pytest.mark.parametrize(
    ("zone_type", "temp", "expected"),
    [
        ("x86_pkg_temp\n", "58000\n", ("x86_pkg_temp", 58.0)),
        ("cpu-thermal\n", "-5250\n", ("cpu-thermal", -5.25)),
        ("iwlwifi_1\n", "\n", None),  # the driver had no reading
        ("bogus\n", "-273200\n", None),  # a sentinel, not a temperature
        ("PMIC-Die\n", "100000\n", None),  # Tegra's fixed placeholder
    ],
)
def test_thermal_zone_parsing(zone_type: str, temp: str, expected: object) -> None:
    assert parse_thermal_zone(zone_type, temp) == expected


@pytest.mark.parametrize(
    ("device_type", "state", "expected"),
    [
        ("Processor", "2", True),
        ("thermal-cpufreq-0", "0", False),
        ("intel_powerclamp", "-1", False),
        ("Fan", "3", None),
        ("TCC Offset", "5", None),
    ],
)
def test_cooling_devices_count_only_when_they_slow_a_processor(
    device_type: str, state: str, expected: bool | None
) -> None:
    assert cooling_device_throttling(device_type, state) is expected


# --- psutil conversions -------------------------------------------------------------------


def test_psutil_battery_on_battery_keeps_seconds_left() -> None:
    battery = battery_from_psutil(sbattery(percent=57.3, secsleft=5400, power_plugged=False))
    assert battery == BatteryState(57.3, False, 5400.0, "psutil")


def test_psutil_battery_sentinels_mean_no_time_left() -> None:
    # psutil.POWER_TIME_UNLIMITED (-2) while plugged, POWER_TIME_UNKNOWN (-1) otherwise.
    assert battery_from_psutil(sbattery(99.0, -2, True)) == BatteryState(99.0, True, None, "psutil")
    assert battery_from_psutil(sbattery(40.0, -1, None)) == BatteryState(40.0, None, None, "psutil")


@pytest.mark.parametrize(("reported", "percent"), [(150.0, 100.0), (-3.0, 0.0), (57.3, 57.3)])
def test_psutil_battery_percent_is_clamped_like_sysfs(reported: float, percent: float) -> None:
    battery = battery_from_psutil(sbattery(reported, 600, False))
    assert battery == BatteryState(percent, False, 600.0, "psutil")


def test_psutil_temperatures_give_the_hottest_labelled_sensor() -> None:
    temps = {
        "acpitz": [shwtemp("", 27.8, None, None)],
        "coretemp": [
            shwtemp("Package id 0", 61.0, 100.0, 100.0),
            shwtemp("Core 0", 59.0, 100.0, 100.0),
        ],
    }
    assert thermal_from_psutil(temps) == ThermalState(
        61.0, "coretemp/Package id 0", None, None, "psutil"
    )
    assert thermal_from_psutil({}) is None


def test_psutil_temperatures_skip_nan_and_implausible_readings() -> None:
    temps = {
        "broken": [shwtemp("nan", float("nan"), None, None), shwtemp("hot", 255.0, None, None)],
        "sentinel": [shwtemp("", -273.2, None, None)],
        "coretemp": [shwtemp("Package id 0", 61.0, 100.0, 100.0)],
    }
    assert thermal_from_psutil(temps) == ThermalState(
        61.0, "coretemp/Package id 0", None, None, "psutil"
    )
    assert thermal_from_psutil({"broken": [shwtemp("", float("nan"), None, None)]}) is None
