"""The adapter registry without a model: versions, aliases, safety checks, crash leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from tuning.adapters import (
    CONFIG,
    MANIFEST,
    WEIGHTS,
    Adapter,
    AdapterError,
    AdapterMismatchError,
    AdapterNotFoundError,
    AdapterRegistry,
    UnsafeAdapterError,
    check_adapter_files,
    file_sha256,
    verify_adapter,
)

LORA = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def write_adapter(folder: Path, config: dict[str, Any] | None = None, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {f"{prefix}.lora_A.weight": rng.standard_normal((4, 8), dtype=np.float32),
         f"{prefix}.lora_B.weight": rng.standard_normal((8, 4), dtype=np.float32)},
        str(folder / WEIGHTS),
    )  # fmt: skip
    (folder / CONFIG).write_text(json.dumps(config or LORA), "utf-8")
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "adapters")


def publish(registry: AdapterRegistry, name: str = "brand", **manifest: Any) -> Adapter:
    staged = write_adapter(registry.staging_dir(name), seed=len(registry.versions(name)))
    return registry.publish(name, staged, {"base_model_id": "echo", **manifest})


def test_publish_numbers_versions_and_completes_the_manifest(registry: AdapterRegistry) -> None:
    first = publish(registry, dataset={"sha256": "abc"}, metrics={"val_loss": 1.5})
    second = publish(registry)
    assert (first.version, second.version) == (1, 2)
    assert first.ref == "brand@v1" and first.path == registry.root / "brand" / "v1"
    assert sorted(p.name for p in first.path.iterdir()) == sorted([WEIGHTS, CONFIG, MANIFEST])
    m = first.manifest
    assert m["base_model_id"] == "echo" and m["name"] == "brand" and m["version"] == 1
    assert m["weights_sha256"] == file_sha256(first.path / WEIGHTS)
    assert m["config_sha256"] == file_sha256(first.path / CONFIG)
    assert m["created_at"] and first.key.startswith("brand_v1_" + m["weights_sha256"][:6])
    assert first.key != second.key
    assert first.to_dict(["prod"]) == {
        "name": "brand", "version": 1, "ref": "brand@v1", "aliases": ["prod"],
        "base_model_id": "echo", "dataset_hash": "abc", "metrics": {"val_loss": 1.5},
        "created_at": m["created_at"],
    }  # fmt: skip
    assert [a.version for a in registry.versions("brand")] == [1, 2]
    assert list((registry.root / "brand").glob(".staging-*")) == []


def test_version_numbers_are_never_reused(registry: AdapterRegistry) -> None:
    publish(registry)
    publish(registry)
    assert registry.delete("brand", 2) == [2]
    assert publish(registry).version == 3
    assert registry.delete("brand") == [1, 3]
    assert registry.versions("brand") == []
    with pytest.raises(AdapterNotFoundError):
        registry.resolve("brand")
    assert publish(registry).version == 4  # even after deleting every version


def test_concurrent_publishes_get_distinct_versions(registry: AdapterRegistry) -> None:
    staged = [write_adapter(registry.staging_dir("brand"), seed=i) for i in range(4)]
    results: list[int] = []

    def run(folder: Path) -> None:
        results.append(registry.publish("brand", folder, {"base_model_id": "echo"}).version)

    threads = [threading.Thread(target=run, args=(f,)) for f in staged]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [1, 2, 3, 4]


def test_resolve(registry: AdapterRegistry) -> None:
    for _ in range(3):
        publish(registry)
    assert registry.resolve("brand").version == 3  # no prod alias: the newest
    assert registry.resolve("brand@2").version == 2
    assert registry.resolve("brand@v1").version == 1
    registry.promote("brand@v2")
    registry.promote("brand@1", "candidate")
    assert registry.resolve("brand").version == 2  # prod decides the bare name
    assert registry.resolve("brand@prod").version == 2
    assert registry.resolve("brand@candidate").version == 1
    for ref in ("brand@v9", "brand@staging", "other", "other@v1"):
        with pytest.raises(AdapterNotFoundError):
            registry.resolve(ref)


def test_promote_and_rollback_history(registry: AdapterRegistry) -> None:
    for _ in range(3):
        publish(registry)
    with pytest.raises(AdapterError, match="no earlier version"):
        registry.rollback("brand")  # never promoted
    registry.promote("brand@v1")
    with pytest.raises(AdapterError, match="no earlier version"):
        registry.rollback("brand")  # nothing before v1
    registry.promote("brand@v2")
    registry.promote("brand@v2")  # promoting the same version twice adds no history
    registry.promote("brand@v3")
    assert registry.aliases("brand") == {"prod": 3}
    assert registry.rollback("brand").version == 2
    assert registry.rollback("brand").version == 1
    assert registry.aliases("brand") == {"prod": 1}
    with pytest.raises(AdapterError):
        registry.rollback("brand")
    assert registry.aliases("brand") == {"prod": 1}  # a refused rollback changes nothing


def test_rollback_skips_deleted_versions(registry: AdapterRegistry) -> None:
    for _ in range(3):
        publish(registry)
    for v in (1, 2, 3):
        registry.promote(f"brand@v{v}")
    registry.delete("brand", 2)
    assert registry.rollback("brand").version == 1


@pytest.mark.parametrize("alias", ["v3", "3", "Prod", "a b", "", "-x", "x" * 33])
def test_bad_aliases_are_refused(registry: AdapterRegistry, alias: str) -> None:
    publish(registry)
    with pytest.raises(AdapterError, match="bad alias"):
        registry.promote("brand@v1", alias)
    assert registry.aliases("brand") == {}


def test_delete_refuses_an_aliased_version(registry: AdapterRegistry) -> None:
    publish(registry)
    publish(registry)
    registry.promote("brand@v1", "candidate")
    with pytest.raises(AdapterError, match="candidate"):
        registry.delete("brand", 1)
    assert [a.version for a in registry.versions("brand")] == [1, 2]
    with pytest.raises(AdapterNotFoundError):
        registry.delete("brand", 7)
    with pytest.raises(AdapterNotFoundError):
        registry.delete("nobody")


@pytest.mark.promise(8)
@pytest.mark.parametrize("name", ["../x", "a/b", "A B", "", "x" * 64, ".hidden", "-x", "a\\b"])
def test_bad_names_are_refused_everywhere(registry: AdapterRegistry, name: str) -> None:
    staged = write_adapter(registry.root.parent / "elsewhere")
    for call in (
        lambda: registry.staging_dir(name),
        lambda: registry.publish(name, staged, {"base_model_id": "echo"}),
        lambda: registry.resolve(name),
        lambda: registry.versions(name),
        lambda: registry.delete(name),
        lambda: registry.rollback(name),
    ):
        with pytest.raises(AdapterError, match="bad adapter name"):
            call()
    assert not registry.root.exists() or list(registry.root.iterdir()) == []
    assert (staged / WEIGHTS).is_file()  # nothing was moved


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.promise(1)
def test_leftovers_of_a_killed_save_are_not_listed_and_are_cleaned(
    registry: AdapterRegistry,
) -> None:
    publish(registry)
    ours = write_adapter(registry.staging_dir("brand"))  # this process's work in progress
    killed = ours.with_name(f".staging-{dead_pid()}-x")
    ours.replace(killed)  # saved by a process that was killed, never published
    no_manifest = write_adapter(registry.root / "brand" / "v5")  # renamed without a manifest
    assert [a.version for a in registry.versions("brand")] == [1]
    assert [a.ref for a, _ in registry.all()] == ["brand@v1"]
    assert registry.resolve("brand").version == 1
    with pytest.raises(AdapterNotFoundError):
        registry.resolve("brand@v5")
    assert registry.clean_staging() == 1
    assert not killed.exists() and no_manifest.exists()
    assert registry.clean_staging() == 0
    own = registry.staging_dir("brand")  # a staging folder of this live process stays
    assert registry.clean_staging() == 0 and own.exists()
    assert publish(registry).version == 2


def test_clean_staging_leaves_a_live_process_alone(registry: AdapterRegistry) -> None:
    publish(registry)
    folder = registry.root / "brand"
    live = folder / f".staging-{os.getppid()}-work"  # the parent of this process is alive
    gone = folder / ".staging-deleted-v9"  # a deletion cut short: no owner
    for leftover in (live, gone):
        write_adapter(leftover)
    assert registry.clean_staging() == 1
    assert live.exists() and not gone.exists()
    assert [a.version for a in registry.versions("brand")] == [1]


@pytest.mark.promise(9)
def test_check_adapter_files_refuses_pickles_before_reading_anything(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "a")
    for name in ("adapter_model.bin", "training_args.pt", "optimizer.PTH"):
        extra = folder / name
        extra.write_bytes(b"\x80\x04 a pickle that must never be loaded")
        (folder / CONFIG).write_text("{ not json", "utf-8")  # would fail if it were read first
        with pytest.raises(UnsafeAdapterError, match="pickled"):
            check_adapter_files(folder)
        extra.unlink()


@pytest.mark.parametrize(
    ("breakage", "match"),
    [
        (lambda f: (f / WEIGHTS).unlink(), WEIGHTS),
        (lambda f: (f / CONFIG).unlink(), CONFIG),
        (lambda f: (f / CONFIG).write_text("[1, 2", "utf-8"), "not JSON"),
        (lambda f: (f / CONFIG).write_text('{"peft_type": "PREFIX_TUNING"}', "utf-8"), "LoRA"),
        (lambda f: (f / CONFIG).write_text("[]", "utf-8"), "LoRA"),
    ],
)
def test_check_adapter_files_needs_safetensors_and_a_lora_config(
    registry: AdapterRegistry, breakage: Any, match: str
) -> None:
    folder = write_adapter(registry.staging_dir("brand"))
    breakage(folder)
    with pytest.raises(UnsafeAdapterError, match=match):
        check_adapter_files(folder)
    with pytest.raises(UnsafeAdapterError):
        registry.publish("brand", folder, {"base_model_id": "echo"})
    assert registry.versions("brand") == []


@pytest.mark.promise(9)
def test_verify_adapter(registry: AdapterRegistry) -> None:
    adapter = publish(registry)
    verify_adapter(adapter, "echo")  # passes
    with pytest.raises(AdapterMismatchError, match="trained for echo"):
        verify_adapter(adapter, "HuggingFaceTB/SmolLM2-135M-Instruct")
    weights = adapter.path / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor value
    weights.write_bytes(bytes(data))
    with pytest.raises(UnsafeAdapterError, match="checksum"):
        verify_adapter(adapter, "echo")


@pytest.mark.promise(9)
def test_verify_adapter_refuses_a_pickle_added_after_publishing(registry: AdapterRegistry) -> None:
    adapter = publish(registry)
    (adapter.path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(UnsafeAdapterError, match="pickled"):
        verify_adapter(adapter, "echo")


# -- the peft config that serving rebuilds -------------------------------------------------------


def published_with(registry: AdapterRegistry, config: dict[str, Any]) -> Adapter:
    staged = write_adapter(registry.staging_dir("brand"), {**LORA, **config})
    return registry.publish("brand", staged, {"base_model_id": "echo"})


@pytest.mark.promise(9)
@pytest.mark.parametrize(
    "config",
    [
        {"modules_to_save": ["lm_head"]},
        {"layer_replication": [[0, 4], [2, 6]]},
        {"trainable_token_indices": [1, 2]},
        {"use_dora": True},
    ],
)
def test_lora_config_refuses_what_replaces_base_modules(
    registry: AdapterRegistry, config: dict[str, Any]
) -> None:
    from tuning.lora import lora_config

    with pytest.raises(UnsafeAdapterError):
        lora_config(published_with(registry, config))


@pytest.mark.promise(9)
def test_lora_config_keeps_lora_fields_and_ignores_the_rest(registry: AdapterRegistry) -> None:
    from tuning.lora import lora_config

    adapter = published_with(registry, {
        "base_model_name_or_path": "evil/other-model", "revision": "main",
        "modules_to_save": None, "lora_dropout": 0.1,
    })  # fmt: skip
    config = lora_config(adapter)
    assert config.base_model_name_or_path is None
    assert config.revision is None
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.1)
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    assert config.inference_mode is True and config.modules_to_save is None


# -- hostile weights: a pickle's payload never runs ----------------------------------------------


class _Payload:
    """Unpickling this creates `path`: the file's existence proves a payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def _pickle_bytes(sentinel: Path) -> bytes:
    import pickle

    return pickle.dumps(_Payload(sentinel))


