"""Model text to a validated conversation: JSON extraction, the blocking rules (the Conversation model), the warnings,
and the JSONL form."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from convgen.errors import InvalidArgument
from generation_service.conversation_schema import MIN_TURNS, Conversation
from generation_service.model.errors import ModelOutputInvalid

SHORT_CONTENT_CHARS = 20
EXTREME_LOW = 0.05
EXTREME_HIGH = 0.95
SHOWN_FINDINGS = 5
QUOTED_CHARS = 80

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```", re.DOTALL)
_MAX_EMBEDDED_ATTEMPTS = 8


class JsonNotFound(ValueError):
    """No JSON value could be extracted from a text."""


@dataclass(frozen=True)
class ValidationReport:
    """What is wrong with a conversation: blocking findings reject it, warnings only flag it."""

    blocking: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing blocks the conversation."""
        return not self.blocking


@dataclass(frozen=True)
class ParsedConversation:
    """A conversation that passed the blocking rules, with its warnings."""

    document: dict[str, Any]
    warnings: list[str]
    turn_count: int


def extract_json(text: str) -> object:
    """Parses plain JSON, JSON in a code fence, or the first JSON object in prose; repairs trailing commas and a BOM."""
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        raise JsonNotFound("the text is empty")
    candidates = [stripped]
    candidates.extend(match.group(1).strip() for match in _FENCE.finditer(stripped))
    for candidate in candidates:
        parsed = _loads(candidate)
        if parsed is not _NOTHING:
            return parsed
    start = stripped.find("{")
    for _ in range(_MAX_EMBEDDED_ATTEMPTS):
        if start < 0:
            break
        end = _matching_brace(stripped, start)
        if end < 0:
            break
        parsed = _loads(stripped[start : end + 1])
        if parsed is not _NOTHING:
            return parsed
        start = stripped.find("{", start + 1)
    raise JsonNotFound("no JSON value found: not plain JSON, not in a code fence, no parseable {...} object")


def validate_conversation(document: object) -> ValidationReport:
    """Applies the blocking rules (the Conversation model) and the warning rules of docs/domain.md."""
    report = ValidationReport()
    if not isinstance(document, dict):
        report.blocking.append(f"the response is not a JSON object (got {_json_type(document)})")
        return report
    try:
        Conversation.model_validate(document)
    except ValidationError as error:
        report.blocking.extend(dict.fromkeys(_finding(document, e) for e in error.errors()))
        return report
    _warn_metadata(document["conversation_metadata"], report)
    _warn_turns(document["turns"], report)
    return report


def parse_conversation(text: str, stop_reason: str | None) -> ParsedConversation:
    """Extracts and validates a conversation; raises ModelOutputInvalid (truncated, unparseable, schema-invalid)."""
    if stop_reason == "max_tokens":
        raise ModelOutputInvalid(
            "model output truncated at max_tokens (stop_reason max_tokens): received "
            f"{len(text)} characters ending {text[-QUOTED_CHARS:]!r}; raise max_tokens or ask for fewer turns",
            reason="MODEL_OUTPUT_TRUNCATED",
            metadata={"step": "parse", "stop_reason": stop_reason, "characters": str(len(text))},
        )
    try:
        document = extract_json(text)
    except JsonNotFound as error:
        stopped = f" (stop_reason {stop_reason})" if stop_reason not in (None, "end_turn") else ""
        raise ModelOutputInvalid(
            f"model output is not parseable JSON{stopped}: {error}; received {len(text)} characters starting "
            f"{text[:QUOTED_CHARS]!r}",
            reason="MODEL_OUTPUT_UNPARSEABLE",
            metadata={"step": "parse", "stop_reason": stop_reason or "", "characters": str(len(text))},
        ) from None
    report = validate_conversation(document)
    if report.blocking:
        count = len(report.blocking)
        shown = "; ".join(report.blocking[:SHOWN_FINDINGS])
        more = f"; and {count - SHOWN_FINDINGS} more" if count > SHOWN_FINDINGS else ""
        raise ModelOutputInvalid(
            f"model output does not match the conversation schema ({count} blocking problem"
            f"{'' if count == 1 else 's'}): {shown}{more}",
            reason="MODEL_OUTPUT_SCHEMA_INVALID",
            metadata={"step": "validate", "blocking_count": str(count)},
        )
    assert isinstance(document, dict)
    return ParsedConversation(document=document, warnings=report.warnings, turn_count=len(document["turns"]))


def to_training_example(document: dict[str, Any], system_prompt: str) -> dict[str, Any]:
    """The JSON Lines chat form: a system message, then the turns in order, and the conversation's metadata."""
    report = validate_conversation(document)
    if report.blocking:
        raise InvalidArgument(f"conversation cannot be exported: {'; '.join(report.blocking[:SHOWN_FINDINGS])}")
    turns = sorted(document["turns"], key=lambda turn: turn["turn_number"])
    messages = [{"role": "system", "content": system_prompt}]
    messages.extend({"role": turn["role"], "content": turn["content"]} for turn in turns)
    metadata: dict[str, Any] = dict(document["conversation_metadata"])
    for key, value in document.items():
        if key not in ("conversation_metadata", "turns"):
            metadata.setdefault(key, value)
    metadata["turn_count"] = len(turns)
    metadata["emotional_trajectory"] = [
        turn["emotional_context"]["primary_emotion"] for turn in turns if turn["role"] == "user"
    ]
    return {"messages": messages, "metadata": metadata}


_NOTHING = object()


