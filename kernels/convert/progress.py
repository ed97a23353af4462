"""A progress display for the conversion steps: one line per step, with its time."""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    """Told when each step starts and ends; `TextProgress` prints, tests may record."""

    def start(self, index: int, total: int, title: str) -> None: ...

    def done(self, detail: str = "") -> None: ...

    def failed(self, error: str) -> None: ...


class TextProgress:
    """`[2/5] Dequantising ... done in 38.1 s (538 MB)` lines; on a terminal, a live clock."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stderr
        self._live = self._out.isatty()
        self._title = ""
        self._started = 0.0
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, index: int, total: int, title: str) -> None:
        self._title = f"[{index}/{total}] {title}"
        self._started = time.monotonic()
        if self._live:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        else:
            self._out.write(f"{self._title} ...\n")
            self._out.flush()

    def done(self, detail: str = "") -> None:
        self._finish(
            f"done in {time.monotonic() - self._started:.1f} s" + (f" ({detail})" if detail else "")
        )

    def failed(self, error: str) -> None:
        # the caller reports the error itself (the CLI prints it as its last line)
        self._finish(f"FAILED after {time.monotonic() - self._started:.1f} s")

    def _finish(self, status: str) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        prefix = "\r\033[K" if self._live else ""
        self._out.write(f"{prefix}{self._title} ... {status}\n")
        self._out.flush()

    def _tick(self) -> None:
        # a long step (dequantising, building) shows it is alive once a second
        while not self._stop.wait(1.0):
            elapsed = time.monotonic() - self._started
            self._out.write(f"\r\033[K{self._title} ... {elapsed:.0f} s")
            self._out.flush()


class SilentProgress:
    """No display (library use where the caller has its own)."""

    def start(self, index: int, total: int, title: str) -> None:
        pass

    def done(self, detail: str = "") -> None:
        pass

    def failed(self, error: str) -> None:
        pass
