"""Dropout on LoRA inputs that keeps a 1-byte mask for backward instead of a float32 copy.

Imports torch at the top: import this module lazily, as tuning.train_run does.
"""

from __future__ import annotations

from typing import Any

import torch


class _MaskedScale(torch.autograd.Function):
    """x * mask * scale, saving only the bool mask for backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return x * mask * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask * ctx.scale, None, None


class LeanDropout(torch.nn.Module):
    """nn.Dropout(p) in effect (inverted scaling, identity in eval mode), lighter in memory.

    torch's CPU dropout multiplies by a float32 noise tensor and keeps it for backward: on every
    LoRA projection a full copy of its input, about a fifth of a training pass's activations on
    SmolLM2. This keeps a bool mask, a quarter of that size. The masks come from the same
    generator, though not the same numbers as nn.Dropout would draw.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be within [0, 1), not {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x, dtype=torch.bool).bernoulli_(1.0 - self.p)
        out: torch.Tensor = _MaskedScale.apply(x, keep, 1.0 / (1.0 - self.p))  # type: ignore[no-untyped-call]
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_lean_dropout(model: torch.nn.Module) -> int:
    """Swap every LoRA layer's nn.Dropout for a LeanDropout of the same p; returns how many."""
    swapped = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, torch.nn.ModuleDict):
            continue
        for key, drop in list(drops.items()):
            if isinstance(drop, torch.nn.Dropout) and drop.p > 0:
                drops[key] = LeanDropout(drop.p)
                swapped += 1
    return swapped
