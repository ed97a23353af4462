"""`tandem gateway ...`: a thin command line over keys, devices and the app factory."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from cloud_gateway.config import GatewayConfig, load_gateway_config
from cloud_gateway.devices import DeviceRegistry
from cloud_gateway.errors import ConfigurationError, GatewayError
from cloud_gateway.keys import generate_key, list_keys, load_identity, retire_key
from cloud_gateway.protocol.suites import KEMS, check_kem
from cloud_gateway.protocol.trust import DeviceCredential


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="keys and databases (env TANDEM_GATEWAY_STATE_DIR)")
    parser = argparse.ArgumentParser(prog="tandem gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser("keygen", parents=[common], help="create an HPKE key pair")
    keygen.add_argument("--kem", choices=KEMS, default="x25519")
    keygen.add_argument(
        "--not-after", type=float, default=90.0, metavar="DAYS", help="validity (default 90)"
    )
    sub.add_parser("keys", parents=[common], help="list the gateway's keys")
    retire = sub.add_parser("retire", parents=[common], help="end a key's validity now")
    retire.add_argument("key_id")

    enroll = sub.add_parser("enroll", parents=[common], help="issue a device credential")
    enroll.add_argument("name")
    enroll.add_argument("--out", help="write the credential to this file (mode 0600)")
    enroll.add_argument("--replace", action="store_true", help="re-issue an existing name")
    revoke = sub.add_parser("revoke", parents=[common], help="revoke a device")
    revoke.add_argument("name")
    sub.add_parser("devices", parents=[common], help="list enrolled devices")

    serve = sub.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--upstream-url", help="OpenAI-compatible base URL (default: embedded)")
    serve.add_argument("--upstream-model", help="model name to request upstream")
    serve.add_argument("--redis-url", help="redis://... to share replay and rate-limit state")
    serve.add_argument("--requests-per-minute", type=int)
    serve.add_argument("--tokens-per-day", type=int)
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    return parser


EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """Run one gateway command; returns the process exit code (141, silently, when the
    reader of the output went away: `tandem gateway keys | head -n1`, as `tandem` does)."""
    try:
        code = _main(argv)
        if sys.stdout is not None:  # None: started with stdout closed (`1>&-`)
            sys.stdout.flush()  # a reader gone by now fails here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _broken_pipe()


def _broken_pipe() -> int:
    """End quietly, as a process killed by SIGPIPE would; stdout goes to devnull so that
    flushing what is left of it at exit does not fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # no real stdout (None, or captured)
        return EXIT_BROKEN_PIPE
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        overrides = {"state_dir": args.state_dir}
        if args.command == "serve":
            overrides |= {
                "host": args.host,
                "port": args.port,
                "upstream_url": args.upstream_url,
                "upstream_model": args.upstream_model,
                "redis_url": args.redis_url,
                "requests_per_minute": args.requests_per_minute,
                "tokens_per_day": args.tokens_per_day,
                "log_level": args.log_level,
            }
        config = load_gateway_config(overrides=overrides)
        return _run(args, config)
    except GatewayError as exc:
        print(f"tandem gateway: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, config: GatewayConfig) -> int:
    state = config.state_path
    if state.exists() and not state.is_dir():
        raise ConfigurationError(f"the state directory {state} is not a directory")
    try:
        return _command(args, config, state)
    except BrokenPipeError:  # the reader of stdout went away (`| head`): not the state's
        raise
    except OSError as exc:  # serving maps its own (the port); these are the state folder's
        where = f" ({exc.filename})" if exc.filename else ""
        raise ConfigurationError(
            f"cannot use the state directory {state}: {exc.strerror or exc}{where}"
        ) from None


def _command(args: argparse.Namespace, config: GatewayConfig, state: Path) -> int:
    if args.command == "keygen":
        stored = generate_key(state, check_kem(args.kem), valid_days=args.not_after)
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stored.published.not_after))
        print(f"{stored.key_id}\t{stored.published.kem}\tvalid until {until}")
        return 0
    if args.command == "keys":
        now = time.time()
        skipped: list[str] = []
        keys = list_keys(state, skipped)
        for problem in skipped:  # skipped, as the running gateway skips them
            print(f"tandem gateway: key file skipped: {problem}", file=sys.stderr)
        if not keys:
            print(f"no keys in {state}: run `tandem gateway keygen`", file=sys.stderr)
        for stored in keys:
            p = stored.published
            status = "current" if p.not_after > now else "expired"
            if status == "current" and stored.problem is not None:
                # Published by no gateway: it cannot open what is sealed to it.
                status = "unusable"
                print(f"tandem gateway: key {p.key_id} unusable: {stored.problem}",
                      file=sys.stderr)
            until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(p.not_after))
            print(f"{p.key_id}\t{p.kem}\t{status}\tnot after {until} UTC")
        return 0
    if args.command == "retire":
        print(f"retired {retire_key(state, args.key_id).key_id}")
        return 0
    if args.command in ("enroll", "revoke", "devices"):
        return _devices(args, state)
    return _serve(config)


