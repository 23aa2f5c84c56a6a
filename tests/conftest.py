"""Shared fixtures: fast fakes for unit tests, the real packaged embedder for slow ones."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

# Before any test imports torch: idle OpenMP threads that spin made in-process training and
# generation 5-10x slower on these 2 shared cores (the CLI sets the same).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.config import IngestConfig
from retrieval.config import EmbedderConfig, IndexConfig
from retrieval.embedder import Embedder, HashEmbedder, build_embedder
from retrieval.index import Index
from retrieval.indexer import Indexer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "corpus"
EVAL_CASES = ROOT / "data" / "eval" / "cases.jsonl"

# Issue 6's promise marker, the `figures` fixture and `--reliability-table` (make reliability).
pytest_plugins = ["tests.reliability_table"]


@contextlib.contextmanager
def scratch_folder(fallback: Path | None = None) -> Iterator[Path]:
    """A fresh folder on tmpfs where there is one (SQLite's fsyncs make servers and commits
    many times slower on a loaded disk), removed afterwards; without tmpfs, `fallback` or a
    fresh folder in the system's temp directory."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        if fallback is not None:
            yield fallback
            return
        shm_dir = None
    else:
        shm_dir = str(shm)
    folder = Path(tempfile.mkdtemp(prefix="ragtune-test-", dir=shm_dir))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder(dim=64, max_tokens=254)


@pytest.fixture(scope="session")
def real_embedder() -> Embedder:
    """The packaged all-MiniLM-L6-v2, loaded once per session (mark users `slow`)."""
    return build_embedder(EmbedderConfig())


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


def open_index(directory: Path, embedder: Embedder, config: IndexConfig | None = None) -> Index:
    return Index(directory, embedder_model_id=embedder.model_id, dim=embedder.dim, config=config)


@pytest.fixture
def make_indexer(index_dir: Path) -> Iterator[object]:
    """Factory: make_indexer(embedder, ingest_config=None, index_config=None) -> Indexer."""
    opened: list[Index] = []

    def factory(
        embedder: Embedder,
        ingest_config: IngestConfig | None = None,
        index_config: IndexConfig | None = None,
    ) -> Indexer:
        index = open_index(index_dir, embedder, index_config)
        opened.append(index)
        return Indexer(index, embedder, ingest_config or IngestConfig())

    yield factory
    for index in opened:
        index.close()


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the packaged GGUF is converted, once per test session (about 20 s), for every test
    and every server process a test starts (pass it as RAGTUNE_MODEL_CACHE_DIR)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def packaged_model_dir(model_cache_dir: Path) -> Path:
    """The converted SmolLM2-135M-Instruct folder (mark users `slow`)."""
    from tuning.models import resolve_model_dir

    return resolve_model_dir("SmolLM2-135M-Instruct", model_cache_dir)[0]
