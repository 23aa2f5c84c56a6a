"""Training in bounded memory: micro-batches, chunked answer-only loss, lean LoRA dropout; the
losses equal those of the one-pass, full-logits loop it replaced (real model, slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tuning.train_tokens as train_tokens
from tuning.data import Example
from tuning.train import train_lora
from tuning.train_config import TrainConfig
from tuning.train_dropout import LeanDropout, use_lean_dropout
from tuning.train_tokens import (
    IGNORE,
    Tokenized,
    collate,
    micro_batches,
    step_batches,
    tokenize_examples,
)


def _item(length: int) -> Tokenized:
    return Tokenized(tuple(range(length)), (IGNORE, *range(1, length)), False)


def test_micro_batches_keep_every_example_once_within_the_token_budget() -> None:
    lengths = [30, 5, 12, 12, 40, 7, 3, 25]
    passes = micro_batches([_item(n) for n in lengths], max_tokens=36)
    flat = [len(item.input_ids) for p in passes for item in p]
    assert flat == sorted(lengths)  # each once, shortest first
    for p in passes:
        padded = len(p) * max(len(item.input_ids) for item in p)
        assert padded <= 36 or len(p) == 1, [len(i.input_ids) for i in p]
    assert [len(p) for p in passes] == [3, 2, 1, 1, 1]  # 3 5 7 | 12 12 | 25 | 30 | 40
    assert micro_batches([_item(9)], max_tokens=8) == [[_item(9)]]  # too long: a pass alone
    assert len(micro_batches([_item(4)] * 8, max_tokens=1024)) == 1


def _saved_dtypes(fn: Any, x: Any) -> list[Any]:
    import torch

    dtypes: list[Any] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        dtypes.append(t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    out.sum().backward()
    return dtypes


def test_lean_dropout_is_inverted_dropout_that_keeps_only_a_bool_mask() -> None:
    import torch

    torch.manual_seed(0)
    drop = LeanDropout(0.25).train()
    x = torch.randn(64, 512, requires_grad=True)
    out = drop(x)
    kept = out != 0
    assert 0.72 < float(kept.float().mean()) < 0.78
    assert torch.allclose(out[kept], x.detach()[kept] / 0.75)
    out.backward(torch.ones_like(out))
    assert x.grad is not None and torch.allclose(x.grad, kept.float() / 0.75)
    assert _saved_dtypes(LeanDropout(0.25).train(), x) == [torch.bool]
    assert torch.float32 in _saved_dtypes(torch.nn.Dropout(0.25).train(), x)  # what it replaces
    assert drop.eval()(x) is x
    with pytest.raises(ValueError, match="within"):
        LeanDropout(1.0)


def test_every_lora_dropout_is_swapped_and_none_is_left() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    model = get_peft_model(
        LlamaForCausalLM(tiny),
        LoraConfig(r=2, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    assert use_lean_dropout(model) == 6  # 3 projections x 2 layers
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout | LeanDropout)]
    assert drops and all(isinstance(m, LeanDropout) and m.p == 0.1 for m in drops)


@pytest.fixture(scope="session")
def model_dir(packaged_model_dir: Path) -> Path:
    return packaged_model_dir


def _example(i: int) -> Example:
    words = " ".join(["gears", "chains", "tyres", "brakes"][i % 4] for _ in range(1 + 3 * i))
    return Example(
        (
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Question {i}: {words}?"},
            {"role": "assistant", "content": f"Hey there, rider! {words}. Ride bright."},
        )
    )


def _full_logits_loss(model: Any, items: list[Tokenized], pad: int) -> tuple[Any, int]:
    """The loss as computed before: one padded pass with an attention mask, logits of every
    position, cross-entropy over the answer tokens."""
    import torch.nn.functional as F

    batch = collate(items, pad, "cpu")
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    targets = F.pad(batch.labels[:, 1:], (0, 1), value=IGNORE)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                           reduction="sum")  # fmt: skip
    return loss, batch.targets


def _reference(model_dir: Path, train: Any, val: Any, config: TrainConfig) -> tuple[Any, ...]:
    """(val loss before, train losses, val loss after) of the loop as it was before."""
    import torch

    from tuning.train_run import load_lora_model

    tokenizer, model = load_lora_model(model_dir, config, "cpu")
    items = tokenize_examples(tokenizer, train, config.max_length)[0]
    held = tokenize_examples(tokenizer, val, config.max_length)[0]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)

    def val_loss() -> float:
        model.eval()
        with torch.inference_mode():
            loss, targets = _full_logits_loss(model, held, tokenizer.pad_token_id)
        return float(loss) / targets

    before, losses = val_loss(), []
    for step in range(config.max_steps or 0):
        model.train()
        (batch,) = step_batches(len(items), config.batch_size, 1, config.seed, step)
        loss, targets = _full_logits_loss(model, [items[i] for i in batch], tokenizer.pad_token_id)
        (loss / targets).backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()) / targets)
    return before, losses, val_loss()


@pytest.mark.slow
def test_losses_equal_the_one_pass_full_logits_loop(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropout off, so both draw nothing at random: the same seed gives the same losses, step
    by step, although train_lora splits each step into passes of at most 64 tokens and puts
    the answer positions through the LM head 8 at a time."""
    monkeypatch.setattr(train_tokens, "LOSS_CHUNK", 8)
    examples = [_example(i) for i in range(10)]
    train, val = examples[:8], examples[8:]
    config = TrainConfig(dropout=0.0, batch_size=4, max_length=128, micro_batch_tokens=64,
                         max_steps=3, eval_every_steps=3, learning_rate=1e-3,
                         early_stopping_patience=None)  # fmt: skip
    result = train_lora(model_dir, train, val, config, tmp_path / "out", tmp_path / "work")
    before, losses, after = _reference(model_dir, train, val, config)
    assert result.initial_val_loss == pytest.approx(before, rel=1e-5)
    assert [loss for _, loss in result.train_curve] == pytest.approx(losses, rel=1e-4)
    assert result.val_curve[-1][1] == pytest.approx(after, rel=1e-4)
    assert losses[-1] < losses[0] - 0.1  # it trained: equal losses are not equal constants


HEAP_CHILD = """
import gc, json
import torch
from tuning.train_heap import bounded_heap

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

def churn():
    '''MiB still resident after freeing 300 2-MiB tensors, each followed by a small live one.'''
    drop, keep = [], []
    for _ in range(300):
        drop.append(torch.ones(512 * 1024))
        keep.append(torch.ones(16))
    before = resident_mib()
    del drop
    gc.collect()
    return resident_mib() - (before - 600)

with bounded_heap():
    inside = churn()
outside = churn()  # afterwards: glibc's 32 MiB threshold, the heap keeps freed blocks
print(json.dumps({"inside": inside, "outside": outside}))
"""


def test_a_training_step_gives_freed_activations_back_to_the_os() -> None:
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tuning.train_heap import _libc

    if _libc() is None:
        pytest.skip("not glibc: bounded_heap does nothing here")
    out = subprocess.run([sys.executable, "-c", HEAP_CHILD], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    kept = json.loads(out.stdout.strip().splitlines()[-1])
    assert kept["inside"] < 60, kept  # of 600 MiB freed
    assert kept["outside"] > 300, kept  # what bounded_heap avoids
