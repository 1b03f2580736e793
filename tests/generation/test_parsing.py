"""Model text to conversation: JSON extraction, every blocking and warning rule (with its rule id), parse errors."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from convgen.conversation_rules import BLOCKING_RULES, WARNING_RULES, validate_conversation
from convgen.conversation_schema import output_schema
from generation_service.conversation_format import SYSTEM_PROMPT
from generation_service.model.errors import ModelOutputInvalid
from generation_service.parsing import JsonNotFound, extract_json, parse_conversation

Mutation = Callable[[dict[str, Any]], object]


def _conversation(turns: int = 4) -> dict[str, Any]:
    """A conversation that passes every rule without a warning."""
    return {
        "conversation_metadata": {
            "client_persona": "David Chen, 35, teacher",
            "session_context": "Estate planning basics",
            "conversation_phase": "initial consultation",
            "expected_outcome": "David knows his first step",
        },
        "turns": [
            {
                "turn_number": n,
                "role": "user" if n % 2 else "assistant",
                "content": f"Turn {n} says something long enough to count as real content.",
                "emotional_context": {"primary_emotion": "confusion", "secondary_emotion": "hope", "intensity": 0.5},
            }
            for n in range(1, turns + 1)
        ],
    }


# --- extract_json ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": [1, 2]}',
        '  \n{"a": 1, "b": [1, 2]}\n  ',
        '\ufeff{"a": 1, "b": [1, 2]}',
        'Here is the conversation:\n```json\n{"a": 1, "b": [1, 2]}\n```\nLet me know if you need changes.',
        'Sure!\n```\n{"a": 1, "b": [1, 2]}\n```',
        'Of course. {"a": 1, "b": [1, 2]} I hope this helps {at all}.',
        'Prose with a {stray brace} first, then {"a": 1, "b": [1, 2]}.',
        '{"a": 1, "b": [1, 2,],}',
        '```json\n{\n  "a": 1,\n  "b": [\n    1,\n    2,\n  ],\n}\n```',
    ],
    ids=[
        "plain",
        "whitespace",
        "bom",
        "fenced-with-prose",
        "bare-fence",
        "embedded",
        "stray-brace",
        "trailing-commas",
        "fenced-trailing-commas",
    ],
)
def test_extract_json_finds_the_object(text: str) -> None:
    assert extract_json(text) == {"a": 1, "b": [1, 2]}


def test_extract_json_brace_matching_ignores_braces_and_quotes_inside_strings() -> None:
    text = 'Answer: {"content": "a } brace, a \\" quote and a { brace", "n": {"m": 2}} trailing {prose}'
    assert extract_json(text) == {"content": 'a } brace, a " quote and a { brace', "n": {"m": 2}}


def test_trailing_comma_repair_leaves_commas_inside_strings_alone() -> None:
    assert extract_json('{"content": "a, ]b, }", "x": [1,],}') == {"content": "a, ]b, }", "x": [1]}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "I'm sorry, I can't help with that.",
        '{"a": 1, "b": ',
        "{not json at all}",
        "{\u201ca\u201d: 1}",
    ],
    ids=["empty", "blank", "refusal", "truncated", "braces-not-json", "smart-quotes-not-repaired"],
)
def test_extract_json_raises_when_nothing_parses(text: str) -> None:
    with pytest.raises(JsonNotFound):
        extract_json(text)


# --- validate_conversation ------------------------------------------------------------------------------------------


def test_a_good_conversation_has_no_findings() -> None:
    report = validate_conversation(_conversation())
    assert report.blocking == []
    assert report.warnings == []
    assert report.ok


def _set_turn(index: int, key: str, value: object) -> Mutation:
    return lambda doc: doc["turns"][index].__setitem__(key, value)


def _set_emotion(index: int, key: str, value: object) -> Mutation:
    return lambda doc: doc["turns"][index]["emotional_context"].__setitem__(key, value)


def _del_emotion(index: int, key: str) -> Mutation:
    return lambda doc: doc["turns"][index]["emotional_context"].pop(key)


def _del_metadata(key: str) -> Mutation:
    return lambda doc: doc["conversation_metadata"].pop(key)


BLOCKING: list[tuple[str, Mutation, str]] = [
    ("no-metadata", lambda doc: doc.pop("conversation_metadata"), "missing conversation_metadata"),
    ("metadata-not-object", lambda doc: doc.__setitem__("conversation_metadata", "x"), "is a string, not an object"),
    ("no-turns", lambda doc: doc.pop("turns"), "missing turns array"),
    ("turns-not-array", lambda doc: doc.__setitem__("turns", {}), "turns is an object, not an array"),
    ("no-client-persona", _del_metadata("client_persona"), "missing conversation_metadata.client_persona"),
    ("no-session-context", _del_metadata("session_context"), "missing conversation_metadata.session_context"),
    ("no-phase", _del_metadata("conversation_phase"), "missing conversation_metadata.conversation_phase"),
    ("one-turn", lambda doc: doc["turns"].__delitem__(slice(1, None)), "only 1 turn; at least 2 required"),
    (
        "turn-not-object",
        lambda doc: doc["turns"].__setitem__(1, "hi"),
        "turn at position 2: is a string, not an object",
    ),
    ("turn-number-zero", _set_turn(1, "turn_number", 0), "turn at position 2: turn_number 0 is not a positive"),
    ("turn-number-text", _set_turn(1, "turn_number", "2"), "turn at position 2: turn_number '2' is not a positive"),
    ("turn-number-float", _set_turn(1, "turn_number", 2.0), "turn at position 2: turn_number 2.0 is not a positive"),
    ("turn-number-missing", lambda doc: doc["turns"][1].pop("turn_number"), "turn at position 2: missing turn_number"),
    ("bad-role", _set_turn(2, "role", "client"), "turn 3: role 'client' is not user or assistant"),
    ("missing-role", lambda doc: doc["turns"][2].pop("role"), "turn 3: missing role"),
    ("empty-content", _set_turn(1, "content", "  "), "turn 2: content is empty"),
    ("missing-content", lambda doc: doc["turns"][1].pop("content"), "turn 2: content is empty"),
    ("content-not-text", _set_turn(1, "content", ["hi"]), "turn 2: content is an array, not text"),
    ("no-emotional-context", lambda doc: doc["turns"][0].pop("emotional_context"), "turn 1: missing emotional_context"),
    ("no-primary-emotion", _del_emotion(0, "primary_emotion"), "turn 1: missing emotional_context.primary_emotion"),
    ("no-intensity", _del_emotion(0, "intensity"), "turn 1: missing emotional_context.intensity"),
    ("intensity-high", _set_emotion(0, "intensity", 1.2), "turn 1: intensity 1.2 is outside 0..1"),
    ("intensity-negative", _set_emotion(0, "intensity", -0.1), "turn 1: intensity -0.1 is outside 0..1"),
    ("intensity-text", _set_emotion(0, "intensity", "0.5"), "turn 1: intensity '0.5' is not a number"),
    ("intensity-bool", _set_emotion(0, "intensity", True), "turn 1: intensity true is not a number"),
]


@pytest.mark.parametrize(("case", "mutate", "expected"), BLOCKING, ids=[i for i, _, _ in BLOCKING])
def test_each_blocking_rule(case: str, mutate: Mutation, expected: str) -> None:
    document = _conversation()
    mutate(document)
    report = validate_conversation(document)
    assert any(expected in finding for finding in report.blocking), report.blocking
    assert not report.ok
    assert RULE_OF_CASE[case] in {f.rule for f in report.findings if f.blocking}
    assert RULE_OF_CASE[case] in BLOCKING_RULES


@pytest.mark.parametrize(
    ("document", "kind"), [([], "an array"), ("text", "a string"), (3, "a number"), (None, "null")]
)
def test_a_document_that_is_not_an_object_is_blocking(document: object, kind: str) -> None:
    assert validate_conversation(document).blocking == [f"the response is not a JSON object (got {kind})"]


def _append_user_turn(doc: dict[str, Any]) -> None:
    doc["turns"].append({**copy.deepcopy(doc["turns"][0]), "turn_number": len(doc["turns"]) + 1})


WARNINGS: list[tuple[str, Mutation, str]] = [
    ("no-expected-outcome", _del_metadata("expected_outcome"), "missing conversation_metadata.expected_outcome"),
    ("numbers-gap", _set_turn(3, "turn_number", 5), "turn numbers are not sequential from 1 (got 1, 2, 3, 5)"),
    (
        "numbers-from-zero-based",
        lambda doc: [t.__setitem__("turn_number", t["turn_number"] + 1) for t in doc["turns"]],
        "not sequential from 1",
    ),
    ("roles-not-alternating", _set_turn(1, "role", "user"), "turn 2: role 'user' repeats the previous turn's role"),
    ("short-content", _set_turn(1, "content", "Okay."), "turn 2: content is very short (5 characters)"),
    ("intensity-extreme-high", _set_emotion(1, "intensity", 0.97), "turn 2: intensity 0.97 is extreme"),
    ("intensity-extreme-low", _set_emotion(1, "intensity", 0.0), "turn 2: intensity 0.0 is extreme"),
    (
        "no-secondary-emotion",
        _del_emotion(1, "secondary_emotion"),
        "turn 2: missing emotional_context.secondary_emotion",
    ),
    ("ends-on-user", _append_user_turn, "turn 5: the conversation ends on a user turn"),
]


@pytest.mark.parametrize(("case", "mutate", "expected"), WARNINGS, ids=[i for i, _, _ in WARNINGS])
def test_each_warning_rule(case: str, mutate: Mutation, expected: str) -> None:
    document = _conversation()
    mutate(document)
    report = validate_conversation(document)
    assert report.blocking == []
    assert any(expected in warning for warning in report.warnings), report.warnings
    assert report.rules == {RULE_OF_CASE[case]}
    assert RULE_OF_CASE[case] in WARNING_RULES


RULE_OF_CASE: dict[str, str] = {
    "no-metadata": "missing_metadata",
    "metadata-not-object": "missing_metadata",
    "no-turns": "missing_turns",
    "turns-not-array": "missing_turns",
    "no-client-persona": "missing_client_persona",
    "no-session-context": "missing_session_context",
    "no-phase": "missing_conversation_phase",
    "one-turn": "too_few_turns",
    "turn-not-object": "turn_not_object",
    "turn-number-zero": "bad_turn_number",
    "turn-number-text": "bad_turn_number",
    "turn-number-float": "bad_turn_number",
    "turn-number-missing": "bad_turn_number",
    "bad-role": "bad_role",
    "missing-role": "bad_role",
    "empty-content": "empty_content",
    "missing-content": "empty_content",
    "content-not-text": "empty_content",
    "no-emotional-context": "missing_emotional_context",
    "no-primary-emotion": "missing_primary_emotion",
    "no-intensity": "bad_intensity",
    "intensity-high": "bad_intensity",
    "intensity-negative": "bad_intensity",
    "intensity-text": "bad_intensity",
    "intensity-bool": "bad_intensity",
    "no-expected-outcome": "missing_expected_outcome",
    "numbers-gap": "turn_numbers_not_sequential",
    "numbers-from-zero-based": "turn_numbers_not_sequential",
    "roles-not-alternating": "roles_not_alternating",
    "short-content": "short_content",
    "intensity-extreme-high": "extreme_intensity",
    "intensity-extreme-low": "extreme_intensity",
    "no-secondary-emotion": "missing_secondary_emotion",
    "ends-on-user": "ends_on_user_turn",
}


def test_every_rule_id_has_a_case() -> None:
    assert set(RULE_OF_CASE.values()) | {"not_json_object"} == set(BLOCKING_RULES) | set(WARNING_RULES)


def test_findings_name_the_turn_by_its_number() -> None:
    document = _conversation()
    document["turns"][2]["role"] = "client"
    assert validate_conversation(document).blocking == ["turn 3: role 'client' is not user or assistant"]


# --- parse_conversation ---------------------------------------------------------------------------------------------


def test_parse_returns_document_warnings_and_turn_count() -> None:
    document = _conversation(6)
    document["turns"][5]["emotional_context"].pop("secondary_emotion")
    parsed = parse_conversation("```json\n" + json.dumps(document) + "\n```", "end_turn")
    assert parsed.document == document
    assert parsed.turn_count == 6
    assert parsed.warnings == ["turn 6: missing emotional_context.secondary_emotion"]


def test_truncated_output_is_reported_as_truncated_even_when_it_would_parse() -> None:
    text = json.dumps(_conversation())
    with pytest.raises(ModelOutputInvalid) as caught:
        parse_conversation(text, "max_tokens")
    error = caught.value
    assert error.reason == "MODEL_OUTPUT_TRUNCATED"
    assert error.message.startswith("model output truncated at max_tokens (stop_reason max_tokens)")
    assert f"received {len(text)} characters" in error.message
    assert error.metadata["step"] == "parse"


def test_unparseable_output_quotes_its_start() -> None:
    text = "I'm sorry, but I can't write that conversation. " * 5
    with pytest.raises(ModelOutputInvalid) as caught:
        parse_conversation(text, "end_turn")
    error = caught.value
    assert error.reason == "MODEL_OUTPUT_UNPARSEABLE"
    assert "not parseable JSON" in error.message
    assert repr(text[:80]) in error.message
    assert text[:81] not in error.message
    assert f"received {len(text)} characters" in error.message
    assert error.metadata["step"] == "parse"


def test_unparseable_output_names_an_unusual_stop_reason() -> None:
    with pytest.raises(ModelOutputInvalid, match=r"\(stop_reason refusal\)"):
        parse_conversation("No.", "refusal")


def test_schema_invalid_output_lists_first_findings_and_the_count() -> None:
    document = _conversation(8)
    for turn in document["turns"]:
        turn["role"] = "client"
    with pytest.raises(ModelOutputInvalid) as caught:
        parse_conversation(json.dumps(document), "end_turn")
    error = caught.value
    assert error.reason == "MODEL_OUTPUT_SCHEMA_INVALID"
    assert "(8 blocking problems)" in error.message
    assert "turn 1: role 'client' is not user or assistant" in error.message
    assert "turn 5: role 'client'" in error.message
    assert "turn 6: role 'client'" not in error.message
    assert error.message.endswith("; and 3 more")
    assert error.metadata == {"step": "validate", "blocking_count": "8"}


def test_system_prompt_states_the_output_contract() -> None:
    for field in (
        "conversation_metadata",
        "client_persona",
        "session_context",
        "conversation_phase",
        "expected_outcome",
        "turn_number",
        "emotional_context",
        "primary_emotion",
        "secondary_emotion",
        "intensity",
    ):
        assert f'"{field}"' in SYSTEM_PROMPT
    assert "fee-only" in SYSTEM_PROMPT
    assert SYSTEM_PROMPT.rstrip().endswith("Respond with the JSON object only.")


# JSON Schema counts 2.0 as an integer; the rules (and the API's constrained decoding, which writes 2) do not.
_SCHEMA_LOOSER = {"turn-number-float"}


@pytest.mark.parametrize(
    ("case", "mutate"),
    [(c, m) for c, m, _ in BLOCKING if c not in _SCHEMA_LOOSER],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_the_schema_sent_as_structured_output_refuses_what_a_blocking_rule_refuses(case: str, mutate: Mutation) -> None:
    """One definition: the JSON schema of the Conversation model and the blocking rules agree."""
    validator = jsonschema.Draft202012Validator(output_schema())
    document = _conversation()
    assert validator.is_valid(document)
    mutate(document)
    assert not validator.is_valid(document), case
