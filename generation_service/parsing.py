"""Model text to a validated conversation: JSON extraction, then the rules of convgen.conversation_rules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from convgen.conversation_rules import validate_conversation
from generation_service.model.errors import ModelOutputInvalid

SHOWN_FINDINGS = 5
QUOTED_CHARS = 80

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```", re.DOTALL)
_MAX_EMBEDDED_ATTEMPTS = 8


class JsonNotFound(ValueError):
    """No JSON value could be extracted from a text."""


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
