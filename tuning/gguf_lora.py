"""Export a registry LoRA adapter (peft safetensors) to a llama.cpp GGUF LoRA file, cached."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.atomic import fsync_dir
from tuning.adapters import CONFIG, WEIGHTS, Adapter, AdapterError, UnsafeAdapterError

EXPORT_FORMAT = 1  # bump when the written file changes: old cache entries are then ignored
# peft module name -> llama.cpp tensor name (a Llama-architecture block).
MODULES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
_KEY = re.compile(
    r"base_model\.model\.model\.layers\.([0-9]+)\.(?:self_attn|mlp)\.([a-z_]+)\.lora_([AB])\.weight"
)
# Config fields this export cannot represent: refused with the field's name.
_UNSUPPORTED = ("modules_to_save", "layer_replication", "trainable_token_indices", "use_dora",
                "alpha_pattern", "fan_in_fan_out", "lora_bias")  # fmt: skip


class AdapterExportError(AdapterError):
    """The adapter holds something a GGUF LoRA file cannot carry."""


@dataclass(frozen=True)
class BaseModel:
    """What the export needs to know of the GGUF base model."""

    path: Path
    architecture: str
    n_head: int
    n_head_kv: int
    n_layer: int

    @property
    def key(self) -> str:
        stat = self.path.stat()
        return f"{self.path.name}:{stat.st_size}:{self.n_head}:{self.n_head_kv}:{self.n_layer}"


def base_model_of(path: Path, metadata: Mapping[str, Any]) -> BaseModel:
    """Head counts and architecture from the GGUF's metadata (key -> value)."""

    def field(key: str) -> Any:
        if key not in metadata:
            raise AdapterExportError(f"{path.name} has no {key} field")
        return metadata[key]

    arch = str(field("general.architecture"))
    n_head = int(field(f"{arch}.attention.head_count"))
    n_head_kv = int(field(f"{arch}.attention.head_count_kv"))
    return BaseModel(path, arch, n_head, n_head_kv, int(field(f"{arch}.block_count")))


def read_base_model(path: Path) -> BaseModel:
    """`base_model_of` from the GGUF header read with the gguf package (about 3 s: it parses
    the whole vocabulary; a loaded llama.cpp model has the same metadata at hand)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return base_model_of(path, {key: f.contents() for key, f in reader.fields.items()})


def rope_order(rows: Any, n_head: int) -> Any:
    """Reorder the output rows of a q/k projection from transformers' layout to llama.cpp's.

    transformers rotates each head's vector as two halves ([x0..x(d/2-1), y0..y(d/2-1)]);
    llama.cpp's GGUF stores the same rows as interleaved pairs ([x0, y0, x1, y1, ...]), and the
    GGUF loader of transformers undoes that on load. LoRA's B (out x r) is in transformers'
    layout, so its rows must be put in the GGUF's order, or q and k come out scrambled.
    """
    out, rank = rows.shape
    half = out // n_head // 2
    # (head, which half, i, r) -> (head, i, which half, r): pair i's two members side by side
    return rows.reshape(n_head, 2, half, rank).transpose(0, 2, 1, 3).reshape(out, rank)


def read_lora_config(adapter: Adapter) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((adapter.path / CONFIG).read_text("utf-8"))
    refused = [key for key in _UNSUPPORTED if raw.get(key)]
    if refused:
        raise AdapterExportError(
            f"{adapter.ref}: {CONFIG} sets {', '.join(refused)}, which the llama.cpp backend "
            "cannot serve (use the 'hf' generator backend for it)"
        )
    if raw.get("bias", "none") != "none":
        raise UnsafeAdapterError(f"{adapter.ref}: LoRA bias terms are not supported")
    return raw


def lora_tensors(adapter: Adapter, base: BaseModel) -> tuple[dict[str, Any], float]:
    """(GGUF tensor name -> float32 array, adapter.lora.alpha) for `adapter` on `base`."""
    import numpy as np
    from safetensors.numpy import load_file

    config = read_lora_config(adapter)
    alpha = float(config.get("lora_alpha", 8))
    if not alpha > 0:
        raise AdapterExportError(f"{adapter.ref}: lora_alpha must be positive, not {alpha}")
    weights = load_file(str(adapter.path / WEIGHTS))
    out: dict[str, Any] = {}
    for key, value in weights.items():
        match = _KEY.fullmatch(key)
        if match is None or match.group(2) not in MODULES:
            raise AdapterExportError(f"{adapter.ref}: tensor {key} has no llama.cpp counterpart")
        layer, module, side = int(match.group(1)), match.group(2), match.group(3)
        if layer >= base.n_layer:
            raise AdapterExportError(f"{adapter.ref}: {key} names layer {layer} of {base.n_layer}")
        name = f"blk.{layer}.{MODULES[module]}.weight.lora_{side.lower()}"
        array = np.ascontiguousarray(value, dtype=np.float32)
        if side == "B":
            rank = array.shape[1]
            if module in ("q_proj", "k_proj"):
                array = rope_order(array, base.n_head if module == "q_proj" else base.n_head_kv)
            # llama.cpp scales B @ A by alpha / rank; peft by its own factor (rsLoRA: alpha /
            # sqrt(rank)): fold the difference into B (a factor of 1 for a plain adapter).
            # (The rank is the tensor's own, so a rank_pattern needs nothing more.)
            wanted = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
            array = np.ascontiguousarray(array * np.float32(wanted * rank / alpha))
        out[name] = array
    pairs = {n.rsplit(".", 1)[0] for n in out}
    unpaired = [p for p in pairs if f"{p}.lora_a" not in out or f"{p}.lora_b" not in out]
    if unpaired or not out:
        raise AdapterExportError(f"{adapter.ref}: LoRA A/B tensors do not pair up ({unpaired})")
    return out, alpha


def export_key(adapter: Adapter, base: BaseModel) -> str:
    """Names one export: the adapter's weights checksum, its config bytes, the base, the format."""
    digest = hashlib.sha256()
    for part in (
        str(adapter.manifest.get("weights_sha256")),
        (adapter.path / CONFIG).read_text("utf-8"),
        base.key,
        str(EXPORT_FORMAT),
    ):
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()[:32]


@contextlib.contextmanager
def gguf_writer(target: Path, arch: str) -> Iterator[Any]:
    """A GGUFWriter on a temp file beside `target`: on a clean exit the file is written,
    fsynced and renamed to `target` (atomic); on an error it is removed."""
    from gguf import GGUFWriter

    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=".gguf",
                                    dir=target.parent)  # fmt: skip
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = GGUFWriter(tmp, arch=arch)
        yield writer
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


def write_gguf_lora(tensors: dict[str, Any], alpha: float, arch: str, target: Path) -> None:
    """Write the GGUF adapter file atomically: a temp file beside `target`, fsynced, renamed."""
    from gguf import GGUFType, Keys

    with gguf_writer(target, arch) as writer:
        writer.add_type(GGUFType.ADAPTER)
        writer.add_string(Keys.Adapter.TYPE, "lora")
        writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
        for name in sorted(tensors):
            writer.add_tensor(name, tensors[name])


def export_adapter(adapter: Adapter, base: BaseModel, cache_dir: Path) -> Path:
    """The adapter as a GGUF LoRA file under `cache_dir`, written on first use (the caller has
    verified the adapter's checksum and base model); later calls find the same file."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{adapter.name}-v{adapter.version}-{export_key(adapter, base)}.gguf"
    if target.is_file():
        return target
    tensors, alpha = lora_tensors(adapter, base)
    write_gguf_lora(tensors, alpha, base.architecture, target)
    return target
