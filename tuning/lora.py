"""Attach registry adapters to a loaded base model, reading only safetensors and plain JSON.

peft's own `from_pretrained` would honour whatever `adapter_config.json` says (another base
model, a hub revision, whole replaced modules) and falls back to pickled weights; here the
config is rebuilt from an allow-list of LoRA fields and the weights come from safetensors.
"""

from __future__ import annotations

import json
from typing import Any

from tuning.adapters import CONFIG, WEIGHTS, Adapter, UnsafeAdapterError

# The fields that shape LoRA deltas; everything else in a saved config is ignored, except the
# few below that would change the model beyond LoRA deltas, which are refused when set.
# (`auto_mapping`, which peft writes for every adapter saved without a task_type, only tells
# AutoPeftModel which class to build; it is never read here, so it is ignored, not refused.)
_LORA_FIELDS = (
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "exclude_modules",
    "bias",
    "fan_in_fan_out",
    "use_rslora",
    "layers_to_transform",
    "layers_pattern",
    "rank_pattern",
    "alpha_pattern",
    "lora_bias",
)
_REFUSED = ("modules_to_save", "layer_replication", "trainable_token_indices")


def lora_config(adapter: Adapter) -> Any:
    from peft import LoraConfig

    raw = json.loads((adapter.path / CONFIG).read_text("utf-8"))
    refused = [key for key in _REFUSED if raw.get(key)]
    if refused:
        raise UnsafeAdapterError(
            f"{adapter.ref}: {CONFIG} sets {', '.join(refused)}, which replace base-model "
            "modules; only LoRA deltas are served"
        )
    if raw.get("use_dora"):
        raise UnsafeAdapterError(f"{adapter.ref}: DoRA adapters are not supported")
    fields = {key: raw[key] for key in _LORA_FIELDS if raw.get(key) is not None}
    return LoraConfig(task_type="CAUSAL_LM", inference_mode=True, **fields)


def attach(model: Any, key: str, adapter: Adapter) -> Any:
    """Load `adapter` into `model` as adapter `key`; returns the (possibly newly wrapped) model."""
    from peft import PeftModel, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = lora_config(adapter)
    weights = load_file(adapter.path / WEIGHTS, device="cpu")
    if isinstance(model, PeftModel):
        model.add_adapter(key, config)
    else:
        model = get_peft_model(model, config, adapter_name=key)
    result: Any = set_peft_model_state_dict(model, weights, adapter_name=key)
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    missing = [k for k in result.missing_keys if "lora_" in k and f".{key}." in k]
    if unexpected or missing:
        model.delete_adapter(key)
        raise UnsafeAdapterError(
            f"{adapter.ref}: weights do not fit its config ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors)"
        )
    model.eval()
    return model
