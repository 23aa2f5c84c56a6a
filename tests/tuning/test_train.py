"""LoRA training: config checks, batches, checkpoints; the real recipe for a few steps (slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tuning.data import Example
from tuning.train import TrainCancelled, TrainError, TrainProgress, train_lora
from tuning.train_config import TrainConfig
from tuning.train_state import Checkpoint, RunState, load_checkpoint, save_checkpoint
from tuning.train_tokens import IGNORE, collate, epoch_batches, loss_sum, step_batches
from tuning.train_tokens import tokenize_example as tokenize

SYSTEM = {"role": "system", "content": "Be brief."}
TOPICS = ["tyres", "chains", "brakes", "lights", "rain", "hills", "locks", "bells"]


def _example(topic: str) -> Example:
    return Example(
        (
            SYSTEM,
            {"role": "user", "content": f"Tips on {topic}?"},
            {"role": "assistant", "content": f"Hey there, rider! Check your {topic}. Ride bright."},
        )
    )


EXAMPLES = [_example(t) for t in TOPICS]
TINY: dict[str, Any] = {"batch_size": 4, "max_length": 40, "early_stopping_patience": None}


def test_config_refuses_contradictions_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="eval_every_steps"):
        TrainConfig(max_steps=5, eval_every_steps=10)
    with pytest.raises(ValidationError, match="twice"):
        TrainConfig(target_modules=("q_proj", "q_proj"))
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(ranks=4)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TrainConfig().rank = 4  # type: ignore[misc]
    assert TrainConfig(rank=4, alpha=8).scaling == 2.0


def test_batches_cover_each_item_once_per_epoch_in_a_seeded_order() -> None:
    epoch0 = [i for batch in epoch_batches(10, 4, seed=0, epoch=0) for i in batch]
    assert sorted(epoch0) == list(range(10))
    assert epoch_batches(10, 4, seed=0, epoch=0) == epoch_batches(10, 4, seed=0, epoch=0)
    assert epoch_batches(10, 4, seed=0, epoch=1) != epoch_batches(10, 4, seed=0, epoch=0)
    # 3 batches per epoch, 2 per step: steps 0, 1 make epoch 0; step 2 starts epoch 1
    steps = [step_batches(10, 4, 2, seed=0, step=s) for s in range(3)]
    assert [len(s) for s in steps] == [2, 1, 2]
    assert steps[0] + steps[1] == epoch_batches(10, 4, 0, 0)
    assert steps[2] == epoch_batches(10, 4, 0, 1)[:2]


def _checkpoint(key: str, step: int, value: float) -> Checkpoint:
    import torch

    weights = {"w": torch.full((2, 3), value)}
    state = RunState(key, step=step, val_curve=[(0, 1.5)], train_curve=[(1, 2.0)])
    return Checkpoint(
        state, weights, weights, {"state": {}, "param_groups": []}, {"cpu": torch.get_rng_state()}
    )


def test_checkpoints_are_found_by_run_key_and_only_when_complete(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "none", "k") is None
    save_checkpoint(tmp_path, _checkpoint("k", 3, 1.0))
    loaded = load_checkpoint(tmp_path, "k")
    assert loaded is not None and loaded.state.step == 3 and loaded.state.val_curve == [(0, 1.5)]
    assert float(loaded.lora["w"][0, 0]) == 1.0
    assert load_checkpoint(tmp_path, "another run") is None
    newer = save_checkpoint(tmp_path, _checkpoint("k", 5, 2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-00000005"]  # older ones dropped
    (newer / "done").unlink()  # as if killed before the marker was written
    assert load_checkpoint(tmp_path, "k") is None


FULL_DISK_CHILD = """
import errno, json, resource, signal, sys
from pathlib import Path
import torch
from tuning.train_state import Checkpoint, RunState, load_checkpoint, save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
work = Path(sys.argv[1])
def ckpt(step, n):
    w = {"w": torch.ones((n,))}
    return Checkpoint(RunState("k", step=step), w, w, {"state": {}, "param_groups": []},
                      {"cpu": torch.get_rng_state()})
save_checkpoint(work, ckpt(1, 4))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))
try:
    save_checkpoint(work, ckpt(2, 1 << 16))  # 256 KiB of weights: past the 64 KiB limit
except OSError as exc:
    kept = load_checkpoint(work, "k")
    print(json.dumps({"errno": exc.errno, "kept": kept.state.step if kept else None,
                      "left": sorted(p.name for p in work.iterdir())}))
"""


@pytest.mark.promise(2)
def test_a_full_disk_during_a_checkpoint_is_an_oserror_and_keeps_the_last_one(
    tmp_path: Path,
) -> None:
    """safetensors reports a full disk as its own error; it reaches callers (and the server's
    507) as OSError, the previous checkpoint stays loadable and no temp folder is left."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"errno": 27, "kept": 1, "left": ["ckpt-00000001"]}, out.stderr


def test_cuda_asked_for_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = TrainConfig(device="cuda")
    with pytest.raises(TrainError, match="no CUDA device"):
        train_lora(tmp_path, EXAMPLES, EXAMPLES, config, tmp_path / "out", tmp_path / "work")


