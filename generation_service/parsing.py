"""Model text to a validated conversation: JSON extraction, the blocking/warning schema rules and the JSONL form."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from convgen.errors import InvalidArgument
from generation_service.model.errors import ModelOutputInvalid

ROLES = ("user", "assistant")
REQUIRED_METADATA = ("client_persona", "session_context", "conversation_phase")
MIN_TURNS = 2
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
    """Applies the blocking and warning rules of a generated conversation (see docs/domain.md)."""
    report = ValidationReport()
    if not isinstance(document, dict):
        report.blocking.append(f"the response is not a JSON object (got {_json_type(document)})")
        return report
    _check_metadata(document.get("conversation_metadata"), report)
    turns = document.get("turns")
    if not isinstance(turns, list):
        report.blocking.append(
            "missing turns array" if turns is None else f"turns is {_json_type(turns)}, not an array"
        )
        return report
    _check_turns(turns, report)
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


def _check_metadata(metadata: object, report: ValidationReport) -> None:
    """Blocking: missing metadata or required fields; warning: missing expected_outcome."""
    if not isinstance(metadata, dict):
        report.blocking.append(
            "missing conversation_metadata"
            if metadata is None
            else f"conversation_metadata is {_json_type(metadata)}, not an object"
        )
        return
    for key in REQUIRED_METADATA:
        if not _non_empty_text(metadata.get(key)):
            report.blocking.append(f"missing conversation_metadata.{key}")
    if not _non_empty_text(metadata.get("expected_outcome")):
        report.warnings.append("missing conversation_metadata.expected_outcome")


def _check_turns(turns: list[Any], report: ValidationReport) -> None:
    """Blocking and warning rules for the turns array and each turn in it."""
    if len(turns) < MIN_TURNS:
        report.blocking.append(f"only {len(turns)} turn{'' if len(turns) == 1 else 's'}; at least {MIN_TURNS} required")
    numbers: list[int] = []
    previous_role: object = None
    for position, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            report.blocking.append(f"turn at position {position}: is {_json_type(turn)}, not an object")
            previous_role = None
            continue
        label = _turn_label(turn, position)
        number = turn.get("turn_number")
        if _is_int(number) and number > 0:
            numbers.append(number)
        elif number is None:
            report.blocking.append(f"{label}: missing turn_number")
        else:
            report.blocking.append(f"{label}: turn_number {_shown(number)} is not a positive integer")
        role = turn.get("role")
        _check_role(label, role, previous_role, report)
        previous_role = role
        _check_content(label, turn.get("content"), report)
        _check_emotion(label, turn.get("emotional_context"), report)
    if numbers and numbers != list(range(1, len(numbers) + 1)):
        report.warnings.append(f"turn numbers are not sequential from 1 (got {_numbers_shown(numbers)})")
    last = turns[-1] if turns else None
    if isinstance(last, dict) and last.get("role") == "user":
        report.warnings.append(f"{_turn_label(last, len(turns))}: the conversation ends on a user turn")


def _check_role(label: str, role: object, previous_role: object, report: ValidationReport) -> None:
    """Blocking: missing role or one other than user/assistant; warning: the same role twice in a row."""
    if role is None:
        report.blocking.append(f"{label}: missing role (user or assistant)")
    elif role not in ROLES:
        report.blocking.append(f"{label}: role {_shown(role)} is not user or assistant")
    elif role == previous_role:
        report.warnings.append(f"{label}: role '{role}' repeats the previous turn's role (roles should alternate)")


def _check_content(label: str, content: object, report: ValidationReport) -> None:
    """Blocking: empty or non-text content; warning: very short content."""
    if content is not None and not isinstance(content, str):
        report.blocking.append(f"{label}: content is {_json_type(content)}, not text")
        return
    if not _non_empty_text(content):
        report.blocking.append(f"{label}: content is empty")
        return
    length = len(content.strip())
    if length < SHORT_CONTENT_CHARS:
        report.warnings.append(f"{label}: content is very short ({length} characters)")


def _check_emotion(label: str, emotion: object, report: ValidationReport) -> None:
    """Blocking: missing emotional_context, primary_emotion or intensity, intensity outside 0..1; warnings."""
    if not isinstance(emotion, dict):
        report.blocking.append(f"{label}: missing emotional_context")
        return
    if not _non_empty_text(emotion.get("primary_emotion")):
        report.blocking.append(f"{label}: missing emotional_context.primary_emotion")
    if not _non_empty_text(emotion.get("secondary_emotion")):
        report.warnings.append(f"{label}: missing emotional_context.secondary_emotion")
    intensity = emotion.get("intensity")
    if intensity is None:
        report.blocking.append(f"{label}: missing emotional_context.intensity")
    elif not _is_number(intensity):
        report.blocking.append(f"{label}: intensity {_shown(intensity)} is not a number")
    elif not 0.0 <= intensity <= 1.0:
        report.blocking.append(f"{label}: intensity {intensity} is outside 0..1")
    elif intensity < EXTREME_LOW or intensity > EXTREME_HIGH:
        report.warnings.append(f"{label}: intensity {intensity} is extreme (outside {EXTREME_LOW}..{EXTREME_HIGH})")


def _turn_label(turn: dict[str, Any], position: int) -> str:
    """'turn N' by its turn_number when that is a positive integer, else 'turn at position P'."""
    number = turn.get("turn_number")
    return f"turn {number}" if _is_int(number) and number > 0 else f"turn at position {position}"


def _is_int(value: object) -> TypeGuard[int]:
    """True for a JSON integer (bool excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    """True for a finite JSON number (bool excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
