"""What the CLI does, as functions a test or a script can call directly."""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kernels.base import check_text
from kernels.errors import (
    ContextOverflowError,
    EngineError,
    ModelCacheError,
    ModelNotFoundError,
)
from kernels.registry import BUNDLED, default_cache_dir, resolve
from runtime.cli import say
from runtime.config import TandemConfig
from runtime.errors import ConfigError, ModeError, TandemError
from runtime.facade import Runtime, to_messages
from runtime.result import Result


def open_runtime(config: TandemConfig) -> Runtime:
    """A Runtime whose model is resolved now, so a missing file is reported before any work."""
    m = config.model
    resolve(m.spec, m.cache_dir or None)
    return Runtime.from_config(config)


def describe(result: Result) -> str:
    """One line about where and why an answer was computed."""
    conf = result.confidence.score
    conf_s = "n/a" if conf != conf else f"{conf:.2f}"
    t = result.timings
    line = (
        f"[{result.source}] {result.reason} | confidence {conf_s} | "
        f"{result.usage.completion_tokens} tokens, ttft {t.ttft_ms:.0f} ms, "
        f"total {t.total_ms:.0f} ms, {t.tokens_per_s:.1f} tok/s"
    )
    if result.finish_reason == "length":
        line += " | cut off at the length limit (--max-tokens, or the model's context)"
    return line


def list_models(config: TandemConfig) -> list[dict[str, str]]:
    """One row per bundled model: spec, status (ready / missing / unusable), description,
    `path` (the model file; Gemma's is written on first use, and says so until then), for a
    missing one the command that installs it, and for an unusable one (installed, but its
    file cannot be put in `model.cache_dir`) why, as `problem`."""
    cache = Path(config.model.cache_dir) if config.model.cache_dir else default_cache_dir()
    rows = []
    for name, bundled in BUNDLED.items():
        spec = f"bundled:{name}"
        path = problem = ""
        try:
            # Gemma is assembled on first use: do not assemble it just to list it
            file = bundled.path(cache)
            present = file.is_file() and file.stat().st_size > 0
            path = str(file) if present else f"{file} (assembled on first use)"
            status = "ready"
        except ModelCacheError as exc:  # installed: reinstalling would not help
            status, problem = "unusable", str(exc)
        except ModelNotFoundError:
            status = "missing"
        rows.append({"spec": spec, "status": status, "description": bundled.description,
                     "path": path, "install": bundled.install if status == "missing" else "",
                     "problem": problem})
    return rows


_FIRST_CPU_WINDOW_S = 0.5


def monitor(config: TandemConfig, *, once: bool, as_json: bool, interval: float) -> int:
    from runtime.monitor import Monitor, render_snapshot

    url = config.offload.url if config.runtime.mode != "local-only" else ""
    mon = Monitor.from_config(config.monitor, gateway_url=url or None)
    try:
        # CPU use is measured between two readings: the first snapshot would cover the few
        # microseconds since the monitor started, and show 0 %.
        time.sleep(_FIRST_CPU_WINDOW_S)
        while True:
            snap = mon.snapshot(max_age_s=0)
            if as_json:
                print(json.dumps(snap.to_dict()), flush=True)
            else:
                if not once:
                    print("\x1b[2J\x1b[H", end="")
                print(render_snapshot(snap), flush=True)
            if once:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        mon.close()


def serve(config: TandemConfig) -> None:
    """Run the device API until interrupted.

    Raises `ModeError` before loading anything when `runtime.mode` needs the cloud and no
    gateway is configured: every request would fail.
    """
    from aiohttp import web

    from runtime.api import RUN_OPTIONS, create_app

    _check_gateway(config, config.runtime.mode, "runtime.mode")
    s = config.server
    sockets = bind_sockets(s.host, s.port)  # a busy port fails now, not after the model loads
    try:
        with open_runtime(config) as rt:
            _ = rt.engine  # load the model before accepting requests
            app = create_app(rt)
            port = sockets[0].getsockname()[1]
            say(f"tandem: serving {rt.engine.info.id} on {serving_at(s.host, port)}")
            web.run_app(app, sock=sockets, print=None, **RUN_OPTIONS)
    finally:
        for sock in sockets:
            sock.close()