def _loads(candidate: str) -> object:
    """The parsed candidate, retried once without trailing commas; _NOTHING when it is not JSON."""
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    repaired = _without_trailing_commas(candidate)
    if repaired == candidate:
        return _NOTHING
    try:
        return json.loads(repaired)
    except ValueError:
        return _NOTHING


def _without_trailing_commas(text: str) -> str:
    """Drops commas that directly precede '}' or ']' (whitespace between allowed), outside strings."""
    if "," not in text:
        return text
    out: list[str] = []
    in_string = escaped = False
    length = len(text)
    for index, char in enumerate(text):
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char == ",":
            following = index + 1
            while following < length and text[following] in " \t\r\n":
                following += 1
            if following < length and text[following] in "}]":
                continue
        out.append(char)
    return "".join(out)


def _matching_brace(text: str, start: int) -> int:
    """The index of the '}' closing the '{' at start, skipping braces inside strings; -1 when unclosed."""
    depth = 0
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _finding(document: dict[str, Any], error: ErrorDetails) -> str:
    """One blocking finding in words, from a validation error of the Conversation model."""
    loc, kind, value = error["loc"], error["type"], error.get("input")
    missing = kind == "missing"
    if loc[0] == "conversation_metadata":
        if len(loc) == 1:
            return (
                "missing conversation_metadata"
                if missing
                else f"conversation_metadata is {_json_type(value)}, not an object"
            )
        return f"missing conversation_metadata.{loc[1]}"
    if loc[0] == "turns":
        if len(loc) == 1:
            if missing:
                return "missing turns array"
            if kind == "too_short":
                count = len(value) if isinstance(value, list) else 0
                return f"only {count} turn{'' if count == 1 else 's'}; at least {MIN_TURNS} required"
            return f"turns is {_json_type(value)}, not an array"
        position = int(loc[1]) + 1
        turn = document["turns"][position - 1]
        if len(loc) == 2:
            return f"turn at position {position}: is {_json_type(value)}, not an object"
        return f"{_turn_label(turn, position)}: {_turn_problem(loc[2:], kind, value)}"
    return f"{'.'.join(str(part) for part in loc)}: {error['msg']}"


def _turn_problem(loc: tuple[int | str, ...], kind: str, value: object) -> str:
    """What is wrong with one field of a turn."""
    missing = kind == "missing"
    field = loc[0]
    if field == "turn_number":
        return "missing turn_number" if missing else f"turn_number {_shown(value)} is not a positive integer"
    if field == "role":
        return "missing role (user or assistant)" if missing else f"role {_shown(value)} is not user or assistant"
    if field == "content":
        return f"content is {_json_type(value)}, not text" if kind == "string_type" else "content is empty"
    if len(loc) == 1:
        return "missing emotional_context"
    emotion_field = loc[1]
    if emotion_field == "intensity":
        if missing:
            return "missing emotional_context.intensity"
        if kind in ("greater_than_equal", "less_than_equal"):
            return f"intensity {value} is outside 0..1"
        return f"intensity {_shown(value)} is not a number"
    if emotion_field == "secondary_emotion":
        return f"emotional_context.secondary_emotion {_shown(value)} is not text"
    return f"missing emotional_context.{emotion_field}"


def _warn_metadata(metadata: dict[str, Any], report: ValidationReport) -> None:
    """Warning: missing expected_outcome."""
    if not _non_empty_text(metadata.get("expected_outcome")):
        report.warnings.append("missing conversation_metadata.expected_outcome")


def _warn_turns(turns: list[dict[str, Any]], report: ValidationReport) -> None:
    """Warnings: numbering, alternation, short content, extreme intensity, no secondary emotion, user last."""
    previous_role: object = None
    for position, turn in enumerate(turns, start=1):
        label = _turn_label(turn, position)
        role = turn["role"]
        if role == previous_role:
            report.warnings.append(f"{label}: role '{role}' repeats the previous turn's role (roles should alternate)")
        previous_role = role
        length = len(turn["content"].strip())
        if length < SHORT_CONTENT_CHARS:
            report.warnings.append(f"{label}: content is very short ({length} characters)")
        emotion = turn["emotional_context"]
        if not _non_empty_text(emotion.get("secondary_emotion")):
            report.warnings.append(f"{label}: missing emotional_context.secondary_emotion")
        intensity = emotion["intensity"]
        if intensity < EXTREME_LOW or intensity > EXTREME_HIGH:
            report.warnings.append(f"{label}: intensity {intensity} is extreme (outside {EXTREME_LOW}..{EXTREME_HIGH})")
    numbers = [turn["turn_number"] for turn in turns]
    if numbers != list(range(1, len(numbers) + 1)):
        report.warnings.append(f"turn numbers are not sequential from 1 (got {_numbers_shown(numbers)})")
    if turns[-1]["role"] == "user":
        report.warnings.append(f"{_turn_label(turns[-1], len(turns))}: the conversation ends on a user turn")


def _turn_label(turn: dict[str, Any], position: int) -> str:
    """'turn N' by its turn_number when that is a positive integer, else 'turn at position P'."""
    number = turn.get("turn_number")
    return f"turn {number}" if _is_int(number) and number > 0 else f"turn at position {position}"


def _is_int(value: object) -> TypeGuard[int]:
    """True for a JSON integer (bool excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _non_empty_text(value: object) -> TypeGuard[str]:
    """True for a string with something other than whitespace."""
    return isinstance(value, str) and bool(value.strip())


def _json_type(value: object) -> str:
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
