"""NVIDIA Jetson sensors through `tegrastats`: RAM, per-core CPU load, GPU load, temperatures.

`tegrastats --interval MS` never exits: it prints one line per interval. The probe keeps one
such process and a reader thread that parses each line as it arrives; `read_thermal()` only
looks at the latest parsed sample, so it never waits on the tool. The parser itself is a pure
function of one line, tested on lines recorded from several Jetson models.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from runtime.monitor.commands import stop_process_group
from runtime.monitor.snapshot import ThermalState

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]", re.IGNORECASE)
_CORE = re.compile(r"(\d+(?:\.\d+)?)%(?:@(\d+))?")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%")
_TEMP = re.compile(r"(?<![\w%])([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")

# tegrastats prints -256C for a sensor that is powered down (CV0, GPU on idle Orin).
_SENSOR_OFF_C = -256.0
# PMIC is a fixed placeholder on Jetson modules (100C on Nano/Xavier, 50C on TX2), not a reading.
PLACEHOLDER_ZONES = frozenset({"pmic"})


@dataclass(frozen=True, slots=True)
class CoreLoad:
    """One online CPU core: utilisation in percent and clock in MHz (if printed)."""

    percent: float
    freq_mhz: int | None


@dataclass(frozen=True, slots=True)
class TegrastatsSample:
    """One parsed tegrastats line. Absent fields are None; an offline core is None."""

    ram_used_mb: int | None
    ram_total_mb: int | None
    swap_used_mb: int | None
    swap_total_mb: int | None
    cores: tuple[CoreLoad | None, ...]
    gpu_percent: float | None
    temperatures: tuple[tuple[str, float], ...]  # (zone, °C), in line order, live sensors only

    def hottest(self) -> tuple[str, float] | None:
        """The hottest real sensor (placeholders such as PMIC left out), or None."""
        real = [(z, c) for z, c in self.temperatures if z.lower() not in PLACEHOLDER_ZONES]
        return max(real, key=lambda zc: zc[1]) if real else None


def parse_tegrastats_line(line: str) -> TegrastatsSample | None:
    """Parse one tegrastats line; None if it carries neither RAM, CPU nor temperatures."""
    ram = _RAM.search(line)
    swap = _SWAP.search(line)
    cpu = _CPU.search(line)
    gpu = _GPU.search(line)
    cores: list[CoreLoad | None] = []
    if cpu is not None:
        for entry in cpu.group(1).split(","):
            core = _CORE.fullmatch(entry.strip())
            if core is None:  # "off": the core is offline (power model)
                cores.append(None)
            else:
                freq = core.group(2)
                cores.append(CoreLoad(float(core.group(1)), int(freq) if freq else None))
    temps = tuple(
        (m.group(1), float(m.group(2)))
        for m in _TEMP.finditer(line)
        if float(m.group(2)) > _SENSOR_OFF_C
    )
    if ram is None and cpu is None and not temps:
        return None
    return TegrastatsSample(
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        swap_used_mb=int(swap.group(1)) if swap else None,
        swap_total_mb=int(swap.group(2)) if swap else None,
        cores=tuple(cores),
        gpu_percent=float(gpu.group(1)) if gpu else None,
        temperatures=temps,
    )


def thermal_from_sample(sample: TegrastatsSample) -> ThermalState | None:
    """The hottest zone of a sample as a `ThermalState` (tegrastats says nothing on throttling)."""
    hottest = sample.hottest()
    if hottest is None:
        return None
    zone, celsius = hottest
    return ThermalState(celsius, zone, None, None, "tegrastats")


class TegrastatsThermalProbe:
    """`ThermalProbe` over a long-running `tegrastats --interval MS` process.

    The process starts on the first read (which therefore answers None); a missing command,
    a process that exits, or a sample older than `stale_after_s` all read as absent.
    """

    def __init__(
        self,
        command: str = "tegrastats",
        interval_s: float = 1.0,
        stale_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._argv = shlex.split(command)
        self._interval_ms = max(int(interval_s * 1000), 10)
        self._stale_after_s = stale_after_s if stale_after_s else max(5.0, 3 * interval_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._latest: tuple[TegrastatsSample, float] | None = None
        self._count = 0
        self._dead = not self._argv  # absent, exited or closed: never (re)started

    def read_thermal(self) -> ThermalState | None:
        """The hottest zone of the latest line; None while absent, starting, or stale."""
        sample = self.latest_sample()
        return thermal_from_sample(sample) if sample is not None else None

    def latest_sample(self) -> TegrastatsSample | None:
        """The latest parsed line, if fresh; starts the process on first use."""
        if self._proc is None and not self._dead:
            self._start()
        latest = self._latest
        if latest is None or self._dead:
            return None
        sample, at = latest
        return sample if self._clock() - at <= self._stale_after_s else None

    def wait_for_samples(self, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Block until `count` lines have been parsed (or the process ended); for tests/CLI."""
        if self._proc is None and not self._dead:
            self._start()
        with self._cond:
            return self._cond.wait_for(lambda: self._count >= count or self._dead, timeout_s) and (
                self._count >= count
            )

    def _start(self) -> None:
        with self._cond:
            if self._proc is not None or self._dead:
                return
            try:
                self._proc = subprocess.Popen(
                    [*self._argv, "--interval", str(self._interval_ms)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    bufsize=1,
                    start_new_session=True,  # so close() can stop the tool and any children
                )
            except OSError:  # not found, not executable: not a Jetson
                self._dead = True
                return
            assert self._proc.stdout is not None
            self._thread = threading.Thread(
                target=self._follow, args=(self._proc.stdout,), name="tegrastats", daemon=True
            )
            self._thread.start()

    def _follow(self, stdout: IO[str]) -> None:
        with stdout:
            for line in stdout:
                sample = parse_tegrastats_line(line)
                if sample is None:
                    continue
                with self._cond:
                    self._latest = (sample, self._clock())
                    self._count += 1
                    self._cond.notify_all()
        with self._cond:
            self._dead = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the tegrastats process and its reader thread."""
        with self._cond:
            proc, thread = self._proc, self._thread
            self._dead = True
            self._cond.notify_all()
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (AttributeError, ProcessLookupError, PermissionError):
                proc.terminate()
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            stop_process_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)
        if thread is not None:
            thread.join(timeout=2.0)
