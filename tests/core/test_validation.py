"""Field validation: violations name the fields, and a request with very many of them still gets a short status."""

from __future__ import annotations

import pytest

from convgen.errors import InvalidArgument
from convgen.validation import MAX_REPORTED, FieldChecks, parse_uuid


def test_many_violations_list_the_first_ones_and_count_the_rest() -> None:
    checks = FieldChecks()
    for index in range(MAX_REPORTED + 5):
        checks.check(parse_uuid, f"items[{index}].persona_id", "nope")
    with pytest.raises(InvalidArgument) as raised:
        checks.raise_if_any()
    violations = raised.value.violations or []
    assert [v.field for v in violations] == [f"items[{i}].persona_id" for i in range(MAX_REPORTED)]
    assert raised.value.message.endswith("; and 5 more invalid field(s) not listed")


def test_no_violations_raise_nothing() -> None:
    checks = FieldChecks()
    assert checks.check(parse_uuid, "persona_id", "00000000-0000-0000-0000-000000000001") is not None
    checks.raise_if_any()
