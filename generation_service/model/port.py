"""The model client port: one prompt in, one raw Messages-API-shaped response out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from convgen.catalog.models import ConversationSubject


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one call consumed."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True)
class ModelRequest:
    """A prompt: a reusable (cacheable) system part and the per-conversation part."""

    system: str
    prompt: str
    subject: ConversationSubject
    max_tokens: int
    request_id: str = ""


@dataclass(frozen=True)
class ModelResponse:
    """What the model answered: the exact response body and the fields read from it."""

    raw_body: bytes
    text: str
    stop_reason: str | None
    model: str
    usage: TokenUsage
    attempts: int = 1
    headers: dict[str, str] = field(default_factory=dict)


class ModelClient(Protocol):
    """Generates one completion; raises the errors in generation_service.model.errors."""

    @property
    def name(self) -> str:
        """Label for logs and the stored conversation's model when the response names none."""
        ...

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Calls the model (retrying transient failures) and returns its response."""
        ...

    async def close(self) -> None:
        """Releases the HTTP client."""
        ...