def serving_at(host: str, port: int) -> str:
    """Where the API can be reached, for the start-up line: an IPv6 literal in brackets
    (`http://[::1]:8080`); no host (every interface) says so and gives the local URL."""
    if not host:
        return f"every interface, port {port} (http://localhost:{port} here)"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound (not yet listening) to every address `host` resolves to, as asyncio's
    `create_server` would bind them; an unknown host or a busy port is a `ConfigError`.
    With port 0 the system picks a free port for the first address and the others take
    the same one, so the one port printed serves every address."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"server.host {host!r} cannot be resolved: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the port the first address was given
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host or 'all interfaces'} port {port} "
                                  f"(server.host, server.port): {exc.strerror}") from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _check_gateway(config: TandemConfig, mode: str, where: str) -> None:
    """`ModeError` when `mode` needs the cloud and no gateway is configured: every request
    would fail, so refuse before loading anything."""
    if mode in ("prefer-cloud", "cloud-only") and not config.offload.configured:
        raise ModeError(
            f"{where} {mode} needs a cloud gateway, and no gateway is configured "
            "(set [offload] url and credential, or TANDEM_OFFLOAD_URL and "
            "TANDEM_OFFLOAD_CREDENTIAL)")


_CHAT_COMMANDS = {
    "/help": "list these commands",
    "/reset": "clear the history: the next turn starts a new conversation",
    "/exit": "quit (so do /quit and Ctrl-D)",
    "/quit": "quit",
}
_COMMAND_WORD = re.compile(r"/[A-Za-z][A-Za-z0-9_-]*")  # `/foo`, not `/etc/hosts` or `/ hi`
_CHAT_HELP = "\n".join([
    "tandem chat commands:",
    *(f"  {name:<7} {what}" for name, what in _CHAT_COMMANDS.items()),
    "Ctrl-C stops an answer (the turn is left out) and, at the prompt, clears the line;",
    "a blank line is ignored; a line that starts with a space is sent as text, even /like this.",
])


def chat(config: TandemConfig, *, mode: str | None) -> int:
    """The interactive chat. Refuses to start (`ModeError`, `ValueError`) when its mode needs
    a gateway that is not configured, or when standard input is closed: every turn would
    fail.

    Ctrl-D (end of input), `/exit` or `/quit` end it; a blank line is ignored. A turn that
    cannot be answered (too long for the context even alone, a cloud or engine failure, text
    that is not valid Unicode, Ctrl-C) is reported on stderr and left out: the history is
    kept."""
    _check_gateway(config, mode or config.runtime.mode, "--mode" if mode else "runtime.mode")
    if sys.stdin is None:
        raise ValueError("standard input is closed: tandem chat reads its turns from it")
    if _is_tty(sys.stdin):
        _line_editing()
    history: list[dict[str, Any]] = []
    with open_runtime(config) as rt:
        say("tandem chat: Ctrl-D or /exit to quit, /reset to clear the history, "
            "/help for more")
        while True:
            try:
                line = _read_line("> ")
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:  # at the prompt: drop the line, as a shell does
                say("^C")
                continue
            if not line.strip():  # a blank line (in pasted text, say) is not a turn
                continue
            command = _chat_command(line)
            if command is None:
                _chat_turn(rt, history, line.strip(), mode)
            elif command in ("/exit", "/quit"):
                return 0
            elif command == "/reset":
                history.clear()
                say("tandem chat: history cleared")
            elif command == "/help":
                say(_CHAT_HELP)


