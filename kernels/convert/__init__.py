"""Model conversion: GGUF -> ONNX Runtime GenAI (int4 for the CPU by default).

Needs the optional `convert` extra (torch, transformers, gguf, onnx); without it every entry
point raises `ConvertUnavailableError` saying how to install it.
"""

from kernels.convert.cache import cache_path, cached_onnx
from kernels.convert.errors import ConversionError, ConvertUnavailableError, UnsupportedModelError
from kernels.convert.pipeline import ConversionResult, ConvertOptions, check_model, convert_gguf
from kernels.convert.progress import Progress, SilentProgress, TextProgress
from kernels.convert.source import GgufSource, inspect_gguf

__all__ = [
    "ConversionError",
    "ConversionResult",
    "ConvertOptions",
    "ConvertUnavailableError",
    "GgufSource",
    "Progress",
    "SilentProgress",
    "TextProgress",
    "UnsupportedModelError",
    "cache_path",
    "cached_onnx",
    "check_model",
    "convert_gguf",
    "inspect_gguf",
]
