"""`tandem router ...`: train, calibrate and try a learned router.

    tandem router train --data LABELLED.csv[.gz] --out router.npz [--seed 0] [--c 0.3]
                        [--hash-bits 17] [--embed]
    tandem router calibrate --router router.npz --data CALIBRATION.csv[.gz]
                            --target-cloud-fraction 0.3 [--out calibrated.npz]
    tandem router score --router router.npz "a prompt" ["another prompt" ...]

The CLI only parses and prints; the work is in `runtime.router`'s Python API.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace

from runtime.router.base import RouterError
from runtime.router.calibration import calibrate, cloud_fraction
from runtime.router.data import load_routing_data
from runtime.router.features import FeatureSpec
from runtime.router.learned import LearnedRouter, TrainParams
from runtime.router.store import load_router, save_router

EMBED_WEIGHT = 0.5  # experimental: lost to n-grams alone on seed-0 dev splits (docs/routing.md)
EXIT_ERROR = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem router", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="fit a router on labelled prompts")
    train.add_argument("--data", required=True, help="CSV with prompt, weak, strong columns")
    train.add_argument("--out", required=True, help="router file to write (.npz)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--c", type=float, default=TrainParams().c, help="inverse L2 strength")
    train.add_argument("--hash-bits", type=int, default=FeatureSpec().word_bits, metavar="B",
                       help="2**B buckets each for word and char n-grams (file size ~ 2**B)")
    train.add_argument("--embed", action="store_true",
                       help="experimental: add MiniLM sentence embeddings (router-embed extra)")
    cal = sub.add_parser("calibrate", help="set the threshold for a target cloud share")
    cal.add_argument("--router", required=True)
    cal.add_argument("--data", required=True, help="calibration prompts (not the training set)")
    cal.add_argument("--target-cloud-fraction", type=float, required=True, metavar="F")
    cal.add_argument("--out", help="where to write the calibrated router (default: in place)")
    score = sub.add_parser("score", help="print the router's verdict on prompts")
    score.add_argument("--router", required=True)
    score.add_argument("prompts", nargs="+")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        if not 10 <= args.hash_bits <= 22:
            print("tandem router: --hash-bits must be between 10 and 22", file=sys.stderr)
            return EXIT_USAGE
        data = load_routing_data(args.data)
        spec = FeatureSpec(word_bits=args.hash_bits, char_bits=args.hash_bits)
        encoder = None
        if args.embed:
            from runtime.router.embedding import MODEL_ID
            from runtime.router.embedding_torch import bulk_encoder

            spec = replace(spec, embedding=MODEL_ID, embedding_weight=EMBED_WEIGHT)
            encoder = bulk_encoder()
        params = TrainParams(c=args.c, seed=args.seed, features=spec)
        router = LearnedRouter.train(data.prompts, data.weak, data.strong, params, encoder)
        path = save_router(router, args.out)
        print(f"trained on {len(data)} prompts -> {path}")
        return 0
    if args.command == "calibrate":
        if not 0.0 <= args.target_cloud_fraction <= 1.0:
            print("tandem router: --target-cloud-fraction must be in [0, 1]", file=sys.stderr)
            return EXIT_USAGE
        router = load_router(args.router)
        data = load_routing_data(args.data)
        calibrated = calibrate(router, data.prompts, args.target_cloud_fraction)
        share = cloud_fraction(calibrated.score(data.prompts), calibrated.threshold)
        path = save_router(calibrated, args.out or args.router)
        print(f"threshold {calibrated.threshold:.6f}: {share:.1%} of {len(data)} calibration "
              f"prompts go to the cloud -> {path}")
        return 0
    router = load_router(args.router)
    for prompt in args.prompts:
        print(json.dumps(router.verdict(prompt).to_dict()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `tandem router`; returns the process exit code."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else EXIT_USAGE
    try:
        return _run(args)
    except RouterError as exc:
        print(f"tandem router: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
