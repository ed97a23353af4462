"""The kernels package's exception hierarchy."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error raised by an engine or the model registry."""


class ModelNotFoundError(EngineError):
    """A model spec names a file, folder or bundled model that does not exist."""


class ModelCacheError(ModelNotFoundError):
    """A bundled model that is installed cannot be put where it must go (`model.cache_dir`
    unusable, a full disk): nothing to reinstall, the folder needs fixing."""


class ContextOverflowError(EngineError):
    """The prompt (plus the requested output) does not fit the model's context."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"prompt is {prompt_tokens} tokens, the model's context is {context_length}"
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class EngineUnavailableError(EngineError):
    """The engine's backend library is not installed, or its server is unreachable."""
