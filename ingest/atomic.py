"""Durable writes: temp file in the same folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


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
    (`OutsideRootError`) before anything is written.
    """
    if within is not None:
        check_within(path, within)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, within: Path | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), within=within)
