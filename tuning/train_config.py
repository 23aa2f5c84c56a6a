"""Configuration of a LoRA training run (defaults: SmolLM2-135M-Instruct on 2 CPU cores)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Every linear projection of a Llama block. Tone lives in how the answer is phrased, which the MLP
# projections carry as much as attention does; LoRA on all linear layers learns it in fewer steps
# than q/v alone (the QLoRA finding), and at rank 8 the extra adapters cost about 2-3% of the
# FLOPs of the frozen projections (the backward pass through every layer is paid either way), so
# a step costs little more: timings of both on this shared 2-core machine were within its noise.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    """Hyperparameters of one LoRA run; part of the run key, so a changed field starts afresh."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int = Field(8, ge=1, le=256, description="LoRA rank r of every adapted projection.")
    alpha: int = Field(
        16, ge=1, le=4096, description="LoRA alpha; the update is scaled by alpha / rank."
    )
    dropout: float = Field(
        0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input during training."
    )
    target_modules: tuple[str, ...] = Field(
        LLAMA_PROJECTIONS,
        description="Names of the linear modules that get adapters (Llama-style names).",
    )
    learning_rate: float = Field(
        5e-4,
        gt=0,
        le=1.0,
        description="AdamW learning rate (constant, no warm-up). LoRA on a 135M model takes a "
        "higher rate than full fine-tuning: on brand_voice.jsonl, 10 steps at 5e-4 take the "
        "validation loss from 4.31 to 2.67 nats/token.",
    )
    weight_decay: float = Field(
        0.0, ge=0.0, le=1.0, description="AdamW weight decay on LoRA weights."
    )
    max_grad_norm: float | None = Field(
        1.0, gt=0, le=1000, description="Clip the gradient norm to this; None: no clipping."
    )
    epochs: int = Field(2, ge=1, le=1000, description="Passes over the training split.")
    max_steps: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Optimizer steps to run; when set it overrides epochs.",
    )
    batch_size: int = Field(
        8,
        ge=1,
        le=1024,
        description="Examples per batch; an optimizer step takes grad_accum batches. The "
        "forward passes that compute a step are set by micro_batch_tokens, not by this.",
    )
    grad_accum: int = Field(
        1, ge=1, le=1024, description="Batches whose gradients make one optimizer step."
    )
    micro_batch_tokens: int = Field(
        512,
        ge=8,
        le=1_048_576,
        description="Padded tokens per forward pass: a step's examples, shortest first, are "
        "split into passes of at most this many (a longer example is a pass alone) and their "
        "gradients summed, so the step is the same at any value. Bounds memory: a pass keeps "
        "about 1.6 MB of activations per token on SmolLM2-135M (make tune: 2 GB peak RSS).",
    )
    max_length: int = Field(
        512,
        ge=8,
        le=32768,
        description="Tokens per example; longer examples are cut at the end (counted, warned). "
        "512 holds every shipped example (the longest with-context one is about 400).",
    )
    val_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of the examples held out for validation."
    )
    eval_every_steps: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Validate every this many steps; None: at the end of each epoch.",
    )
    early_stopping_patience: int | None = Field(
        2,
        ge=1,
        le=1000,
        description="Stop after this many validations in a row without a better loss; "
        "None: never stop early.",
    )
    checkpoint_every_steps: int = Field(
        25,
        ge=1,
        le=1_000_000,
        description="Save a resumable checkpoint this often (and at every validation).",
    )
    distractors: int = Field(
        3,
        ge=0,
        le=16,
        description="With-context examples (a sources block in the user turn) also train in a "
        "variant with 1 to this many other passages mixed in and citations renumbered, as "
        "retrieval serves several passages; 0: off.",
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seeds LoRA init, dropout and the batch order."
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="torch device; 'auto' picks cuda when present, else cpu."
    )

    @field_validator("target_modules")
    @classmethod
    def _modules_named_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not name.strip() for name in value):
            raise ValueError("target_modules needs at least one non-empty module name")
        if len(set(value)) != len(value):
            raise ValueError(f"target_modules names a module twice: {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        every, steps = self.eval_every_steps, self.max_steps
        if every is not None and steps is not None and every > steps:
            raise ValueError(
                f"eval_every_steps ({every}) is more than max_steps ({steps}): "
                "validation would only run once, at the end"
            )
        return self

    @property
    def scaling(self) -> float:
        """The factor LoRA applies to B @ A (alpha / rank)."""
        return self.alpha / self.rank
