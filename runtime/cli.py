"""`tandem`: a thin command line over the Python API (parsing and printing only).

Exit codes: 0 success; 1 a runtime failure (engine, cloud); 2 a usage or configuration
error (including a mode the config cannot serve and a prompt longer than the context),
printed as one line naming the key or path; 130 interrupted (Ctrl-C), with one line
"tandem: interrupted", never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# Only the standard library at import time: the rest loads inside `main`, where Ctrl-C
# during the (slow) imports ends with "interrupted" and 130, not a traceback.
if TYPE_CHECKING:
    from runtime.config import TandemConfig

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE
EXIT_INTERRUPTED = 128 + 2  # what a shell reports for a process ended by SIGINT


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Errors a retry cannot fix, only a change of flags, config or input: exit 2. They are
    checked before the TandemError / EngineError parents they derive from."""
    from kernels import ContextOverflowError, ModelNotFoundError
    from runtime.calibration import CalibrationError
    from runtime.errors import ConfigError, ModeError, PrivacyBlockError
    from runtime.offload_errors import OffloadNotConfigured

    return (
        ConfigError, CalibrationError, ModelNotFoundError, ValueError,
        ModeError,  # a mode this config cannot serve (cloud-only with no gateway)
        OffloadNotConfigured,  # no or a malformed gateway URL / device credential
        ContextOverflowError,  # the prompt does not fit model.context_length
        PrivacyBlockError,  # the privacy policy forbids what the mode asks for
    )


