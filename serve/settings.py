"""The one `Settings`: defaults, then `RAGTUNE_*` environment variables (nested with `__`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.config import IngestConfig
from retrieval.config import EmbedderConfig, IndexConfig, RetrievalConfig
from serve.config import ChatConfig, ServerConfig
from tuning.config import GeneratorConfig
from tuning.train_config import TrainConfig

CHECKOUT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """`.ragtune/` inside the checkout (git-ignored); elsewhere a per-user folder."""
    if (CHECKOUT / "pyproject.toml").is_file():
        return CHECKOUT / ".ragtune"
    return Path.home() / ".local" / "share" / "ragtune"


class Settings(BaseSettings):
    """Everything configurable. Build one per process (or per test); nothing reads it globally."""

    model_config = SettingsConfigDict(
        env_prefix="RAGTUNE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Working directory: index, adapters, jobs and reports live under it.",
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    training: TrainConfig = Field(default_factory=TrainConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    corpus_dir: Path | None = Field(
        None,
        description="The folder the server re-indexes on request (`--sync` semantics), beside "
        "its uploads. Clients never name server paths.",
    )
    model_cache_dir: Path | None = Field(
        None, description="Converted generator weights; default <data_dir>/models."
    )

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def training_dir(self) -> Path:
        """Resumable checkpoints of unfinished trainings, one folder per adapter name."""
        return self.data_dir / "training"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit" / "audit.jsonl"

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"
