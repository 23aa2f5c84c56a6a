"""Wire models shared by the routes: clean text, and the OpenAI chat-completions schema."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from serve.settings import Settings

# C0 controls except tab, newline, carriage return; DEL and the C1 controls (U+009B is a
# terminal's CSI); bidi overrides and isolates.
_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


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


def public_roots(settings: Settings) -> list[Path]:
    """The server folders clients never see: the corpus first, then the data folder."""
    return [r for r in (settings.corpus_dir, settings.data_dir) if r]


def public_source(source: str, roots: list[Path]) -> str:
    """A source path relative to the corpus (or data) folder; elsewhere just its file name."""
    path = Path(source)
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def check_tree(value: Any, where: str = "", *, max_depth: int = 4, max_number: float = 1e9) -> None:
    """A free-form JSON value (inline cases, training settings) holds only clean text as keys
    and strings, finite numbers no larger than `max_number`, and nests at most `max_depth`
    deep. Raises ValueError, its message prefixed with `where`. Iterative: a deeply nested
    value cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        problem = None
        if depth > max_depth:
            problem = "nested too deeply"
        elif isinstance(item, str):
            try:
                clean_text(item)
            except ValueError as exc:
                problem = str(exc)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            if not (math.isfinite(item) and abs(item) <= max_number):
                problem = f"a number is not finite or is over {max_number:g}"
        elif isinstance(item, dict):
            stack += [(k, depth + 1) for k in item] + [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
        if problem:
            raise ValueError(f"{where}: {problem}" if where else problem)


# JSON bodies are strict: what the schema calls a boolean or an integer must be one ("0" is no
# boolean), so the server accepts exactly what its OpenAPI schema documents. Floats take ints.
WIRE = ConfigDict(extra="ignore", strict=True)


class TextPart(BaseModel):
    model_config = WIRE
    type: Literal["text"]
    text: CleanStr


class ChatMessage(BaseModel):
    model_config = WIRE
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
    model_config = ConfigDict(extra="forbid", strict=True)
    document_ids: list[CleanStr] | None = Field(None, max_length=1000)
    source: CleanStr | None = Field(None, max_length=500, description="Glob over source paths.")


class StreamOptions(BaseModel):
    model_config = WIRE
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI request; fields it does not use are accepted and ignored, like OpenAI's own."""

    model_config = ConfigDict(
        extra="ignore",
        strict=True,
        json_schema_extra={"examples": [
            {"model": "rag", "messages": [{"role": "user", "content": "Battery warranty?"}]},
            {"model": "rag+tuned:brand", "stream": True, "max_tokens": 64, "top_k": 2,
             "messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Where can I rent a bicycle?"}]},
            {"model": "base", "messages": [{"role": "user", "content": "Hello"}],
             "temperature": 0.7, "top_p": 0.9, "seed": 1, "stop": ["\n\n"],
             "filters": {"source": "*guides*"}, "stream_options": {"include_usage": True}},
        ]},
    )  # fmt: skip

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
