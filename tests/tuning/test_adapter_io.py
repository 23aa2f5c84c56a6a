"""Adapters out of one registry and into another: the same weights, checked, never twice."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from tests.tuning.test_adapters import publish, write_adapter
from tuning.adapter_io import export_adapter, import_adapter
from tuning.adapters import MANIFEST, WEIGHTS, AdapterError, AdapterRegistry, UnsafeAdapterError


def test_export_then_import_publishes_the_same_weights_once(tmp_path: Path) -> None:
    source = AdapterRegistry(tmp_path / "a")
    original = publish(source, "brand", base_model_id="SmolLM2-135M-Instruct", system_prompt="Hi")
    folder = export_adapter(original, tmp_path / "export")
    target = AdapterRegistry(tmp_path / "b")
    own = write_adapter(target.staging_dir("brand"), seed=7)
    target.publish("brand", own, {"base_model_id": "echo"})  # its own brand@v1, other weights
    imported, new = import_adapter(target, folder)
    assert new and imported.ref == "brand@v2"
    assert imported.manifest["weights_sha256"] == original.manifest["weights_sha256"]
    assert imported.manifest["system_prompt"] == "Hi"
    assert imported.manifest["base_model_id"] == "SmolLM2-135M-Instruct"
    assert imported.manifest["imported_from"] == "export"
    again, new = import_adapter(target, folder)
    assert not new and again.ref == "brand@v2"  # the same weights: nothing published
    renamed, new = import_adapter(target, folder, name="voice")
    assert new and renamed.ref == "voice@v1"


def test_export_refuses_a_folder_with_files(tmp_path: Path) -> None:
    adapter = publish(AdapterRegistry(tmp_path / "a"), "brand")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(AdapterError, match="not empty"):
        export_adapter(adapter, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_import_refuses_pickles_and_folders_without_a_manifest(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "reg")
    bare = write_adapter(tmp_path / "bare")
    with pytest.raises(AdapterError, match=MANIFEST):
        import_adapter(registry, bare)
    bad = export_adapter(publish(AdapterRegistry(tmp_path / "a"), "brand"), tmp_path / "bad")
    (bad / "adapter_model.bin").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(UnsafeAdapterError, match="pickled"):
        import_adapter(registry, bad)
    (bad / "adapter_model.bin").unlink()
    (bad / MANIFEST).write_text(json.dumps(["not", "an", "object"]))
    with pytest.raises(AdapterError, match="JSON object"):
        import_adapter(registry, bad)
    assert registry.names() == []  # nothing half-published
    with pytest.raises(AdapterError, match="not an adapter folder"):
        import_adapter(registry, tmp_path / "missing")
    assert (bad / WEIGHTS).is_file()
