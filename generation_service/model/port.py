"""The model client port: one prompt in, one raw Messages-API-shaped response out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from convgen.catalog.models import ConversationSubject
from convgen.pricing import TokenUsage

CacheTtl = Literal["5m", "1h"]


@dataclass(frozen=True)
class PromptParts:
    """A prompt laid out for prompt caching, longest shared prefix first.

    contract: the fixed output contract, the same for every conversation (the system prompt; cached).
    shared: the template with the persona and the arc, the same for every topic of a job (cached).
    topic: what only this conversation has (not cached).
    """

    contract: str
    shared: str
    topic: str

    @property
    def characters(self) -> int:
        """Length of the whole prompt in characters."""
        return len(self.contract) + len(self.shared) + len(self.topic)


@dataclass(frozen=True)
class ModelRequest:
    """One conversation to generate: the prompt, what it is about, and the template it was rendered from."""

    prompt: PromptParts
    subject: ConversationSubject
    max_tokens: int
    template_key: str = ""
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

    async def count_tokens(self, system: str, user: str) -> int:
        """Input tokens of a prompt made of this system text and one user message, as the model counts them."""
        ...

    async def close(self) -> None:
        """Releases the HTTP client."""
        ...
