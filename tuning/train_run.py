"""One LoRA training run: model, optimizer, tokenized data, steps, validation, checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuning.data import Example
from tuning.train_config import TrainConfig
from tuning.train_heap import bounded_heap
from tuning.train_state import Checkpoint, RunState, Tensors, load_checkpoint, save_checkpoint
from tuning.train_tokens import (
    Tokenized,
    collate,
    loss_sum,
    micro_batches,
    step_batches,
    steps_per_epoch,
    tokenize_examples,
)

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """Training cannot start or finish (a clear one-line message)."""


def run_key(
    model_dir: Path,
    train: Sequence[Example],
    val: Sequence[Example],
    config: TrainConfig,
    device: str,
) -> str:
    """What makes two runs the same run: data, split, config, base model folder, device."""
    payload = {
        "train": [e.messages for e in train],
        "val": [e.messages for e in val],
        "config": config.model_dump(mode="json"),
        "model": model_dir.resolve().name,
        "device": device,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _device(config: TrainConfig) -> str:
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainError("device 'cuda' was asked for, but torch sees no CUDA device")
    return config.device


def load_lora_model(model_dir: Path, config: TrainConfig, device: str) -> tuple[Any, Any]:
    """(tokenizer, peft model with fresh LoRA adapters seeded by config.seed), float32."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, dtype=torch.float32
    )
    torch.manual_seed(config.seed)  # the LoRA A matrices are drawn here
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
    )
    try:
        model = get_peft_model(base, lora)
    except ValueError as exc:  # peft: a target module that the model does not have
        raise TrainError(f"LoRA target_modules {config.target_modules}: {exc}") from exc
    from tuning.train_dropout import use_lean_dropout

    use_lean_dropout(model)  # same dropout, a bool mask kept for backward instead of floats
    return tokenizer, model.to(device)


def _tokenize(
    tokenizer: Any, examples: Sequence[Example], config: TrainConfig, what: str
) -> tuple[list[Tokenized], int]:
    items, truncated, dropped = tokenize_examples(tokenizer, examples, config.max_length)
    if truncated:
        log.warning(
            "%d of %d %s examples are longer than max_length=%d tokens and were cut at the end%s",
            truncated,
            len(examples),
            what,
            config.max_length,
            f"; {dropped} lost every answer token and are skipped" if dropped else "",
        )
    if not items:
        raise TrainError(f"no {what} example keeps an answer token within max_length")
    return items, truncated


class LoraRun:
    """One training run: model, optimizer, tokenized data and the resumable state."""

    def __init__(
        self,
        model_dir: Path,
        train: Sequence[Example],
        val: Sequence[Example],
        config: TrainConfig,
        work_dir: Path,
    ) -> None:
        import torch

        self.started = time.monotonic()
        self.config, self.work_dir = config, work_dir
        self.device = _device(config)
        tokenizer, self.model = load_lora_model(model_dir, config, self.device)
        pad = tokenizer.pad_token_id
        self.pad_id = int(tokenizer.eos_token_id if pad is None else pad)
        self.train, cut_train = _tokenize(tokenizer, train, config, "training")
        self.val, cut_val = _tokenize(tokenizer, val, config, "validation")
        self.truncated = cut_train + cut_val
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(
            self.params.values(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.per_epoch = steps_per_epoch(len(self.train), config.batch_size, config.grad_accum)
        self.total_steps = config.max_steps or config.epochs * self.per_epoch
        key = run_key(model_dir, train, val, config, self.device)
        self.state = RunState(key)
        self.best: Tensors = self._snapshot()
        self.saved_step = -1
        if (ckpt := load_checkpoint(work_dir, key)) is not None:
            self._restore(ckpt)

    def _snapshot(self) -> Tensors:
        return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in self.params.items()}

    def _restore(self, ckpt: Checkpoint) -> None:
        import torch

        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(ckpt.lora[name])
        self.optimizer.load_state_dict(ckpt.optimizer)
        torch.set_rng_state(ckpt.rng["cpu"])
        if self.device == "cuda":
            torch.cuda.set_rng_state(ckpt.rng["cuda"])
        self.state, self.best, self.saved_step = ckpt.state, ckpt.best, ckpt.state.step
        log.info("resuming training from step %d of %d", self.state.step, self.total_steps)

    def save(self) -> Path:
        import torch

        target = self.work_dir / f"ckpt-{self.state.step:08d}"
        if self.saved_step == self.state.step:
            return target
        rng = {"cpu": torch.get_rng_state()}
        if self.device == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        ckpt = Checkpoint(self.state, self._snapshot(), self.best, self.optimizer.state_dict(), rng)
        self.saved_step = self.state.step
        return save_checkpoint(self.work_dir, ckpt)

    def evaluate(self) -> float:
        """Mean loss per answer token over the validation split (dropout off)."""
        import torch

        self.model.eval()
        total, targets = 0.0, 0
        with torch.inference_mode():
            for items in micro_batches(self.val, self.config.micro_batch_tokens):
                batch = collate(items, self.pad_id, self.device)
                total += float(loss_sum(self.model, batch))
                targets += batch.targets
        return total / targets

    def train_step(self) -> float:
        """One optimizer step over its examples (grad_accum batches) in forward passes of at
        most micro_batch_tokens tokens; returns its mean answer-token loss."""
        import torch

        began = time.perf_counter()
        cfg = self.config
        step = step_batches(
            len(self.train), cfg.batch_size, cfg.grad_accum, cfg.seed, self.state.step
        )
        examples = [self.train[i] for batch in step for i in batch]
        passes = micro_batches(examples, cfg.micro_batch_tokens)
        batches = [collate(items, self.pad_id, self.device) for items in passes]
        targets = sum(b.targets for b in batches)  # normalise by answer tokens of the whole step
        self.model.train()
        total = 0.0
        with bounded_heap():
            for batch in batches:
                loss = loss_sum(self.model, batch)
                if loss.requires_grad:  # a pass whose answer tokens all sat at position 0
                    torch.autograd.backward(loss / targets)
                total += float(loss.detach())
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params.values(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.train_tokens += sum(b.tokens for b in batches)
        self.state.train_seconds += time.perf_counter() - began
        return total / targets

    def record_validation(self, val_loss: float) -> None:
        """Track the best weights and the patience counter."""
        state = self.state
        state.val_curve.append((state.step, val_loss))
        if val_loss < state.best_val_loss:
            state.best_val_loss, state.best_step, state.bad_evals = val_loss, state.step, 0
            self.best = self._snapshot()
        else:
            state.bad_evals += 1
            patience = self.config.early_stopping_patience
            state.stopped_early = patience is not None and state.bad_evals >= patience
        log.info(
            "step %d: validation loss %.4f (best %.4f at step %d)",
            state.step,
            val_loss,
            state.best_val_loss,
            state.best_step,
        )

    def validation_due(self) -> bool:
        step, every = self.state.step, self.config.eval_every_steps or self.per_epoch
        return step % every == 0 or step >= self.total_steps

    @property
    def tokens_per_s(self) -> float:
        """Non-padding training tokens per second inside training steps."""
        s = self.state
        return s.train_tokens / s.train_seconds if s.train_seconds else 0.0
