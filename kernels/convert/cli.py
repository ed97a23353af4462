"""`tandem convert MODEL.gguf --to onnx-int4 --out DIR`: argument parsing over the pipeline.

The `tandem` CLI dispatches `tandem convert ...` here; `python -m kernels.convert` works too.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from kernels.convert.cache import cached_onnx
from kernels.convert.pipeline import (
    ALGORITHMS,
    BLOCK_SIZES,
    CHECK_PROMPT,
    TARGETS,
    ConvertOptions,
    convert_gguf,
    put_in_place,
    staging_folder,
)
from kernels.convert.progress import TextProgress
from kernels.errors import EngineError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem convert",
        description="Convert a GGUF model into an ONNX Runtime GenAI model folder "
        "(needs the convert extra: pip install 'tandem-llm[convert]').",
    )
    parser.add_argument("model", help="a .gguf file or a bundled model (bundled:smollm2-135m)")
    parser.add_argument("--to", dest="target", default="onnx-int4", choices=sorted(TARGETS))
    parser.add_argument(
        "--out", type=Path, help="output folder (default: only the cache; its path is printed)"
    )
    parser.add_argument("--block-size", type=int, default=32, choices=BLOCK_SIZES)
    parser.add_argument(
        "--accuracy-level", type=int, default=4, choices=(1, 2, 3, 4),
        help="int4 MatMul compute type: 1 fp32, 2 fp16, 3 bf16, 4 int8 (default 4)",
    )  # fmt: skip
    parser.add_argument(
        "--algorithm", default="k_quant_last", choices=ALGORITHMS,
        help="weight quantisation algorithm of the builder (default k_quant_last)",
    )  # fmt: skip
    parser.add_argument("--check-prompt", default=CHECK_PROMPT)
    parser.add_argument("--cache-dir", help="cache folder (default ~/.cache/tandem)")
    parser.add_argument(
        "--no-cache", action="store_true", help="convert straight into --out, bypassing the cache"
    )
    return parser


def _copy_whole(source: Path, out: Path) -> None:
    """Copy the converted folder to `out` whole or not at all: into a hidden sibling first,
    renamed into place once every file is there. A full disk part-way used to leave `out`
    holding a config that looks complete beside a truncated `model.onnx.data`, and the
    retry then refused `out` as not empty."""
    work = staging_folder(out)
    try:
        shutil.copytree(source, work, dirs_exist_ok=True)
        put_in_place(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def main(argv: list[str]) -> int:
    """Run the conversion; 0 on success, 1 on a conversion error, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    options = ConvertOptions(
        target=args.target,
        block_size=args.block_size,
        accuracy_level=args.accuracy_level,
        algorithm=args.algorithm,
        check_prompt=args.check_prompt,
    )
    progress = TextProgress(sys.stderr)
    if args.no_cache and args.out is None:
        print("tandem convert: --no-cache needs --out", file=sys.stderr)
        return 2
    if args.out is not None:  # checked before minutes of converting, not after
        if args.out.exists() and not args.out.is_dir():
            print(f"tandem convert: --out {args.out} is a file, not a folder", file=sys.stderr)
            return 2
        if args.out.is_dir() and any(args.out.iterdir()):
            print(f"tandem convert: {args.out} exists and is not empty", file=sys.stderr)
            return 2
    try:
        if args.no_cache:
            from kernels.registry import resolve

            model = resolve(args.model, args.cache_dir)
            path = convert_gguf(model.path, args.out, options, chat=model.chat,
                                progress=progress).path  # fmt: skip
        else:
            path = cached_onnx(args.model, options, cache_dir=args.cache_dir, progress=progress)
            if args.out is not None:
                _copy_whole(path, args.out)
                path = args.out
    except EngineError as exc:
        print(f"tandem convert: {exc}", file=sys.stderr)
        return 1
    except shutil.Error as exc:  # copytree's list of (source, target, reason), one per file
        failures = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        first = f"{failures[0][1]}: {failures[0][2]}" if failures else str(exc)
        more = f" (and {len(failures) - 1} more files)" if len(failures) > 1 else ""
        print(f"tandem convert: cannot copy the model to {args.out}: {first}{more}",
              file=sys.stderr)
        return 1
    except OSError as exc:  # an unwritable --out or --cache-dir, a full disk
        print(f"tandem convert: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
