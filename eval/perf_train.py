"""Training benchmark: `python -m eval.perf_train [--steps N] [--out FILE]`.

On the packaged SmolLM2-135M-Instruct and data/tone/brand_voice.jsonl, with the default
TrainConfig except max_steps, in one process:

1. `train_lora` (validation before and after, checkpoints, callbacks): training tokens/s;
2. a bare peft loop with the same settings (same model folder, LoRA config, seed, batches,
   AdamW, clipping) and nothing else: no validation, no checkpoints;
3. the ratio of (1) to (2) over the steps where train_lora ran no validation (target >= 0.9),
   in wall-clock and in CPU time (the CPU ratio holds when other work shares the machine);
4. peak memory, minutes for one epoch of the data set on this machine, and the validation loss
   before and after (the bare loop's loss after the same steps checks that both trained alike).

Tokens are non-padding tokens. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.perf_report import Report
from tuning.config import PACKAGED_GENERATOR
from tuning.data import Example, load_examples, split_examples
from tuning.models import resolve_model_dir
from tuning.train import TrainProgress, TrainResult, train_lora
from tuning.train_config import TrainConfig
from tuning.train_tokens import Tokenized, collate, loss_sum, step_batches, tokenize_examples

CHECKOUT = Path(__file__).resolve().parent.parent
DATA = CHECKOUT / "data" / "tone" / "brand_voice.jsonl"
DEFAULT_MODEL_CACHE = CHECKOUT / ".ragtune" / "models"  # git-ignored; conversion reused


@dataclass
class Steps:
    """Per optimizer step (index 0 is step 1): wall and CPU seconds, non-padding tokens."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def rates(self, keep: Sequence[int]) -> tuple[float, float]:
        """(tokens per wall second, tokens per CPU second) over the kept step indices."""
        tokens = sum(self.tokens[i] for i in keep)
        return tokens / sum(self.wall[i] for i in keep), tokens / sum(self.cpu[i] for i in keep)


class Clock:
    """train_lora's progress callback: the time between two callbacks is one step."""

    def __init__(self) -> None:
        self.steps = Steps()
        self.validated: list[int] = []  # step indices whose callback came after a validation
        self.last: tuple[float, float] | None = None

    def __call__(self, p: TrainProgress) -> None:
        now = (time.perf_counter(), time.process_time())
        if self.last is not None:
            self.steps.wall.append(now[0] - self.last[0])
            self.steps.cpu.append(now[1] - self.last[1])
            if p.val_loss is not None:
                self.validated.append(p.step - 1)
        self.last = now


