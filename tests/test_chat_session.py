"""`tandem chat` as a session: its history, commands, failed and interrupted turns.

Driven through `runtime.interface.chat` with scripted standard input, answering with the real
bundled model (SmolLM2-135M) behind a recorder that keeps the messages of every request.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from kernels import Engine, EngineError
from kernels.base import GenerationParams, ModelInfo, Prompt, TokenEvent, TokenStream
from kernels.registry import load_engine
from runtime import interface
from runtime.config import load_config
from runtime.facade import Runtime

INTERRUPT = object()  # in a script: input() raises KeyboardInterrupt there (Ctrl-C at the prompt)
CONTEXT = 256  # the small engine's context: a few turns outgrow it


@pytest.fixture(scope="module")
def small_engine() -> Iterator[Engine]:
    """The bundled model with a 256-token context (the session's has 1024)."""
    eng = load_engine("bundled:smollm2-135m", context_length=CONTEXT, seed=0)
    yield eng
    eng.close()


class _Failing(TokenStream):
    """The engine's token stream, raising `error` once `after` tokens were given."""

    def __init__(self, inner: TokenStream, after: int, error: BaseException,
                 recorder: Recorder) -> None:
        super().__init__(iter(()), inner.cancel_event)
        self._inner, self._after, self._error, self._recorder = inner, after, error, recorder
        self._given = 0

    def __next__(self) -> TokenEvent:
        if self._given >= self._after:
            raise self._error
        self._given += 1
        return next(self._inner)

    def close(self) -> None:
        self._recorder.closed += 1
        self._inner.close()


class Recorder:
    """The real engine, keeping the messages of every request (`sent`, as (role, content)
    pairs) and decoding at most `cap` tokens (the chat still plans with the configured
    max_tokens). `fail[n]` makes request n (0-based) fail: an exception raised when it
    starts, or (exception, k) raised from its token stream after k tokens."""

    def __init__(self, inner: Engine, cap: int = 2) -> None:
        self.inner = inner
        self.cap = cap
        self.sent: list[list[tuple[str, str]]] = []
        self.fail: dict[int, BaseException | tuple[BaseException, int]] = {}
        self.closed = 0  # interrupted token streams closed (the decode ended)

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def render(self, prompt: Prompt) -> str:
        return self.inner.render(prompt)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def stream(self, prompt: Prompt, params: GenerationParams,
               cancel: threading.Event | None = None) -> TokenStream:
        assert not isinstance(prompt, str)
        n = len(self.sent)
        self.sent.append([(m.role, m.content) for m in prompt])
        failure = self.fail.get(n)
        if isinstance(failure, BaseException):
            raise failure
        params = dataclasses.replace(params, max_tokens=min(params.max_tokens, self.cap))
        tokens = self.inner.stream(prompt, params, cancel)
        if failure is None:
            return tokens
        error, after = failure
        return _Failing(tokens, after, error, self)

    def close(self) -> None:
        pass  # the fixture's engine outlives the test

    def users(self, request: int) -> list[str]:
        """The user turns request `request` was sent with."""
        return [content for role, content in self.sent[request] if role == "user"]


class ScriptedStdin(io.StringIO):
    """Standard input from a script of lines; INTERRUPT raises KeyboardInterrupt in
    `input()`, as Ctrl-C at the prompt does."""

    def __init__(self, lines: Sequence[str | object], tty: bool = False) -> None:
        super().__init__()
        self._lines = list(lines)
        self._tty = tty

    def readline(self, size: int | None = -1) -> str:
        if not self._lines:
            return ""  # end of input: Ctrl-D
        line = self._lines.pop(0)
        if line is INTERRUPT:
            raise KeyboardInterrupt
        assert isinstance(line, str)
        return line + "\n"

    def isatty(self) -> bool:
        return self._tty


@dataclasses.dataclass
class Session:
    rc: int
    out: str
    err: str


def run_chat(engine: Any, lines: Sequence[str | object], monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str], *, max_tokens: int = 2,
             tty: bool = False) -> Session:
    """`tandem chat --mode local-only` over `lines`, answering with `engine`."""
    cfg = load_config(env={"TANDEM_GENERATION_MAX_TOKENS": str(max_tokens)})
    monkeypatch.setattr(sys, "stdin", ScriptedStdin(lines, tty))
    # chat's Runtime answers with `engine` (a Runtime does not close an engine it is given)
    monkeypatch.setattr(interface, "open_runtime", lambda config: Runtime(config, engine=engine))
    try:
        rc = interface.chat(cfg, mode="local-only")
    except KeyboardInterrupt:  # pytest would end the whole run on it
        raise AssertionError("KeyboardInterrupt ended the chat") from None
    out, err = capsys.readouterr()
    return Session(rc, out, err)


