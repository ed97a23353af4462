"""Model execution: the `Engine` protocol, its implementations and the model registry."""

from kernels.base import (
    Engine,
    FinishReason,
    Generation,
    GenerationParams,
    Message,
    ModelInfo,
    Prompt,
    TokenEvent,
    TokenStream,
    Usage,
    collect,
    generate,
)
from kernels.errors import (
    ContextOverflowError,
    EngineError,
    EngineUnavailableError,
    ModelCacheError,
    ModelNotFoundError,
)

__all__ = [
    "ContextOverflowError",
    "Engine",
    "EngineError",
    "EngineUnavailableError",
    "FinishReason",
    "Generation",
    "GenerationParams",
    "Message",
    "ModelInfo",
    "ModelCacheError",
    "ModelNotFoundError",
    "Prompt",
    "TokenEvent",
    "TokenStream",
    "Usage",
    "collect",
    "generate",
]
