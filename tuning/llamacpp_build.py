"""Choosing llama.cpp for a generator config: build it, or say in one line why hf serves instead."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tuning.config import PACKAGED_GENERATOR, GeneratorConfig
from tuning.generator import Generator, GeneratorError

log = logging.getLogger(__name__)
LORA_CACHE = "gguf-lora"  # exported adapters, under the model cache folder
Q8_CACHE = "gguf-q8_0"  # the base model re-laid as Q8_0 (generator.weights)


def gguf_and_tokenizer(model: str, cache_dir: Path) -> tuple[Path, Any, str]:
    """(GGUF file, its transformers tokenizer, model id). The packaged model's tokenizer comes
    from its converted folder (converted once, as the hf backend and training use it)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if model == PACKAGED_GENERATOR:
        from tuning.models import packaged_gguf, resolve_model_dir

        folder, model_id = resolve_model_dir(model, cache_dir)
        # The folder holds tokenizer.json: the fast tokenizer class reads it directly, where
        # AutoTokenizer would first load the model's config and, with it, transformers' model
        # code (2 s of a server's start). Same ids, same text (tests/tuning/test_llamacpp.py).
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
        return packaged_gguf(), tokenizer, model_id
    gguf = Path(model).expanduser()
    if not gguf.is_file():
        raise GeneratorError(f"no GGUF file at {gguf}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return gguf, tokenizer, gguf.stem


def finer_weights(gguf: Path, cache_dir: Path) -> Path:
    """`gguf` re-laid as Q8_0 (`generator.weights`), converted once into the model cache; the
    file as given, with one warning line, when that cannot be written."""
    from tuning.gguf_merge import relaid_q8

    try:
        return relaid_q8(gguf, cache_dir / Q8_CACHE)
    except (OSError, ValueError) as exc:  # disk full, read-only cache, a malformed tensor
        log.warning("generator: cannot re-lay %s as Q8_0 (%s); serving it as given", gguf, exc)
        return gguf


def build_llamacpp(config: GeneratorConfig, cache_dir: Path) -> Generator | None:
    """The llama.cpp generator for `config`; with backend 'auto', None (and one warning line)
    when llama-cpp-python is missing or broken, so that the caller builds the hf backend."""
    from tuning.llamacpp import LlamaCppGenerator, LlamaCppUnavailableError, import_llama_cpp

    try:
        import_llama_cpp()  # before the tokenizer: a missing backend costs nothing
        started = time.monotonic()
        gguf, tokenizer, model_id = gguf_and_tokenizer(config.model, cache_dir)
        if config.weights == "q8_0":
            gguf = finer_weights(gguf, cache_dir)
        generator = LlamaCppGenerator(
            gguf, tokenizer, model_id, cache_dir / LORA_CACHE,
            max_adapters=config.max_adapters, n_threads=config.threads,
            lora_mode=config.lora_mode, max_merged=config.max_merged,
            flash_attention=config.flash_attention,
        )  # fmt: skip
    except (LlamaCppUnavailableError, GeneratorError) as exc:
        if config.backend == "llamacpp":
            raise
        unavailable = isinstance(exc, LlamaCppUnavailableError)
        log.warning(
            "generator: %s; using the transformers backend instead%s",
            exc,
            " (`make setup` builds llama-cpp-python)" if unavailable else "",
        )
        return None
    log.info(
        "generator: llama.cpp on %s, %d threads, loaded in %.1f s",
        gguf.name,
        generator.threads,
        time.monotonic() - started,
    )
    return generator