def test_a_turn_too_long_for_the_context_is_refused_and_the_history_kept(
    small_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Recorder(small_engine)
    s = run_chat(rec, ["My name is Bob.", "What is my name?", "word " * 300,
                       "What is my name again?"], monkeypatch, capsys)
    assert s.rc == 0
    # the long turn reached the engine alone, and was refused there
    assert rec.sent[2] == [("user", ("word " * 300).strip())]
    # the next turn still has both earlier exchanges (it was sent alone)
    assert rec.users(3) == ["My name is Bob.", "What is my name?", "What is my name again?"]
    assert len(rec.sent[3]) == 5
    refused = [line for line in s.err.splitlines() if line.startswith("tandem: prompt is ")]
    assert len(refused) == 1 and refused[0].endswith(" tokens, the model's context is 256"), s.err
    assert "dropped" not in s.err


def test_the_oldest_exchanges_are_dropped_to_leave_room_for_a_whole_answer(
    small_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # ~43 tokens an exchange; with max_tokens 100 the prompt may take 256 - 100 = 156:
    # the fourth turn (~189 tokens with the three before it) must drop the first exchange,
    # though it would fit the context itself, leaving an answer room for a few tokens only.
    rec = Recorder(small_engine)
    turns = [f"Turn {i}: " + "word " * 25 for i in range(4)]
    s = run_chat(rec, turns, monkeypatch, capsys, max_tokens=100)
    assert s.rc == 0
    assert [len(rec.users(i)) for i in range(4)] == [1, 2, 3, 3]
    assert rec.users(3) == [t.strip() for t in turns[1:]]
    assert s.err.count("tandem chat: dropped the 1 oldest exchange(s) to fit the context") == 1
    assert s.err.count("[local]") == 4


def test_a_blank_line_is_ignored_not_the_end_of_the_chat(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # pasted text with a blank line: the rest used to go to the shell
    rec = Recorder(engine)
    s = run_chat(rec, ["Summarize this text:", "", "   ", "rm -rf ~/important"],
                 monkeypatch, capsys)
    assert s.rc == 0
    assert len(rec.sent) == 2
    assert rec.users(1) == ["Summarize this text:", "rm -rf ~/important"]


def test_commands_exit_help_reset_and_unknown(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Recorder(engine)
    s = run_chat(rec, ["Hello", "/help", "/foo", "/reset now", "/reset", " /foo is a path",
                       "/etc/hosts: what is it?", "/quit", "never read"], monkeypatch, capsys)
    assert s.rc == 0
    assert len(rec.sent) == 3  # Hello; " /foo ..." and "/etc/hosts ..." as text; no more
    assert rec.users(1) == ["/foo is a path"]  # after /reset: a new conversation
    assert rec.users(2) == ["/foo is a path", "/etc/hosts: what is it?"]
    err = s.err.splitlines()
    assert "tandem chat commands:" in err
    assert any(line.split()[:1] == ["/reset"] for line in err)  # /help lists /reset ...
    assert any(line.split()[:1] == ["/exit"] for line in err)
    assert ("tandem chat: unknown command /foo (/help lists them); to send the line as text, "
            "start it with a space") in err
    assert ("tandem chat: /reset takes nothing after it; to send the line as text, start it "
            "with a space") in err
    assert err.count("tandem chat: history cleared") == 1  # "/reset now" cleared nothing


def test_exit_ends_the_chat(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Recorder(engine)
    s = run_chat(rec, ["/exit", "Hello"], monkeypatch, capsys)
    assert s.rc == 0 and rec.sent == []


def test_a_line_that_is_not_utf8_is_reported_and_the_chat_goes_on(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `printf 'caf\xe9 ok\n' | tandem chat`: Python reads the byte as a lone surrogate
    rec = Recorder(engine)
    s = run_chat(rec, ["Hello", "caf\udce9 ok", "And again"], monkeypatch, capsys)
    assert s.rc == 0
    assert len(rec.sent) == 2
    assert rec.users(1) == ["Hello", "And again"]
    assert ("tandem: the line is not valid Unicode text: a lone surrogate U+DCE9 (byte 0xE9, "
            "not UTF-8, as Python reads an undecodable file or command line) at character 3"
            ) in s.err.splitlines()


@pytest.mark.parametrize("failure", [
    EngineError("the model server at http://127.0.0.1:9/v1 is unreachable"),  # at the start
    (EngineError("the model server at http://127.0.0.1:9/v1 is unreachable"), 1),  # mid-answer
], ids=["at-start", "mid-answer"])
def test_an_engine_failure_is_reported_and_the_turn_left_out(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    failure: BaseException | tuple[BaseException, int],
) -> None:
    rec = Recorder(engine)
    rec.fail[1] = failure
    s = run_chat(rec, ["My name is Bob.", "What is my name?", "Who am I?"], monkeypatch,
                 capsys)
    assert s.rc == 0
    assert rec.users(2) == ["My name is Bob.", "Who am I?"]
    assert "tandem: the model server at http://127.0.0.1:9/v1 is unreachable" in \
        s.err.splitlines()
    assert s.err.count("[local]") == 2


def test_ctrl_c_during_an_answer_stops_it_and_the_chat_goes_on(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Recorder(engine, cap=8)
    # Simulates SIGINT (Ctrl-C) while the answer streams: Python raises KeyboardInterrupt in
    # the main thread, which is waiting for the engine's next token.
    rec.fail[1] = (KeyboardInterrupt(), 1)
    s = run_chat(rec, ["My name is Bob.", "Write a long story.", "What is my name?"],
                 monkeypatch, capsys)
    assert s.rc == 0
    assert rec.closed == 1  # the interrupted decode was closed
    assert rec.users(2) == ["My name is Bob.", "What is my name?"]
    assert "tandem chat: stopped (Ctrl-C); the turn is left out" in s.err.splitlines()
    assert s.err.count("[local]") == 2


def test_ctrl_c_at_the_prompt_does_not_end_the_chat(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Recorder(engine)
    s = run_chat(rec, ["My name is Bob.", INTERRUPT, "What is my name?"], monkeypatch, capsys)
    assert s.rc == 0
    assert rec.users(1) == ["My name is Bob.", "What is my name?"]
    assert "^C" in s.err.splitlines()


def test_status_lines_never_go_to_stdout_with_stderr_closed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Recorder(engine)
    monkeypatch.setattr(sys, "stderr", None)  # started with `2>&-`
    s = run_chat(rec, ["Hello", "/reset", "/help"], monkeypatch, capsys)
    assert s.rc == 0
    assert "[local]" not in s.out and "tandem chat" not in s.out, s.out


def test_readline_edits_the_line_on_a_terminal_only(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("readline")
    monkeypatch.delitem(sys.modules, "readline")
    run_chat(Recorder(engine), [], monkeypatch, capsys, tty=False)
    assert "readline" not in sys.modules  # piped input: no terminal to edit on
    run_chat(Recorder(engine), [], monkeypatch, capsys, tty=True)
    assert "readline" in sys.modules  # arrow keys edit the line


def test_describe_says_when_an_answer_was_cut_at_the_length_limit(engine: Engine) -> None:
    with Runtime(load_config(env={}), engine=engine) as rt:
        result = rt.generate([{"role": "user", "content": "Tell me a long story."}],
                             mode="local-only", params=rt.params(max_tokens=2))
    assert result.finish_reason == "length"
    assert interface.describe(result).endswith(
        " | cut off at the length limit (--max-tokens, or the model's context)")
    finished = dataclasses.replace(result, finish_reason="stop")
    assert "length limit" not in interface.describe(finished)


# -- the `tandem` entry point: Ctrl-C and a closed stderr ---------------------------------------

def test_ctrl_c_in_a_delegated_command_is_one_line_and_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli import main

    def interrupted(argv: list[str]) -> int:
        raise KeyboardInterrupt  # as Ctrl-C during `tandem router train` does

    fake = types.ModuleType("runtime.router.cli")
    fake.main = interrupted  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "runtime.router.cli", fake)
    try:
        rc = main(["router", "train", "--data", "train.csv", "--out", "sig.npz"])
    except KeyboardInterrupt:
        raise AssertionError("KeyboardInterrupt escaped tandem's main") from None
    assert rc == 130
    assert capsys.readouterr().err == "tandem: interrupted\n"


def test_ctrl_c_in_a_device_command_says_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli import main

    def interrupted(*_: object) -> list[dict[str, str]]:
        raise KeyboardInterrupt

    monkeypatch.setattr(interface, "list_models", interrupted)
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "tandem: interrupted\n"


def test_importing_the_cli_loads_only_the_standard_library() -> None:
    # Ctrl-C while the module itself is imported would be a traceback: the runtime's modules
    # load inside main(), under its KeyboardInterrupt handler.
    code = ("import sys, runtime.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('runtime', 'kernels', 'cloud_gateway', 'numpy', 'httpx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "['runtime', 'runtime.cli']"


def test_a_usage_error_with_stderr_closed_is_not_written_to_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli import main

    monkeypatch.setattr(sys, "stderr", None)
    assert main(["ask", ""]) == 2
    assert capsys.readouterr().out == ""


def test_ask_with_stderr_closed_writes_only_the_answer_to_stdout() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "ask", "Say hi.", "--max-tokens", "3",
         "--mode", "local-only"],
        stdout=subprocess.PIPE, text=True, env=env, timeout=300,
        preexec_fn=lambda: os.close(2))  # `2>&-`
    assert proc.returncode == 0
    assert proc.stdout.strip()  # the answer
    assert "[local]" not in proc.stdout and "confidence" not in proc.stdout, proc.stdout
