"""The main job (`make run`): a gateway on loopback and a scripted session through the runtime.

1. A throw-away gateway home: an HPKE key (`tandem gateway keygen`) and an enrolled device
   (`tandem gateway enroll`).
2. `tandem gateway serve` on a free loopback port, its upstream the embedded bundled model.
3. A `Runtime` configured with that gateway answers a short script of prompts in different
   modes — including an answer given up after a few tokens (early escalation), personal
   data that leaves only as placeholders, two multiple-choice
   questions with the calibrated confidence, and the gateway being stopped mid-session —
   printing for each the answer, source, reason, confidence, latency.

    python -m runtime.demo [--max-tokens N] [--keep]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from kernels import ModelNotFoundError
from kernels.registry import resolve
from runtime.choice import LETTERS, ChoiceResult
from runtime.config import TandemConfig, load_config
from runtime.facade import Runtime
from runtime.offload import OffloadConfig
from runtime.result import Result


@dataclass(frozen=True, slots=True)
class Step:
    prompt: str
    mode: str
    note: str = ""


SCRIPT = (
    Step("What is the capital of France? Answer in one word.", "local-only",
         "never leaves the device"),
    Step("How many days are in a week?", "prefer-local",
         "the device answers, the cloud only if its confidence is low"),
    Step("Translate 'good morning, how are you?' into Hungarian.", "prefer-local",
         "unsure from the first tokens: the device stops decoding early and escalates"),
    Step("Write one sentence about the sea.", "prefer-cloud", "the cloud answers"),
    Step("Please reply to jane.doe@example.com and call +1 415 555 0132 about invoice 7.",
         "prefer-cloud", "personal data leaves as placeholders and is restored"),
)
# Multiple choice: the device answers by option log-likelihood with a calibrated P(right)
# (SmolLM2 + the Gemma 3 270M peer) and escalates below runtime.choice_threshold.
CHOICES = (
    ("Which gas do plants take in from the air to make food?",
     ("oxygen", "carbon dioxide", "nitrogen", "helium")),
    ("Which metal is liquid at room temperature?", ("iron", "mercury", "copper", "aluminium")),
)
AFTER_STOP = Step("Write one sentence about mountains.", "prefer-cloud",
                  "the gateway has been stopped: the device answers")


def show(step: Step, result: Result) -> str:
    conf = result.confidence.score
    answer = textwrap.shorten(result.text.strip().replace("\n", " "), 200) or "(empty)"
    counts = result.redactions.get("counts") or {}
    lines = [
        f"> {step.prompt}",
        f"  mode:       {step.mode} ({step.note})",
        f"  answer:     {answer}",
        f"  source:     {result.source}",
        f"  reason:     {result.reason}",
        f"  confidence: {'n/a' if conf != conf else f'{conf:.2f}'}",
        f"  latency:    ttft {result.timings.ttft_ms:.0f} ms, total {result.timings.total_ms:.0f}"
        f" ms, {result.usage.completion_tokens} tokens",
    ]
    if counts:
        lines.append(f"  redacted:   {', '.join(f'{k} x{v}' for k, v in counts.items())}")
    return "\n".join(lines)


def show_choice(question: str, options: tuple[str, ...], c: ChoiceResult, first: bool) -> str:
    p = "n/a" if c.p_correct is None else f"{c.p_correct:.2f}"
    local = "" if c.local_index is None or c.local_index == c.index else (
        f" (the device had chosen {LETTERS[c.local_index]})")
    return "\n".join([
        f"> {question}  " + "  ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options)),
        f"  mode:       {c.mode} (multiple choice, calibrated P(right) on the device)",
        f"  answer:     {LETTERS[c.index]}. {c.option}{local}",
        f"  source:     {c.source}" + (f" ({c.cloud_model})" if c.cloud_model else ""),
        f"  reason:     {c.reason}",
        f"  P(right):   {p}",
        f"  latency:    total {c.total_ms:.0f} ms"
        + (" (includes loading the two scoring models)" if first else ""),
    ])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tandem(*args: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", *args], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `tandem {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def start_gateway(home: Path, port: int) -> subprocess.Popen[bytes]:
    """Keys, one enrolled device, and `tandem gateway serve` (embedded upstream) on `port`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    state = str(home / "gateway")
    _tandem("gateway", "keygen", "--state-dir", state, env=env)
    _tandem("gateway", "enroll", "demo-device", "--state-dir", state,
            "--out", str(home / "device.credential"), env=env)
    log = (home / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "gateway", "serve", "--state-dir", state,
         "--port", str(port), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: the gateway exited; see {home / 'gateway.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("demo: the gateway did not become ready within 180 s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--keep", action="store_true", help="keep the gateway home directory")
    args = ap.parse_args(argv)
    base: TandemConfig = load_config(overrides={"generation.max_tokens": args.max_tokens})
    try:  # the model package is installed apart (README): one line naming the command
        resolve(base.model.spec, base.model.cache_dir or None)
    except ModelNotFoundError as exc:
        raise SystemExit(f"demo: {exc}") from None
    home = Path(tempfile.mkdtemp(prefix="tandem-demo-"))
    port = _free_port()
    print(f"Tandem demo: starting a gateway on 127.0.0.1:{port} (embedded bundled model) ...",
          flush=True)
    gateway = start_gateway(home, port)
    try:
        config = base.replace(
            offload=OffloadConfig(url=f"http://127.0.0.1:{port}",
                                  credential=str(home / "device.credential"), deadline_s=60.0,
                                  retries=0),
        )
        with Runtime.from_config(config) as rt:
            print(f"device model: {config.model.spec}; gateway: {config.offload.url}\n",
                  flush=True)
            for step in SCRIPT:
                result = rt.generate([{"role": "user", "content": step.prompt}], mode=step.mode)
                print(show(step, result) + "\n", flush=True)
            for i, (question, options) in enumerate(CHOICES):
                choice = rt.choose(question, options, mode="prefer-local")
                print(show_choice(question, options, choice, i == 0) + "\n", flush=True)
            gateway.terminate()
            gateway.wait(30)
            result = rt.generate([{"role": "user", "content": AFTER_STOP.prompt}],
                                 mode=AFTER_STOP.mode)
            print(show(AFTER_STOP, result), flush=True)
    finally:
        if gateway.poll() is None:
            gateway.terminate()
            gateway.wait(30)
        if not args.keep:
            import shutil

            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
