"""A killed write leaves a temp file named after its process; the next start removes it, and
only it: a live writer's temp file (another server on the same data directory) stays, and no
temp file is ever read as a job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import atomic
from ingest.atomic import atomic_write_text, remove_stale_temp_files
from serve.jobs import Job, JobManager
from tests.conftest import ROOT
from tests.reliability.test_disk_full import app_server, scratch_folder

# Dies inside an atomic write, between its temp file and the rename (as a SIGKILL would).
KILLED_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from ingest.atomic import atomic_write_bytes
    Path.replace = lambda self, target: os.kill(os.getpid(), signal.SIGKILL)
    atomic_write_bytes(Path(sys.argv[1]), b"half of an upload")
""")


def killed_write(path: Path) -> int:
    """Run an atomic write of `path` in a child that is killed before the rename; its pid."""
    child = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path)], cwd=ROOT, check=False)
    assert child.returncode == -9, child
    return _pid_of_leftover(path.parent)


def _pid_of_leftover(folder: Path) -> int:
    (temp,) = folder.glob(".tmp-*")
    return int(temp.name.split("-")[1])


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process of this test that stays alive while the test runs."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def folder() -> Iterator[Path]:
    with scratch_folder() as made:
        yield made


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


@pytest.mark.promise(1)
def test_a_killed_writes_temp_file_is_named_after_it_and_removed(folder: Path) -> None:
    pid = killed_write(folder / "ferry.txt")
    assert [p.name.startswith(f".tmp-{pid}-") for p in folder.iterdir()] == [True]
    assert remove_stale_temp_files(folder) == 1
    assert list(folder.iterdir()) == []


@pytest.mark.promise(1)
def test_only_temp_files_of_dead_writers_are_removed(folder: Path, live_pid: int) -> None:
    kept = {
        f".tmp-{live_pid}-abc123.txt",  # another server, writing now
        ".tmp-1-abc123.txt",  # pid 1 is alive (signalling it may be refused: alive all the same)
        ".tmp-abc123.txt",  # no pid in the name (an older version): nobody's to judge
        "ferry.txt",
        ".hidden",
    }
    dead = dead_pid()
    gone = {f".tmp-{dead}-abc123.txt", f".tmp-{os.getpid()}-old.json"}  # not this one's
    for name in kept | gone:
        (folder / name).write_text("x", "utf-8")
    (folder / f".tmp-{dead}-dir.txt").mkdir()  # not a file: left
    assert remove_stale_temp_files(folder) == len(gone)
    assert {p.name for p in folder.iterdir()} == kept | {f".tmp-{dead}-dir.txt"}
    assert remove_stale_temp_files(folder / "missing") == 0


@pytest.mark.promise(1)
def test_a_write_in_progress_in_this_process_is_left_alone(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # while the temp file is written: another thread cleans up
        if not seen:
            seen.append(remove_stale_temp_files(folder))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    atomic_write_text(folder / "job.json", "{}")
    assert seen == [0] and (folder / "job.json").read_text("utf-8") == "{}"
    assert list(folder.glob(".tmp-*")) == []


@pytest.mark.promise(1)
def test_jobs_never_read_a_temp_file_and_drop_dead_ones(folder: Path, live_pid: int) -> None:
    jobs = folder / "jobs"
    jobs.mkdir()
    done = Job("a" * 32, "ingest", "k", {}, state="succeeded")
    (jobs / f"{done.id}.json").write_text(json.dumps(done.to_dict()), "utf-8")
    half = Job("b" * 32, "ingest", "k", {}, state="running")  # a save cut short, complete JSON
    for pid in (dead_pid(), live_pid):
        (jobs / f".tmp-{pid}-x.json").write_text(json.dumps(half.to_dict()), "utf-8")
    manager = JobManager(jobs, lambda exc: ("error", str(exc)))
    assert [j.id for j in manager.list()] == [done.id]
    assert sorted(p.name for p in jobs.iterdir()) == [f".tmp-{live_pid}-x.json", f"{done.id}.json"]


@pytest.mark.promise(1)
def test_a_start_removes_a_killed_uploads_temp_file(folder: Path) -> None:
    uploads = folder / "data" / "uploads"
    uploads.mkdir(parents=True)
    killed_write(uploads / "ferry.md")
    training = folder / "data" / "training" / "data"
    training.mkdir(parents=True)
    killed_write(training / "job.jsonl")
    with app_server(folder) as server:
        assert server.client.get("/health").status_code == 200
        assert list(uploads.iterdir()) == [] and list(training.iterdir()) == []
