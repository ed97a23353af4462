"""Router files: a compressed NPZ of plain arrays plus a JSON header.

Not pickle or joblib: loading those runs code named inside the file, and a router file is
exactly the kind of artefact people copy between machines. `np.load(allow_pickle=False)`
reads only numeric arrays and one JSON string, so a hostile file can at worst fail to load.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import atomic_file
from runtime.router.base import RouterFileError, read_npz
from runtime.router.embedding import Embedder, EmbeddingUnavailable, SentenceEncoder
from runtime.router.features import FeatureSpec, FeatureState
from runtime.router.learned import LearnedRouter, TrainParams
from runtime.router.neighbours import NeighbourBlend, NeighbourStack

FORMAT = "tandem-router"
# 2 added the optional embedding block and its n-gram fallback model; 3 the optional
# neighbour vote (training vectors and gains) and the fallback threshold; 4 the neighbour
# stacker (training vectors and outcomes, the stacker's scaling and weights); 5 the stem
# word block (its IDF; `features.stem_bits` in the header); 6 the option-overlap cues
# (`features.option_cues`: six more dense columns).
VERSION = 6
READS = (1, 2, 3, 4, 5, 6)
log = logging.getLogger("tandem.router")


def router_path(path: str | Path) -> Path:
    """The file `save_router(router, path)` writes: `path` with `.npz` added if missing."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save_router(router: LearnedRouter, path: str | Path) -> Path:
    """Write `router` to `path` (an `.npz` file; the suffix is added if missing).

    The file is replaced whole (`runtime.atomic.atomic_file`): if writing fails (disk full,
    a file size limit) the `OSError` propagates and a router already at `path` is untouched.
    """
    path = router_path(path)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "name": router.name,
        "threshold": router.threshold,
        "fallback_threshold": router.fallback_threshold,
        "trained_rows": router.trained_rows,
        "params": {"c": router.params.c, "max_iter": router.params.max_iter,
                   "seed": router.params.seed},
        "features": router.spec.to_dict(),
        # What scoring needs, for a reader of the file: n-grams always, maybe an embedding.
        "needs": ["ngrams", *([f"embedding:{router.embedding_model}"]
                              if router.embedding_model else [])],
    }
    nb = router.neighbours
    if nb is not None:
        header["neighbours"] = nb.describe()
    st = router.features
    extra: dict[str, Any] = {}
    if router.fallback_coef is not None and router.fallback_intercept is not None:
        extra = {"embed_mean": st.embed_mean, "embed_std": st.embed_std,
                 "fallback_coef": router.fallback_coef,
                 "fallback_intercept": router.fallback_intercept}
    if isinstance(nb, NeighbourBlend):
        extra.update(knn_vectors=nb.vectors.astype(np.float16), knn_gains=nb.gains)
    elif nb is not None:
        extra.update(knn_vectors=nb.vectors.astype(np.float16), knn_outcomes=nb.outcomes,
                     stack_mean=nb.mean, stack_std=nb.std, stack_coef=nb.coef,
                     stack_intercept=nb.intercept)
    if router.spec.stem_bits:
        extra.update(stem_idf=st.stem_idf.astype(np.float32))
    mode = _file_mode(path)
    with atomic_file(path) as fh:
        if hasattr(os, "fchmod"):  # POSIX (Windows has no such permissions to keep)
            os.fchmod(fh.fileno(), mode)  # not the temporary file's 0600
        # float32 IDF/coefficients: ranking is unchanged and the file is half the size.
        np.savez_compressed(
            fh,
            header=np.array(json.dumps(header, sort_keys=True)),
            word_idf=st.word_idf.astype(np.float32),
            char_idf=st.char_idf.astype(np.float32),
            dense_mean=st.dense_mean,
            dense_std=st.dense_std,
            coef=router.coef,
            intercept=router.intercept,
            **extra,
        )
    return path


