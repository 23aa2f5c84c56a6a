"""Configuration of the HTTP server and the chat pipeline."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Role = Literal["reader", "editor", "admin"]
ROLE_RANK: dict[str, int] = {"reader": 0, "editor": 1, "admin": 2}


class ApiKey(BaseModel):
    """One API key: `id` is what logs and the audit trail show; `key` is never shown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Public name of the key.")
    key: SecretStr = Field(description="The secret the client sends as a Bearer token.")
    role: Role = Field(description="reader: chat, models; editor: + documents; admin: + all.")

    @model_validator(mode="after")
    def _long_enough(self) -> ApiKey:
        if len(self.key.get_secret_value()) < 16:
            raise ValueError(f"API key {self.id!r} is shorter than 16 characters")
        return self


class ServerConfig(BaseModel):
    """Where the server listens, who may call it, and how much load it accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Bind address; without keys only localhost.")
    port: int = Field(8000, ge=1, le=65535)
    api_keys: tuple[ApiKey, ...] = Field(
        (), description="JSON list of {id, key, role}. Empty: no auth, localhost only."
    )
    max_body_bytes: int = Field(
        1 << 20, ge=1024, description="Largest JSON request body (uploads: ingest limit)."
    )
    generation_slots: int = Field(
        1, ge=1, le=64, description="Generations running at once (the model runs one at a time)."
    )
    max_queue: int = Field(
        16, ge=0, le=10_000, description="Requests waiting for a slot; beyond it: 429."
    )
    queue_timeout_s: float = Field(
        120.0, gt=0, description="A request waiting longer than this gets 503."
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request body must arrive within this many seconds of its headers "
        "(plus body_min_bytes_per_s' allowance); a client that stalls or trickles gets 408 "
        "and its connection is closed.",
    )
    body_min_bytes_per_s: int = Field(
        64 * 1024,
        ge=0,
        description="Each byte received extends the body deadline by 1/this seconds, so a "
        "large upload on a slow link is not cut off; 0: body_timeout_s is the whole budget.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A connection must deliver a request's line and headers within this many "
        "seconds of opening or of its previous response, or it is closed (uvicorn's h11 "
        "parser has no such limit of its own).",
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="Open connections, and requests in progress, at once (uvicorn's "
        "limit_concurrency); a request past it gets 503 with Retry-After at once, before its "
        "body is read. Larger than generation_slots + max_queue, so the queue's 429 comes first.",
    )
    audit: bool = Field(True, description="Append one record per answered chat request.")

    @model_validator(mode="after")
    def _room_for_the_queue(self) -> ServerConfig:
        # Below it, the connection limit's 503 would answer before the queue could fill.
        if self.max_connections <= self.generation_slots + self.max_queue:
            raise ValueError(
                "server.max_connections must be larger than generation_slots + max_queue"
            )
        return self


class ChatConfig(BaseModel):
    """Defaults of the chat pipeline; requests override what the OpenAI schema lets them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_model: str = Field(
        "rag", description="Mode used for model 'default' (e.g. 'rag+tuned:brand')."
    )
    max_tokens: int = Field(256, ge=1, description="max_tokens when a request gives none.")
    max_tokens_limit: int = Field(1024, ge=1, description="Largest max_tokens accepted.")
    max_top_k: int = Field(20, ge=1, le=200, description="Largest top_k a request may ask.")
    system_prompt: str = Field(
        "You are a helpful assistant. Answer briefly and clearly.",
        description="System prompt when the client sends none and no adapter brings its own.",
    )
    rag_instructions: str = Field(
        "Answer in one or two sentences, using only the numbered sources in the user's "
        "message. State the fact as the source writes it, with its number and unit, and cite "
        "the source by number, like [1].",
        description="Appended to the system prompt in the retrieval modes.",
    )
    loop_guard_words: int = Field(
        6,
        ge=0,
        le=64,
        description="End an answer as soon as its last this-many words already appeared, in "
        "order, earlier in it: a small model's loop (0: never).",
    )
    number_check: bool = Field(
        True,
        description="In the retrieval modes, end an answer that is about to state a number "
        "its prompt does not hold (or, first, one its sources hold only in rows off the "
        "question's topic) with the source's own words instead "
        '(`— the source says: "..." [1]`; with an adapter the model then goes on in its '
        "voice); streaming holds a number back until it is complete.",
    )
    evidence_similarity: Literal["window", "chunk"] = Field(
        "window",
        description="How choosing the shown passage weighs meaning: 'window', the embedder's "
        "cosine between the question and each candidate window (a forward pass over the "
        "windows, about 40 ms on 2 cores); 'chunk', the cosine with the whole chunk's stored "
        "vector, found by the search (free).",
    )
    focus_chars: int = Field(
        300,
        ge=0,
        le=100_000,
        description="Show the model, of each retrieved chunk, only the window of at most this "
        "many characters that bears most on the question (0: whole chunks). Sources and "
        "citations still name the whole chunk.",
    )
    evidence_passages: int = Field(
        1,
        ge=0,
        le=200,
        description="Of the retrieved chunks, show the model only this many: those whose "
        "focused windows bear most on the question (rare question words weigh more, and the "
        "embedder's similarity). 0: every retrieved chunk. The rest are still retrieved and "
        "logged, not shown or cited.",
    )
    absent_guard: bool = Field(
        True,
        description="In the retrieval modes, answer 'The sources do not say anything about "
        "...' without generating when a topical word of the question occurs in no document "
        "of the index and no word of the retrieved passages is near it (absent_similarity): "
        "a question about something the documents never mention. Such an answer carries "
        "ragtune.unknown_terms.",
    )
    absent_scope: Literal["index", "retrieved"] = Field(
        "index",
        description="Which topical words of a question the absent guard weighs: 'index', "
        "those no document holds; 'retrieved', also those none of the retrieved passages "
        "(text, title and headings) holds, as when the documents mention colours but not the "
        "colours of the product asked about.",
    )
    absent_similarity: float = Field(
        0.6,
        ge=-1.0,
        le=1.0,
        description="The absent guard keeps quiet about a word no document holds when a word "
        "of the retrieved passages is at least this similar to it (embedder cosine): the "
        "passages say it in other words ('camera' and 'CCTV footage').",
    )

    @model_validator(mode="after")
    def _limits(self) -> ChatConfig:
        if self.max_tokens > self.max_tokens_limit:
            raise ValueError("chat.max_tokens is larger than chat.max_tokens_limit")
        return self
