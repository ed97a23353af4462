"""Gateway overhead: the same fixed upstream measured directly, through the sealed Tandem
gateway, and through the LiteLLM proxy, at concurrency 1, 16 and 64.

    python -m benchmarks.gateway --json [--seconds 6] [--no-litellm]

Every server is its own process on 127.0.0.1: the fixed-response upstream
(`cloud_gateway.fixed_upstream`, no model runs, so only the gateways' own cost shows), one
Tandem gateway process, one LiteLLM worker (`litellm[proxy]==1.108.7`). The load generator is
a separate process per cell (aiohttp, closed loop of C workers, a 1 s warm-up excluded, then
`--seconds` measured). For the sealed path the load generator pre-seals the envelopes before
the measured window (so that the client's sealing cost does not compete with the gateway for
the same 2 cores) and opens every sealed answer inside it.

LiteLLM is installed into its own venv the first time (default
`~/.cache/tandem/litellm-venv`, or `$TANDEM_LITELLM_VENV`), never into the runtime's, and is
run offline: `LITELLM_LOCAL_MODEL_COST_MAP=True`, telemetry off, a master key, no database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._report import seconds, strict_json

LITELLM_VERSION = "1.108.7"
CONCURRENCY = (1, 16, 64)
MASTER_KEY = "sk-tandem-bench"
CHAT = {"model": "fixed", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
TARGET_RPS_RATIO = 10.0
TARGET_ADDED_P99_FRACTION = 0.1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    import httpx

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout_s:.0f} s")


# --- the load generator (runs in its own process) ---------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _generate_load(args: argparse.Namespace) -> dict[str, Any]:
    sealed: list[tuple[bytes, bytes]] = []
    seal_one = None
    if args.path == "tandem":
        seal_one = _sealer(args.url, args.credential)
        sealed = [seal_one() for _ in range(args.preseal)]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    inline = completed = 0
    start = time.perf_counter()
    measure_from = start + args.warmup
    stop_at = measure_from + args.seconds
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    headers = {"Authorization": f"Bearer {MASTER_KEY}"} if args.path == "litellm" else {}
    body = json.dumps(CHAT).encode()
    from cloud_gateway.protocol import REQUEST_CONTENT_TYPE, open_response

    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal inline, completed
            while (now := time.perf_counter()) < stop_at:
                if args.path == "tandem":
                    assert seal_one is not None
                    if sealed:
                        envelope, key = sealed.pop()
                    else:
                        envelope, key = seal_one()
                        inline += 1
                    url = args.url + "/v1/sealed/chat/completions"
                    kw: dict[str, Any] = {
                        "data": envelope,
                        "headers": {"Content-Type": REQUEST_CONTENT_TYPE},
                    }
                else:
                    url, key = args.url + "/v1/chat/completions", b""
                    kw = {"data": body, "headers": {"Content-Type": "application/json"}}
                try:
                    async with session.post(url, **kw) as resp:
                        raw = await resp.read()
                        ok = resp.status == 200
                    if ok and key:
                        json.loads(open_response(key, raw))
                    elif ok:
                        json.loads(raw)
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    ok = False
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                else:
                    if not ok:
                        errors[f"http_{resp.status}"] = errors.get(f"http_{resp.status}", 0) + 1
                done = time.perf_counter()
                # Throughput: requests completed inside the window, whenever they started.
                # Latency: every request started inside it, even one that ends after it (a
                # request had to fit the window to count, which dropped about one per
                # worker: a quarter of a 1.5 s-per-request server's rate, and its slowest).
                if ok and measure_from <= done <= stop_at:
                    completed += 1
                if ok and now >= measure_from:
                    latencies.append((done - now) * 1000)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return {
        "requests": completed,
        "rps": round(completed / args.seconds, 1),
        "p50_ms": round(_percentile(latencies, 50), 3) if latencies else None,
        "p99_ms": round(_percentile(latencies, 99), 3) if latencies else None,
        "errors": errors,
        "sealed_inline": inline,
    }


def _sealer(url: str, credential: str) -> Any:
    import httpx

    from cloud_gateway.protocol import DeviceCredential, seal_request, verify_keys_document

    cred = DeviceCredential.parse(credential)
    (key,) = verify_keys_document(httpx.get(url + "/v1/keys").json(), cred.identity_key())
    signing = cred.signing_key()
    body = json.dumps(CHAT).encode()

    def seal_one() -> tuple[bytes, bytes]:
        s = seal_request(
            body,
            kem=key.kem,
            key_id=key.key_id,
            gateway_key=key.public_key,
            device_id=cred.device_id,
            device_key=signing,
        )
        return s.envelope, s.response_key

    return seal_one


def _run_cell(
    path: str, url: str, concurrency: int, seconds: float, credential: str, preseal: int
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "benchmarks.gateway", "--load-generator", path, url,
        "--concurrency", str(concurrency), "--seconds", str(seconds),
        "--credential", credential, "--preseal", str(preseal),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- the servers ---------------------------------------------------------------------------------


def _ensure_litellm(venv: Path) -> Path:
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
    )
    return exe


def _start_litellm(
    venv: Path, upstream: str, workdir: Path, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    exe = _ensure_litellm(venv)
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fixed\n"
        "    litellm_params:\n"
        "      model: openai/fixed\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-none\n"
    )
    port = _free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_MASTER_KEY": MASTER_KEY,
    }
    env.pop("DATABASE_URL", None)
    cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", "1"]  # fmt: skip
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/health/liveliness", proc, 180)
    return proc, url


def _start_tandem(upstream: str, state: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    from cloud_gateway.devices import DeviceRegistry
    from cloud_gateway.keys import generate_key, load_identity

    generate_key(state, "x25519")
    registry = DeviceRegistry(state / "devices.sqlite3")
    identity = load_identity(state).public_key().public_bytes_raw()
    credential = registry.enroll("bench", identity).encode()
    registry.close()
    port = _free_port()
    env = {
        **os.environ,
        "TANDEM_GATEWAY_STATE_DIR": str(state),
        "TANDEM_GATEWAY_PORT": str(port),
        "TANDEM_GATEWAY_UPSTREAM_URL": upstream,
        "TANDEM_GATEWAY_REQUESTS_PER_MINUTE": "0",  # the benchmark measures, it is not limited
        "TANDEM_GATEWAY_TOKENS_PER_DAY": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_gateway", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # one JSON log line per request, as in production
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/healthz", proc, 60)
    return proc, url, credential


def _start_upstream() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_gateway.fixed_upstream", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/v1/models", proc, 60)
    return proc, url + "/v1"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the servers, measure every (path, concurrency) cell, stop the servers."""
    procs: list[subprocess.Popen[bytes]] = []
    litellm_note = ""
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        work = Path(tmp)
        try:
            up_proc, upstream = _start_upstream()
            procs.append(up_proc)
            gw_proc, tandem_url, credential = _start_tandem(upstream, work / "state")
            procs.append(gw_proc)
            urls = {"direct": upstream.removesuffix("/v1"), "tandem": tandem_url}
            if not args.no_litellm:
                try:
                    venv = Path(
                        os.environ.get("TANDEM_LITELLM_VENV")
                        or Path.home() / ".cache" / "tandem" / "litellm-venv"
                    )
                    ll_proc, urls["litellm"] = _start_litellm(
                        venv, upstream, work, work / "litellm.log"
                    )
                    procs.append(ll_proc)
                except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
                    log = work / "litellm.log"
                    tail = log.read_text()[-1500:] if log.exists() else ""
                    litellm_note = f"LiteLLM could not be started: {exc}\n{tail}"
                    print(litellm_note, file=sys.stderr)
            else:
                litellm_note = "skipped (--no-litellm)"
            results: dict[str, dict[str, Any]] = {path: {} for path in urls}
            preseal = 6000
            for concurrency in CONCURRENCY:
                for path, url in urls.items():  # interleaved per concurrency level
                    print(f"measuring {path} at concurrency {concurrency} ...", file=sys.stderr)
                    cell = _run_cell(path, url, concurrency, args.seconds, credential, preseal)
                    results[path][str(concurrency)] = cell
                    if path == "tandem":
                        # enough pre-sealed envelopes for the next (busier) cell
                        preseal = int(max(preseal, cell["rps"] * 1.5) * (args.seconds + 1.5))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
    return _summary(results, args, litellm_note)


