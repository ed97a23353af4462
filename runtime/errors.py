"""The runtime's exception hierarchy: a user sees one clear line, a developer the cause chain."""

from __future__ import annotations


class TandemError(Exception):
    """Base of every error the runtime raises on purpose."""


class ConfigError(TandemError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


class ModeError(TandemError):
    """The requested mode cannot be served (e.g. a cloud mode with no gateway configured)."""


class QueueFullError(TandemError):
    """The local engine's request queue is full; try again later."""


class OffloadError(TandemError):
    """The cloud path failed (unreachable, timed out, refused, or sealed reply invalid)."""


class PrivacyBlockError(TandemError):
    """The privacy filter forbids this request from leaving the device."""
