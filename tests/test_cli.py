"""The `tandem` command line: output and exit codes, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def tandem(*args: str, env: dict[str, str] | None = None,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        capture_output=True, text=True, env=full_env, input=stdin, timeout=300,
    )


def test_ask_json_prints_the_whole_result() -> None:
    proc = tandem("ask", "Say hi.", "--max-tokens", "6", "--mode", "local-only", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["source"] == "local"
    assert result["mode"] == "local-only"
    assert result["usage"]["completion_tokens"] <= 6
    assert result["text"]
    assert set(result["timings"]) == {"queued_ms", "ttft_ms", "total_ms", "tokens_per_s"}


def test_ask_streams_text_and_describes_the_answer_on_stderr() -> None:
    proc = tandem("ask", "Say hi.", "--max-tokens", "5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "[local]" in proc.stderr and "confidence" in proc.stderr


def test_chat_keeps_history_until_an_empty_line() -> None:
    proc = tandem("chat", "--max-tokens", "4", stdin="Hello\nAnd again\n\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("[local]") == 2


def test_monitor_once_json() -> None:
    proc = tandem("monitor", "--once", "--json")
    assert proc.returncode == 0, proc.stderr
    snap = json.loads(proc.stdout)
    assert snap["cpu"]["count"] >= 1 and snap["memory"]["total_bytes"] > 0


def test_models_lists_the_bundled_models() -> None:
    proc = tandem("models")
    assert proc.returncode == 0, proc.stderr
    assert "bundled:smollm2-135m" in proc.stdout and "ready" in proc.stdout
    assert "bundled:gemma3-270m" in proc.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("ask", "hi", "--model", "/nonexistent/model.gguf"), {}, "model file not found: "
         "/nonexistent/model.gguf"),
        (("ask", "hi"), {"TANDEM_MODEL_THREADS": "many"},
         "TANDEM_MODEL_THREADS must be an integer"),
        (("ask", "hi"), {"TANDEM_GENERATION_TOP_K": "5"}, "unknown environment variable"),
        (("ask", "hi", "--mode", "cloud-only"), {}, None),
        (("frobnicate",), {}, None),
    ],
)
def test_usage_and_config_errors_exit_2_with_one_line(
    args: tuple[str, ...], env: dict[str, str], message: str | None
) -> None:
    proc = tandem(*args, env=env)
    if args[-1] == "cloud-only":
        # a mode that can't be served is a runtime failure, not a usage error
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [
            "tandem: mode cloud-only needs a cloud gateway, and no gateway is configured "
            "(set [offload] url and credential, or TANDEM_OFFLOAD_URL and "
            "TANDEM_OFFLOAD_CREDENTIAL)"
        ]
        return
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    if message is not None:
        assert proc.stderr.strip().splitlines() == [f"tandem: {message}"] or (
            message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        )


def test_bad_config_file_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text("[server]\nprot = 1\n")
    proc = tandem("--config", str(cfg), "models")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("tandem: unknown config key server.prot")
