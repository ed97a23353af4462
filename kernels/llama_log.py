"""llama.cpp's own log lines, sent to Python logging instead of straight to stderr.

llama-cpp-python 0.3.36 installs a log callback that maps ggml's log levels with an older
enum (NONE, INFO, WARN, ERROR, DEBUG, CONT): against this build's (NONE, DEBUG, INFO, WARN,
ERROR, CONT) it prints warnings as if they were errors even with `verbose=False` — e.g.
`llama_kv_cache_iswa: using full-size SWA cache` on every Gemma 3 load — and drops errors
as debug. `route_llama_logs()` replaces that callback with one that logs each line on the
`tandem.llama_cpp` logger: ggml errors as WARNING (llama-cpp-python raises on the failures
that matter), warnings as INFO, the rest as DEBUG. Call it after importing `llama_cpp`
(which installs its own callback on import); it is idempotent.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

log = logging.getLogger("tandem.llama_cpp")

# ggml_log_level in the llama.cpp that llama-cpp-python 0.3.36 builds
_NONE, _DEBUG, _INFO, _WARN, _ERROR, _CONT = range(6)
LEVELS = {_NONE: logging.DEBUG, _DEBUG: logging.DEBUG, _INFO: logging.DEBUG,
          _WARN: logging.INFO, _ERROR: logging.WARNING}

_installed: Any = None  # the ctypes callback: kept alive for as long as llama.cpp may call it
_lock = threading.Lock()


class _Lines:
    """Joins ggml's pieces (a CONT piece continues the previous level) into whole lines."""

    def __init__(self) -> None:
        self.level = logging.DEBUG
        self.parts: list[str] = []
        self._lock = threading.Lock()  # two engines may load on two threads

    def feed(self, ggml_level: int, text: str) -> None:
        with self._lock:
            if ggml_level != _CONT:
                self.flush()
                self.level = LEVELS.get(ggml_level, logging.DEBUG)
            self.parts.append(text)
            if text.endswith("\n"):
                self.flush()

    def flush(self) -> None:
        line = "".join(self.parts).rstrip()
        self.parts.clear()
        if line:
            log.log(self.level, "%s", line)


_lines = _Lines()


def route_llama_logs() -> None:
    """Send llama.cpp's log output to the `tandem.llama_cpp` logger (idempotent)."""
    global _installed
    import llama_cpp

    with _lock:
        if _installed is not None:
            return

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            _lines.feed(level, text.decode("utf-8", errors="replace"))

        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        _installed = callback
