"""Router files: a compressed NPZ of plain arrays plus a JSON header.

Not pickle or joblib: loading those runs code named inside the file, and a router file is
exactly the kind of artefact people copy between machines. `np.load(allow_pickle=False)`
reads only numeric arrays and one JSON string, so a hostile file can at worst fail to load.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
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
        # False: the threshold is training's 0.0, not one `calibrate` chose (older files
        # lack the field; a reader takes a threshold other than 0.0 as calibrated)
        "calibrated": router.calibrated,
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

    `path` may omit the `.npz` that `save_router` adds (`--out myrouter` wrote
    `myrouter.npz`): a `path` that does not exist is looked for with it.
    For a router that uses a sentence embedding, `encoder="auto"` loads the bundled model
    when the `router-embed` extra is installed and otherwise scores with the file's n-gram
    fallback (logged once); `None` forces the fallback; an `Embedder` is used as given.
    """
    path = _existing(Path(path))
    arrays = read_npz(path, "router file")
    header = _header(path, arrays)
    spec = FeatureSpec.from_dict(header["features"])  # each field checked by `_header`
    raw_params = header["params"]
    params = TrainParams(c=float(raw_params["c"]), max_iter=raw_params["max_iter"],
                         seed=raw_params["seed"], features=spec)
    try:
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
    except KeyError as exc:
        raise RouterFileError(f"{path} lacks {exc.args[0]!r}: not a complete router file") from exc
    except (TypeError, ValueError) as exc:
        raise RouterFileError(f"{path} has malformed arrays: {exc}") from exc
    width = spec.hashed_columns + state.dense_mean.size
    if spec.stem_bits and state.stem_idf.shape != (2**spec.stem_bits,):
        raise RouterFileError(f"{path}: stem IDF shape {state.stem_idf.shape} does not match")
    if fallback is not None and fallback[0].shape != (4, width):
        raise RouterFileError(f"{path}: fallback shape {fallback[0].shape} does not match")
    width += state.embed_mean.size
    if coef.shape != (4, width) or intercept.shape != (4,):
        raise RouterFileError(f"{path}: coefficient shape {coef.shape} does not match its features")
    threshold = float(header["threshold"])
    fallback_threshold = header.get("fallback_threshold")
    calibrated = header.get("calibrated")
    if calibrated is None:  # files from before the field: 0.0 is what training leaves
        calibrated = threshold != 0.0 or fallback_threshold is not None
    router = LearnedRouter(spec=spec, features=state, coef=coef, intercept=intercept,
                           threshold=threshold, params=params,
                           trained_rows=header["trained_rows"], name=header["name"],
                           fallback_coef=fallback[0] if fallback else None,
                           fallback_intercept=fallback[1] if fallback else None,
                           neighbours=neighbours,
                           fallback_threshold=None if fallback_threshold is None
                           else float(fallback_threshold),
                           calibrated=calibrated)
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


def _existing(path: Path) -> Path:
    """`path`, or, when it does not exist, the file `save_router(router, path)` would have
    written (`path` + `.npz`) if that one does; `RouterFileError` naming both if neither."""
    if path.suffix == ".npz" or _present(path):
        return path
    saved = router_path(path)
    if _present(saved):
        return saved
    raise RouterFileError(f"router file not found: {path} (nor {saved.name} beside it)")


