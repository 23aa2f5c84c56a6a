"""Builds the generator backend a `GeneratorConfig` names: echo, llama.cpp, transformers, remote."""

from __future__ import annotations

from pathlib import Path

from tuning.config import GeneratorConfig
from tuning.generator import EchoGenerator, Generator


def build_generator(config: GeneratorConfig, cache_dir: Path) -> Generator:
    """The generator `config` names; the packaged GGUF is converted once into `cache_dir`."""
    if config.backend == "echo":
        return EchoGenerator()
    if config.uses_llamacpp:
        from tuning.llamacpp_build import build_llamacpp

        fast = build_llamacpp(config, cache_dir)  # None: 'auto' falls back, the reason logged
        if fast is not None:
            return fast
    from tuning.models import resolve_model_dir

    model_dir, model_id = resolve_model_dir(config.model, cache_dir)
    if config.backend == "openai":
        from tuning.remote import OpenAIGenerator

        return OpenAIGenerator(config, model_dir, model_id)
    from tuning.hf import HFGenerator

    return HFGenerator(model_dir, model_id, config.device, config.max_adapters)
