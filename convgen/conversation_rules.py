"""The blocking and warning rules of a generated conversation (see docs), each with a rule id.

Shared by the generation service (a response that breaks a blocking rule is refused) and dataset exports (the
report counts conversations per rule, and a stored conversation that breaks a blocking rule is never exported).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

ROLES = ("user", "assistant")
REQUIRED_METADATA = ("client_persona", "session_context", "conversation_phase")
MIN_TURNS = 2
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
    """Applies the blocking and warning rules of a generated conversation."""
    report = ValidationReport()
    if not isinstance(document, dict):
        report.block("not_json_object", f"the response is not a JSON object (got {json_type(document)})")
        return report
    _check_metadata(document.get("conversation_metadata"), report)
    turns = document.get("turns")
    if not isinstance(turns, list):
        report.block(
            "missing_turns", "missing turns array" if turns is None else f"turns is {json_type(turns)}, not an array"
        )
        return report
    _check_turns(turns, report)
    return report


def _check_metadata(metadata: object, report: ValidationReport) -> None:
    """Blocking: missing metadata or required fields; warning: missing expected_outcome."""
    if not isinstance(metadata, dict):
        report.block(
            "missing_metadata",
            "missing conversation_metadata"
            if metadata is None
            else f"conversation_metadata is {json_type(metadata)}, not an object",
        )
        return
    for key in REQUIRED_METADATA:
        if not non_empty_text(metadata.get(key)):
            report.block(f"missing_{key}", f"missing conversation_metadata.{key}")
    if not non_empty_text(metadata.get("expected_outcome")):
        report.warn("missing_expected_outcome", "missing conversation_metadata.expected_outcome")


def _check_turns(turns: list[Any], report: ValidationReport) -> None:
    """Blocking and warning rules for the turns array and each turn in it."""
    if len(turns) < MIN_TURNS:
        report.block(
            "too_few_turns", f"only {len(turns)} turn{'' if len(turns) == 1 else 's'}; at least {MIN_TURNS} required"
        )
    numbers: list[int] = []
    previous_role: object = None
    for position, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            report.block("turn_not_object", f"turn at position {position}: is {json_type(turn)}, not an object")
            previous_role = None
            continue
        label = turn_label(turn, position)
        number = turn.get("turn_number")
        if is_int(number) and number > 0:
            numbers.append(number)
        elif number is None:
            report.block("bad_turn_number", f"{label}: missing turn_number")
        else:
            report.block("bad_turn_number", f"{label}: turn_number {_shown(number)} is not a positive integer")
        role = turn.get("role")
        _check_role(label, role, previous_role, report)
        previous_role = role
        _check_content(label, turn.get("content"), report)
        _check_emotion(label, turn.get("emotional_context"), report)
    if numbers and numbers != list(range(1, len(numbers) + 1)):
        report.warn(
            "turn_numbers_not_sequential", f"turn numbers are not sequential from 1 (got {_numbers_shown(numbers)})"
        )
    last = turns[-1] if turns else None
    if isinstance(last, dict) and last.get("role") == "user":
        report.warn("ends_on_user_turn", f"{turn_label(last, len(turns))}: the conversation ends on a user turn")


def _check_role(label: str, role: object, previous_role: object, report: ValidationReport) -> None:
    """Blocking: missing role or one other than user/assistant; warning: the same role twice in a row."""
    if role is None:
        report.block("bad_role", f"{label}: missing role (user or assistant)")
    elif role not in ROLES:
        report.block("bad_role", f"{label}: role {_shown(role)} is not user or assistant")
    elif role == previous_role:
        report.warn(
            "roles_not_alternating", f"{label}: role '{role}' repeats the previous turn's role (roles should alternate)"
        )


def _check_content(label: str, content: object, report: ValidationReport) -> None:
    """Blocking: empty or non-text content; warning: very short content."""
    if content is not None and not isinstance(content, str):
        report.block("empty_content", f"{label}: content is {json_type(content)}, not text")
        return
    if not non_empty_text(content):
        report.block("empty_content", f"{label}: content is empty")
        return
    length = len(content.strip())
    if length < SHORT_CONTENT_CHARS:
        report.warn("short_content", f"{label}: content is very short ({length} characters)")


def _check_emotion(label: str, emotion: object, report: ValidationReport) -> None:
    """Blocking: missing emotional_context, primary_emotion or intensity, intensity outside 0..1; warnings."""
    if not isinstance(emotion, dict):
        report.block("missing_emotional_context", f"{label}: missing emotional_context")
        return
    if not non_empty_text(emotion.get("primary_emotion")):
        report.block("missing_primary_emotion", f"{label}: missing emotional_context.primary_emotion")
    if not non_empty_text(emotion.get("secondary_emotion")):
        report.warn("missing_secondary_emotion", f"{label}: missing emotional_context.secondary_emotion")
    intensity = emotion.get("intensity")
    if intensity is None:
        report.block("bad_intensity", f"{label}: missing emotional_context.intensity")
    elif not is_number(intensity):
        report.block("bad_intensity", f"{label}: intensity {_shown(intensity)} is not a number")
    elif not 0.0 <= intensity <= 1.0:
        report.block("bad_intensity", f"{label}: intensity {intensity} is outside 0..1")
    elif intensity < EXTREME_LOW or intensity > EXTREME_HIGH:
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
