"""The adapter registry: versioned LoRA adapters on disk, with aliases, promote and roll back.

Layout under the registry root (`$RAGTUNE_DATA_DIR/adapters`):

    <name>/v<N>/adapter_model.safetensors, adapter_config.json, ragtune-adapter.json
    <name>/aliases.json          {"aliases": {"prod": 3}, "history": {"prod": [1, 3]}}

A version is published by renaming a complete staging folder (manifest written last, every file
fsynced) to `v<N>`; a folder without a manifest is never listed, so a kill at any moment leaves
the registry as it was before or after the publish.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.atomic import atomic_write_text, fsync_dir

log = logging.getLogger(__name__)
MANIFEST = "ragtune-adapter.json"
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
DEFAULT_ALIAS = "prod"
# Formats that unpickle on load: never read, and an adapter that ships one is refused.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_VERSION = re.compile(r"v?([0-9]{1,9})")
_STAGING = ".staging-"
_PID = re.compile(r"(?:staging|old)-([0-9]+)")
FaultHook = Callable[[str], None]  # called at named points of a publish; tests kill there


class AdapterError(ValueError):
    """A bad adapter name, reference or operation."""


class AdapterNotFoundError(AdapterError):
    """No adapter, version or alias by that name."""


class UnsafeAdapterError(AdapterError):
    """Pickled weights, a wrong checksum, or a config that tries to change the base model."""


class AdapterMismatchError(AdapterError):
    """The adapter was trained for another base model."""


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AdapterError(
            f"bad adapter name {name!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (no path separators)"
        )
    return name


def check_alias(alias: str) -> str:
    if not _ALIAS.fullmatch(alias) or _VERSION.fullmatch(alias):
        raise AdapterError(
            f"bad alias {alias!r}: use 1-32 lowercase letters, digits, '-' or '_', starting "
            "with a letter, and not shaped like a version (v3)"
        )
    return alias


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Adapter:
    """One complete, published adapter version."""

    name: str
    version: int
    path: Path
    manifest: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def key(self) -> str:
        """A name for this exact set of weights (peft adapter names may not contain dots)."""
        return f"{self.name}_v{self.version}_{str(self.manifest.get('weights_sha256'))[:12]}"

    @property
    def base_model_id(self) -> str:
        return str(self.manifest.get("base_model_id", ""))

    def to_dict(self, aliases: list[str] | None = None) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "aliases": aliases or [],
            "base_model_id": self.base_model_id,
            "dataset_hash": m.get("dataset", {}).get("sha256"),
            "metrics": m.get("metrics", {}),
            "created_at": m.get("created_at"),
        }


class AdapterRegistry:
    """Adapters under one root folder; safe to share between threads and processes."""

    def __init__(self, root: Path, fault_hook: FaultHook | None = None) -> None:
        self.root = root
        self._fault: FaultHook = fault_hook or (lambda point: None)

    # -- reading -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if _NAME.fullmatch(p.name) and _real_dir(p)
        )

    def versions(self, name: str) -> list[Adapter]:
        folder = self.root / check_name(name)
        found = []
        for path in folder.glob("v*") if _real_dir(folder) else ():
            match = _VERSION.fullmatch(path.name)
            if (
                match
                and path.name.startswith("v")
                and _real_dir(path)
                and (path / MANIFEST).is_file()
            ):
                found.append(self._load(name, int(match.group(1)), path))
        return sorted(found, key=lambda a: a.version)

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._alias_state(name)["aliases"])

    def all(self) -> list[tuple[Adapter, list[str]]]:
        """Every version of every adapter, with the aliases that point at it."""
        rows = []
        for name in self.names():
            by_version: dict[int, list[str]] = {}
            for alias, version in self.aliases(name).items():
                by_version.setdefault(version, []).append(alias)
            rows += [(a, sorted(by_version.get(a.version, []))) for a in self.versions(name)]
        return rows

    def get(self, name: str, version: int) -> Adapter:
        path = self.root / check_name(name) / f"v{version}"
        if not (_real_dir(path.parent) and _real_dir(path) and (path / MANIFEST).is_file()):
            raise AdapterNotFoundError(f"adapter {name!r} has no version v{version}")
        return self._load(name, version, path)

    def resolve(self, ref: str) -> Adapter:
        """`name`, `name@3`, `name@v3` or `name@alias`; a bare name means its `prod` alias,
        or its newest version when it has none."""
        name, _, which = ref.partition("@")
        check_name(name)
        if which:
            match = _VERSION.fullmatch(which)
            if match:
                return self.get(name, int(match.group(1)))
            version = self.aliases(name).get(which)
            if version is None:
                raise AdapterNotFoundError(f"adapter {name!r} has no alias {which!r}")
            return self.get(name, version)
        default = self.aliases(name).get(DEFAULT_ALIAS)
        if default is not None:
            return self.get(name, default)
        versions = self.versions(name)
        if not versions:
            raise AdapterNotFoundError(f"no adapter named {name!r}")
        return versions[-1]

    def _load(self, name: str, version: int, path: Path) -> Adapter:
        try:
            manifest = json.loads((path / MANIFEST).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise AdapterError(f"{name}@v{version}: unreadable manifest ({exc})") from exc
        return Adapter(name, version, path, manifest)

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        folder = self._folder(name)
        with (folder / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _folder(self, name: str) -> Path:
        """`<root>/<name>/`, made if missing; never a symlink planted there (it leads outside)."""
        folder = self.root / check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        if folder.is_symlink():
            raise AdapterError(f"adapter folder {name!r} is a symbolic link: refusing to follow it")
        return folder

    def staging_dir(self, name: str) -> Path:
        """An empty folder to save a new version into, on the registry's file system."""
        folder = self._folder(name)
        return Path(tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=folder))

    def publish(self, name: str, staged: Path, manifest: dict[str, Any]) -> Adapter:
        """Move a folder holding `adapter_model.safetensors` + `adapter_config.json` in as the
        next version. The manifest gains the weights' checksum and is written last."""
        check_adapter_files(staged)
        with self._locked(name) as folder:
            # Numbers are never reused, even after a delete: a cached `brand@v3` stays unique.
            state = self._alias_state(name)
            newest = max((a.version for a in self.versions(name)), default=0)
            version = max(newest, int(state.get("last_version", 0))) + 1
            full = {
                **manifest,
                "name": name,
                "version": version,
                "weights_sha256": file_sha256(staged / WEIGHTS),
                "config_sha256": file_sha256(staged / CONFIG),
                "created_at": manifest.get("created_at") or datetime.now(UTC).isoformat(),
            }
            for item in staged.iterdir():
                _fsync_file(item)
            self._fault("files_synced")
            atomic_write_text(staged / MANIFEST, json.dumps(full, indent=2, sort_keys=True))
            self._fault("manifest_written")
            staged.replace(folder / f"v{version}")
            self._fault("renamed")
            fsync_dir(folder)
            state["last_version"] = version
            try:
                self._write_aliases(name, state)
            except OSError as exc:  # published and complete already; numbering still holds
                log.warning("%s@v%d: could not record the version counter: %s", name, version, exc)
            self._fault("published")
        return self.get(name, version)

    def promote(self, ref: str, alias: str = DEFAULT_ALIAS) -> Adapter:
        """Point `name@alias` at the version `ref` names, remembering the previous one."""
        adapter = self.resolve(ref)
        check_alias(alias)
        with self._locked(adapter.name):
            state = self._alias_state(adapter.name)
            state["aliases"][alias] = adapter.version
            history = state["history"].setdefault(alias, [])
            if not history or history[-1] != adapter.version:
                history.append(adapter.version)
            self._write_aliases(adapter.name, state)
        return adapter

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> Adapter:
        """Point `name@alias` back at the version it named before the last promote."""
        check_alias(alias)
        with self._locked(name):
            state = self._alias_state(name)
            history: list[int] = state["history"].get(alias, [])
            live = {a.version for a in self.versions(name)}
            while len(history) > 1:
                history.pop()
                if history[-1] in live:
                    state["aliases"][alias] = history[-1]
                    self._write_aliases(name, state)
                    return self.get(name, history[-1])
            raise AdapterError(f"{name}@{alias} has no earlier version to roll back to")

    def delete(self, name: str, version: int | None = None) -> list[int]:
        """Delete one version (or every version); refuses a version an alias points at."""
        with self._locked(name) as folder:
            aliases = self.aliases(name)
            targets = [a.version for a in self.versions(name)] if version is None else [version]
            if version is not None:
                self.get(name, version)  # raises when absent
                pinned = [k for k, v in aliases.items() if v == version]
                if pinned:
                    raise AdapterError(
                        f"{name}@v{version} is {', '.join(pinned)}: promote another version "
                        "or roll back first"
                    )
            elif not targets:
                raise AdapterNotFoundError(f"no adapter named {name!r}")
            for v in targets:
                # Rename first: the version vanishes at once, even if the removal is cut short.
                doomed = folder / f"{_STAGING}deleted-v{v}"
                (folder / f"v{v}").replace(doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            if version is None:
                # Keep only the version counter: a later adapter of this name starts after it,
                # so `name@vN` never names two different sets of weights.
                last = max([*targets, int(self._alias_state(name).get("last_version", 0))])
                self._write_aliases(name, {"aliases": {}, "history": {}, "last_version": last})
            fsync_dir(folder)
        return targets

    def clean_staging(self) -> int:
        """Remove staging folders left by killed saves; returns how many."""
        removed = 0
        for name in self.names():
            # Every hidden folder is unfinished work (staging, a trainer's temp, a deletion);
            # its name carries the pid of its maker, and a live maker's folder is left alone.
            for leftover in (self.root / name).glob(".*"):
                if leftover.is_dir() and not _owner_alive(leftover.name):
                    shutil.rmtree(leftover, ignore_errors=True)
                    removed += 1
            removed += self._clean_temp_files(name)
        return removed

    def _clean_temp_files(self, name: str) -> int:
        """Remove the temp file of an `aliases.json` write cut short by a kill. Every such write
        holds the name's lock, so under it a temp file there is nobody's work in progress."""
        with self._locked(name) as folder:
            torn = [p for p in folder.glob(".tmp-*") if p.is_file()]
            for path in torn:
                path.unlink(missing_ok=True)
        return len(torn)

    def _alias_state(self, name: str) -> dict[str, Any]:
        path = self.root / check_name(name) / "aliases.json"
        if not _real_dir(path.parent) or path.is_symlink() or not path.is_file():
            return {"aliases": {}, "history": {}, "last_version": 0}
        try:
            state: dict[str, Any] = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise AdapterError(f"{path} is unreadable: {exc}") from exc
        return state

    def _write_aliases(self, name: str, state: dict[str, Any]) -> None:
        path = self.root / name / "aliases.json"
        atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True))


