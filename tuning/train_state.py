"""Resumable checkpoints of a training run in its work folder, written whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.atomic import fsync_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
PREFIX = "ckpt-"  # ckpt-00000042: the state after 42 optimizer steps
DONE = "done"  # written last inside the folder: a folder without it is ignored
Tensors = dict[str, "torch.Tensor"]


@dataclass
class RunState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    run_key: str
    step: int = 0  # optimizer steps done
    initial_val_loss: float = float("nan")
    best_val_loss: float = float("inf")
    best_step: int = 0
    bad_evals: int = 0  # validations in a row without a better loss
    stopped_early: bool = False
    finished: bool = False
    train_tokens: int = 0  # non-padding tokens trained on
    train_seconds: float = 0.0  # time inside training steps
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        curves = {k: [(int(s), float(v)) for s, v in data[k]] for k in ("train_curve", "val_curve")}
        return cls(**{**data, **curves})


@dataclass
class Checkpoint:
    state: RunState
    lora: Tensors  # trainable (LoRA) parameters by name, now
    best: Tensors  # the same parameters at the best validation so far
    optimizer: dict[str, Any]  # optimizer.state_dict()
    rng: Tensors  # "cpu" (and "cuda") generator states


# What safetensors (Rust: "... os error 28") and torch.save (RuntimeError) say when the disk is
# full, over quota, or past the file size limit: they raise their own types, not OSError.
_STORAGE_MESSAGES = (
    (errno.ENOSPC, ("os error 28", "no space left")),
    (errno.EFBIG, ("os error 27", "file too large")),
    (errno.EDQUOT, ("os error 122", "quota exceeded")),
)


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Re-raise a library's full-disk failure as the OSError it is, so callers (and the
    server's 507) see a full disk rather than an unknown error."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        text = str(exc).lower()
        for code, needles in _STORAGE_MESSAGES:
            if any(needle in text for needle in needles):
                raise OSError(code, os.strerror(code)) from exc
        raise


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished folder tmp at target (a sibling), replacing what was there."""
    for child in tmp.iterdir():
        fsync_dir(child)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.replace(old)
    tmp.replace(target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(work_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ckpt-<step> atomically, then drop every other checkpoint of the folder."""
    import torch
    from safetensors.torch import save_file

    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=work_dir))
    try:
        with storage_errors():
            save_file(ckpt.lora, tmp / "lora.safetensors")
            save_file(ckpt.best, tmp / "best.safetensors")
            save_file(ckpt.rng, tmp / "rng.safetensors")
            # our own private work file, read back with weights_only=True: tensors and plain data
            torch.save(ckpt.optimizer, tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(asdict(ckpt.state)))
            (tmp / DONE).write_text("")
            target = work_dir / f"{PREFIX}{ckpt.state.step:08d}"
            replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for other in work_dir.iterdir():
        if other != target and other.name.startswith((PREFIX, ".tmp-")):
            shutil.rmtree(other, ignore_errors=True)
    return target


def _read(folder: Path) -> Checkpoint:
    import torch
    from safetensors.torch import load_file

    state = RunState.from_json(json.loads((folder / "state.json").read_text()))
    optimizer = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
    return Checkpoint(
        state,
        load_file(folder / "lora.safetensors"),
        load_file(folder / "best.safetensors"),
        optimizer,
        load_file(folder / "rng.safetensors"),
    )


def load_checkpoint(work_dir: Path, run_key: str) -> Checkpoint | None:
    """The latest complete checkpoint of this run, or None (others are ignored, with a log)."""
    if not work_dir.is_dir():
        return None
    folders = sorted((p for p in work_dir.glob(f"{PREFIX}*") if (p / DONE).is_file()), reverse=True)
    for folder in folders:
        try:
            key = json.loads((folder / "state.json").read_text())["run_key"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable checkpoint %s: %s", folder, exc)
            continue
        if key != run_key:
            log.warning("ignoring checkpoint %s of another run (data or config changed)", folder)
            continue
        return _read(folder)
    return None
