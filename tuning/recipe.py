"""train_adapter: data file -> validated split -> LoRA training -> a new registry version.

The adapter is trained into a staging folder of the registry and published (manifest last,
one rename) only when complete; any failure, a cancel or a full disk removes the staging
folder and leaves the registry as it was. The training checkpoints live in `work_dir`, so
running the same training again after a kill resumes it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tuning.adapters import Adapter, AdapterRegistry, check_name
from tuning.augment import for_serving
from tuning.data import DataError, Example, TrainingData, load_examples, split_examples
from tuning.models import resolve_model_dir, weights_sha256
from tuning.train import TrainProgress, TrainResult, train_lora
from tuning.train_config import TrainConfig


def common_system_prompt(examples: tuple[Example, ...]) -> str | None:
    """The system prompt every example shares, if any: served with the adapter so it sees at
    inference the persona it was trained under."""
    prompts = {e.messages[0]["content"] if e.messages[0]["role"] == "system" else None
               for e in examples}  # fmt: skip
    only = prompts.pop() if len(prompts) == 1 else None
    return only or None


def load_all(paths: Sequence[Path]) -> TrainingData:
    """Several JSONL files as one data set (each validated; duplicates across files dropped)."""
    if not paths:
        raise DataError("no training file given")
    parts = [load_examples(p) for p in paths]
    if len(parts) == 1:
        return parts[0]
    seen: set[str] = set()
    examples = []
    for example in (e for part in parts for e in part.examples):
        if example.key() not in seen:
            seen.add(example.key())
            examples.append(example)
    digest = hashlib.sha256("".join(p.sha256 for p in parts).encode()).hexdigest()
    problems = tuple(q for part in parts for q in part.problems)
    name = Path("+".join(p.path.name for p in parts))
    return TrainingData(tuple(examples), problems, digest, name)


def _versions() -> dict[str, str]:
    names = ("torch", "transformers", "peft")
    return {n: importlib.metadata.version(n) for n in names}


def manifest_for(
    data: TrainingData,
    split: tuple[int, int],
    config: TrainConfig,
    result: TrainResult,
    base: tuple[str, str],
    index_version: int | None,
) -> dict[str, Any]:
    metrics = {key: getattr(result, key) for key in (
        "initial_val_loss", "best_val_loss", "best_step", "steps", "epochs", "stopped_early",
        "truncated_examples", "train_tokens", "tokens_per_s", "train_seconds", "peak_memory_mb",
    )}  # fmt: skip
    return {
        "base_model_id": base[0],
        "base_weights_sha256": base[1],
        "system_prompt": common_system_prompt(data.examples),
        "dataset": {
            "file": data.path.name,
            "sha256": data.sha256,
            "examples": len(data.examples),
            "train": split[0],
            "validation": split[1],
            "bad_lines": len(data.problems),
        },
        "hyperparameters": config.model_dump(mode="json"),
        "metrics": metrics,
        "curves": {"train": result.train_curve, "validation": result.val_curve},
        "index_version": index_version,
        "device": result.device,
        "libraries": _versions(),
    }


def train_adapter(
    *,
    name: str,
    data_paths: Sequence[Path],
    config: TrainConfig,
    model: str,
    cache_dir: Path,
    registry: AdapterRegistry,
    work_dir: Path,
    index_version: int | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    rag_instructions: str = "",
    persona: str = "",
) -> tuple[Adapter, TrainResult]:
    """Train `name`'s next version from the JSONL files at `data_paths` and publish it.

    `rag_instructions`: what the server appends to the system prompt in its retrieval modes;
    with-context examples train under it (and with distractor passages, see tuning.augment),
    after their own system prompt or else `persona`, the server's default one.
    """
    check_name(name)  # before any work: a bad name must not cost a training run
    data = load_all(data_paths)
    train, val = split_examples(data.examples, config.val_fraction, config.seed)
    # After the split, so an example and its variant always fall on the same side.
    train = for_serving(train, distractors=config.distractors, rag_instructions=rag_instructions,
                        seed=config.seed, pool=data.examples, persona=persona)  # fmt: skip
    val = for_serving(val, distractors=config.distractors, rag_instructions=rag_instructions,
                      seed=config.seed + 1, pool=data.examples, persona=persona)  # fmt: skip
    model_dir, base_model_id = resolve_model_dir(model, cache_dir)
    base = (base_model_id, weights_sha256(model_dir))
    registry.clean_staging()  # what a killed training left (its process is gone)
    staged = registry.staging_dir(name)
    try:
        result = train_lora(model_dir, train, val, config, staged, work_dir,
                            progress=progress, should_stop=should_stop)  # fmt: skip
        manifest = manifest_for(data, (len(train), len(val)), config, result, base, index_version)
        manifest["rag_instructions"] = rag_instructions
        adapter = registry.publish(name, staged, manifest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    shutil.rmtree(work_dir, ignore_errors=True)  # finished: nothing left to resume
    return adapter, result
