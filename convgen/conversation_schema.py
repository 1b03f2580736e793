"""The one definition of a generated conversation: its JSON schema (sent as structured output) and what the blocking
rules of convgen.conversation_rules check.

Validation mode is the blocking rules: a document the model rejects cannot be stored. Fields whose absence is only a
warning (expected_outcome, secondary_emotion) accept any value there; convgen.conversation_rules warns about them.
The serialization-mode schema is the output contract sent to the API: there every field the contract shows is
required and typed, also those whose absence is only a warning when a reply is validated.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MIN_TURNS = 2

# Text that says something: not empty, not only whitespace.
Text = Annotated[str, Field(min_length=1, pattern=r"\S")]


def _text_or_none(value: object) -> object:
    """A warning-only field: anything that is not text counts as absent (the rules warn), never as an error."""
    return value if isinstance(value, str) else None


# Text the contract asks for whose absence only warns.
OptionalText = Annotated[str | None, BeforeValidator(_text_or_none)]


class _Strict(BaseModel):
    # strict: "2" is not a turn number and true is not an intensity. Extra fields are kept, not rejected.
    model_config = ConfigDict(extra="allow", strict=True, json_schema_serialization_defaults_required=True)


class EmotionalContext(_Strict):
    """The emotional state of a turn's speaker."""

    primary_emotion: Text = Field(description="one or two words for the dominant emotion, e.g. confusion")
    secondary_emotion: OptionalText = Field(
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
    expected_outcome: OptionalText = Field(default=None, description="what the client leaves with, in one sentence")


class Conversation(_Strict):
    """A generated financial-planning session."""

    conversation_metadata: ConversationMetadata
    turns: list[Turn] = Field(min_length=MIN_TURNS, description="the turns in order; the client speaks first")


def output_schema() -> dict[str, Any]:
    """The JSON schema of a conversation as the model must write it (every field of the contract required)."""
    return Conversation.model_json_schema(mode="serialization")
