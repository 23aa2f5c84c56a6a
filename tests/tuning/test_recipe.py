"""train_adapter end to end: checks before work, a consistent registry on every failure, the
manifest of a real (tiny) training, and load_all's merge of several files."""

from __future__ import annotations

import errno
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import tuning.recipe as recipe
from tests.conftest import ROOT
from tuning.adapters import CONFIG, MANIFEST, WEIGHTS, AdapterError, AdapterRegistry
from tuning.data import DataError
from tuning.recipe import load_all, train_adapter
from tuning.train import TrainResult
from tuning.train_config import TrainConfig

SHIPPED = ROOT / "data" / "tone" / "brand_voice.jsonl"
SHIPPED_LINES = [line for line in SHIPPED.read_text("utf-8").splitlines() if line.strip()]
SYSTEM_PROMPT = json.loads(SHIPPED_LINES[0])["messages"][0]["content"]
# 16 examples, 0.2 held out: 3 validation examples, 13 to train on
TINY = TrainConfig(
    max_steps=2, max_length=64, batch_size=2, rank=2, val_fraction=0.2, early_stopping_patience=None
)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), "utf-8")
    return path


def pair(i: int) -> str:
    return json.dumps({"prompt": f"Question {i}?", "response": f"Hey there, rider! Answer {i}."})


def hidden_dirs(registry: AdapterRegistry, name: str) -> list[str]:
    """Unfinished work (staging folders, trainers' temp folders) under adapters/<name>/."""
    folder = registry.root / name
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("."))


def listed(registry: AdapterRegistry, name: str) -> list[int]:
    return [a.version for a in registry.versions(name)]


def fake_result() -> TrainResult:
    return TrainResult(
        initial_val_loss=3.0,
        best_val_loss=2.0,
        best_step=2,
        train_curve=[(1, 3.1), (2, 2.5)],
        val_curve=[(0, 3.0), (2, 2.0)],
        steps=2,
        epochs=0.5,
        stopped_early=False,
        truncated_examples=0,
        train_tokens=100,
        tokens_per_s=50.0,
        train_seconds=2.0,
        peak_memory_mb=500.0,
        seconds=3.0,
    )


