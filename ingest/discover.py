"""Find the files to ingest under the paths given, with gitignore-like include/exclude globs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ingest.config import IngestConfig
from ingest.errors import ErrorCode


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest: absolute `path`, its document id, and the folder it was found under."""

    path: Path
    doc_id: str
    root: Path


@dataclass(frozen=True)
class Failure:
    """A path that could not be ingested, with a stable code and a reason for people."""

    path: str
    code: ErrorCode
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "reason": self.reason}


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """'**/' spans folders, '*' and '?' stay within one path component; case-insensitive."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    # Case-insensitive like the loader's suffix check: '*.pdf' must not skip 'SCAN.PDF' silently.
    return re.compile("".join(out) + r"\Z", re.IGNORECASE)


def matches(rel_path: str, pattern: str, *, any_component: bool = False) -> bool:
    """Does `rel_path` (posix, relative) match? Slash-less patterns test names only."""
    regex = _glob_regex(pattern)
    if "/" in pattern:
        return regex.match(rel_path) is not None
    names = rel_path.split("/") if any_component else [rel_path.rsplit("/", 1)[-1]]
    return any(regex.match(name) for name in names)


def _excluded(rel: str, config: IngestConfig) -> bool:
    return any(matches(rel, p, any_component=True) for p in config.exclude)


def _wanted(rel: str, config: IngestConfig) -> bool:
    return not _excluded(rel, config) and any(matches(rel, p) for p in config.include)


def _leaves(path: Path, root: Path) -> bool:
    """A symlink whose target lies outside `root`."""
    return path.is_symlink() and not path.resolve().is_relative_to(root)


def _link_failure(path: Path) -> Failure:
    return Failure(str(path), "symlink_outside_root", "links outside the folder")


def discover(
    paths: list[Path], config: IngestConfig, *, within: Path | None = None
) -> tuple[list[SourceFile], list[Failure]]:
    """Files under `paths` (folders recurse, symlinked folders are not followed).

    A document id is the path relative to the folder given (a file given directly: its name).
    With `within`, a path given that resolves outside that folder (a symlink planted on the way)
    is refused as `symlink_outside_root`, and nothing under it is read.
    """
    found: list[SourceFile] = []
    failures: list[Failure] = []
    fence = within.resolve() if within is not None else None
    for given in paths:
        root = given.resolve()
        if fence is not None and not root.is_relative_to(fence):
            failures.append(_link_failure(given))
            continue
        if not root.exists():
            failures.append(Failure(str(given), "not_found", "no such file or folder"))
            continue
        if root.is_file():
            found.append(SourceFile(root, root.name, root.parent))
            continue
        before = len(found)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in dirnames:  # os.walk does not enter symlinked folders: say so
                path = Path(dirpath) / name
                if _leaves(path, root) and not _excluded(path.relative_to(root).as_posix(), config):
                    failures.append(_link_failure(path))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                if not _wanted(rel, config):
                    continue
                if _leaves(path, root):
                    failures.append(_link_failure(path))
                    continue
                found.append(SourceFile(path, rel, root))
        if len(found) == before:
            failures.append(
                Failure(
                    str(given),
                    "no_files",
                    "no files match the include patterns here (with --sync: nothing removed)",
                )
            )
    return _dedupe(found, failures), failures


def _dedupe(found: list[SourceFile], failures: list[Failure]) -> list[SourceFile]:
    """One file per document id: a later path with an id already taken is a failure."""
    seen: dict[str, Path] = {}
    unique: list[SourceFile] = []
    for src in found:
        if src.doc_id in seen:
            if seen[src.doc_id] != src.path:
                failures.append(
                    Failure(
                        str(src.path),
                        "duplicate_id",
                        f"document id '{src.doc_id}' is already taken by {seen[src.doc_id]}",
                    )
                )
            continue
        seen[src.doc_id] = src.path
        unique.append(src)
    return unique
