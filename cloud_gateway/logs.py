"""Structured logs: one JSON object per line, fields passed as `extra={"fields": {...}}`.

Callers log metadata only (device, key id, outcome, status, timings, token counts); no code
path passes request or response content to a logger.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

LOGGER_NAME = "tandem.gateway"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and location only: messages could quote request content.
            entry["exc_type"] = record.exc_info[0].__name__
            tb = record.exc_info[2]
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                entry["exc_where"] = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info") -> logging.Logger:
    """Send the gateway's logs to stderr as JSON lines."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger
