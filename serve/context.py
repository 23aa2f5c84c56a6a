"""`AppContext`: everything the routes share, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve.audit import AuditLog
from serve.gate import Gate
from serve.jobs import JobManager
from serve.metrics import Metrics
from serve.pipeline import Pipeline
from serve.services import Services
from serve.settings import Settings


@dataclass
class AppContext:
    """Everything the routes share; built once in the lifespan."""

    settings: Settings
    services: Services
    pipeline: Pipeline
    gate: Gate
    metrics: Metrics
    audit: AuditLog | None
    jobs: JobManager


def context(app: Any) -> AppContext:
    """The context the lifespan stored on `app` (a FastAPI or Starlette application)."""
    ctx: AppContext = app.state.ctx
    return ctx
