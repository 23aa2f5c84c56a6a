"""Child process of the crasher: one real operation, which SIGKILLs itself at a named point.

    python -m tests.reliability.crasher_shim POINT cli ARGS...          # `ragtune ARGS...`
    python -m tests.reliability.crasher_shim POINT publish ROOT NAME SEED

POINT is `-` (run to the end); a fault point of the index commit (`rows_written`,
`vectors_written`, `before_commit`, `committed`) or of an adapter publish (`files_synced`,
`manifest_written`, `renamed`, `published`); or `tmp:GLOB`, which dies inside the atomic write
of a file named like GLOB, between writing its temp file and the rename, leaving the temp file
behind. `POINT@N` waits for the N-th time the point is reached.
Prints `ready` just before the operation starts (the parent times random kills from there).
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

NAME = "crash"  # the adapter the crasher publishes and promotes


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    """Arrange for this process to SIGKILL itself when it reaches `point`."""
    name, _, nth = point.partition("@")
    remaining = [int(nth or 1)]

    def reached(where: str) -> None:
        if where == name:
            remaining[0] -= 1
            if remaining[0] == 0:
                die()

    if name.startswith("tmp:"):
        _die_before_rename(name.removeprefix("tmp:"), reached)
        return
    from retrieval.writer import IndexWriter
    from tuning.adapters import AdapterRegistry

    for cls in (IndexWriter, AdapterRegistry):
        _chain_fault_hook(cls, reached)


def _die_before_rename(pattern: str, reached: Callable[[str], None]) -> None:
    """Stop an atomic write of a file named like `pattern` after its temp file is written and
    fsynced, before the rename: the temp file (named as the real code names it) is left."""
    real = Path.replace

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        if self.name.startswith(".tmp-") and fnmatch.fnmatch(Path(target).name, pattern):
            reached(f"tmp:{pattern}")
        return real(self, target)

    Path.replace = replace  # type: ignore[method-assign,assignment]


def _chain_fault_hook(cls: Any, reached: Callable[[str], None]) -> None:
    """Wrap `cls.__init__(self, first, fault_hook=None)` so every instance reports its points."""
    real = cls.__init__

    def init(self: Any, first: Any, fault_hook: Callable[[str], None] | None = None) -> None:
        def hook(where: str) -> None:
            reached(where)
            if fault_hook is not None:
                fault_hook(where)

        real(self, first, hook)

    cls.__init__ = init


def adapter_tensors(seed: int) -> dict[str, Any]:
    """A tiny random LoRA state dict (q_proj and v_proj of one layer, rank 4)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    prefix = "base_model.model.model.layers.0.self_attn"
    return {
        f"{prefix}.{m}.lora_{ab}.weight": rng.standard_normal(shape, dtype=np.float32)
        for m in ("q_proj", "v_proj")
        for ab, shape in (("A", (4, 8)), ("B", (8, 4)))
    }


def write_adapter(folder: Path, seed: int) -> None:
    from safetensors.numpy import save_file

    from tuning.adapters import CONFIG, WEIGHTS

    save_file(adapter_tensors(seed), str(folder / WEIGHTS))
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    (folder / CONFIG).write_text(json.dumps(config), "utf-8")


def publish(root: Path, name: str, seed: int) -> None:
    from tuning.adapters import AdapterRegistry

    registry = AdapterRegistry(root)
    staged = registry.staging_dir(name)
    write_adapter(staged, seed)
    registry.publish(name, staged, {"base_model_id": "echo", "seed": seed})


def main(argv: list[str]) -> int:
    point, kind, *rest = argv
    if point != "-":
        install(point)
    if kind == "cli":
        from serve import cli

        cli._quiet_libraries()  # its imports take a second: before `ready`, not in the window
        print("ready", flush=True)
        return cli.main(rest)
    print("ready", flush=True)
    if kind == "publish":
        publish(Path(rest[0]), rest[1], int(rest[2]))
        return 0
    raise SystemExit(f"unknown operation {kind!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
