"""The blocking and warning rules of a generated conversation (see docs), each with a rule id.

The blocking rules are the Conversation model of convgen.conversation_schema (the same definition whose JSON schema
is sent as structured output); its validation errors are named here by rule id. The warnings are checked here.

Shared by the generation service (a response that breaks a blocking rule is refused) and dataset exports (the
report counts conversations per rule, and a stored conversation that breaks a blocking rule is never exported).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from convgen.conversation_schema import MIN_TURNS, Conversation

ROLES = ("user", "assistant")
SHORT_CONTENT_CHARS = 20
EXTREME_LOW = 0.05
EXTREME_HIGH = 0.95

# Every rule id, blocking first, in the order reports list them.
BLOCKING_RULES: Final = (
    "not_json_object",
    "missing_metadata",
    "missing_client_persona",
    "missing_session_context",
    "missing_conversation_phase",
    "missing_turns",
    "too_few_turns",
    "turn_not_object",
    "bad_turn_number",
    "bad_role",
    "empty_content",
    "missing_emotional_context",
    "missing_primary_emotion",
    "bad_intensity",
)
WARNING_RULES: Final = (
    "missing_expected_outcome",
    "turn_numbers_not_sequential",
    "roles_not_alternating",
    "short_content",
    "extreme_intensity",
    "missing_secondary_emotion",
    "ends_on_user_turn",
)


@dataclass(frozen=True)
class Finding:
    """One broken rule: its id, whether it blocks, and a sentence naming the turn."""

    rule: str
    blocking: bool
    message: str


@dataclass(frozen=True)
class ValidationReport:
    """What is wrong with a conversation: blocking findings reject it, warnings only flag it."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def blocking(self) -> list[str]:
        """The blocking findings' messages."""
        return [f.message for f in self.findings if f.blocking]

    @property
    def warnings(self) -> list[str]:
        """The warnings' messages."""
        return [f.message for f in self.findings if not f.blocking]

    @property
    def ok(self) -> bool:
        """True when nothing blocks the conversation."""
        return not any(f.blocking for f in self.findings)

    @property
    def rules(self) -> set[str]:
        """The ids of the rules broken (each once)."""
        return {f.rule for f in self.findings}

    def block(self, rule: str, message: str) -> None:
        """Records a blocking finding."""
        self.findings.append(Finding(rule, True, message))

    def warn(self, rule: str, message: str) -> None:
        """Records a warning."""
        self.findings.append(Finding(rule, False, message))


def validate_conversation(document: object) -> ValidationReport:
    """Applies the blocking rules (the Conversation model) and the warning rules of a generated conversation."""
    report = ValidationReport()
    if not isinstance(document, dict):
        report.block("not_json_object", f"the response is not a JSON object (got {json_type(document)})")
        return report
    try:
        Conversation.model_validate(document)
    except ValidationError as error:
        for rule, message in dict.fromkeys(_finding(document, e) for e in error.errors()):
            report.block(rule, message)
    _warn_metadata(document.get("conversation_metadata"), report)
    turns = document.get("turns")
    if isinstance(turns, list):
        _warn_turns(turns, report)
    return report


def _finding(document: dict[str, Any], error: ErrorDetails) -> tuple[str, str]:
    """One blocking finding (rule id, sentence) from a validation error of the Conversation model."""
    loc, kind, value = error["loc"], error["type"], error.get("input")
    missing = kind == "missing"
    if loc[0] == "conversation_metadata":
        if len(loc) == 1:
            if missing:
                return "missing_metadata", "missing conversation_metadata"
            return "missing_metadata", f"conversation_metadata is {json_type(value)}, not an object"
        return f"missing_{loc[1]}", f"missing conversation_metadata.{loc[1]}"
    # The model has two fields: anything else is in the turns.
    if len(loc) == 1:
        if missing:
            return "missing_turns", "missing turns array"
        if kind == "too_short":
            count = len(value) if isinstance(value, list) else 0
            return "too_few_turns", f"only {count} turn{'' if count == 1 else 's'}; at least {MIN_TURNS} required"
        return "missing_turns", f"turns is {json_type(value)}, not an array"
    position = int(loc[1]) + 1
    turn = document["turns"][position - 1]
    if len(loc) == 2:
        return "turn_not_object", f"turn at position {position}: is {json_type(value)}, not an object"
    rule, problem = _turn_problem(loc[2:], kind, value)
    return rule, f"{turn_label(turn, position)}: {problem}"


