"""Run onnxruntime-genai's model builder, adapting the one config layout it misreads.

Run in a child process by the pipeline (`python -m kernels.convert.build BUILDER-ARGS...`,
the same arguments as `python -m onnxruntime_genai.models.builder`).

The shim: onnxruntime-genai 0.18.0's builder needs transformers 5, but its Gemma 3 code reads
the RoPE settings in transformers 4's layout. Transformers 5 keeps them per layer type,
`rope_parameters = {"full_attention": {"rope_type", "rope_theta"}, "sliding_attention": {...}}`,
and has no `rope_theta` or `rope_local_base_freq` attribute, so the builder fails with
`KeyError: 'rope_type'` (`builders/base.py`, `make_rope_init`); past that it would take the
default theta 10 000 for the global layers and stop at `config.rope_local_base_freq`
(`builders/gemma.py`, `Gemma3Model.__init__`). `gemma3_rope_shim` writes the transformers-4
layout back onto the config object before the builder reads it: the global layers' entry as a
flat `rope_parameters`, `rope_theta` from it, `rope_local_base_freq` from the sliding layers'.
Nothing in site-packages is edited: the shim wraps `Gemma3Model.make_config_init` (the first
thing the builder's constructor runs) in this process only.
"""

from __future__ import annotations

import importlib
import runpy
import sys
from typing import Any

BUILDER = "onnxruntime_genai.models.builder"


def gemma3_rope_shim(config: Any) -> bool:
    """Give a transformers-5 Gemma 3 config the transformers-4 RoPE attributes the builder reads.

    Returns False (and changes nothing) when the config is already flat. Raises ValueError for
    RoPE scaling the builder cannot express per layer type: it keeps one set of scaling factors
    for both caches, so a scaled global RoPE (Gemma 3 4B and up: linear, factor 8) would scale
    the local layers' cache too.
    """
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, dict) or "rope_type" in params:
        return False
    try:
        full, sliding = dict(params["full_attention"]), dict(params["sliding_attention"])
    except KeyError as exc:
        raise ValueError(f"unexpected Gemma 3 rope_parameters {params!r}") from exc
    for kind, entry in (("full_attention", full), ("sliding_attention", sliding)):
        if entry.get("rope_type", "default") != "default":
            raise ValueError(
                f"Gemma 3 with {entry.get('rope_type')!r} RoPE on its {kind} layers cannot be "
                "built: onnxruntime-genai's builder applies one RoPE scaling to both layer types"
            )
    full.setdefault("rope_type", "default")
    config.rope_parameters = full
    config.rope_theta = float(full["rope_theta"])
    config.rope_local_base_freq = float(sliding["rope_theta"])
    return True


def install_shims() -> None:
    """Wrap the builder's Gemma 3 class so its config is adapted before it is read."""
    # Importing the package puts the builder's own folder on sys.path; `builders.gemma` is then
    # the very module object the builder imports its Gemma3Model from.
    importlib.import_module("onnxruntime_genai.models")
    gemma3_model: Any = importlib.import_module("builders.gemma").Gemma3Model

    if getattr(gemma3_model.make_config_init, "_tandem_shim", False):
        return
    original = gemma3_model.make_config_init

    def make_config_init(self: Any, config: Any) -> None:
        if type(self) is gemma3_model:  # Gemma 4 subclasses it and reads the nested layout
            gemma3_rope_shim(config)
        original(self, config)

    make_config_init._tandem_shim = True  # type: ignore[attr-defined]
    gemma3_model.make_config_init = make_config_init


def main(argv: list[str]) -> int:
    install_shims()
    sys.argv = [BUILDER, *argv]
    runpy.run_module(BUILDER, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