def _summary(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, litellm_note: str
) -> dict[str, Any]:
    top = str(CONCURRENCY[-1])
    direct, tandem = results["direct"][top], results["tandem"][top]
    litellm = results.get("litellm", {}).get(top)
    summary: dict[str, Any] = {
        "benchmark": "gateway",
        "seconds_per_cell": args.seconds,
        "sealing": "pre-sealed in the load generator before each cell; every answer opened",
        "results": results,
        "tandem_added_p99_ms": _diff(tandem["p99_ms"], direct["p99_ms"]),
        "litellm_added_p99_ms": None,
        "tandem_rps_over_litellm": None,
        "litellm": litellm_note or f"litellm[proxy]=={LITELLM_VERSION}, 1 worker",
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    if litellm and litellm["p99_ms"] is not None and litellm["rps"]:
        summary["litellm_added_p99_ms"] = _diff(litellm["p99_ms"], direct["p99_ms"])
        summary["tandem_rps_over_litellm"] = round(tandem["rps"] / litellm["rps"], 2)
        added_t, added_l = summary["tandem_added_p99_ms"], summary["litellm_added_p99_ms"]
        summary["targets"] = {
            "rps_ratio_min": TARGET_RPS_RATIO,
            "rps_ratio_met": summary["tandem_rps_over_litellm"] >= TARGET_RPS_RATIO,
            "added_p99_fraction_max": TARGET_ADDED_P99_FRACTION,
            "added_p99_met": added_t is not None
            and added_l is not None
            and added_t <= TARGET_ADDED_P99_FRACTION * added_l,
        }
    return summary


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _print_table(summary: dict[str, Any]) -> None:
    print(f"{'path':8} {'conc':>5} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}  errors")
    for path, cells in summary["results"].items():
        for conc, c in cells.items():
            p50 = f"{c['p50_ms']:9.2f}" if c["p50_ms"] is not None else f"{'-':>9}"
            p99 = f"{c['p99_ms']:9.2f}" if c["p99_ms"] is not None else f"{'-':>9}"
            print(f"{path:8} {conc:>5} {c['rps']:9.1f} {p50} {p99}  {c['errors'] or ''}")
    print(f"tandem added p99 at c=64: {summary['tandem_added_p99_ms']} ms")
    print(f"litellm added p99 at c=64: {summary['litellm_added_p99_ms']} ms")
    print(f"tandem req/s over litellm at c=64: {summary['tandem_rps_over_litellm']}")
    if "targets" in summary:
        t = summary["targets"]
        verdict = "met" if t["rps_ratio_met"] else "MISSED"
        print(f"target >= {t['rps_ratio_min']}x litellm req/s: {verdict}")
        print(
            f"target added p99 <= {t['added_p99_fraction_max']} of litellm's: "
            f"{'met' if t['added_p99_met'] else 'MISSED'}"
        )
    else:
        print(f"litellm: {summary['litellm']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON object")
    parser.add_argument("--seconds", type=seconds, default=6.0, help="measured time per cell")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--load-generator", nargs=2, metavar=("PATH", "URL"), help=argparse.SUPPRESS
    )
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--credential", default="", help=argparse.SUPPRESS)
    parser.add_argument("--preseal", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_generator:
        args.path, args.url = args.load_generator
        print(json.dumps(asyncio.run(_generate_load(args))))
        return 0
    summary = run(args)
    _print_table(summary)
    if args.json:
        print(json.dumps(strict_json(summary), allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