def bare_loop(
    model_dir: Path, train: list[Tokenized], config: TrainConfig, steps: int
) -> tuple[Any, Steps]:
    """The minimal peft loop; returns (model, Steps)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pad = AutoTokenizer.from_pretrained(model_dir, local_files_only=True).pad_token_id
    base = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, dtype=torch.float32
    )
    torch.manual_seed(config.seed)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
    )
    model: Any = get_peft_model(base, lora).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    timed = Steps()
    for step in range(steps):
        began = (time.perf_counter(), time.process_time())
        micro = step_batches(len(train), config.batch_size, 1, config.seed, step)
        batch = collate([train[i] for i in micro[0]], pad, "cpu")
        model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            labels=batch.labels,
            use_cache=False,
        ).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timed.wall.append(time.perf_counter() - began[0])
        timed.cpu.append(time.process_time() - began[1])
        timed.tokens.append(batch.tokens)
    return model, timed


def validation(model: Any, val: list[Tokenized], pad: int, size: int) -> tuple[float, float]:
    """(mean loss per answer token, seconds) over the validation split."""
    import torch

    began, total, targets = time.perf_counter(), 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(val), size):
            batch = collate(val[start : start + size], pad, "cpu")
            total += float(loss_sum(model, batch))
            targets += batch.targets
    return total / targets, time.perf_counter() - began


def _tokens(model_dir: Path, examples: Sequence[Example], max_length: int) -> list[Tokenized]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return tokenize_examples(tokenizer, examples, max_length)[0]


def _figures(
    report: Report,
    result: TrainResult,
    clock: Clock,
    bare: Steps,
    epoch_tokens: int,
    val_s: float,
    bare_val: float,
) -> None:
    keep = [i for i in range(len(bare.tokens)) if i not in clock.validated]
    clock.steps.tokens = bare.tokens  # the same batches, so the same tokens per step
    ours, ours_cpu = clock.steps.rates(keep)
    theirs, theirs_cpu = bare.rates(keep)
    note = f"steps without validation: {len(keep)}"
    report.add("train.tokens_per_s", "train_lora tokens/s", ours, "tok/s", note=note)
    report.add("bare.tokens_per_s", "bare peft loop tokens/s", theirs, "tok/s", note=note)
    report.add("train.ratio", "train_lora / bare (wall)", ours / theirs, "x", target=0.9)
    report.add(
        "train.ratio_cpu",
        "train_lora / bare (CPU time)",
        ours_cpu / theirs_cpu,
        "x",
        target=0.9,
        note="tokens per CPU second of this process",
    )
    report.add(
        "train.result_tokens_per_s",
        "TrainResult.tokens_per_s",
        result.tokens_per_s,
        "tok/s",
        note="time inside training steps only",
    )
    report.add(
        "train.peak_memory_mb",
        "peak memory (RSS)",
        result.peak_memory_mb,
        "MiB",
        note="process peak after train_lora, before the bare loop",
    )
    minutes = (epoch_tokens / ours + val_s) / 60
    report.add(
        "train.epoch_minutes",
        "one epoch of brand_voice.jsonl",
        minutes,
        "min",
        note=f"{epoch_tokens:,} tokens at train_lora's rate + one validation ({val_s:.0f} s)",
    )
    report.add("val.before", "validation loss before", result.initial_val_loss, "nats/token")
    report.add(
        "val.after",
        "validation loss after (best)",
        result.best_val_loss,
        "nats/token",
        note=f"step {result.best_step} of {result.steps}",
    )
    report.add(
        "val.after_bare",
        "validation loss after (bare loop)",
        bare_val,
        "nats/token",
        note="same steps; should match the line above when the best is the last",
    )


def run(steps: int, out: Path | None, model_cache: Path, data: Path) -> Report:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    report = Report()
    report.info.update(
        cpus=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        load_at_start=os.getloadavg(),
        steps=steps,
    )
    model_dir = resolve_model_dir(PACKAGED_GENERATOR, model_cache)[0]
    config = TrainConfig(max_steps=steps)
    if config.grad_accum != 1:
        raise SystemExit("the bare loop here assumes grad_accum == 1")
    report.info["config"] = config.model_dump(mode="json")
    train, val = split_examples(load_examples(data).examples, config.val_fraction, config.seed)
    train_items = _tokens(model_dir, train, config.max_length)
    val_items = _tokens(model_dir, val, config.max_length)
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="ragtune-perf-train-") as tmp:
        report.log(f"train_lora: {steps} steps on {len(train)} examples ({len(val)} held out)")
        result = train_lora(
            model_dir, train, val, config, Path(tmp) / "adapter", Path(tmp) / "work", progress=clock
        )
    report.info["train_result"] = result.to_dict()
    gc.collect()
    report.log(f"bare peft loop: {steps} steps on the same batches")
    model, bare = bare_loop(model_dir, train_items, config, steps)
    bare_val, val_s = validation(model, val_items, model.config.pad_token_id, config.batch_size)
    epoch_tokens = sum(len(t.input_ids) for t in train_items)
    _figures(report, result, clock, bare, epoch_tokens, val_s, bare_val)
    report.info["load_at_end"] = os.getloadavg()
    if out is not None:
        out.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.perf_train", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps of each loop")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--data", type=Path, default=DATA, help="JSONL training data")
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=DEFAULT_MODEL_CACHE,
        help=f"converted-model cache (default {DEFAULT_MODEL_CACHE})",
    )
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the last step is followed by a validation)")
    report = run(args.steps, args.out, args.model_cache, args.data)
    print(report.table())
    info = report.info
    print(
        f"\nmachine: {info['cpus']} CPUs, torch threads {info['torch_threads']}, "
        f"load average {info['load_at_start'][0]:.2f} at start, "
        f"{info['load_at_end'][0]:.2f} at end; {report.to_json()['seconds']} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
