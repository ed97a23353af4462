"""`tandem router ...`: train, calibrate and try a learned router.

    tandem router train --data LABELLED.csv[.gz] --out router.npz [--seed 0] [--c 0.3]
                        [--hash-bits 17] [--embed]
    tandem router train --from-telemetry [--db telemetry.sqlite3] --out router.npz
    tandem router calibrate --router router.npz --data CALIBRATION.csv[.gz]
                            --target-cloud-fraction 0.3 [--out calibrated.npz]
    tandem router score --router router.npz "a prompt" ["another prompt" ...]
    tandem router evaluate --router router.npz [--router other.npz ...] --data HELD_OUT.csv
                           [--json]

The CLI only parses and prints; the work is in `runtime.router`'s Python API.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from kernels.base import check_text
from runtime.errors import ConfigError
from runtime.router.base import RouterDataError, RouterError, RouterFileError
from runtime.router.calibration import calibrate, cloud_fraction
from runtime.router.data import RoutingData, load_routing_data
from runtime.router.embedding_torch import for_batches
from runtime.router.evaluation import evaluate
from runtime.router.features import FeatureSpec
from runtime.router.learned import LearnedRouter, TrainParams
from runtime.router.store import load_router, router_path, save_router
from runtime.router.telemetry_data import TelemetryDataError, telemetry_data

EXIT_ERROR = 1  # a runtime failure: a router file that cannot be written, ...
EXIT_USAGE = 2  # a usage error, or data / router / telemetry files that cannot be used
MAX_SEED = 2**32 - 1  # scikit-learn's and NumPy's seeds
TELEMETRY_HELP = (
    "train on this device's telemetry instead of --data. The label learned is the user's "
    "verdict on local answers (POST /v1/feedback): 'good' = the local model sufficed, "
    "'bad' = it did not (the cloud model is assumed right there, as its answer was not "
    "seen); the router's score is then the probability that a local answer would be "
    "judged bad. Needs at least 20 judged local answers with both verdicts present."
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem router", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="fit a router on labelled prompts")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="CSV with prompt, weak, strong columns")
    source.add_argument("--from-telemetry", action="store_true", help=TELEMETRY_HELP)
    train.add_argument("--db", help="telemetry database for --from-telemetry (default: the "
                                    "runtime's, runtime.telemetry_path from $TANDEM_CONFIG or "
                                    "TANDEM_RUNTIME_TELEMETRY_PATH, else "
                                    "$XDG_STATE_HOME/tandem/telemetry.sqlite3)")
    train.add_argument("--out", required=True, help="router file to write (.npz)")
    train.add_argument("--seed", type=_seed, default=0, help=f"0 to {MAX_SEED}")
    train.add_argument("--c", type=_positive, default=TrainParams().c,
                       help="inverse L2 strength (> 0)")
    train.add_argument("--hash-bits", type=int, default=FeatureSpec().word_bits, metavar="B",
                       help="2**B buckets each for word, char and stem n-grams (file size ~ 2**B)")
    train.add_argument("--embed", action="store_true",
                       help="stack the n-gram router with the outcomes of its MiniLM-embedding "
                            "neighbours (router-embed extra; 6 LR fits instead of 1; devices "
                            "without the extra score with the n-gram part)")
    cal = sub.add_parser("calibrate", help="set the threshold for a target cloud share")
    cal.add_argument("--router", required=True)
    cal.add_argument("--data", required=True, help="calibration prompts (not the training set)")
    cal.add_argument("--target-cloud-fraction", type=float, required=True, metavar="F")
    cal.add_argument("--out", help="where to write the calibrated router (default: in place)")
    ev = sub.add_parser("evaluate", help="routing quality on labelled prompts the routers "
                                         "were not trained on (APGR, CPT, quality by share)")
    ev.add_argument("--router", required=True, action="append", dest="routers",
                    help="router file; repeat to compare several on the same data")
    ev.add_argument("--data", required=True, help="held-out CSV with prompt, weak, strong")
    ev.add_argument("--json", action="store_true", help="one JSON object per router")
    score = sub.add_parser("score", help="print the router's verdict on prompts")
    score.add_argument("--router", required=True)
    score.add_argument("prompts", nargs="+")
    return p


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED}, not {seed}")
    return seed


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text!r}")
    return value


def _out_problem(out: str) -> str | None:
    """Why a router cannot be written at `out` (checked before any work), or None. What only
    writing can tell (permissions, space) is reported when writing."""
    if not out:
        return "--out is empty: name the router file to write"
    if out.endswith(("/", os.sep)) or Path(out).name in ("", ".", ".."):
        return f"--out {out} names a folder: name the router file to write"
    path = router_path(out)
    if path.is_dir():
        return f"{path} is a folder: name the router file to write"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # created when writing
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        return f"cannot write {path}: {folder} is not a folder"
    return None


def _save(router: LearnedRouter, out: str) -> Path | None:
    """Write `router` to `out`; None (after one line on stderr) if that failed. The file
    is replaced whole, so a router already there survives a failed write."""
    try:
        return save_router(router, out)
    except OSError as exc:
        print(f"tandem router: cannot write {router_path(out)}: {exc.strerror or exc}",
              file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        if not 10 <= args.hash_bits <= 22:
            print("tandem router: --hash-bits must be between 10 and 22", file=sys.stderr)
            return EXIT_USAGE
        if args.db and not args.from_telemetry:
            print("tandem router: --db needs --from-telemetry", file=sys.stderr)
            return EXIT_USAGE
        if problem := _out_problem(args.out):
            print(f"tandem router: {problem}", file=sys.stderr)
            return EXIT_USAGE
        data = _training_data(args)
        if data is None:
            return EXIT_USAGE
        spec = FeatureSpec(word_bits=args.hash_bits, char_bits=args.hash_bits,
                           stem_bits=args.hash_bits)
        params = TrainParams(c=args.c, seed=args.seed, features=spec)
        if args.embed:
            from runtime.router.blend import train_blended
            from runtime.router.embedding_torch import bulk_encoder

            router = train_blended(data.prompts, data.weak, data.strong, bulk_encoder(), params)
        else:
            router = LearnedRouter.train(data.prompts, data.weak, data.strong, params)
        if (path := _save(router, args.out)) is None:
            return EXIT_ERROR
        print(f"trained on {len(data)} prompts -> {_shown(path)}")
        print(_uncalibrated(router, data, path), file=sys.stderr)
        return 0
    if args.command == "calibrate":
        if not 0.0 <= args.target_cloud_fraction <= 1.0:
            print("tandem router: --target-cloud-fraction must be in [0, 1]", file=sys.stderr)
            return EXIT_USAGE
        out = args.router if args.out is None else args.out  # default: in place
        if problem := _out_problem(out):
            print(f"tandem router: {problem}", file=sys.stderr)
            return EXIT_USAGE
        # the calibration set scored in batches (torch if present)
        router = for_batches(load_router(args.router, encoder=None))
        data = load_routing_data(args.data)
        calibrated = calibrate(router, data.prompts, args.target_cloud_fraction)
        share = cloud_fraction(calibrated.score(data.prompts), calibrated.active_threshold)
        if (path := _save(calibrated, out)) is None:
            return EXIT_ERROR
        print(f"threshold {calibrated.threshold:.6f}: {share:.1%} of {len(data)} calibration "
              f"prompts go to the cloud -> {_shown(path)}")
        return 0
    if args.command == "evaluate":
        return _evaluate(args)
    blank = [str(i) for i, prompt in enumerate(args.prompts, 1) if not prompt.strip()]
    if blank:  # a verdict on nothing would still print a score
        print(f"tandem router: prompt {', '.join(blank)} is empty", file=sys.stderr)
        return EXIT_USAGE
    for i, prompt in enumerate(args.prompts, 1):
        try:  # undecodable bytes on the command line (as `tandem ask` refuses them)
            check_text(prompt, f"prompt {i}")
        except ValueError as exc:
            print(f"tandem router: {exc}", file=sys.stderr)
            return EXIT_USAGE
    router = load_router(args.router)
    for prompt in args.prompts:
        # "calibrated": false = the threshold is training's 0.0 (see `train`'s warning)
        print(json.dumps({**router.verdict(prompt).to_dict(),
                          "calibrated": router.calibrated}))
    return 0


def _uncalibrated(router: LearnedRouter, data: RoutingData, path: Path) -> str:
    """`train`'s warning: the share of its training prompts the new router sends to the
    cloud at its threshold (training's 0.0: the cloud wherever it is expected to be more
    accurate, often nearly all), and how to calibrate it. An embedding router is measured
    by its n-gram part (encoding every prompt again would cost more than the warning is
    worth)."""
    part = router.with_encoder(None) if router.embedding_model else router
    share = cloud_fraction(part.score(data.prompts), part.active_threshold)
    by = " (by its n-gram part)" if router.embedding_model else ""
    return (f"tandem router: {_shown(path)} is uncalibrated: at its threshold "
            f"{router.threshold} it sends {share:.1%} of its {len(data)} training prompts "
            f"to the cloud{by}; run `tandem router calibrate --router {_quoted(path)} "
            "--data HELD_OUT.csv --target-cloud-fraction F` on prompts it was not trained on")


def _shown(path: str | Path) -> str:
    """`path` as it can be printed whatever stdout's encoding: the bytes of a name that is
    not UTF-8 (held as lone surrogates) as \\x escapes, as Python shows them on stderr."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _quoted(path: str | Path) -> str:
    """`path` quoted for a shell command line, if it needs it."""
    return shlex.quote(_shown(path))


