"""Adapters in and out of a registry as plain folders: weights, LoRA config and manifest.

`export_adapter` writes one version to a folder another server (or this repository's
`data/adapters/`) can keep; `import_adapter` publishes such a folder as the next version of a
registry, after the same checks a loaded adapter gets (safetensors only, a LoRA config, no
links), and does nothing when a version with the same weights is already there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ingest.atomic import fsync_dir
from tuning.adapters import (
    CONFIG,
    MANIFEST,
    WEIGHTS,
    Adapter,
    AdapterError,
    AdapterRegistry,
    check_adapter_files,
    check_name,
    file_sha256,
)

# Filled in by the registry on publish: an import must not carry another registry's numbers.
_REGISTRY_FIELDS = ("name", "version", "weights_sha256", "config_sha256")


def export_adapter(adapter: Adapter, dest: Path) -> Path:
    """Copy `adapter`'s weights, config and manifest into the new folder `dest`."""
    if dest.exists() and any(dest.iterdir()):
        raise AdapterError(f"{dest} exists and is not empty: export into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    for item in (WEIGHTS, CONFIG, MANIFEST):
        shutil.copyfile(adapter.path / item, dest / item)
    fsync_dir(dest)
    return dest


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise AdapterError(f"{folder}: {MANIFEST} is missing (export adapters with ragtune)")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{folder}: {MANIFEST} is not JSON") from exc
    if not isinstance(manifest, dict):
        raise AdapterError(f"{folder}: {MANIFEST} is not a JSON object")
    return manifest


def import_adapter(
    registry: AdapterRegistry, src: Path, name: str | None = None
) -> tuple[Adapter, bool]:
    """Publish the exported folder `src` as `name`'s next version (default: the name in its
    manifest). Returns the adapter and whether it was new: a version with the same weights
    is returned as it is."""
    if not src.is_dir() or src.is_symlink():
        raise AdapterError(f"{src} is not an adapter folder")
    check_adapter_files(src)
    manifest = read_manifest(src)
    name = check_name(name or str(manifest.get("name", "")))
    weights = file_sha256(src / WEIGHTS)
    for existing in registry.versions(name):
        if existing.manifest.get("weights_sha256") == weights:
            return existing, False
    staged = registry.staging_dir(name)
    try:
        for item in (WEIGHTS, CONFIG):
            shutil.copyfile(src / item, staged / item)
        kept = {k: v for k, v in manifest.items() if k not in _REGISTRY_FIELDS}
        return registry.publish(name, staged, {**kept, "imported_from": src.name}), True
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
