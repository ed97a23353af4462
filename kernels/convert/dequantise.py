"""GGUF -> fp32 safetensors folder (config, weights, tokenizer) with transformers.

Run in a child process by the pipeline (`python -m kernels.convert.dequantise GGUF OUT`):
torch and transformers stay out of the caller's process, and their log noise goes to the
step's log file. Offline: the config and tokenizer are built from the GGUF's own metadata.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kernels.convert.source import require


def dequantise(gguf_path: Path, out_dir: Path) -> None:
    """Write a Hugging Face folder with the dequantised fp32 weights of `gguf_path`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = require("transformers")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype="float32"
    )
    # The weights are already dequantised to fp32; the GGUF "quantizer" only remembers where
    # they came from and blocks save_pretrained, so drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m kernels.convert.dequantise MODEL.gguf OUT_DIR", file=sys.stderr)
        return 2
    dequantise(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
