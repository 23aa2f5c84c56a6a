"""Durable writes: temp file in the same folder, fsync, rename, fsync the folder.

A temp file is named `.tmp-<pid>-<random><suffix>` after the process writing it, so that a
file left by a killed writer can be told from one a live writer (another server sharing the
data directory) is still writing: `remove_stale_temp_files` removes only the former.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
from pathlib import Path

TEMP_PREFIX = ".tmp-"
_TEMP_NAME = re.compile(r"\.tmp-([0-9]+)-")
# This process's temp files being written now, by name: a temp file named after this process
# that is not here is a leftover of an earlier process that had the same pid (in a container,
# every server may be pid 1). The lock makes "create + register" one step for the cleaner.
_WRITING: set[str] = set()
_WRITING_LOCK = threading.Lock()


class OutsideRootError(PermissionError):
    """A write would land outside the folder it must stay in (a symlinked folder on the way)."""


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entries (renames) to disk; on a file it flushes the file's data."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_within(path: Path, root: Path) -> None:
    """Refuse `path` when its folder, symlinks resolved, lies outside `root` (resolved too).

    The file itself may be a symlink: a rename replaces the link, never what it points at.
    """
    folder = path.parent.resolve()
    if not folder.is_relative_to(root.resolve()):
        raise OutsideRootError(
            errno.EACCES, f"refusing to write {path.name}: its folder leads outside {root.name}/"
        )


def atomic_write_bytes(path: Path, data: bytes, *, within: Path | None = None) -> None:
    """`path` holds either its old bytes or all of `data`, whatever moment the process dies.

    With `within`, a path whose folder resolves outside that folder is refused
    (`OutsideRootError`) before anything is written. A kill leaves at most a temp file,
    which `remove_stale_temp_files` removes once this process is gone.
    """
    if within is not None:
        check_within(path, within)
    with _WRITING_LOCK:
        fd, tmp = tempfile.mkstemp(
            prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=path.suffix, dir=path.parent
        )
        _WRITING.add(Path(tmp).name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        with _WRITING_LOCK:
            _WRITING.discard(Path(tmp).name)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, within: Path | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), within=within)


def pid_alive(pid: int) -> bool:
    """Is there a process `pid` (on this machine, in this pid namespace)? A process of another
    user counts as alive: signal 0 checks it exists, and only permission is refused."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid is that large
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: Path) -> int:
    """Remove the temp files `atomic_write_bytes` left in `folder` when their writer was killed
    (its pid is gone, or it is this process's pid but not a write of this process); returns how
    many. A live writer's temp file is left alone: two servers may share a data directory (on
    one machine: pids mean nothing across machines or containers). Temp files named without a
    pid (older versions) and everything else are left alone too."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        match = _TEMP_NAME.match(path.name)
        if match is None or path.is_dir():
            continue
        pid = int(match.group(1))
        with _WRITING_LOCK:  # not while this process creates a temp file of the same name
            if pid == os.getpid():
                stale = path.name not in _WRITING
            else:
                stale = pid > 0 and not pid_alive(pid)
            if stale:
                path.unlink(missing_ok=True)
                removed += 1
    return removed