def _devices(args: argparse.Namespace, state: Path) -> int:
    db = state / "devices.sqlite3"
    identity = b""
    if args.command == "enroll":
        # The gateway's identity must exist already: enrolling never creates one, or a
        # mistyped --state-dir would issue a credential no gateway can verify (and leave a
        # new identity and registry behind). Checked before the registry is created.
        identity = load_identity(state, create=False).public_key().public_bytes_raw()
    # Only enrolling creates the registry: for the others an absent one is an empty one,
    # held in memory, so they answer as they would over an empty file and write nothing.
    registry = DeviceRegistry(db if args.command == "enroll" or db.exists() else Path(":memory:"))
    try:
        if args.command == "enroll":
            if args.out:
                _enroll_to_file(registry, args.name, identity, args.replace, Path(args.out))
                print(f"enrolled {args.name}; credential written to {args.out}")
            else:
                registry.enroll(args.name, identity, replace=args.replace, deliver=_print)
        elif args.command == "revoke":
            registry.revoke(args.name)
            print(f"revoked {args.name}")
        else:
            devices = registry.list()
            if not devices:
                print(f"no devices enrolled in {state}: `tandem gateway enroll NAME`",
                      file=sys.stderr)
            for d in devices:
                state_word = "revoked" if d.revoked else "active"
                print(f"{d.name}\t{state_word}")
    finally:
        registry.close()
    return 0


def _print(credential: DeviceCredential) -> None:
    """Deliver a credential on stdout, before its enrollment commits: when stdout is closed
    or its reader is gone (`enroll NAME | true`) the name stays free, and a retry needs no
    --replace. (Bytes a reader took and then lost cannot be told from delivered ones.)"""
    if sys.stdout is None:
        raise ConfigurationError(
            "standard output is closed: nowhere to print the credential (use --out FILE); "
            "nothing enrolled"
        )
    print(credential.encode())
    sys.stdout.flush()  # a dead pipe raises BrokenPipeError here: the enrollment rolls back


def _enroll_to_file(
    registry: DeviceRegistry, name: str, identity: bytes, replace: bool, out: Path
) -> None:
    """Enroll `name` with its credential written to `out` (new, 0600), or neither."""
    try:  # the file first: a credential that cannot be written must not take the name
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigurationError(f"cannot write the credential to {out}: {reason}") from None

    with os.fdopen(fd, "w") as fh:

        def write(credential: DeviceCredential) -> None:
            fh.write(credential.encode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # a full disk fails here, before the enrollment commits

        try:
            registry.enroll(name, identity, replace=replace, deliver=write)
        except OSError as exc:
            out.unlink(missing_ok=True)
            raise ConfigurationError(
                f"cannot write the credential to {out}: {exc.strerror or exc}; nothing enrolled"
            ) from None
        except BaseException:  # e.g. the name is taken: no credential file either
            out.unlink(missing_ok=True)
            raise


def _serve(config: GatewayConfig) -> int:
    from aiohttp import web

    from cloud_gateway.app import RUN_OPTIONS, create_app
    from cloud_gateway.logs import configure_logging

    _check_keys(config.state_path)  # fail before binding a port
    log = configure_logging(config.log_level)
    where = f"{config.host}:{config.port}"
    try:
        sock = _bind(config.host) if config.port == 0 else None
        port = config.port if sock is None else int(sock.getsockname()[1])
        log.info(
            "starting",
            extra={
                "fields": {
                    "host": config.host,
                    "port": port,
                    "upstream": config.upstream_url or f"embedded:{config.engine_spec}",
                    "replay_store": "redis" if config.redis_url else "memory",
                }
            },
        )
        if sock is not None:  # a port the system chose: say which, whatever the log level
            print(f"listening on {config.host}:{port}", flush=True)
        try:
            web.run_app(
                create_app(config),
                host=None if sock is not None else config.host,
                port=None if sock is not None else config.port,
                sock=sock,
                access_log=None,
                print=None,
                **RUN_OPTIONS,
            )
        finally:
            if sock is not None:
                sock.close()
    except BrokenPipeError:  # "listening on" printed to a reader gone
        raise
    except OSError as exc:  # binding the port: the app's own startup failures (Redis, the
        # state folder's files) arrive as ConfigurationError
        raise ConfigurationError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return 0


def _check_keys(state: Path) -> None:
    """A `ConfigurationError` unless the gateway has its identity and a current key it can
    use. Logging is not set up yet, so what makes keys unusable goes to stderr, one line each,
    as `tandem gateway keys` says it."""
    load_identity(state, create=False)
    skipped: list[str] = []
    now = time.time()
    current = [k for k in list_keys(state, skipped) if k.published.not_after > now]
    if any(k.problem is None for k in current):
        return  # the running gateway logs the others (`key file skipped`)
    for problem in skipped:
        print(f"tandem gateway: key file skipped: {problem}", file=sys.stderr)
    for stored in current:
        print(f"tandem gateway: key {stored.key_id} unusable: {stored.problem}", file=sys.stderr)
    raise ConfigurationError(f"no current key in {state}: run `tandem gateway keygen`")


def _bind(host: str) -> socket.socket:
    """A socket bound to a free port on `host` (its first address), for `--port 0`: aiohttp
    would bind one itself but never say which port it got."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


if __name__ == "__main__":
    raise SystemExit(main())
