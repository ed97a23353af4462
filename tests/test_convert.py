"""`tandem convert`: GGUF -> int4 ONNX, cached per machine, with clear errors for bad input.

The real conversion (SmolLM2, ~40 s here) needs the optional convert extra; without it those
tests skip and say so. Input checks run without it.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest

from kernels.convert import (
    ConversionError,
    ConvertOptions,
    TextProgress,
    UnsupportedModelError,
    cached_onnx,
    convert_gguf,
    inspect_gguf,
)
from kernels.convert.cli import main
from kernels.convert.source import file_sha256
from kernels.registry import resolve

CONVERT_EXTRA = ("torch", "transformers", "gguf", "accelerate", "onnx", "onnxruntime_genai")
MISSING = [m for m in CONVERT_EXTRA if importlib.util.find_spec(m) is None]
needs_extra = pytest.mark.skipif(
    bool(MISSING), reason=f"the convert extra is not installed (missing: {', '.join(MISSING)})"
)


def tiny_gguf(path: Path, arch: str) -> Path:
    """A real (weightless) GGUF file declaring `arch`."""
    gguf = pytest.importorskip("gguf", reason="writing a GGUF needs the gguf package")
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny {arch}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_options_are_validated() -> None:
    assert ConvertOptions().key == "onnx-int4-b32-a4-k_quant_last"
    with pytest.raises(ValueError, match="target must be one of"):
        ConvertOptions(target="tflite")
    with pytest.raises(ValueError, match="block size"):
        ConvertOptions(block_size=48)
    with pytest.raises(ValueError, match="accuracy level"):
        ConvertOptions(accuracy_level=7)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        ConvertOptions(algorithm="gptq")


def test_files_that_are_not_gguf_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    with pytest.raises(UnsupportedModelError, match="is not a GGUF file"):
        inspect_gguf(text)
    with pytest.raises(UnsupportedModelError, match="is a folder"):
        inspect_gguf(tmp_path)
    with pytest.raises(UnsupportedModelError, match="no such file"):
        inspect_gguf(tmp_path / "missing.gguf")


def test_unsupported_architectures_are_named(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="architecture 'bert' cannot be converted"):
        inspect_gguf(tiny_gguf(tmp_path / "bert.gguf", "bert"))
    with pytest.raises(UnsupportedModelError, match="gemma3 cannot be converted yet: .*RoPE"):
        inspect_gguf(tiny_gguf(tmp_path / "gemma.gguf", "gemma3"))


def test_a_non_empty_output_folder_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="exists and is not empty"):
        convert_gguf(resolve("bundled:smollm2-135m").path, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_reports_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04zip")
    assert main([str(bad), "--to", "onnx-int4", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        err.splitlines()[-1]
        == f"tandem convert: {bad} is not a GGUF file (it starts with b'PK\\x03\\x04')"
    )
    with pytest.raises(SystemExit) as exit_info:
        main([str(bad), "--to", "coreml"])
    assert exit_info.value.code == 2


def test_cli_checks_out_before_converting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "not-there.gguf")  # converting it would fail: it is never tried
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main([missing, "--out", str(full)]) == 2  # was: minutes of converting, then 1
    assert capsys.readouterr().err == f"tandem convert: {full} exists and is not empty\n"
    a_file = tmp_path / "model.onnx"
    a_file.write_text("x")
    assert main([missing, "--no-cache", "--out", str(a_file)]) == 2  # was a traceback
    assert capsys.readouterr().err == (f"tandem convert: --out {a_file} is a file, "
                                       "not a folder\n")
    assert (full / "keep.txt").read_text() == "mine"


def test_progress_prints_each_step_with_its_time() -> None:
    out = io.StringIO()
    progress = TextProgress(out)
    progress.start(1, 5, "Reading GGUF metadata")
    progress.done("llama, 98 MB")
    progress.start(2, 5, "Dequantising")
    progress.failed("boom")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/5] Reading GGUF metadata ..."
    assert lines[1].startswith("[1/5] Reading GGUF metadata ... done in ")
    assert lines[1].endswith(" s (llama, 98 MB)")
    assert lines[3].startswith("[2/5] Dequantising ... FAILED after ")


@needs_extra
def test_bundled_smollm2_converts_once_into_a_complete_model() -> None:
    gguf = resolve("bundled:smollm2-135m").path
    folder = cached_onnx("bundled:smollm2-135m")
    manifest = json.loads((folder / "tandem.json").read_text())
    assert manifest["source"]["sha256"] == file_sha256(gguf)
    assert folder.name.startswith(manifest["source"]["sha256"][:16])
    assert manifest["source"]["architecture"] == "llama"
    assert manifest["id"] == "smollm2-135m-onnx-int4" and manifest["chat"] is True
    assert manifest["add_bos"] is False and manifest["precision"] == "int4"
    assert manifest["check"]["tokens"] >= 1 and manifest["check"]["mean_logprob"] <= 0
    assert len(manifest["timings"]) == 5
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    # cached: a second call finds it and converts nothing
    stamp = (folder / "tandem.json").stat().st_mtime_ns
    assert cached_onnx(str(gguf)) == folder
    assert (folder / "tandem.json").stat().st_mtime_ns == stamp


@needs_extra
def test_exported_tokenizer_counts_like_the_model() -> None:
    from tokenizers import Tokenizer

    from kernels.registry import load_engine

    folder = cached_onnx("bundled:smollm2-135m")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    engine = load_engine(str(folder), context_length=256)
    try:
        for text in ("Hello, world!", "Tandem runs small models on the edge.", "日本語 ünïcode"):
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            assert len(ids) == engine.count_tokens(text)
    finally:
        engine.close()


@needs_extra
def test_cli_copies_the_converted_model_to_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "smollm2-onnx"
    assert main(["bundled:smollm2-135m", "--to", "onnx-int4", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / "tandem.json").read_text())["id"] == "smollm2-135m-onnx-int4"
    assert resolve(str(out)).format == "onnx"
    assert main(["bundled:smollm2-135m", "--out", str(out)]) == 2  # never overwrites


def test_checking_the_convert_extra_does_not_import_it() -> None:
    import subprocess
    import sys

    from kernels.convert.source import ConvertUnavailableError, require_installed

    with pytest.raises(ConvertUnavailableError, match="'no_such_module_x', part of the convert"):
        require_installed("no_such_module_x")
    with pytest.raises(ConvertUnavailableError, match="no_such_pkg_x.models.builder"):
        require_installed("no_such_pkg_x.models.builder")
    # torch runs in the conversion's child process: checking for it must not load it here
    probe = ("import sys; from kernels.convert.source import require_installed as r\n"
             "try:\n    r('torch')\nexcept Exception:\n    pass\n"
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"
