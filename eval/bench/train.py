"""Training benchmark: `python -m eval.bench.train [--steps N] [--sequential] [--out FILE]`.

On the packaged SmolLM2-135M-Instruct and data/tone/brand_voice.jsonl, with the default
TrainConfig except max_steps, in one process:

1. `train_lora` (validation before and after, checkpoints, callbacks): training tokens/s;
2. a bare peft loop with the same settings (same model folder, LoRA config, seed, batches,
   AdamW, clipping) and nothing else: no validation, no checkpoints; each batch in one padded
   forward pass with full logits, where train_lora splits a step into passes of at most
   micro_batch_tokens (shortest first) and computes logits of answer positions only;
3. the ratio of (1) to (2) over the steps where train_lora ran no validation (target >= 0.9),
   in wall-clock and in CPU time;
4. peak memory, minutes for one epoch of the data set on this machine, and the validation loss
   before and after (the bare loop's loss after the same steps checks that both trained alike).

The two loops run in lockstep: after each train_lora step, its progress callback runs one bare
step, timed apart, with its own RNG state. Other work on a shared machine then slows both alike;
run one after the other, minutes apart, their ratio measured the machine's load, not the loops.
`--sequential` runs train_lora alone first (its peak memory is then its own), then the bare loop.
Tokens are non-padding tokens. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.bench.report import Report, command_line, machine
from serve.settings import CHECKOUT
from tuning.config import PACKAGED_GENERATOR
from tuning.data import Example, load_examples, split_examples
from tuning.models import resolve_model_dir
from tuning.train import TrainProgress, TrainResult, train_lora
from tuning.train_config import TrainConfig
from tuning.train_tokens import Tokenized, collate, loss_sum, step_batches, tokenize_examples

DATA = CHECKOUT / "data" / "tone" / "brand_voice.jsonl"


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


class BareLoop:
    """The minimal peft loop, one step at a time, with its own RNG state."""

    def __init__(self, model_dir: Path, items: list[Tokenized], config: TrainConfig) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        self.items, self.config, self.timed = items, config, Steps()
        base = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, dtype=torch.float32
        )
        self.pad = int(base.config.pad_token_id)
        torch.manual_seed(config.seed)
        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
        )
        self.model: Any = get_peft_model(base, lora).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.rng = torch.get_rng_state()

    def step(self, step: int) -> None:
        import torch

        outside, cfg = torch.get_rng_state(), self.config
        torch.set_rng_state(self.rng)
        began = (time.perf_counter(), time.process_time())
        micro = step_batches(len(self.items), cfg.batch_size, 1, cfg.seed, step)
        batch = collate([self.items[i] for i in micro[0]], self.pad, "cpu")
        self.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            labels=batch.labels,
            use_cache=False,
        ).loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.timed.wall.append(time.perf_counter() - began[0])
        self.timed.cpu.append(time.process_time() - began[1])
        self.timed.tokens.append(batch.tokens)
        self.rng = torch.get_rng_state()
        torch.set_rng_state(outside)

    def validation(self, val: list[Tokenized]) -> tuple[float, float]:
        """(mean loss per answer token, seconds) over the validation split."""
        import torch

        began, total, targets = time.perf_counter(), 0.0, 0
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(val), self.config.batch_size):
                batch = collate(val[start : start + self.config.batch_size], self.pad, "cpu")
                total += float(loss_sum(self.model, batch))
                targets += batch.targets
        return total / targets, time.perf_counter() - began


class Clock:
    """train_lora's progress callback: the time between two callbacks is one step (and a
    validation where one ran); `between(step)` runs untimed after each callback but the last."""

    def __init__(self, between: Callable[[int], None] | None = None) -> None:
        self.steps = Steps()
        self.validated: list[int] = []  # step indices whose callback came after a validation
        self.between = between
        self.last: tuple[float, float] | None = None

    def __call__(self, p: TrainProgress) -> None:
        now = (time.perf_counter(), time.process_time())
        if self.last is not None:
            self.steps.wall.append(now[0] - self.last[0])
            self.steps.cpu.append(now[1] - self.last[1])
            if p.val_loss is not None:
                self.validated.append(p.step - 1)
        if self.between is not None and p.step < p.total_steps:
            self.between(p.step)
            now = (time.perf_counter(), time.process_time())
        self.last = now


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
    memory: str,
) -> None:
    keep = [i for i in range(len(bare.tokens)) if i not in clock.validated]
    clock.steps.tokens = bare.tokens  # the same batches, so the same tokens per step
    ours, ours_cpu = clock.steps.rates(keep)
    theirs, theirs_cpu = bare.rates(keep)
    r, tps, loss = result, "tok/s", "nats/token"
    kept = f"steps without validation: {len(keep)}"
    cpu = "tokens per CPU second of this process"
    inner = "time inside training steps only"
    minutes = (epoch_tokens / ours + val_s) / 60
    epoch = f"{epoch_tokens:,} tokens at train_lora's rate + one validation ({val_s:.0f} s)"
    best = f"step {r.best_step} of {r.steps}"
    same = "same steps; matches the line above when the best step is the last"
    rows: list[tuple[str, str, float, str, float | None, str]] = [
        ("train.tokens_per_s", "train_lora tokens/s", ours, tps, None, kept),
        ("bare.tokens_per_s", "bare peft loop tokens/s", theirs, tps, None, kept),
        ("train.ratio", "train_lora / bare (wall)", ours / theirs, "x", 0.9, ""),
        ("train.ratio_cpu", "train_lora / bare (CPU)", ours_cpu / theirs_cpu, "x", 0.9, cpu),
        ("train.steps_tokens_per_s", "TrainResult.tokens_per_s", r.tokens_per_s, tps, None, inner),
        ("train.peak_memory_mb", "peak memory (RSS)", r.peak_memory_mb, "MiB", None, memory),
        ("train.epoch_minutes", "one epoch of brand_voice.jsonl", minutes, "min", None, epoch),
        ("val.before", "validation loss before", r.initial_val_loss, loss, None, ""),
        ("val.after", "validation loss after (best)", r.best_val_loss, loss, None, best),
        ("val.after_bare", "validation loss after (bare loop)", bare_val, loss, None, same),
    ]
    for key, label, value, unit, target, note in rows:
        report.add(key, label, value, unit, target=target, note=note)


@dataclass(frozen=True)
class Setup:
    model_dir: Path
    config: TrainConfig
    train: list[Example]
    val: list[Example]
    train_items: list[Tokenized]
    val_items: list[Tokenized]


def _ours(setup: Setup, between: Callable[[int], None] | None) -> tuple[TrainResult, Clock]:
    clock = Clock(between)
    with tempfile.TemporaryDirectory(prefix="ragtune-perf-train-") as tmp:
        result = train_lora(
            setup.model_dir,
            setup.train,
            setup.val,
            setup.config,
            Path(tmp) / "adapter",
            Path(tmp) / "work",
            progress=clock,
        )
    return result, clock


def _setup(steps: int, model_cache: Path, data: Path) -> Setup:
    model_dir = resolve_model_dir(PACKAGED_GENERATOR, model_cache)[0]
    config = TrainConfig(max_steps=steps)
    if config.grad_accum != 1:
        raise SystemExit("the bare loop here assumes grad_accum == 1")
    train, val = split_examples(load_examples(data).examples, config.val_fraction, config.seed)
    train_items = _tokens(model_dir, train, config.max_length)
    val_items = _tokens(model_dir, val, config.max_length)
    return Setup(model_dir, config, train, val, train_items, val_items)


def run(steps: int, sequential: bool, out: Path | None, model_cache: Path, data: Path) -> Report:
    os.environ["HF_HUB_OFFLINE"] = "1"
    report = Report()
    report.info.update(**machine(), steps=steps, sequential=sequential)
    setup = _setup(steps, model_cache, data)
    report.info["config"] = setup.config.model_dump(mode="json")
    mode = "one after the other" if sequential else "in lockstep"
    report.log(f"train_lora and a bare peft loop, {mode}: {steps} steps on the same batches")
    if sequential:
        result, clock = _ours(setup, None)
        gc.collect()
        bare = BareLoop(setup.model_dir, setup.train_items, setup.config)
        for step in range(steps):
            bare.step(step)
    else:
        bare = BareLoop(setup.model_dir, setup.train_items, setup.config)
        result, clock = _ours(setup, bare.step)
    report.info["train_result"] = result.to_dict()
    bare_val, val_s = bare.validation(setup.val_items)
    epoch_tokens = sum(len(t.input_ids) for t in setup.train_items)
    memory = "peak RSS, " + ("train_lora alone" if sequential else "both models resident")
    _figures(report, result, clock, bare.timed, epoch_tokens, val_s, bare_val, memory)
    report.finish(out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_line("eval.bench.train", __doc__, model_cache=True)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps of each loop")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="train_lora first, alone (its own peak memory), then the bare loop",
    )
    parser.add_argument("--data", type=Path, default=DATA, help="JSONL training data")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the last step is followed by a validation)")
    report = run(args.steps, args.sequential, args.out, args.model_cache, args.data)
    print(report.table())
    print(f"\n{report.machine_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
