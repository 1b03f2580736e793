"""The one definition of a generated conversation: its JSON schema (sent as structured output) and blocking rules.

Validation mode is the blocking rules of docs/domain.md: a document the model rejects cannot be stored. The
serialization-mode schema is the output contract sent to the API: there every field the contract shows is
required, also those whose absence is only a warning when a reply is validated.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MIN_TURNS = 2

# Text that says something: not empty, not only whitespace.
Text = Annotated[str, Field(min_length=1, pattern=r"\S")]


class _Strict(BaseModel):
    # strict: "2" is not a turn number and true is not an intensity. Extra fields are kept, not rejected.
    model_config = ConfigDict(extra="allow", strict=True, json_schema_serialization_defaults_required=True)


class EmotionalContext(_Strict):
    """The emotional state of a turn's speaker."""

    primary_emotion: Text = Field(description="one or two words for the dominant emotion, e.g. confusion")
    secondary_emotion: str | None = Field(
        default=None, description="one or two words for an underlying or mixed emotion"
    )
    intensity: float = Field(
        ge=0.0, le=1.0, allow_inf_nan=False, description="how strongly the primary emotion is felt, 0.0 to 1.0"
    )


class Turn(_Strict):
    """One message of the conversation."""

    turn_number: int = Field(gt=0, description="1 for the first turn, increasing by 1")
    role: Literal["user", "assistant"] = Field(description="user is the client, assistant the advisor")
    content: Text = Field(description="the spoken text of the turn, plain text")
    emotional_context: EmotionalContext


class ConversationMetadata(_Strict):
    """The session as a whole."""

    client_persona: Text = Field(description="who the client is, in one sentence")
    session_context: Text = Field(description="what this session is about and why the client came")
    conversation_phase: Text = Field(description="where this session sits in the relationship")
    expected_outcome: str | None = Field(default=None, description="what the client leaves with, in one sentence")


class Conversation(_Strict):
    """A generated financial-planning session."""

    conversation_metadata: ConversationMetadata
    turns: list[Turn] = Field(min_length=MIN_TURNS, description="the turns in order; the client speaks first")


def output_schema() -> dict[str, Any]:
    """The JSON schema of a conversation as the model must write it (every field of the contract required)."""
    return Conversation.model_json_schema(mode="serialization")