def fake_train_lora(model_dir: Path, train: Any, val: Any, config: Any, out_dir: Path,
                    work_dir: Path, **kwargs: Any) -> TrainResult:  # fmt: skip
    """Writes a well-formed adapter (safetensors + LoRA config) into out_dir, like the real one."""
    import numpy as np
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"lora_A.weight": np.ones((2, 4), np.float32)}, str(out_dir / WEIGHTS))
    (out_dir / CONFIG).write_text(json.dumps({"peft_type": "LORA", "r": 2}), "utf-8")
    work_dir.mkdir(parents=True, exist_ok=True)
    return fake_result()


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No base model: resolving and hashing it are stubbed (train_lora is patched per test)."""
    monkeypatch.setattr(recipe, "resolve_model_dir", lambda model, cache: (tmp_path, "fake/base"))
    monkeypatch.setattr(recipe, "weights_sha256", lambda folder: "0" * 64)


def run(registry: AdapterRegistry, tmp_path: Path, data: Path, name: str = "brand", **kw: Any):
    return train_adapter(
        name=name,
        data_paths=[data],
        config=kw.pop("config", TINY),
        model="SmolLM2-135M-Instruct",
        cache_dir=kw.pop("cache_dir", tmp_path / "models"),
        registry=registry,
        work_dir=tmp_path / "training" / name,
        **kw,
    )


@pytest.fixture
def registry(tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "adapters")


@pytest.fixture
def good_data(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "good.jsonl", [pair(i) for i in range(8)])


@pytest.mark.parametrize("name", ["../x", "a/b", "Brand", "", ".hidden"])
def test_a_bad_name_fails_before_any_work(
    name: str, registry: AdapterRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("must not be reached with a bad name")

    monkeypatch.setattr(recipe, "train_lora", never)
    monkeypatch.setattr(recipe, "resolve_model_dir", never)
    # A missing data file too: the name is checked before the data is even read.
    with pytest.raises(AdapterError, match="bad adapter name"):
        run(registry, tmp_path, tmp_path / "missing.jsonl", name=name)
    assert not registry.root.exists() and not (tmp_path / "training").exists()


BAD_DATA = {
    "empty": ([], "empty"),
    "blank lines only": (["", "  "], "empty"),
    "mostly broken": ([pair(0), "{not json", '{"messages": []}', '{"prompt": "x"}'], "line 2"),
    "one example": ([pair(0)], "at least 2"),
    "one example twice": ([pair(0), pair(0)], "at least 2"),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_is_refused_and_leaves_the_registry_untouched(
    case: str, registry: AdapterRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines, message = BAD_DATA[case]
    monkeypatch.setattr(recipe, "train_lora", pytest.fail)
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines), "utf-8")
    with pytest.raises(DataError, match=message):
        run(registry, tmp_path, data)
    assert registry.names() == [] and hidden_dirs(registry, "brand") == []


def test_a_missing_data_file_is_a_data_error(registry: AdapterRegistry, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such training file"):
        run(registry, tmp_path, tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no training file"):
        load_all([])


def test_disk_full_while_publishing_keeps_the_registry_as_it_was(
    registry: AdapterRegistry,
    tmp_path: Path,
    good_data: Path,
    fake_model: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recipe, "train_lora", fake_train_lora)
    first, _ = run(registry, tmp_path, good_data)
    assert first.ref == "brand@v1"
    registry.promote("brand@v1", "prod")
    aliases = registry.aliases("brand")

    import tuning.adapters as adapters

    real_write = adapters.atomic_write_text

    def disk_full(path: Path, text: str) -> None:
        (path.parent / ".tmp-partial").write_text(text[:10])  # what a full disk leaves behind
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(adapters, "atomic_write_text", disk_full)
    with pytest.raises(OSError) as raised:
        run(registry, tmp_path, good_data)
    assert raised.value.errno == errno.ENOSPC
    assert listed(registry, "brand") == [1] and registry.aliases("brand") == aliases
    assert hidden_dirs(registry, "brand") == []
    assert sorted(p.name for p in (registry.root / "brand").iterdir()) == [
        ".lock",
        "aliases.json",
        "v1",
    ]

    monkeypatch.setattr(adapters, "atomic_write_text", real_write)  # space freed
    second, _ = run(registry, tmp_path, good_data)
    assert second.ref == "brand@v2" and listed(registry, "brand") == [1, 2]
    assert hidden_dirs(registry, "brand") == []


def test_a_failure_inside_training_leaves_no_staging_folder(
    registry: AdapterRegistry,
    tmp_path: Path,
    good_data: Path,
    fake_model: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(model_dir: Path, train: Any, val: Any, config: Any, out_dir: Path,
              work_dir: Path, **kwargs: Any) -> TrainResult:  # fmt: skip
        fake_train_lora(model_dir, train, val, config, out_dir, work_dir)
        assert (out_dir / WEIGHTS).is_file()
        raise RuntimeError("the trainer died half-way")

    monkeypatch.setattr(recipe, "train_lora", crash)
    with pytest.raises(RuntimeError, match="half-way"):
        run(registry, tmp_path, good_data)
    assert listed(registry, "brand") == [] and hidden_dirs(registry, "brand") == []
    # the work folder (checkpoints of an unfinished run) stays, so a rerun can resume
    assert (tmp_path / "training" / "brand").is_dir()

    def interrupted(*args: Any, **kwargs: Any) -> TrainResult:
        fake_train_lora(*args, **kwargs)
        raise KeyboardInterrupt  # not an Exception: the staging folder must still go

    monkeypatch.setattr(recipe, "train_lora", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(registry, tmp_path, good_data)
    assert listed(registry, "brand") == [] and hidden_dirs(registry, "brand") == []


def test_load_all_merges_files_and_drops_duplicates(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.jsonl", [pair(i) for i in range(5)])
    b = write_lines(tmp_path / "b.jsonl", [pair(i) for i in range(3, 8)] + ["{broken"])
    one_a, one_b = load_all([a]), load_all([b])
    both = load_all([a, b])
    assert len(one_a.examples) == 5 and len(one_b.examples) == 5
    assert len(both.examples) == 8 and len(set(both.examples)) == 8  # 3, 4 were in both
    assert [e.messages[0]["content"] for e in both.examples] == [f"Question {i}?" for i in range(8)]
    assert len(both.problems) == 1  # b's broken line
    assert both.sha256 not in (one_a.sha256, one_b.sha256)
    assert one_a.sha256 == hashlib.sha256(a.read_bytes()).hexdigest()
    assert both.path.name == "a.jsonl+b.jsonl"


@pytest.mark.slow
def test_a_real_tiny_training_publishes_a_complete_manifest(
    registry: AdapterRegistry,
    tmp_path: Path,
    model_cache_dir: Path,
    packaged_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = write_lines(tmp_path / "brand.jsonl", SHIPPED_LINES[:16])
    steps: list[int] = []
    adapter, result = run(
        registry, tmp_path, data, cache_dir=model_cache_dir, index_version=7,
        progress=lambda p: steps.append(p.step),
    )  # fmt: skip
    assert adapter.ref == "brand@v1" and listed(registry, "brand") == [1]
    assert steps == [0, 1, 2] and result.steps == 2
    m = adapter.manifest
    assert m["base_model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert len(m["base_weights_sha256"]) == 64
    assert m["dataset"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert m["dataset"]["file"] == "brand.jsonl"
    assert (m["dataset"]["examples"], m["dataset"]["train"], m["dataset"]["validation"]) == (
        16,
        13,
        3,
    )
    assert m["hyperparameters"] == TINY.model_dump(mode="json")
    metrics = m["metrics"]
    assert (
        metrics["initial_val_loss"] > 0 and metrics["best_val_loss"] <= metrics["initial_val_loss"]
    )
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_mb"] > 100
    assert metrics["steps"] == 2
    assert [s for s, _ in m["curves"]["train"]] == [1, 2]
    assert [s for s, _ in m["curves"]["validation"]] == [0, 2]
    assert m["index_version"] == 7
    assert datetime.fromisoformat(m["created_at"]).tzinfo is not None
    assert m["system_prompt"] == SYSTEM_PROMPT == "You are the Marlowe & Finch Cycles assistant."
    assert sorted(p.name for p in adapter.path.iterdir()) == sorted([WEIGHTS, CONFIG, MANIFEST])
    assert json.loads((adapter.path / CONFIG).read_text())["peft_type"] == "LORA"
    assert not (tmp_path / "training" / "brand").exists()  # finished: no checkpoints kept
    assert hidden_dirs(registry, "brand") == []

    # The next run is the next version (its training stubbed: the numbering is what is tested).
    monkeypatch.setattr(recipe, "train_lora", fake_train_lora)
    second, _ = run(registry, tmp_path, data, cache_dir=model_cache_dir)
    assert second.ref == "brand@v2" and listed(registry, "brand") == [1, 2]
    assert second.manifest["index_version"] is None
    assert second.manifest["base_weights_sha256"] == m["base_weights_sha256"]
