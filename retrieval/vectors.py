"""FAISS side of the index: build, atomically persist and checksum-verified load of vector files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.atomic import atomic_write_bytes
from retrieval.config import IndexConfig

VECTOR_PREFIX = "vectors-"
VECTOR_SUFFIX = ".faiss"


class IndexCorruptError(Exception):
    """A stored vector file does not match the checksum its manifest recorded."""


def faiss_module() -> Any:
    import faiss  # lazy: importing faiss costs ~0.3 s and is only needed once vectors are touched

    return faiss


def empty_vectors(dim: int, config: IndexConfig) -> Any:
    """An empty id-mapped index: exact inner product, or HNSW over inner product."""
    faiss = faiss_module()
    if config.kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = config.hnsw_ef_construction
        inner.hnsw.efSearch = config.hnsw_ef_search
    else:
        inner = faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap2(inner)


def kind_of(index: Any) -> str:
    """'hnsw' or 'flat': what a stored index really is, whatever the configuration says now."""
    inner = faiss_module().downcast_index(index.index)
    return "hnsw" if hasattr(inner, "hnsw") else "flat"


def tune(index: Any, config: IndexConfig) -> Any:
    """Apply search-time settings (HNSW efSearch) to a loaded index."""
    if kind_of(index) == "hnsw":
        faiss_module().downcast_index(index.index).hnsw.efSearch = config.hnsw_ef_search
    return index


def vectors_from(
    ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], dim: int, config: IndexConfig
) -> Any:
    index = empty_vectors(dim, config)
    if len(ids):
        index.add_with_ids(vectors, ids)
    return index


def clone(index: Any) -> Any:
    return faiss_module().clone_index(index)


def vector_file_name(version: int) -> str:
    return f"{VECTOR_PREFIX}{version:08d}{VECTOR_SUFFIX}"


def write_vectors(index: Any, path: Path) -> str:
    """Write atomically (temp file, fsync, rename, fsync folder); returns the bytes' sha256.

    faiss.write_index writes in place, so a kill mid-write would leave a torn file: never use it.
    """
    data = faiss_module().serialize_index(index).tobytes()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_vectors(path: Path, sha256: str) -> Any:
    """Read a vector file, refusing it when its bytes do not match `sha256`.

    Never through a symlink (OSError ELOOP): the index rebuilds the file instead.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise IndexCorruptError(f"{path.name} does not match the checksum in the manifest")
    return faiss_module().deserialize_index(np.frombuffer(data, dtype=np.uint8))