def _evaluate(args: argparse.Namespace) -> int:
    data = load_routing_data(args.data)
    for path in args.routers:
        router = load_router(path, encoder=None)
        found = evaluate(router, data)
        if args.json:
            print(json.dumps({"router_file": path, "calibrated": router.calibrated,
                              **found.to_dict()}))
            continue
        how = "" if router.calibrated else " (uncalibrated: training's default)"
        q = found.quality_at
        print(f"{_shown(path)} ({found.router}, trained on {found.trained_rows} prompts) on "
              f"{found.prompts} prompts: weak {found.weak_accuracy:.3f}, strong "
              f"{found.strong_accuracy:.3f}\n"
              f"  APGR {found.apgr:.3f}  CPT(50%) {found.cpt50:.1%}  CPT(80%) {found.cpt80:.1%}\n"
              f"  quality at 20/40/60% cloud: {q[0.2]:.3f} / {q[0.4]:.3f} / {q[0.6]:.3f}\n"
              f"  at its threshold {found.threshold:.6f}{how}: {found.cloud_share:.1%} to the "
              "cloud, "
              f"quality {found.quality:.3f} (gap recovered {found.recovered:.3f})")
    return 0


def _training_data(args: argparse.Namespace) -> RoutingData | None:
    """The labelled rows `train` asked for; None (after one line on stderr) if unusable."""
    if not args.from_telemetry:
        return load_routing_data(args.data)
    try:
        if args.db:
            return telemetry_data(args.db)
        return telemetry_data(*_configured_telemetry())
    except (TelemetryDataError, ConfigError) as exc:
        print(f"tandem router: {exc}", file=sys.stderr)
        return None


def _configured_telemetry() -> tuple[str | None, float]:
    """The database the runtime writes (its `runtime.telemetry_path`; None: the default)
    and its retention (`runtime.telemetry_keep_days`: older verdicts do not train)."""
    from runtime.config import load_config
    from runtime.telemetry import is_off

    runtime = load_config().runtime
    if is_off(runtime.telemetry_path):
        raise TelemetryDataError('runtime.telemetry_path is "off": there is no telemetry to '
                                 "train on (name a database with --db)")
    return runtime.telemetry_path or None, runtime.telemetry_keep_days


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `tandem router`; returns the process exit code."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else EXIT_USAGE
    try:
        return _run(args)
    except (RouterDataError, RouterFileError) as exc:  # what was given cannot be used
        print(f"tandem router: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RouterError as exc:  # e.g. the embedding model missing for --embed
        print(f"tandem router: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