def _present(path: Path) -> bool:
    """Whether `path` names something (an error other than "no such file" counts as there:
    reading it reports that error)."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError):  # ValueError: a NUL in the path; read_npz names it
        return True
    return True


# Bounds of what a header may hold. Beyond them the file did not come from `save_router`,
# and some would cost a reader dearly before any other check (2**bits columns).
MAX_HASH_BITS = 30
MAX_NGRAM = 64
MAX_SEED = 2**32 - 1


def _header(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The file's JSON header with every field it is read for checked (type and range):
    `RouterFileError` naming the file and the field otherwise. A damaged file must fail
    here, as a RouterError, and not later as whatever Python error its values cause."""
    if "header" not in arrays:
        raise RouterFileError(f"{path} lacks 'header': not a complete router file")
    try:
        header = json.loads(str(arrays["header"]))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise RouterFileError(f"{path} has a malformed header: not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise RouterFileError(f"{path} has a malformed header: a JSON {_json_kind(header)}, "
                              "not an object")
    if header.get("format") != FORMAT:
        raise RouterFileError(f"{path} is not a Tandem router file")
    version = header.get("version")
    if not (_is_int(version) and version in READS):
        raise RouterFileError(
            f"{path} is router format version {version!r}, "
            f"this Tandem reads versions {min(READS)} to {max(READS)}"
        )
    check = _Fields(path)
    check.field(header, "name", lambda v: isinstance(v, str) and v != "", "a non-empty string")
    check.field(header, "threshold", _is_finite, "a finite number")
    check.field(header, "fallback_threshold", _is_finite, "a finite number or null",
                optional=True)
    check.field(header, "trained_rows", lambda v: _is_int(v) and v >= 0,
                "a whole number >= 0")
    check.field(header, "calibrated", lambda v: isinstance(v, bool), "true or false",
                optional=True)
    params = check.field(header, "params", _is_dict, "an object")
    check.field(params, "c", lambda v: _is_finite(v) and v > 0, "a number > 0", "params.")
    check.field(params, "max_iter", lambda v: _is_int(v) and v >= 1, "a whole number >= 1",
                "params.")
    check.field(params, "seed", lambda v: _is_int(v) and 0 <= v <= MAX_SEED,
                f"a whole number in 0..{MAX_SEED}", "params.")
    features = check.field(header, "features", _is_dict, "an object")
    bits = f"a whole number in 1..{MAX_HASH_BITS}"
    for key in ("word_bits", "char_bits"):
        check.field(features, key, lambda v: _is_int(v) and 1 <= v <= MAX_HASH_BITS, bits,
                    "features.")
    check.field(features, "stem_bits", lambda v: _is_int(v) and 0 <= v <= MAX_HASH_BITS,
                f"a whole number in 0..{MAX_HASH_BITS}", "features.", optional=True,
                nullable=False)
    for key in ("word_ngrams", "char_ngrams"):
        check.field(features, key, _is_ngram_range,
                    f"[low, high] whole numbers with 1 <= low <= high <= {MAX_NGRAM}",
                    "features.")
    check.field(features, "dense_weight", lambda v: _is_finite(v) and v >= 0,
                "a number >= 0", "features.")
    check.field(features, "embedding", lambda v: isinstance(v, str), "a string",
                "features.", optional=True, nullable=False)
    check.field(features, "embedding_weight", lambda v: _is_finite(v) and v >= 0,
                "a number >= 0", "features.", optional=True, nullable=False)
    check.field(features, "option_cues", lambda v: isinstance(v, bool), "true or false",
                "features.", optional=True, nullable=False)
    neighbours = check.field(header, "neighbours", _is_dict, "an object or null",
                             optional=True)
    if neighbours is not None:
        where = "neighbours."
        check.field(neighbours, "model", lambda v: isinstance(v, str) and v != "",
                    "a non-empty string", where)
        kind = check.field(neighbours, "kind", lambda v: v in ("vote", "stack"),
                           '"vote" or "stack"', where, optional=True)
        if kind == "stack":
            check.field(neighbours, "ks", lambda v: isinstance(v, list) and v != []
                        and all(_is_int(k) and k >= 1 for k in v),
                        "a list of whole numbers >= 1", where)
        else:
            check.field(neighbours, "k", lambda v: _is_int(v) and v >= 1,
                        "a whole number >= 1", where)
            check.field(neighbours, "weight", lambda v: _is_finite(v) and 0 <= v <= 1,
                        "a number in [0, 1]", where)
    return header


class _Fields:
    """Checks header fields of one router file, naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def field(self, table: dict[str, Any], key: str, ok: Callable[[Any], bool], want: str,
              where: str = "", optional: bool = False, nullable: bool = True) -> Any:
        """`table[key]` if `ok` says so; an `optional` one may be absent (None), and null
        too when `nullable` (the fields read with a default other than None are not)."""
        if key not in table:
            if optional:
                return None
            raise RouterFileError(f"{self.path} lacks {where + key!r}: not a complete "
                                  "router file")
        value = table[key]
        if value is None and optional and nullable:
            return None
        if not ok(value):
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise RouterFileError(f"{self.path} has a malformed header: {where}{key} must "
                                  f"be {want}, not {shown}")
        return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def _is_ngram_range(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)
            and 1 <= value[0] <= value[1] <= MAX_NGRAM)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _neighbours(meta: dict[str, Any] | None, arrays: dict[str, np.ndarray]
                ) -> NeighbourStack | NeighbourBlend | None:
    """The neighbour part named by the header (its fields checked by `_header`); its
    constructor checks the arrays' shapes."""
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
