"""What the CLI does, as functions a test or a script can call directly."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kernels.errors import ContextOverflowError, ModelNotFoundError
from kernels.registry import BUNDLED, default_cache_dir, resolve
from runtime.config import TandemConfig
from runtime.errors import ConfigError, ModeError, TandemError
from runtime.facade import Runtime
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
    return (
        f"[{result.source}] {result.reason} | confidence {conf_s} | "
        f"{result.usage.completion_tokens} tokens, ttft {t.ttft_ms:.0f} ms, "
        f"total {t.total_ms:.0f} ms, {t.tokens_per_s:.1f} tok/s"
    )


def list_models(config: TandemConfig) -> list[dict[str, str]]:
    """One row per bundled model: spec, status (ready / missing), description, `path` (the
    model file; Gemma's is written on first use, and says so until then) and, for a missing
    one, the command that installs it."""
    cache = Path(config.model.cache_dir) if config.model.cache_dir else default_cache_dir()
    rows = []
    for name, bundled in BUNDLED.items():
        spec = f"bundled:{name}"
        path = ""
        try:
            # Gemma is assembled on first use: do not assemble it just to list it
            file = bundled.path(cache)
            present = file.is_file() and file.stat().st_size > 0
            path = str(file) if present else f"{file} (assembled on first use)"
            status = "ready"
        except ModelNotFoundError:
            status = "missing"
        rows.append({"spec": spec, "status": status, "description": bundled.description,
                     "path": path, "install": bundled.install if status == "missing" else ""})
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
            print(f"tandem: serving {rt.engine.info.id} on http://{s.host}:{port}",
                  file=sys.stderr)
            web.run_app(app, sock=sockets, print=None, **RUN_OPTIONS)
    finally:
        for sock in sockets:
            sock.close()


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound (not yet listening) to every address `host` resolves to, as asyncio's
    `create_server` would bind them; an unknown host or a busy port is a `ConfigError`."""
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


def chat(config: TandemConfig, *, mode: str | None) -> int:
    """The interactive chat. Refuses to start (`ModeError`, `ValueError`) when its mode needs
    a gateway that is not configured, or when standard input is closed: every turn would
    fail."""
    _check_gateway(config, mode or config.runtime.mode, "--mode" if mode else "runtime.mode")
    if sys.stdin is None:
        raise ValueError("standard input is closed: tandem chat reads its turns from it")
    history: list[dict[str, Any]] = []
    with open_runtime(config) as rt:
        print("tandem chat: empty line or Ctrl-D to quit, /reset to clear the history",
              file=sys.stderr)
        while True:
            try:
                line = input("> ").strip()
            except EOFError:
                print()
                return 0
            if not line:
                return 0
            if line == "/reset":
                history.clear()
                continue
            history.append({"role": "user", "content": line})
            result = _chat_turn(rt, history, mode)
            if result is None:
                history.pop()  # the turn that failed: the next one starts without it
                continue
            history.append({"role": "assistant", "content": result.text})


def _chat_turn(rt: Runtime, history: list[dict[str, Any]], mode: str | None) -> Result | None:
    """Answer the last user turn, dropping the oldest exchanges while the history does not fit
    the context. None, reported on stderr, when the turn cannot be answered."""
    dropped = 0
    while True:
        try:
            stream = rt.stream(history, mode=mode)
        except ContextOverflowError as exc:
            if len(history) > 1:
                del history[:2]  # the oldest user turn and its answer
                dropped += 1
                continue
            print(f"tandem: {exc}", file=sys.stderr)
            return None
        except TandemError as exc:  # e.g. the cloud failed or the mode cannot be served
            print(f"tandem: {exc}", file=sys.stderr)
            return None
        break
    if dropped:
        print(f"tandem chat: dropped the {dropped} oldest exchange(s) to fit the context",
              file=sys.stderr)
    try:
        for piece in stream:
            print(piece, end="", flush=True)
    except TandemError as exc:
        print(f"\ntandem: {exc}", file=sys.stderr)
        return None
    finally:
        stream.close()
    print()
    assert stream.result is not None
    print(describe(stream.result), file=sys.stderr)
    return stream.result
