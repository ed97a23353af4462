"""Running a hardware tool (`vcgencmd`) where a missing tool is an answer, not an error."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess

DEFAULT_TIMEOUT_S = 0.5


def stop_process_group(proc: subprocess.Popen[str]) -> None:
    """Kill a process started with `start_new_session=True` and everything it spawned."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (AttributeError, ProcessLookupError, PermissionError):  # no killpg, or gone
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class CommandRunner:
    """Runs one configured command with arguments; every failure reads as `None`.

    The command string is split like a shell would (`"sudo -n vcgencmd"` works); an empty
    string disables the probe. Once the executable is found missing, it is never tried again:
    a device does not grow a `vcgencmd` while running, and forking for nothing costs time.
    """

    def __init__(self, command: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._argv = shlex.split(command)
        self._timeout_s = timeout_s
        self._missing = not self._argv

    @property
    def available(self) -> bool:
        """False once the command is known to be absent (or was never configured)."""
        return not self._missing

    def run(self, *args: str) -> str | None:
        """The command's stdout, or None if it is absent, fails, or outlives the timeout."""
        if self._missing:
            return None
        try:
            proc = subprocess.Popen(
                [*self._argv, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                encoding="utf-8",
                errors="replace",
                # Its own process group, so a timeout also kills what a wrapper script spawned
                # (otherwise an orphan keeps the pipe open and we would wait for it anyway).
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            self._missing = True
            return None
        except OSError:
            return None
        with proc:
            try:
                out, _ = proc.communicate(timeout=self._timeout_s)
            except subprocess.TimeoutExpired:
                stop_process_group(proc)
                proc.communicate()
                return None
        return out if proc.returncode == 0 else None