def say(text: str) -> None:
    """A message on stderr; dropped when stderr is closed (`2>&-`): never sent to stdout,
    where `print(file=None)` would write it."""
    if sys.stderr is not None:
        print(text, file=sys.stderr, flush=True)


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0 and at most 30 days (also the benchmarks'
    `seconds`)."""
    from runtime.config import MAX_SECONDS

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0 and at most {MAX_SECONDS:.0f} (30 days), "
            f"not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    from runtime.config import MODES

    p = argparse.ArgumentParser(prog="tandem", description=__doc__.splitlines()[0])
    p.add_argument("--config", metavar="PATH", help="TOML config file (default: $TANDEM_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", help="model spec: bundled:NAME or a .gguf path")
        sp.add_argument("--mode", choices=MODES, help="where to answer (default: config)")
        sp.add_argument("--max-tokens", type=int, metavar="N")

    ask = sub.add_parser("ask", help="answer one prompt (streams to the terminal)")
    ask.add_argument("prompt", help='the prompt; "-" reads it from standard input')
    ask.add_argument("--system", help="a system message")
    ask.add_argument("--json", action="store_true", help="print the whole Result as JSON")
    model_flags(ask)

    chat = sub.add_parser("chat", help="interactive chat that keeps its history")
    model_flags(chat)

    serve = sub.add_parser("serve", help="run the device HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    model_flags(serve)

    mon = sub.add_parser("monitor", help="a live view of the device's resources")
    mon.add_argument("--once", action="store_true", help="print one snapshot and exit")
    mon.add_argument("--json", action="store_true", help="JSON instead of text")
    mon.add_argument("--interval", type=positive_seconds, default=1.0, metavar="SECONDS",
                     help="between snapshots (> 0; default 1)")

    choose = sub.add_parser(
        "choose", help="answer a multiple-choice question on the device, with P(right)")
    choose.add_argument("question")
    choose.add_argument("options", nargs="+", metavar="OPTION", help="at least two")
    choose.add_argument("--calibration", metavar="PATH",
                        help="calibration JSON, or bundled:arc (the default fit, with the "
                             "Gemma peer) / bundled:arc-light (SmolLM2 alone, less memory); "
                             "default: runtime.choice_calibration")
    choose.add_argument("--threshold", type=float, default=None, metavar="P",
                        help="escalate below this P(right) (default: runtime.choice_threshold)")
    choose.add_argument("--mode", choices=MODES, help="where to answer (default: config)")
    choose.add_argument("--json", action="store_true", help="print the ChoiceResult as JSON")

    sub.add_parser("models", help="list the bundled models and where they are")
    sub.add_parser("gateway", help="the cloud gateway: keygen, enroll, revoke, serve, keys",
                   add_help=False)
    sub.add_parser("router", help="train and calibrate the routing policy", add_help=False)
    sub.add_parser("convert", help="convert a GGUF model to int4 ONNX (extra: convert)",
                   add_help=False)
    return p


# Subcommands owned by other packages: the parser above only lists them; their own
# `main(argv)` parses the rest (the gateway is a separate server, not part of the device).
_DELEGATED = {
    "gateway": "cloud_gateway.cli",
    "router": "runtime.router.cli",
    "convert": "kernels.convert.cli",
}
_EXTRAS = {"router": "router", "convert": "convert"}  # the optional extra each one needs
_OWN_SETTINGS = {
    "gateway": "it has its own settings (its flags, or TANDEM_GATEWAY_* variables)",
    "router": "give its files as flags (--data, --db, --router, --out)",
    "convert": "give its cache folder as --cache-dir",
}


def _command_index(args: Sequence[str]) -> tuple[int, bool]:
    """Where the subcommand word is, after the global `--config PATH`, and whether it was given."""
    i, has_config = 0, False
    while i < len(args):
        if args[i] == "--config":
            i, has_config = i + 2, True
        elif args[i].startswith("--config="):
            i, has_config = i + 1, True
        else:
            break
    return i, has_config


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C anywhere, the imports and delegated commands included
        say("tandem: interrupted")
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    i, has_config = _command_index(args_list)
    if i < len(args_list) and args_list[i] in _DELEGATED:
        command = args_list[i]
        if has_config:
            # they do not read the device config: refuse rather than silently drop it
            say(f"tandem: --config applies to the device commands (ask, chat, serve, "
                 f"monitor, choose, models), not to `tandem {command}`; {_OWN_SETTINGS[command]}")
            return EXIT_USAGE
        try:
            module = importlib.import_module(_DELEGATED[command])
        except ImportError as exc:  # an optional extra (router: scikit-learn) not installed
            extra = _EXTRAS.get(command)
            hint = f"; install it with pip install 'tandem-llm[{extra}]'" if extra else ""
            say(f"tandem {command}: needs a package that is not installed ({exc}){hint}")
            return 1
        try:
            rc: int = module.main(args_list[i + 1 :])
            if sys.stdout is not None:
                sys.stdout.flush()  # a reader gone by now fails here, not at exit
        except BrokenPipeError:  # `tandem router score … | head -n1`
            return _broken_pipe()
        return rc
    from kernels import EngineError
    from runtime.errors import TandemError

    usage_errors = _usage_errors()
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    try:
        rc = _dispatch(args)
        if sys.stdout is not None:  # None: started with stdout closed (`1>&-`)
            sys.stdout.flush()  # a reader gone by now fails here, not at interpreter exit
        return rc
    except usage_errors as exc:
        say(f"tandem: {exc}")
        return EXIT_USAGE
    except (TandemError, EngineError) as exc:
        say(f"tandem: {exc}")
        return EXIT_FAIL
    except BrokenPipeError:
        return _broken_pipe()


def _broken_pipe() -> int:
    """The reader went away (`| head`): end quietly, as a process killed by SIGPIPE would;
    stdout goes to devnull so that flushing it at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def _config(args: argparse.Namespace) -> TandemConfig:
    from runtime.config import load_config

    overrides: dict[str, Any] = {}
    if getattr(args, "model", None) is not None:  # --model "" is refused, not ignored
        overrides["model.spec"] = args.model
    if getattr(args, "mode", None):
        overrides["runtime.mode"] = args.mode  # `serve` answers in it unless a request asks
    if getattr(args, "max_tokens", None) is not None:
        overrides["generation.max_tokens"] = args.max_tokens
    if getattr(args, "host", None):
        overrides["server.host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["server.port"] = args.port
    if getattr(args, "threshold", None) is not None:
        overrides["runtime.choice_threshold"] = args.threshold
    if getattr(args, "calibration", None):
        overrides["runtime.choice_calibration"] = args.calibration
    return load_config(args.config, overrides=overrides)


def _dispatch(args: argparse.Namespace) -> int:
    from runtime import interface

    config = _config(args)
    if args.command == "models":
        for row in interface.list_models(config):
            print(f"{row['spec']:<24} {row['status']:<10} {row['description']}")
            if row["path"]:
                print(f"{'':<24} path: {row['path']}")
            if row["install"]:
                print(f"{'':<24} install: {row['install']}")
            if row["problem"]:
                print(f"{'':<24} problem: {row['problem']}")
        return EXIT_OK
    if args.command == "monitor":
        return interface.monitor(config, once=args.once, as_json=args.json,
                                 interval=args.interval)
    if args.command == "serve":
        interface.serve(config)
        return EXIT_OK
    if args.command == "ask":
        if args.prompt == "-" and sys.stdin is None:
            raise ValueError("the prompt is - but standard input is closed")
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        if not prompt.strip():  # an unset shell variable, an empty file: not a question
            raise ValueError("the prompt is empty" + (" (standard input)" if args.prompt == "-"
                                                      else ""))
        messages = []
        if args.system:
            messages.append({"role": "system", "content": args.system})
        messages.append({"role": "user", "content": prompt})
        with interface.open_runtime(config) as rt:
            stream = rt.stream(messages, mode=args.mode)
            # Closed here, inside the runtime: a reader gone mid-answer (`| head -n1`) ends
            # it as cancelled and logged, before the runtime closes its telemetry.
            try:
                if args.json:
                    result = stream.collect()
                    print(json.dumps(result.to_dict(), indent=2))
                    return EXIT_OK
                for piece in stream:
                    print(piece, end="", flush=True)
                assert stream.result is not None
                print()
                say(interface.describe(stream.result))
            finally:
                stream.close()
        return EXIT_OK
    if args.command == "choose":
        return _choose(args, config)
    if args.command == "chat":
        return interface.chat(config, mode=args.mode)
    raise AssertionError(args.command)  # pragma: no cover


def _choose(args: argparse.Namespace, config: TandemConfig) -> int:
    from runtime import interface
    from runtime.choice import LETTERS, check_question

    check_question(args.question, args.options)  # before any model loads
    with interface.open_runtime(config) as rt:
        choice = rt.choose(args.question, args.options, mode=args.mode)
    if args.json:
        print(json.dumps(choice.to_dict(), indent=2))
        return EXIT_OK
    print(f"{LETTERS[choice.index]}. {choice.option}")
    p = "n/a" if choice.p_correct is None else f"{choice.p_correct:.2f}"
    say(f"[{choice.source}] {choice.reason} | P(right) on the device {p} | "
         f"{choice.total_ms:.0f} ms")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
