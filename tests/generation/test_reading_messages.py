"""Reading a Messages API body: the fields convgen keeps, and a clear error for a body that is not a message."""

from __future__ import annotations

import json

import pytest

from generation_service.model.anthropic_client import _read_message
from generation_service.model.errors import ModelOutputInvalid

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "..."},
        {"type": "text", "text": "Hello"},
        {"type": "text", "text": " world"},
    ],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 12,
        "output_tokens": 34,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": 5,
    },
}


def test_text_blocks_are_joined_and_usage_is_read() -> None:
    body = json.dumps(MESSAGE).encode()
    response = _read_message(body, fallback_model="fallback", attempts=2, headers={"request-id": "r"})
    assert response.raw_body == body
    assert response.text == "Hello world"
    assert response.stop_reason == "end_turn"
    assert response.model == "claude-sonnet-4-5"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 34)
    assert (response.usage.cache_creation_input_tokens, response.usage.cache_read_input_tokens) == (0, 5)
    assert response.attempts == 2
    assert response.headers == {"request-id": "r"}


def test_a_message_without_a_model_gets_the_configured_one() -> None:
    body = json.dumps({**MESSAGE, "model": None}).encode()
    assert _read_message(body, fallback_model="fallback", attempts=1, headers={}).model == "fallback"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"<html><title>Gateway says hi</title></html>", "JSONDecodeError"),
        (json.dumps({"type": "message", "content": []}).encode(), "KeyError: 'usage'"),
        (json.dumps([1, 2]).encode(), "TypeError"),
    ],
)
def test_a_body_that_is_not_a_message_fails_clearly(body: bytes, detail: str) -> None:
    with pytest.raises(ModelOutputInvalid) as raised:
        _read_message(body, fallback_model="fallback", attempts=1, headers={})
    assert raised.value.reason == "MODEL_RESPONSE_UNREADABLE"
    assert raised.value.metadata["step"] == "model_call"
    assert detail in raised.value.message
    assert "is not a Messages API message" in raised.value.message
