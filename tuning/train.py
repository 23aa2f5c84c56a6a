"""train_lora: a LoRA adapter from chat examples, validated, early-stopped and resumable."""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuning.data import Example
from tuning.train_config import TrainConfig
from tuning.train_run import LoraRun, TrainError
from tuning.train_state import replace_dir, storage_errors

__all__ = ["TrainCancelled", "TrainError", "TrainProgress", "TrainResult", "train_lora"]
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class TrainCancelled(Exception):  # noqa: N818 (a normal outcome of should_stop, not an error)
    """should_stop() asked to stop; a checkpoint of `step` was saved, so a new call resumes."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"training cancelled after step {step}; checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class TrainProgress:
    step: int  # optimizer steps done
    total_steps: int
    epoch: float  # steps done / steps per epoch
    loss: float | None  # this step's training loss; None at step 0
    val_loss: float | None  # set on the steps that ran a validation
    tokens_per_s: float  # non-padding training tokens per second of training so far
    seconds: float  # since train_lora was called


@dataclass
class TrainResult:
    initial_val_loss: float
    best_val_loss: float
    best_step: int
    train_curve: list[tuple[int, float]]
    val_curve: list[tuple[int, float]]
    steps: int
    epochs: float
    stopped_early: bool
    truncated_examples: int
    train_tokens: int  # non-padding tokens of every training step
    tokens_per_s: float  # train_tokens / train_seconds (validation and checkpoints excluded)
    train_seconds: float  # inside training steps, summed over resumed calls
    peak_memory_mb: float  # peak RSS of the process on CPU; peak allocated on CUDA
    seconds: float  # wall time of this call
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _progress(run: LoraRun, loss: float | None, val_loss: float | None) -> TrainProgress:
    step = run.state.step
    return TrainProgress(
        step,
        run.total_steps,
        step / run.per_epoch,
        loss,
        val_loss,
        run.tokens_per_s,
        time.monotonic() - run.started,
    )


def _result(run: LoraRun) -> TrainResult:
    s = run.state
    return TrainResult(
        s.initial_val_loss,
        s.best_val_loss,
        s.best_step,
        list(s.train_curve),
        list(s.val_curve),
        s.step,
        s.step / run.per_epoch,
        s.stopped_early,
        run.truncated,
        s.train_tokens,
        run.tokens_per_s,
        s.train_seconds,
        _peak_memory_mb(run.device),
        time.monotonic() - run.started,
        run.device,
    )


def _fit(
    run: LoraRun,
    progress: Callable[[TrainProgress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    state = run.state
    if not state.val_curve:  # a fresh run: the loss before any training
        state.initial_val_loss = run.evaluate()
        run.record_validation(state.initial_val_loss)
        if progress:
            progress(_progress(run, None, state.initial_val_loss))
    while not state.finished:
        loss = run.train_step()
        state.step += 1
        state.train_curve.append((state.step, loss))
        val_loss = run.evaluate() if run.validation_due() else None
        if val_loss is not None:
            run.record_validation(val_loss)
        state.finished = state.stopped_early or state.step >= run.total_steps
        if progress:
            progress(_progress(run, loss, val_loss))
        periodic = state.step % run.config.checkpoint_every_steps == 0
        if state.finished or val_loss is not None or periodic:
            run.save()
        if not state.finished and should_stop is not None and should_stop():
            raise TrainCancelled(state.step, run.save())


def _export(run: LoraRun, out_dir: Path) -> None:
    """The best weights as adapter_model.safetensors + adapter_config.json, swapped in whole."""
    import torch

    with torch.no_grad():
        for name, param in run.params.items():
            param.copy_(run.best[name])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        with storage_errors():
            run.model.save_pretrained(tmp, safe_serialization=True)
        for extra in tmp.iterdir():  # peft also writes a README model card
            if extra.name not in ADAPTER_FILES:
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
        if sorted(p.name for p in tmp.iterdir()) != sorted(ADAPTER_FILES):
            raise TrainError(f"peft wrote {sorted(p.name for p in tmp.iterdir())}")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def train_lora(
    model_dir: Path,
    train: Sequence[Example],
    val: Sequence[Example],
    config: TrainConfig,
    out_dir: Path,
    work_dir: Path,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train LoRA adapters on `train`, keep the best on `val`, write them to out_dir.

    Resumes from the latest checkpoint in work_dir made by the same run (same data, config and
    base model); raises TrainCancelled, after a checkpoint, when should_stop() turns true.
    """
    if not train or not val:
        raise TrainError("training needs at least one training and one validation example")
    run = LoraRun(model_dir, train, val, config, work_dir)
    _fit(run, progress, should_stop)
    _export(run, out_dir)
    return _result(run)