def _turn_problem(loc: tuple[int | str, ...], kind: str, value: object) -> tuple[str, str]:
    """What is wrong with one field of a turn: its rule id and the words."""
    missing = kind == "missing"
    name = loc[0]
    if name == "turn_number":
        return "bad_turn_number", (
            "missing turn_number" if missing else f"turn_number {_shown(value)} is not a positive integer"
        )
    if name == "role":
        return "bad_role", (
            "missing role (user or assistant)" if missing else f"role {_shown(value)} is not user or assistant"
        )
    if name == "content":
        return "empty_content", (
            f"content is {json_type(value)}, not text" if kind == "string_type" else "content is empty"
        )
    if len(loc) == 1:
        return "missing_emotional_context", "missing emotional_context"
    if loc[1] == "intensity":
        if missing:
            return "bad_intensity", "missing emotional_context.intensity"
        if kind in ("greater_than_equal", "less_than_equal"):
            return "bad_intensity", f"intensity {value} is outside 0..1"
        return "bad_intensity", f"intensity {_shown(value)} is not a number"
    return "missing_primary_emotion", "missing emotional_context.primary_emotion"


def _warn_metadata(metadata: object, report: ValidationReport) -> None:
    """Warning: missing expected_outcome."""
    if isinstance(metadata, dict) and not non_empty_text(metadata.get("expected_outcome")):
        report.warn("missing_expected_outcome", "missing conversation_metadata.expected_outcome")


def _warn_turns(turns: list[Any], report: ValidationReport) -> None:
    """Warnings: numbering, alternation, short content, extreme intensity, no secondary emotion, user last."""
    numbers: list[int] = []
    previous_role: object = None
    for position, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            previous_role = None
            continue
        label = turn_label(turn, position)
        number = turn.get("turn_number")
        if is_int(number) and number > 0:
            numbers.append(number)
        role = turn.get("role")
        if role in ROLES and role == previous_role:
            report.warn(
                "roles_not_alternating",
                f"{label}: role '{role}' repeats the previous turn's role (roles should alternate)",
            )
        previous_role = role
        content = turn.get("content")
        if non_empty_text(content) and len(content.strip()) < SHORT_CONTENT_CHARS:
            report.warn("short_content", f"{label}: content is very short ({len(content.strip())} characters)")
        emotion = turn.get("emotional_context")
        if isinstance(emotion, dict):
            _warn_emotion(label, emotion, report)
    if numbers and numbers != list(range(1, len(numbers) + 1)):
        report.warn(
            "turn_numbers_not_sequential", f"turn numbers are not sequential from 1 (got {_numbers_shown(numbers)})"
        )
    last = turns[-1] if turns else None
    if isinstance(last, dict) and last.get("role") == "user":
        report.warn("ends_on_user_turn", f"{turn_label(last, len(turns))}: the conversation ends on a user turn")


def _warn_emotion(label: str, emotion: dict[str, Any], report: ValidationReport) -> None:
    """Warnings: no secondary emotion, an intensity near the ends of 0..1."""
    if not non_empty_text(emotion.get("secondary_emotion")):
        report.warn("missing_secondary_emotion", f"{label}: missing emotional_context.secondary_emotion")
    intensity = emotion.get("intensity")
    if is_number(intensity) and 0.0 <= intensity <= 1.0 and (intensity < EXTREME_LOW or intensity > EXTREME_HIGH):
        report.warn(
            "extreme_intensity", f"{label}: intensity {intensity} is extreme (outside {EXTREME_LOW}..{EXTREME_HIGH})"
        )


def turn_label(turn: dict[str, Any], position: int) -> str:
    """'turn N' by its turn_number when that is a positive integer, else 'turn at position P'."""
    number = turn.get("turn_number")
    return f"turn {number}" if is_int(number) and number > 0 else f"turn at position {position}"


def is_int(value: object) -> TypeGuard[int]:
    """True for a JSON integer (bool excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """True for a finite JSON number (bool excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def non_empty_text(value: object) -> TypeGuard[str]:
    """True for a string with something other than whitespace."""
    return isinstance(value, str) and bool(value.strip())


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(value: object) -> str:
    """A value as JSON for a message, with single quotes, cut short when long."""
    text = json.dumps(value, ensure_ascii=False).replace('"', "'")
    return text if len(text) <= 40 else text[:37] + "..."


def _numbers_shown(numbers: list[int]) -> str:
    """The turn numbers, cut short when there are many."""
    shown = ", ".join(str(n) for n in numbers[:12])
    return shown + (", ..." if len(numbers) > 12 else "")
