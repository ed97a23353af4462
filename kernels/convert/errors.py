"""Errors of model conversion, under the kernels package's `EngineError`."""

from __future__ import annotations

from kernels.errors import EngineError


class ConversionError(EngineError):
    """A conversion step failed; the message names the step and the cause."""


class UnsupportedModelError(ConversionError):
    """The input is not something we can convert (not a GGUF, or an unsupported architecture)."""


class ConvertUnavailableError(ConversionError):
    """The optional `convert` extra (torch, transformers, gguf, onnx) is not installed."""
