"""`ragtune tune`: train a LoRA adapter from a JSONL file into the registry (resumable)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from serve.settings import Settings
from tuning.adapters import AdapterRegistry
from tuning.recipe import train_adapter
from tuning.train import TrainProgress
from tuning.train_config import TrainConfig

# CLI flag -> TrainConfig field
FLAGS = {
    "epochs": "epochs",
    "max_steps": "max_steps",
    "lr": "learning_rate",
    "rank": "rank",
    "alpha": "alpha",
    "dropout": "dropout",
    "batch_size": "batch_size",
    "grad_accum": "grad_accum",
    "max_length": "max_length",
    "eval_every": "eval_every_steps",
    "patience": "early_stopping_patience",
    "distractors": "distractors",
    "seed": "seed",
    "device": "device",
}


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[TrainProgress], None]]:
    """A tqdm bar with loss and tokens/s on a terminal; a line per validation otherwise."""
    bar: Any = None

    def update(p: TrainProgress) -> None:
        nonlocal bar
        if enabled:
            from tqdm import tqdm

            if bar is None:
                bar = tqdm(total=p.total_steps, initial=p.step, desc="training", unit="step")
            bar.n = p.step
            stats = {"loss": f"{p.loss:.3f}" if p.loss is not None else "-",
                     "tok/s": f"{p.tokens_per_s:.0f}"}  # fmt: skip
            if p.val_loss is not None:
                stats["val"] = f"{p.val_loss:.3f}"
            bar.set_postfix(stats, refresh=True)
        elif p.val_loss is not None:
            print(f"step {p.step}/{p.total_steps}: validation loss {p.val_loss:.4f}, "
                  f"{p.tokens_per_s:.0f} tokens/s", file=sys.stderr)  # fmt: skip

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {
        field: v for flag, field in FLAGS.items() if (v := getattr(args, flag)) is not None
    }
    # Validated like the environment's values: a bad flag is a clear error, not a crash.
    config = TrainConfig.model_validate({**settings.training.model_dump(), **overrides})
    registry = AdapterRegistry(settings.adapters_dir)
    index_version = None
    from retrieval.index import DB_NAME, Index

    if (settings.index_dir / DB_NAME).is_file():
        index_version = Index.open_existing(settings.index_dir, settings.index).version
    with progress_bar(sys.stderr.isatty() and not args.json) as bar:
        adapter, result = train_adapter(
            name=args.name,
            data_paths=[Path(d) for d in args.data],
            config=config,
            model=settings.generator.model,
            cache_dir=settings.models_dir,
            registry=registry,
            work_dir=settings.training_dir / args.name,
            index_version=index_version,
            progress=bar,
            rag_instructions=settings.chat.rag_instructions,
            persona=settings.chat.system_prompt,
        )
    if args.promote:
        registry.promote(adapter.ref, args.promote)
    summary = {
        **adapter.to_dict([args.promote] if args.promote else []),
        "result": result.to_dict(),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        m = adapter.manifest["metrics"]
        print(f"{adapter.ref}: validation loss {m['initial_val_loss']:.4f} -> "
              f"{m['best_val_loss']:.4f} (best at step {m['best_step']}), {m['steps']} steps, "
              f"{m['tokens_per_s']:.0f} tokens/s, peak {m['peak_memory_mb']:.0f} MB")  # fmt: skip
        if args.promote:
            print(f"{adapter.name}@{args.promote} -> v{adapter.version}")
        else:
            print(f"serve it as model tuned:{adapter.ref} or rag+tuned:{adapter.ref}; "
                  f"make it the default with: ragtune adapters promote {adapter.ref}")  # fmt: skip
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tune", help="train a LoRA adapter (a new version of NAME)")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="JSONL of {messages} or {prompt, response} (repeatable: the files are joined)",
    )
    p.add_argument("--name", required=True, help="adapter name (lowercase, digits, - and _)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--rank", type=int)
    p.add_argument("--alpha", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--max-length", type=int, help="tokens per example (longer: truncated)")
    p.add_argument("--eval-every", type=int, help="validate every N steps (default: per epoch)")
    p.add_argument("--patience", type=int, help="early-stopping patience, in validations")
    p.add_argument(
        "--distractors", type=int, help="passages mixed into with-context examples (0: off)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"])
    p.add_argument("--promote", metavar="ALIAS", help="point this alias (e.g. prod) at it")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_tune, needs_settings=True)