@pytest.fixture(scope="session")
def model_dir(packaged_model_dir: Path) -> Path:
    """The packaged SmolLM2, converted once for the whole test session (tests/conftest.py)."""
    return packaged_model_dir


@pytest.fixture(scope="session")
def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


@pytest.mark.slow
def test_loss_mask_covers_exactly_the_assistant_answers(tokenizer: Any) -> None:
    turns = [
        SYSTEM,
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "A1 x"},
        {"role": "user", "content": "More?"},
        {"role": "assistant", "content": "A2 y"},
    ]
    item = tokenize(tokenizer, Example(tuple(turns)), max_length=512)
    assert not item.truncated and len(item.labels) == len(item.input_ids)
    answer = [t for t in item.labels if t != IGNORE]
    assert tokenizer.decode(answer) == "A1 x<|im_end|>A2 y<|im_end|>"
    prompt = [t for t, label in zip(item.input_ids, item.labels, strict=True) if label == IGNORE]
    assert "Hi?" in tokenizer.decode(prompt) and "A1" not in tokenizer.decode(prompt)
    cut = tokenize(tokenizer, Example(tuple(turns)), max_length=10)
    assert cut.truncated and len(cut.input_ids) == 10 and cut.targets == 0


def _val_loss_of_saved_adapter(model_dir: Path, out: Path, tokenizer: Any) -> tuple[float, Any]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    model = PeftModel.from_pretrained(base, out).eval()
    batch = collate([tokenize(tokenizer, e, 40) for e in EXAMPLES], tokenizer.pad_token_id, "cpu")
    with torch.inference_mode():
        return float(loss_sum(model, batch)) / batch.targets, model


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_and_save_only_safetensors(
    model_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    config = TrainConfig(learning_rate=2e-3, max_steps=6, eval_every_steps=3, **TINY)
    seen: list[TrainProgress] = []
    out = tmp_path / "adapter"
    result = train_lora(
        model_dir, EXAMPLES, EXAMPLES, config, out, tmp_path / "work", progress=seen.append
    )
    assert result.best_val_loss < result.initial_val_loss - 0.5
    assert result.train_curve[-1][1] < result.train_curve[0][1]
    assert [s for s, _ in result.val_curve] == [0, 3, 6] and result.steps == 6
    assert [p.step for p in seen] == list(range(7)) and seen[-1].tokens_per_s > 0
    assert result.train_tokens > 0 and result.peak_memory_mb > 100
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert not list(tmp_path.rglob("*.bin"))
    loaded_loss, _ = _val_loss_of_saved_adapter(model_dir, out, tokenizer)
    assert loaded_loss == pytest.approx(result.best_val_loss, rel=1e-4)  # the best one was saved


def _lora_weights(out: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(out / "adapter_model.safetensors")


@pytest.mark.slow
def test_cancel_then_resume_equals_an_uninterrupted_run(model_dir: Path, tmp_path: Path) -> None:
    import torch

    config = TrainConfig(
        max_steps=6,
        eval_every_steps=3,
        checkpoint_every_steps=2,
        learning_rate=1e-3,
        dropout=0.1,
        **TINY,
    )
    whole = train_lora(
        model_dir, EXAMPLES[:6], EXAMPLES[6:], config, tmp_path / "a", tmp_path / "work-a"
    )
    calls = iter([False, False, False, True])
    with pytest.raises(TrainCancelled) as cancelled:
        train_lora(
            model_dir,
            EXAMPLES[:6],
            EXAMPLES[6:],
            config,
            tmp_path / "b",
            tmp_path / "work-b",
            should_stop=lambda: next(calls),
        )
    assert cancelled.value.step == 4 and (cancelled.value.checkpoint / "done").is_file()
    assert not (tmp_path / "b").exists()
    steps: list[int] = []
    resumed = train_lora(
        model_dir,
        EXAMPLES[:6],
        EXAMPLES[6:],
        config,
        tmp_path / "b",
        tmp_path / "work-b",
        progress=lambda p: steps.append(p.step),
    )
    assert steps == [5, 6]  # continued, not restarted
    for field in ("train_curve", "val_curve"):
        got, want = getattr(resumed, field), getattr(whole, field)
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5)
    a, b = _lora_weights(tmp_path / "a"), _lora_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(float(a[k].abs().max()) > 0 for k in a if "lora_B" in k)  # it did train


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint(model_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        learning_rate=0.5,
        max_steps=10,
        eval_every_steps=1,
        batch_size=4,
        max_length=40,
        early_stopping_patience=2,
    )
    out = tmp_path / "adapter"
    result = train_lora(model_dir, EXAMPLES[:6], EXAMPLES[6:], config, out, tmp_path / "work")
    assert result.stopped_early and result.steps == 2 and len(result.val_curve) == 3
    assert all(loss > result.initial_val_loss for _, loss in result.val_curve[1:])
    assert result.best_step == 0 and result.best_val_loss == result.initial_val_loss
    weights = _lora_weights(out)  # the adapter of step 0: LoRA B starts at zero
    assert all(float(w.abs().max()) == 0 for k, w in weights.items() if "lora_B" in k)
