"""Field validation: violations name the fields, and a request with very many of them still gets a short status."""

from __future__ import annotations

import uuid

import pytest

from convgen.errors import InvalidArgument
from convgen.validation import MAX_REPORTED, attempt, check_text, require_uuid, valid, valid_list


def test_many_violations_list_the_first_ones_and_count_the_rest() -> None:
    results = [attempt(require_uuid, f"items[{index}].persona_id", "nope") for index in range(MAX_REPORTED + 5)]
    with pytest.raises(InvalidArgument) as raised:
        valid_list(results)
    violations = raised.value.violations or []
    assert [v.field for v in violations] == [f"items[{i}].persona_id" for i in range(MAX_REPORTED)]
    assert raised.value.message.endswith("; and 5 more invalid field(s) not listed")


def test_a_nested_report_keeps_counting_every_violation() -> None:
    def items() -> list[uuid.UUID]:
        return valid_list(attempt(require_uuid, f"items[{i}]", "nope") for i in range(MAX_REPORTED + 5))

    with pytest.raises(InvalidArgument) as raised:
        valid(attempt(check_text, "name", "\x00", max_length=10), attempt(items))
    violations = raised.value.violations or []
    assert [v.field for v in violations] == ["name"] + [f"items[{i}]" for i in range(MAX_REPORTED - 1)]
    assert raised.value.message.endswith("; and 6 more invalid field(s) not listed")


def test_valid_values_come_back_typed_and_in_order() -> None:
    value = "00000000-0000-0000-0000-000000000001"
    name, persona = valid(attempt(check_text, "name", "n", max_length=10), attempt(require_uuid, "persona_id", value))
    assert (name, persona) == ("n", uuid.UUID(value))
