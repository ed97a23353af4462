"""The `tandem` command line: output and exit codes, run as a real subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
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


def test_ask_reads_the_prompt_from_stdin_with_a_dash() -> None:
    direct = tandem("ask", "Say hi.", "--max-tokens", "5", "--mode", "local-only", "--json")
    piped = tandem("ask", "-", "--max-tokens", "5", "--mode", "local-only", "--json",
                   stdin="Say hi.")
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["text"] == json.loads(direct.stdout)["text"]


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("ask", ""), None, "tandem: the prompt is empty\n"),
    (("ask", "  \n"), None, "tandem: the prompt is empty\n"),
    (("ask", "-"), "", "tandem: the prompt is empty (standard input)\n"),
])
def test_an_empty_prompt_is_a_usage_error(
    args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    proc = tandem(*args, stdin=stdin)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", message)


def test_a_prompt_that_is_not_utf8_says_which_byte() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["PYTHONUTF8"] = "1"  # stdin read as UTF-8 (with surrogateescape) whatever the locale
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "ask", "-", "--mode", "local-only"],
        input=b"caf\xe9 au lait", capture_output=True, env=env, timeout=300,
    )
    # It was Python's "'utf-8' codec can't encode characters in position 116-118".
    assert (proc.returncode, proc.stdout) == (2, b"")
    assert proc.stderr.decode() == (
        "tandem: messages[0]: message content is not valid Unicode text: a lone surrogate "
        "U+DCE9 (byte 0xE9, not UTF-8, as Python reads an undecodable file or command line) "
        "at character 3\n")


def test_chat_keeps_history_until_end_of_input_and_skips_a_blank_line() -> None:
    proc = tandem("chat", "--max-tokens", "4", stdin="Hello\n\nAnd again\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("[local]") == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_in_the_mode_and_on_the_port_given() -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "serve", "--port", str(port), "--mode",
         "local-only", "--max-tokens", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # the model loads before the port opens
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        body = json.dumps({"messages": [{"role": "user", "content": "Say hi."}]}).encode()
        req = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            answer = json.load(resp)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert answer["tandem"]["mode"] == "local-only"
    assert answer["tandem"]["source"] == "local"
    assert answer["usage"]["completion_tokens"] <= 4


def test_monitor_once_json() -> None:
    proc = tandem("monitor", "--once", "--json")
    assert proc.returncode == 0, proc.stderr
    snap = json.loads(proc.stdout)
    assert snap["cpu"]["count"] >= 1 and snap["memory"]["total_bytes"] > 0


def test_monitor_once_measures_cpu_over_a_real_window(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The kernel counts CPU time in ticks (10 ms here), so two readings a few microseconds
    # apart, the monitor's start and its first snapshot, see no tick and report 0 % whatever
    # the load (a third of `monitor --once` runs did, a core busy beside them). Modelled
    # here deterministically: a reading less than 0.1 s after the previous one sees 0 %.
    import psutil

    from runtime import interface
    from runtime.config import load_config

    last = [-1.0]

    def cpu_percent(percpu: bool = False, interval: float | None = None) -> list[float]:
        now = time.monotonic()
        busy = 0.0 if now - last[0] < 0.1 else 100.0
        last[0] = now
        return [busy, busy]

    monkeypatch.setattr(psutil, "cpu_percent", cpu_percent)
    assert interface.monitor(load_config(env={}), once=True, as_json=True, interval=1.0) == 0
    assert json.loads(capsys.readouterr().out)["cpu"]["per_core"] == [100.0, 100.0]


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
        # values a 32-bit C field would have cut, and durations that overflowed a timeout
        (("ask", "hi"), {"TANDEM_MODEL_CONTEXT_LENGTH": "4294967808"},
         "model.context_length must be in 64..1048576"),
        (("ask", "hi"), {"TANDEM_MODEL_SEED": "-1"}, "model.seed must be in 0..4294967295"),
        (("ask", "hi"), {"TANDEM_MODEL_THREADS": "5000"}, "model.threads must be in 0..1024"),
        (("monitor", "--once"), {"TANDEM_MONITOR_NETWORK_TIMEOUT_S": "1e300"},
         "TANDEM_MONITOR_NETWORK_TIMEOUT_S must be at most 2592000 seconds (30 days)"),
        (("chat", "--mode", "cloud-only"), {},
         "--mode cloud-only needs a cloud gateway, and no gateway is configured"),
        # checked when the config loads, not as a traceback on the first offload
        (("models",), {"TANDEM_OFFLOAD_URL": "notaurl"},
         "config section [offload]: url must be an http(s) URL with a host"),
        (("models",), {"TANDEM_OFFLOAD_URL": "http://exa mple.com"},
         "config section [offload]: url must be an http(s) URL with a host"),
        (("models",), {"TANDEM_OFFLOAD_URL": "http://127.0.0.1:99999"},
         "config section [offload]: url 'http://127.0.0.1:99999' is not a valid URL"),
        (("ask", "hi", "--model", ""), {}, "model.spec must not be empty"),
        (("--config", "/dev/zero", "models"), {},
         "config file /dev/zero is over 1048576 bytes: not a config file"),
        (("ask", "hi", "--mode", "cloud-only"), {}, None),
        (("frobnicate",), {}, None),
    ],
)
def test_usage_and_config_errors_exit_2_with_one_line(
    args: tuple[str, ...], env: dict[str, str], message: str | None
) -> None:
    proc = tandem(*args, env=env)
    if args[0] == "ask" and args[-1] == "cloud-only":
        # a mode this config can't serve: only a change of config or flags helps
        assert proc.returncode == 2
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


def test_a_config_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_bytes(b"\xef\xbb\xbf[model]\nthreads = 1\n")  # Notepad's UTF-8
    proc = tandem("--config", str(cfg), "models")
    assert proc.returncode == 0, proc.stderr


def test_bad_config_file_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text("[server]\nprot = 1\n")
    proc = tandem("--config", str(cfg), "models")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("tandem: unknown config key server.prot")


def test_a_directory_as_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = tandem("--config", str(tmp_path), "models")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tandem: config file {tmp_path} is a directory, not a TOML file"]


def test_a_malformed_credential_exits_2_naming_offload_credential() -> None:
    proc = tandem("ask", "hi", env={"TANDEM_OFFLOAD_URL": "http://127.0.0.1:9",
                                    "TANDEM_OFFLOAD_CREDENTIAL": "tdc1.not-a-credential"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tandem: offload.credential: "), lines


def test_a_prompt_longer_than_the_context_exits_2() -> None:
    proc = tandem("ask", "word " * 3000, "--mode", "local-only",
                  env={"TANDEM_MODEL_CONTEXT_LENGTH": "512"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "context" in lines[0], lines


@pytest.mark.parametrize("mode", ["cloud-only", "prefer-cloud"])
def test_serve_refuses_a_cloud_mode_without_a_gateway(mode: str) -> None:
    proc = tandem("serve", "--port", str(_free_port()), "--mode", mode)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tandem: runtime.mode {mode} needs a cloud gateway, and no gateway is configured "
        "(set [offload] url and credential, or TANDEM_OFFLOAD_URL and "
        "TANDEM_OFFLOAD_CREDENTIAL)"]


@pytest.mark.parametrize("command", [("gateway", "keys"), ("router", "score", "--router",
                                                            "r.npz", "hi"),
                                     ("convert", "bundled:smollm2-135m")])
def test_config_with_a_command_that_does_not_read_it_is_refused(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text("[server]\nport = 9000\n")
    proc = tandem("--config", str(cfg), *command)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tandem: --config applies to the device commands (ask, chat, "
                               f"serve, monitor, choose, models), not to `tandem {command[0]}`")


def test_a_config_file_named_like_a_subcommand_is_read_as_the_config(tmp_path: Path) -> None:
    (tmp_path / "router").write_text("[server]\nprot = 1\n")
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "--config", "router", "models"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("tandem: unknown config key server.prot")


def test_serve_on_a_busy_port_is_one_line_and_exit_2_before_the_model_loads() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = tandem("serve", "--port", str(port), "--model", "/nonexistent/model.gguf")
    # the port is checked first: the missing model file is never reached
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tandem: cannot listen on 127.0.0.1 port {port} (server.host, server.port): "
        "Address already in use"]


def test_serve_on_an_unknown_host_is_one_line_and_exit_2() -> None:
    proc = tandem("serve", "--host", "no-such-host.invalid", "--port", str(_free_port()))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tandem: server.host 'no-such-host.invalid' cannot be resolved: ")


def test_chat_reports_an_over_long_turn_and_goes_on_without_it() -> None:
    turns = ["Hello", "word " * 400, "And again", ""]
    proc = tandem("chat", "--max-tokens", "4", "--mode", "local-only", stdin="\n".join(turns),
                  env={"TANDEM_MODEL_CONTEXT_LENGTH": "256"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("[local]") == 2  # the first and the third turn were answered
    overflow = [line for line in proc.stderr.splitlines() if "context is 256" in line]
    assert len(overflow) == 1 and overflow[0].startswith("tandem: prompt is "), proc.stderr


def test_chat_drops_the_oldest_exchanges_when_the_history_outgrows_the_context() -> None:
    turns = [f"Turn {i}: " + "word " * 60 for i in range(5)] + [""]  # ~70 tokens a turn
    proc = tandem("chat", "--max-tokens", "4", "--mode", "local-only", stdin="\n".join(turns),
                  env={"TANDEM_MODEL_CONTEXT_LENGTH": "256"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("[local]") == 5  # every turn answered
    assert "oldest exchange(s) to fit the context" in proc.stderr


@pytest.mark.parametrize("args", [("monitor", "--json", "--interval", "0.1"),
                                  ("ask", "Say hi.", "--max-tokens", "4", "--mode", "local-only"),
                                  ("models",)])
def test_a_reader_that_went_away_ends_quietly_with_141(args: tuple[str, ...]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head` having exited: the first write fails with EPIPE
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    # `ask`: the cut answer is logged before the runtime closes its telemetry
    assert b"telemetry not recorded" not in err, err.decode()


def test_a_delegated_command_whose_reader_went_away_ends_quietly_with_141() -> None:
    # `tandem router score … | head -n1`: the router's own main writes, the pipe is gone
    code = ("import sys, runtime.cli as cli, runtime.router.cli as rc\n"
            "rc.main = lambda argv: [print('x' * 100) for _ in range(10_000)] and 0\n"
            "sys.exit(cli.main(['router', 'score']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141, err.decode()
    assert b"Traceback" not in err, err.decode()


@pytest.mark.parametrize(("args", "closed", "rc", "message"), [
    (("ask", "-"), 0, 2, "tandem: the prompt is - but standard input is closed"),
    (("chat",), 0, 2, "tandem: standard input is closed: tandem chat reads its turns from it"),
    (("monitor", "--once", "--json"), 1, 0, None),
])
def test_a_closed_standard_stream_is_one_line_not_a_traceback(
    args: tuple[str, ...], closed: int, rc: int, message: str | None
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", *args], env=env, timeout=300,
                          stdout=None if closed == 1 else subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: os.close(closed))  # `<&-` / `1>&-`
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr
    if message is not None:
        assert proc.stderr.strip().splitlines() == [message]


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf", "soon", "1e308"])
def test_monitor_interval_must_be_positive_seconds(interval: str) -> None:
    proc = tandem("monitor", "--json", "--interval", interval)
    assert proc.returncode == 2
    assert proc.stdout == ""  # refused before any snapshot
    assert "argument --interval" in proc.stderr and "Traceback" not in proc.stderr


def test_a_subcommand_whose_extra_is_missing_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli import main

    monkeypatch.setitem(sys.modules, "runtime.router.cli", None)  # as without scikit-learn
    assert main(["router", "--help"]) == 1  # was a ModuleNotFoundError traceback
    err = capsys.readouterr().err
    assert err.startswith("tandem router: needs a package that is not installed (")
    assert err.rstrip().endswith("install it with pip install 'tandem-llm[router]'")