@pytest.mark.promise(9)
def test_a_real_pickle_payload_is_refused_without_running(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    """A payload beside safetensors weights, and one posing as the safetensors file itself:
    both refused with a clear error, and neither payload ever runs."""
    from tuning.lora import attach

    sentinel = tmp_path / "payload-ran"
    beside = write_adapter(registry.staging_dir("brand"))
    (beside / "adapter_model.bin").write_bytes(_pickle_bytes(sentinel))
    with pytest.raises(UnsafeAdapterError, match="pickled"):
        registry.publish("brand", beside, {"base_model_id": "echo"})
    assert registry.versions("brand") == []

    adapter = publish(registry)
    (adapter.path / WEIGHTS).write_bytes(_pickle_bytes(sentinel))  # swapped in after publishing
    with pytest.raises(UnsafeAdapterError, match="checksum"):
        verify_adapter(adapter, "echo")
    # Even past the checksum, the safetensors reader parses a header, never a pickle.
    with pytest.raises(Exception, match=r"(?i)header|safetensor|deserializ"):
        attach(object(), "a", adapter)
    assert not sentinel.exists()


@pytest.mark.promise(9)
def test_an_adapter_config_cannot_redirect_the_model_or_enable_remote_code(
    registry: AdapterRegistry,
) -> None:
    from tuning.lora import lora_config

    adapter = published_with(registry, {
        "base_model_name_or_path": "/etc", "revision": "evil",
        "trust_remote_code": True, "auto_mapping": {"base_model_class": "evil.Model"},
        "library_version": "0.0.0",
    })  # fmt: skip
    config = lora_config(adapter)
    assert config.base_model_name_or_path is None and config.revision is None
    assert config.auto_mapping is None
    assert not getattr(config, "trust_remote_code", False)