def _file_mode(path: Path) -> int:
    """The permissions a rewritten router file gets: those of the file it replaces, else
    what `open()` would give a new one (0666 less the umask; read from /proc, as setting the
    umask to learn it is not thread-safe; 022 assumed where it cannot be read)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        pass
    umask = 0o022
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o666 & ~umask


def load_router(path: str | Path, encoder: Embedder | None | str = "auto") -> LearnedRouter:
    """Read a router file written by `save_router`; a bad file raises `RouterFileError`.

    For a router that uses a sentence embedding, `encoder="auto"` loads the bundled model
    when the `router-embed` extra is installed and otherwise scores with the file's n-gram
    fallback (logged once); `None` forces the fallback; an `Embedder` is used as given.
    """
    path = Path(path)
    arrays = read_npz(path, "router file")
    try:
        header: dict[str, Any] = json.loads(str(arrays["header"]))
        if header.get("format") != FORMAT:
            raise RouterFileError(f"{path} is not a Tandem router file")
        if header.get("version") not in READS:
            raise RouterFileError(
                f"{path} is router format version {header.get('version')}, "
                f"this Tandem reads versions {min(READS)} to {max(READS)}"
            )
        spec = FeatureSpec.from_dict(header["features"])
        params = TrainParams(c=float(header["params"]["c"]),
                             max_iter=int(header["params"]["max_iter"]),
                             seed=int(header["params"]["seed"]), features=spec)
        state = FeatureState(
            word_idf=arrays["word_idf"].astype(np.float64),
            char_idf=arrays["char_idf"].astype(np.float64),
            dense_mean=arrays["dense_mean"].astype(np.float64),
            dense_std=arrays["dense_std"].astype(np.float64),
            **({"stem_idf": arrays["stem_idf"].astype(np.float64)} if spec.stem_bits else {}),
            **({"embed_mean": arrays["embed_mean"].astype(np.float64),
                "embed_std": arrays["embed_std"].astype(np.float64)} if spec.embedding else {}),
        )
        coef = arrays["coef"].astype(np.float32)
        intercept = arrays["intercept"].astype(np.float64)
        fallback = ((arrays["fallback_coef"].astype(np.float32),
                     arrays["fallback_intercept"].astype(np.float64))
                    if spec.embedding else None)
        neighbours = _neighbours(header.get("neighbours"), arrays)
        fallback_threshold = header.get("fallback_threshold")
    except KeyError as exc:
        raise RouterFileError(f"{path} lacks {exc.args[0]!r}: not a complete router file") from exc
    except (TypeError, ValueError) as exc:
        raise RouterFileError(f"{path} has a malformed header: {exc}") from exc
    width = spec.hashed_columns + state.dense_mean.size
    if spec.stem_bits and state.stem_idf.shape != (2**spec.stem_bits,):
        raise RouterFileError(f"{path}: stem IDF shape {state.stem_idf.shape} does not match")
    if fallback is not None and fallback[0].shape != (4, width):
        raise RouterFileError(f"{path}: fallback shape {fallback[0].shape} does not match")
    width += state.embed_mean.size
    if coef.shape != (4, width) or intercept.shape != (4,):
        raise RouterFileError(f"{path}: coefficient shape {coef.shape} does not match its features")
    router = LearnedRouter(spec=spec, features=state, coef=coef, intercept=intercept,
                           threshold=float(header["threshold"]), params=params,
                           trained_rows=int(header["trained_rows"]), name=str(header["name"]),
                           fallback_coef=fallback[0] if fallback else None,
                           fallback_intercept=fallback[1] if fallback else None,
                           neighbours=neighbours,
                           fallback_threshold=None if fallback_threshold is None
                           else float(fallback_threshold))
    if not router.embedding_model:
        return router
    if encoder == "auto":
        try:
            encoder = SentenceEncoder()
        except EmbeddingUnavailable as exc:
            log.warning("router %s: %s; scoring with its n-gram fallback", path, exc)
            encoder = None
    if isinstance(encoder, str):
        raise ValueError(f"encoder must be 'auto', None or an Embedder, not {encoder!r}")
    if encoder is not None and encoder.name != router.embedding_model:
        raise RouterFileError(f"{path} needs {router.embedding_model} embeddings, "
                              f"not {encoder.name}")
    return router.with_encoder(encoder)


def _neighbours(meta: Any, arrays: dict[str, np.ndarray]
                ) -> NeighbourStack | NeighbourBlend | None:
    """The neighbour part named by the header; its constructor checks the arrays' shapes."""
    if meta is None:
        return None
    vectors = arrays["knn_vectors"]
    if meta.get("kind", "vote") == "stack":
        return NeighbourStack(
            model=str(meta["model"]), vectors=vectors.astype(np.float16),
            outcomes=arrays["knn_outcomes"].astype(np.uint8),
            ks=tuple(int(k) for k in meta["ks"]),
            mean=arrays["stack_mean"].astype(np.float64),
            std=arrays["stack_std"].astype(np.float64),
            coef=arrays["stack_coef"].astype(np.float64),
            intercept=arrays["stack_intercept"].astype(np.float64))
    return NeighbourBlend(model=str(meta["model"]), vectors=vectors.astype(np.float16),
                          gains=arrays["knn_gains"].astype(np.int8), k=int(meta["k"]),
                          weight=float(meta["weight"]))
