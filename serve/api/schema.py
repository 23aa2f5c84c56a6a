"""Wire models shared by the routes: clean text, and the OpenAI chat-completions schema."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

# C0 controls except tab, newline, carriage return; DEL; bidi overrides and isolates.
_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def clean_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text holds a lone surrogate (invalid Unicode)") from None
    bad = _UNSAFE.search(value)
    if bad:
        raise ValueError(f"text holds the control character U+{ord(bad.group()):04X}")
    return value


CleanStr = Annotated[str, AfterValidator(clean_text)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: CleanStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="'developer' is read as 'system' (newer OpenAI clients send it)."
    )
    content: CleanStr | list[TextPart] | None = None

    def as_message(self) -> dict[str, str]:
        role = "system" if self.role == "developer" else self.role
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        return {"role": role, "content": content or ""}


class FiltersBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_ids: list[CleanStr] | None = Field(None, max_length=1000)
    source: CleanStr | None = Field(None, max_length=500, description="Glob over source paths.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI request; fields it does not use are accepted and ignored, like OpenAI's own."""

    model_config = ConfigDict(extra="ignore")

    model: CleanStr = Field(max_length=200, description="base, rag, tuned:<a>[@v], rag+tuned:<a>")
    messages: list[ChatMessage] = Field(max_length=200)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int | None = Field(None, ge=1, le=1, description="Only one choice is generated.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: CleanStr | list[CleanStr] | None = None
    top_k: int | None = Field(None, ge=1, description="ragtune: sources to retrieve.")
    filters: FiltersBody | None = Field(None, description="ragtune: restrict retrieval.")

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s]
