"""A BERT sentence encoder in plain torch, for sentence-transformers models of the plain layout.

Why not transformers: loading all-MiniLM-L6-v2 through sentence-transformers imports scikit-learn,
SciPy and most of transformers (`modeling_utils` pulls in torch.distributed, dynamo and the
generation stack): 3.7 s of a 5.5 s server start on 2 cores, for a six-layer encoder whose
forward pass is a few matrix products. This module needs torch, `tokenizers` and `safetensors`
only (1.2 s) and gives the same vectors: `tests/retrieval/test_bert.py` compares it with
sentence-transformers on the real model. Anything it does not recognise (another architecture,
activation or layout) is left to sentence-transformers by `plain_layout` returning None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


def plain_layout(path: Path) -> tuple[str, int] | None:
    """(pooling, 'mean' or 'cls'; max tokens) when the sentence-transformers model at `path` is
    a BERT encoder (absolute positions, exact GELU, weights in model.safetensors, a fast
    tokenizer.json) followed by mean or CLS pooling and nothing else but normalisation."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        types = [m["type"] for m in modules]
        pooling = json.loads((path / modules[1]["path"] / "config.json").read_text())
        st_config = json.loads((path / "sentence_bert_config.json").read_text())
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    if types[:2] != [_TRANSFORMER, _POOLING] or types[2:] not in ([], [_NORMALIZE]):
        return None
    if modules[0].get("path", "") != "" or st_config.get("do_lower_case"):
        return None
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if len(modes) != 1 or modes[0] not in _POOLING_MODES or not pooling.get("include_prompt", 1):
        return None
    bert = (
        config.get("model_type") == "bert"
        and config.get("hidden_act") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and (path / "model.safetensors").is_file()
        and (path / "tokenizer.json").is_file()
    )
    max_tokens = st_config.get("max_seq_length")
    if not bert or not isinstance(max_tokens, int) or max_tokens < 8:
        return None
    return _POOLING_MODES[modes[0]], min(max_tokens, int(config["max_position_embeddings"]))


class BertEncoder:
    """Token ids -> BERT's last hidden states -> mean (or CLS) pooling -> unit vectors."""

    def __init__(self, path: Path, device: str, pooling: str, max_tokens: int) -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self._torch = torch
        config = json.loads((path / "config.json").read_text())
        self.dim = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.pooling = pooling
        self.device = device
        self.max_seq_length = max_tokens
        raw = load_file(str(path / "model.safetensors"), device=device)
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in raw else ""
        self.w: dict[str, Any] = {
            k[len(prefix) :]: v.float() for k, v in raw.items() if k.startswith(prefix)
        }
        self._w16: dict[str, tuple[Any, Any]] = {}
        self.tokenizer: Any = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        pad_id = int(config.get("pad_token_id") or 0)
        pad = self.tokenizer.id_to_token(pad_id) or "[PAD]"
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad)

    def _layer_norm(self, x: Any, name: str) -> Any:
        return self._torch.nn.functional.layer_norm(
            x, (self.dim,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps
        )

    def _linear(self, x: Any, name: str) -> Any:
        return self._torch.nn.functional.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def _linear_bf16(self, x: Any, name: str) -> Any:
        weight, bias = self._bf16(name)
        return self._torch.nn.functional.linear(x.bfloat16(), weight, bias).float()

    def _bf16(self, name: str) -> tuple[Any, Any]:
        """bfloat16 copies of a linear layer's weights, made on first use."""
        if name not in self._w16:
            self._w16[name] = (
                self.w[f"{name}.weight"].bfloat16(),
                self.w[f"{name}.bias"].bfloat16(),
            )
        return self._w16[name]

    def forward(self, ids: Any, types: Any, mask: Any, bfloat16: bool = False) -> Any:
        """Last hidden states, (batch, tokens, dim); `bfloat16`: the linear layers multiply in
        bfloat16 (everything else stays float32)."""
        f = self._torch.nn.functional
        linear = self._linear_bf16 if bfloat16 else self._linear
        batch, length = ids.shape
        x = (
            f.embedding(ids, self.w["embeddings.word_embeddings.weight"])
            + self.w["embeddings.position_embeddings.weight"][:length]
            + f.embedding(types, self.w["embeddings.token_type_embeddings.weight"])
        )
        x = self._layer_norm(x, "embeddings.LayerNorm")
        keep = mask.bool()[:, None, None, :]  # attend to real tokens only
        head_dim = self.dim // self.heads
        for i in range(self.layers):
            at = f"encoder.layer.{i}.attention"
            q, k, v = (
                linear(x, f"{at}.self.{n}")
                .view(batch, length, self.heads, head_dim)
                .transpose(1, 2)
                for n in ("query", "key", "value")
            )
            context = f.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            context = context.transpose(1, 2).reshape(batch, length, self.dim)
            x = self._layer_norm(linear(context, f"{at}.output.dense") + x,
                                 f"{at}.output.LayerNorm")  # fmt: skip
            hidden = f.gelu(linear(x, f"encoder.layer.{i}.intermediate.dense"))
            x = self._layer_norm(
                linear(hidden, f"encoder.layer.{i}.output.dense") + x,
                f"encoder.layer.{i}.output.LayerNorm",
            )
        return x

    def encode(
        self, texts: list[str], batch_size: int, bfloat16: bool = False
    ) -> npt.NDArray[np.float32]:
        """Unit vectors of `texts`, batched longest first as sentence-transformers batches (the
        same padding, so the same numbers); `bfloat16`: see `forward`."""
        torch = self._torch
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                encodings = self.tokenizer.encode_batch([texts[i].strip() for i in rows])
                ids, types, mask = (
                    torch.tensor([getattr(e, name) for e in encodings], device=self.device)
                    for name in ("ids", "type_ids", "attention_mask")
                )
                hidden = self.forward(ids, types, mask, bfloat16)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    weights = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.cpu().numpy()
        return out