def _read_line(prompt: str) -> str:
    """`input(prompt)`; with stderr closed (`2>&-`), where `input` fails ("lost
    sys.stderr"), the prompt is written and the line read directly."""
    if sys.stderr is not None:
        return input(prompt)
    if sys.stdout is not None:
        sys.stdout.write(prompt)
        sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.removesuffix("\n")


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _line_editing() -> None:
    """Arrow keys and history for `input()` on a terminal, where the platform has readline."""
    with contextlib.suppress(ImportError):
        importlib.import_module("readline")


def _chat_command(line: str) -> str | None:
    """The chat command `line` gives, or None when it is text for the model. A line shaped
    like a command (`/word`) that is not a known one, or a known one with text after it, is
    reported and given as "" (nothing to do); a line starting with a space is always text."""
    if not line.startswith("/"):
        return None
    word, *rest = line.split(maxsplit=1)
    if word in _CHAT_COMMANDS and not rest:
        return word
    if _COMMAND_WORD.fullmatch(word) is None:  # `/etc/hosts: what is it?`, `/ 2`: text
        return None
    if word in _CHAT_COMMANDS:
        say(f"tandem chat: {word} takes nothing after it; to send the line as text, start it "
            "with a space")
    else:
        say(f"tandem chat: unknown command {word} (/help lists them); to send the line as "
            "text, start it with a space")
    return ""


def _chat_turn(rt: Runtime, history: list[dict[str, Any]], text: str,
               mode: str | None) -> Result | None:
    """Answer `text` after `history`, and on success append the exchange to `history`.

    The oldest exchanges are dropped while the prompt and a whole answer (`max_tokens`) do not
    fit the context: from a copy, which becomes the history only once the answer has started.
    None, reported on stderr, when the turn cannot be answered (Ctrl-C included); the turn is
    then left out and the history kept."""
    turn = {"role": "user", "content": text}
    stream = None
    printed = False
    try:
        check_text(text, "the line")
        messages, dropped = _fit_history(rt, history, turn)
        while True:
            try:
                stream = rt.stream(messages, mode=mode)
                break
            except ContextOverflowError:  # counted differently by the engine (a server's)
                if len(messages) == 1:
                    raise  # the turn alone does not fit: refused, the history untouched
                messages = messages[2:]
                dropped += 1
        if dropped:  # the answer has started: the trimmed history is the history now
            del history[: 2 * dropped]
            say(f"tandem chat: dropped the {dropped} oldest exchange(s) to fit the context")
        for piece in stream:
            print(piece, end="", flush=True)
            printed = True
    except KeyboardInterrupt:  # Ctrl-C: stop this answer, not the chat
        if stream is not None:
            stream.close()  # ends the local decode / the cloud call now
        if printed:
            print()
        say("tandem chat: stopped (Ctrl-C); the turn is left out")
        return None
    except (TandemError, EngineError, ValueError) as exc:  # EngineError: ContextOverflowError too
        if printed:
            print()
        say(f"tandem: {exc}")
        return None
    finally:
        if stream is not None:
            stream.close()
    print()
    result = stream.result
    assert result is not None
    say(describe(result))
    history.extend([turn, {"role": "assistant", "content": result.text}])
    return result


def _fit_history(rt: Runtime, history: list[dict[str, Any]],
                 turn: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """`history` and `turn`, without as many of the oldest exchanges as it takes for the
    prompt to leave room in the context for an answer of `max_tokens` (at most half the
    context: a huge --max-tokens must not cost the whole history); and how many were
    dropped. The turn itself is always kept. Counted with the engine's tokenizer, as the
    engine counts the prompt."""
    context = rt.engine.info.context_length
    room = context - min(rt.params().max_tokens, context // 2)
    messages = [*history, turn]
    dropped = 0
    while len(messages) > 1 and rt._prompt_tokens(to_messages(messages)) > room:
        messages = messages[2:]  # the oldest user turn and its answer
        dropped += 1
    return messages, dropped
