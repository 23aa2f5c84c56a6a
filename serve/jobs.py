"""Background jobs (ingest, re-index, training, comparisons): id, progress, cancel, final state.

Each job runs on a worker thread of its kind (one at a time per kind) and its state is written
atomically to `<jobs_dir>/<id>.json` on every change, so a restart still shows how jobs ended;
a job that was queued or running when the process died is shown as `interrupted`. A save
cut short by a kill leaves a hidden temp file there, never read as a job and removed on the
next start.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ingest.atomic import atomic_write_text, check_within, remove_stale_temp_files

log = logging.getLogger(__name__)
State = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
FINAL = ("succeeded", "failed", "cancelled", "interrupted")
_ID_CHARS = set("0123456789abcdef")


class JobCancelled(Exception):  # noqa: N818 (a signal, not an error)
    """Raised inside a job when cancel was asked; the job ends as `cancelled`."""


class JobNotFoundError(KeyError):
    pass


@dataclass
class Job:
    id: str
    kind: str
    owner: str
    params: dict[str, Any]
    state: State = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobContext:
    """What a running job sees: report progress, and notice a cancel."""

    def __init__(self, manager: JobManager, job: Job) -> None:
        self._manager, self.job = manager, job
        self.cancelled = threading.Event()
        self._saved = 0.0

    def check(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled

    def report(self, **progress: Any) -> None:
        """Merge into the job's progress (saved at most twice a second) and honour a cancel."""
        self.job.progress.update(progress)
        now = time.monotonic()
        if now - self._saved > 0.5:
            self._saved = now
            self._manager.save(self.job)
        self.check()


JobFn = Callable[[JobContext], dict[str, Any]]


class JobManager:
    def __init__(
        self,
        root: Path,
        error_map: Callable[[Exception], tuple[str, str]],
        within: Path | None = None,
    ) -> None:
        self.root, self.within = root, within or root.parent
        root.mkdir(parents=True, exist_ok=True)
        check_within(root / "job.json", self.within)  # a link planted as the folder: refuse
        self._error_map = error_map  # exception -> (code, client-safe message)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._contexts: dict[str, JobContext] = {}
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._load()

    def _load(self) -> None:
        removed = remove_stale_temp_files(self.root)  # saves of a killed process
        if removed:
            log.info("removed %d unfinished job saves", removed)
        # Job files only: a hidden file (the temp file of a save in progress) is never a job.
        for path in sorted(self.root.glob("[!.]*.json")):
            try:
                job = Job(**json.loads(path.read_text("utf-8")))
            except (ValueError, TypeError):
                log.warning("skipping unreadable job file %s", path.name)
                continue
            if job.state not in FINAL:
                job.state = "interrupted"
                job.error = {"code": "interrupted", "message": "the server stopped during the job"}
                self.save(job)
            self._jobs[job.id] = job

    def save(self, job: Job) -> None:
        atomic_write_text(self.root / f"{job.id}.json", json.dumps(job.to_dict(), default=str),
                          within=self.within)  # fmt: skip

    def submit(self, kind: str, fn: JobFn, *, params: dict[str, Any], owner: str) -> Job:
        job = Job(uuid.uuid4().hex, kind, owner, params)
        context = JobContext(self, job)
        with self._lock:
            self._jobs[job.id] = job
            self._contexts[job.id] = context
            pool = self._pools.setdefault(
                kind, ThreadPoolExecutor(1, thread_name_prefix=f"job-{kind}")
            )
        self.save(job)
        pool.submit(self._run, fn, context)
        return job

    def _run(self, fn: JobFn, context: JobContext) -> None:
        job = context.job
        if context.cancelled.is_set():
            self._finish(job, "cancelled")
            return
        job.state, job.started_at = "running", time.time()
        self.save(job)
        try:
            result = fn(context)
        except JobCancelled:
            self._finish(job, "cancelled")
        except Exception as exc:
            code, message = self._error_map(exc)
            self._finish(job, "failed", error={"code": code, "message": message})
        else:
            self._finish(job, "succeeded", result=result)

    def _finish(self, job: Job, state: State, **fields: Any) -> None:
        job.state, job.finished_at = state, time.time()
        for name, value in fields.items():
            setattr(job, name, value)
        self.save(job)
        with self._lock:
            self._contexts.pop(job.id, None)

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id) if set(job_id) <= _ID_CHARS else None
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def list(self, kind: str | None = None) -> list[Job]:
        jobs = [j for j in self._jobs.values() if kind is None or j.kind == kind]
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        context = self._contexts.get(job_id)
        if context is not None:
            context.cancelled.set()
        return job

    def shutdown(self) -> None:
        for context in list(self._contexts.values()):
            context.cancelled.set()
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=False)
