"""Shared fixtures: the real bundled model, loaded once per test session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from kernels import Engine
from kernels.registry import load_engine

# Telemetry and other state go to a throw-away folder, never the developer's home
# (subprocesses started by tests inherit it).
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="tandem-test-state-")


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """SmolLM2-135M through llama.cpp (the real bundled model), seeded: a sampled request
    without a seed of its own gives the same answer every time."""
    eng = load_engine("bundled:smollm2-135m", context_length=1024, seed=0)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def unseeded_engine() -> Iterator[Engine]:
    """The same model with no `model.seed`: each sampled request without a seed of its own
    draws a fresh random one (the default)."""
    eng = load_engine("bundled:smollm2-135m", context_length=1024)
    yield eng
    eng.close()


# Gateway, fixed upstream and Redis fixtures (real servers on loopback ports).
from tests.conftest_gateway import (  # noqa: E402, F401
    fixed_upstream,
    gateway,
    gateway_home,
    redis_url,
    start_gateway,
)
