"""The line formats of an export: one stored conversation → one JSON object, or the reason it cannot be one.

Lines are serialised compactly with keys in a fixed order, so the same conversation always gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from batch_service.datasets.domain import ExportFormat, SelectedConversation

DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a warm, competent fee-only financial planner. You listen first, reflect what the client feels, and "
    "explain options plainly with the client's own numbers. You sell nothing and never recommend specific products "
    "or securities, and you are honest about risk and uncertainty. You suggest a CPA, attorney or doctor for detailed "
    "tax, legal or medical questions. If a client is in crisis you pause the financial topic and refer them to crisis "
    "resources (in the US, call or text 988); if a client is abusive you set a calm, respectful boundary; if a client "
    "is overwhelmed you help them choose one next step."
)
SHAREGPT_ROLES: Final = {"user": "human", "assistant": "gpt"}


class FormatRejected(Exception):
    """A conversation that the format cannot represent; the message is the drop reason's detail."""


@dataclass(frozen=True)
class Turn:
    """One turn, in conversation order."""

    role: str
    content: str


def ordered_turns(document: dict[str, Any]) -> list[Turn]:
    """The turns of a validated conversation, ordered by turn_number."""
    turns = sorted(document["turns"], key=lambda turn: turn["turn_number"])
    return [Turn(turn["role"], turn["content"]) for turn in turns]


def dumps(line: dict[str, Any]) -> bytes:
    """The JSON Lines bytes of one object (compact, UTF-8, newline-terminated)."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def chat_messages(row: SelectedConversation, document: dict[str, Any], system_prompt: str) -> dict[str, Any]:
    """{"messages": [system, then the turns]} as OpenAI and TRL read it; no other keys."""
    messages = [{"role": "system", "content": system_prompt}]
    messages.extend({"role": t.role, "content": t.content} for t in ordered_turns(document))
    return {"messages": messages}


def sharegpt(row: SelectedConversation, document: dict[str, Any], system_prompt: str) -> dict[str, Any]:
    """{"conversations": [{"from": system|human|gpt, "value": ...}]}."""
    conversation = [{"from": "system", "value": system_prompt}]
    conversation.extend({"from": SHAREGPT_ROLES[t.role], "value": t.content} for t in ordered_turns(document))
    return {"conversations": conversation}


def bedrock_claude(row: SelectedConversation, document: dict[str, Any], system_prompt: str) -> dict[str, Any]:
    """{"system": ..., "messages": [...]}: user first, assistant last, strictly alternating; no other keys."""
    turns = ordered_turns(document)
    if turns and turns[-1].role == "user":
        # A trailing client turn has no answer to learn from: Bedrock's rule is that the assistant speaks last.
        turns = turns[:-1]
    if not turns:
        raise FormatRejected("bedrock_claude: no turns left after dropping the final user turn")
    if turns[0].role != "user":
        raise FormatRejected("bedrock_claude: the first turn is the assistant's; Bedrock needs the user first")
    for index in range(1, len(turns)):
        if turns[index].role == turns[index - 1].role:
            raise FormatRejected(
                f"bedrock_claude: turns {index} and {index + 1} are both {turns[index].role}; roles must alternate"
            )
    if len(turns) < 2:
        raise FormatRejected("bedrock_claude: fewer than one user and one assistant turn")
    return {"system": system_prompt, "messages": [{"role": t.role, "content": t.content} for t in turns]}


def convgen_lineage(row: SelectedConversation, document: dict[str, Any], system_prompt: str) -> dict[str, Any]:
    """The stored conversation verbatim with its keys, parameters, job, model, usage and cost: the lineage form."""
    u = row.usage
    return {
        "pk": str(row.pk),
        "business_key": str(row.business_key),
        "request_id": row.request_id,
        "created_by": str(row.created_by),
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "job_id": str(row.job_id),
        "item_id": str(row.item_id),
        "parameters": {
            "persona_id": str(row.persona_id),
            "persona_key": row.persona_key,
            "emotional_arc_id": str(row.emotional_arc_id),
            "arc_key": row.arc_key,
            "training_topic_id": str(row.training_topic_id),
            "topic_key": row.topic_key,
            "tier": row.tier.value,
            "template_id": str(row.template_id),
            "template_name": row.template_name,
        },
        "model": row.model,
        # The Messages API's usage fields, cache writes split by TTL as the API reports them.
        "usage": {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_creation_input_tokens": u.cache_creation_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": u.cache_creation_5m_input_tokens,
                "ephemeral_1h_input_tokens": u.cache_creation_1h_input_tokens,
            },
            "cache_read_input_tokens": u.cache_read_input_tokens,
        },
        # Strings keep the database's exact NUMERIC values (a float would round micro-dollars); null = unknown.
        "cost_usd": None if u.unpriced_conversations else str(u.cost_usd),
        "cost_by_kind_usd": None
        if u.unpriced_conversations
        else {
            "input": str(u.input_cost_usd),
            "output": str(u.output_cost_usd),
            "cache_write_5m": str(u.cache_write_5m_cost_usd),
            "cache_write_1h": str(u.cache_write_1h_cost_usd),
            "cache_read": str(u.cache_read_cost_usd),
        },
        "processing_status": row.processing_status,
        "validation_warnings": list(row.validation_warnings),
        "blobs": {
            "raw": {"bucket": row.raw_bucket, "key": row.raw_key},
            "final": {"bucket": row.final_bucket, "key": row.final_key},
        },
        "conversation": document,
    }


LineBuilder = Callable[[SelectedConversation, dict[str, Any], str], dict[str, Any]]

BUILDERS: Final[dict[ExportFormat, LineBuilder]] = {
    ExportFormat.CHAT_MESSAGES: chat_messages,
    ExportFormat.SHAREGPT: sharegpt,
    ExportFormat.BEDROCK_CLAUDE: bedrock_claude,
    ExportFormat.CONVGEN: convgen_lineage,
}