def _real_dir(path: Path) -> bool:
    """A folder, not a symlink to one: a link planted in the registry would lead outside it."""
    return path.is_dir() and not path.is_symlink()


def _owner_alive(folder_name: str) -> bool:
    match = _PID.search(folder_name)
    if match is None:
        return False
    if int(match.group(1)) == os.getpid():
        return True  # this process's own work in progress (a training job, say)
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with path.open("rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())


def check_adapter_files(folder: Path) -> None:
    """A folder is loadable only with safetensors weights, a LoRA config and nothing pickled."""
    label = f"{folder.parent.name}@{folder.name}"  # brand@v3
    linked = sorted(p.name for p in folder.iterdir() if p.is_symlink())
    if linked:
        raise UnsafeAdapterError(f"refusing {label}: {', '.join(linked)} are symbolic links")
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise UnsafeAdapterError(
            f"refusing {label}: pickled weights ({', '.join(pickled)}) can run code when "
            "loaded; only safetensors are accepted"
        )
    for required in (WEIGHTS, CONFIG):
        if not (folder / required).is_file():
            raise UnsafeAdapterError(f"refusing {label}: {required} is missing")
    try:
        config = json.loads((folder / CONFIG).read_text("utf-8"))
    except ValueError as exc:
        raise UnsafeAdapterError(f"refusing {label}: {CONFIG} is not JSON") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise UnsafeAdapterError(f"refusing {label}: {CONFIG} is not a LoRA config")


def verify_adapter(adapter: Adapter, base_model_id: str) -> None:
    """Refuse an adapter for another base model, with pickled weights or changed bytes."""
    check_adapter_files(adapter.path)
    if adapter.base_model_id != base_model_id:
        raise AdapterMismatchError(
            f"{adapter.ref} was trained for {adapter.base_model_id or 'an unknown model'}, "
            f"not for the loaded {base_model_id}"
        )
    if file_sha256(adapter.path / WEIGHTS) != adapter.manifest.get("weights_sha256"):
        raise UnsafeAdapterError(f"{adapter.ref}: {WEIGHTS} does not match its manifest checksum")
