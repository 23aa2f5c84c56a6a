"""Merge a registry LoRA adapter into a copy of the GGUF base model (decodes at the bare speed)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tuning.adapters import Adapter
from tuning.gguf_lora import (
    AdapterExportError,
    BaseModel,
    export_key,
    gguf_writer,
    lora_tensors,
)

MERGE_FORMAT = 2  # bump when the written file changes: old cache entries are then ignored
MERGE_COUNT = [0]  # merges written by this process (tests check that a cached file is reused)


def merged_key(adapter: Adapter, base: BaseModel) -> str:
    """The export's key (weights, config, base model) and the merge format."""
    digest = hashlib.sha256(f"{export_key(adapter, base)}:merged:{MERGE_FORMAT}".encode())
    return digest.hexdigest()[:32]


def merged_weight(tensor: Any, lora_a: Any, lora_b: Any, alpha: float) -> tuple[Any, Any]:
    """(the tensor's new data, its type): dequantised, plus alpha / rank * B @ A, requantised.

    A float or Q8_0 tensor keeps its type; a 4/5-bit one (the packaged Q4_1) becomes Q8_0: a
    trained adapter's delta is far below a Q4_1 step (1/15 of a block's range), and rounding
    back to Q4_1 loses most of it (measured: greedy answers neither the adapter's nor the
    base's). Q8_0's step is 17x finer; F16 where a row is not a multiple of 32.
    """
    import numpy as np
    from gguf.quants import dequantize, quantize

    weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)  # (out, in)
    # lora_b's rows are already in llama.cpp's rope order and carry peft's scale (gguf_lora)
    delta = (lora_b @ lora_a) * np.float32(alpha / lora_a.shape[0])
    if delta.shape != weight.shape:
        raise AdapterExportError(
            f"LoRA delta {delta.shape} does not fit {tensor.name} {weight.shape}"
        )
    qtype = finer_type(tensor.tensor_type, weight.shape[-1])
    return quantize(weight + delta, qtype), qtype


def finer_type(qtype: Any, row: int) -> Any:
    """`qtype` where it is float or Q8_0; for a 4/5-bit type, Q8_0 (F16 where a row of `row`
    values is not a whole number of Q8_0's 32-value blocks)."""
    from gguf import GGMLQuantizationType as T

    if qtype in (T.F32, T.F16, T.BF16, T.Q8_0):
        return qtype
    return T.Q8_0 if row % 32 == 0 else T.F16


def write_merged(
    source: Path, tensors: dict[str, Any], alpha: float, target: Path, *, finer: bool = False
) -> None:
    """Copy `source`'s metadata and tensors into `target` atomically, the LoRA targets merged;
    with `finer`, every other 4/5-bit tensor re-laid in `finer_type` too."""
    from gguf import GGUFReader, GGUFValueType
    from gguf.quants import dequantize, quantize

    reader = GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    with gguf_writer(target, arch) as writer:
        for name, field in reader.fields.items():
            if name == "general.architecture" or name.startswith("GGUF."):
                continue  # the writer writes these itself
            kind = field.types[0]
            sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), kind, sub_type=sub)
        used = set()
        for tensor in reader.tensors:
            data, qtype = tensor.data, tensor.tensor_type
            if f"{tensor.name}.lora_a" in tensors:
                used.add(tensor.name)
                a, b = tensors[f"{tensor.name}.lora_a"], tensors[f"{tensor.name}.lora_b"]
                data, qtype = merged_weight(tensor, a, b, alpha)
            elif finer and (finer_qtype := finer_type(qtype, int(tensor.shape[0]))) != qtype:
                weight = dequantize(data, qtype)
                data, qtype = quantize(weight, finer_qtype), finer_qtype
            writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=qtype)
        missing = {n.rsplit(".", 1)[0] for n in tensors} - used
        if missing:
            raise AdapterExportError(f"the base model has no tensor {sorted(missing)[0]}")


def relaid_q8(source: Path, cache_dir: Path) -> Path:
    """`source` with its 4/5-bit tensors as Q8_0 (`finer_type`): a GGUF under `cache_dir`,
    written once (atomically) and reused; `source` itself when it holds none (remembered by an
    empty marker file, as reading a GGUF's tensor table takes seconds). Each value of a Q4_1
    block lands within about half a Q8_0 step (the step, 1/127 of the block's largest value,
    is stored as float16) of itself."""
    stat = source.stat()
    key = hashlib.sha256(f"{source.name}:{stat.st_size}:q8_0:{MERGE_FORMAT}".encode())
    target = cache_dir / f"{source.stem}-q8_0-{key.hexdigest()[:16]}.gguf"
    as_is = target.with_suffix(".as-is")
    if target.is_file():
        return target
    if as_is.is_file():
        return source
    from gguf import GGUFReader

    tensors = GGUFReader(source).tensors
    cache_dir.mkdir(parents=True, exist_ok=True)
    if all(finer_type(t.tensor_type, int(t.shape[0])) == t.tensor_type for t in tensors):
        as_is.touch()
        return source
    write_merged(source, {}, 0.0, target, finer=True)
    return target


def merge_adapter(adapter: Adapter, base: BaseModel, cache_dir: Path) -> Path:
    """The base model with `adapter` merged in, a GGUF under `cache_dir`, written on first use
    (the caller has verified the adapter); a failed merge names the adapter and leaves no file."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = (
        cache_dir / f"{adapter.name}-v{adapter.version}-merged-{merged_key(adapter, base)}.gguf"
    )
    if target.is_file():
        return target
    try:
        tensors, alpha = lora_tensors(adapter, base)
        write_merged(base.path, tensors, alpha, target)
    except AdapterExportError as exc:
        raise AdapterExportError(
            f"{adapter.ref}: cannot merge into {base.path.name}: {exc}"
        ) from exc
    except (OSError, ValueError) as exc:  # disk full, a malformed tensor
        raise AdapterExportError(
            f"{adapter.ref}: merging into {base.path.name} failed ({type(exc).__name__}: {exc})"
        ) from exc
    MERGE_COUNT[0] += 1
    return target
