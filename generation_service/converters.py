"""Proto ↔ domain conversion for the generation and catalog services."""

from __future__ import annotations

import json
from typing import Any

from convgen.blobs import BlobStore
from convgen.catalog.models import EmotionalArc, Persona, PromptTemplate, TrainingTopic
from convgen.rpc.convert import TIER_TO_PROTO, blob_location, parameters_to_proto, timestamp
from convgen.v1 import catalog_pb2, common_pb2, generation_pb2
from generation_service.store.conversations import ConversationRow

_STATUS_TO_PROTO = {
    "completed": generation_pb2.PROCESSING_STATUS_COMPLETED,
    "needs_review": generation_pb2.PROCESSING_STATUS_NEEDS_REVIEW,
}


def stored_conversation(
    row: ConversationRow, blobs: BlobStore, content: bytes | None = None
) -> generation_pb2.StoredConversation:
    """A StoredConversation: pk from conversations.id, business_key from conversations.conversation_id; content is
    the final blob (the stored conversation document), for the FULL view."""
    message = generation_pb2.StoredConversation(
        pk=str(row.id),
        business_key=str(row.conversation_id),
        parameters=parameters_to_proto(row.parameters),
        processing_status=_STATUS_TO_PROTO[row.processing_status],
        raw_blob=blob_location(blobs.locate(row.raw_bucket, row.raw_key)),
        final_blob=blob_location(blobs.locate(row.final_bucket, row.final_key)),
        turn_count=row.turn_count,
        model=row.model,
        usage=common_pb2.TokenUsage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_creation_input_tokens=row.cache_creation_input_tokens,
            cache_read_input_tokens=row.cache_read_input_tokens,
        ),
        cost_usd=float(row.cost_usd),
        created_at=timestamp(row.created_at),
        request_id=row.request_id,
        created_by=str(row.created_by),
        persona_key=row.persona_key,
        arc_key=row.arc_key,
        topic_key=row.topic_key,
        template_name=row.template_name,
        validation_warnings=row.validation_warnings,
    )
    if content is not None:
        message.content.CopyFrom(conversation_content(json.loads(content)))
    return message


def conversation_content(document: dict[str, Any]) -> generation_pb2.Conversation:
    """The Conversation message of a stored conversation document."""
    metadata = document.get("conversation_metadata") or {}
    turns = []
    for turn in document.get("turns") or []:
        emotion = turn.get("emotional_context") or {}
        turns.append(
            generation_pb2.Turn(
                turn_number=int(turn.get("turn_number") or 0),
                role=str(turn.get("role") or ""),
                content=str(turn.get("content") or ""),
                emotional_context=generation_pb2.EmotionalContext(
                    primary_emotion=str(emotion.get("primary_emotion") or ""),
                    secondary_emotion=str(emotion.get("secondary_emotion") or ""),
                    intensity=float(emotion.get("intensity") or 0.0),
                ),
            )
        )
    return generation_pb2.Conversation(
        metadata=generation_pb2.ConversationMetadata(
            client_persona=str(metadata.get("client_persona") or ""),
            session_context=str(metadata.get("session_context") or ""),
            conversation_phase=str(metadata.get("conversation_phase") or ""),
            expected_outcome=str(metadata.get("expected_outcome") or ""),
        ),
        turns=turns,
    )


def persona(p: Persona) -> catalog_pb2.Persona:
    """A Persona message."""
    return catalog_pb2.Persona(
        id=str(p.id),
        persona_key=p.persona_key,
        name=p.name,
        archetype=p.archetype,
        age=p.age,
        occupation=p.occupation,
        income_range=p.income_range,
        communication_style=p.communication_style,
        emotional_baseline=p.emotional_baseline,
    )


def emotional_arc(a: EmotionalArc) -> catalog_pb2.EmotionalArc:
    """An EmotionalArc message."""
    return catalog_pb2.EmotionalArc(
        id=str(a.id),
        arc_key=a.arc_key,
        name=a.name,
        tier=TIER_TO_PROTO[a.tier],
        category=a.category,
        starting_emotion=a.starting_emotion,
        ending_emotion=a.ending_emotion,
    )


def training_topic(t: TrainingTopic) -> catalog_pb2.TrainingTopic:
    """A TrainingTopic message."""
    return catalog_pb2.TrainingTopic(id=str(t.id), topic_key=t.topic_key, name=t.name, category=t.category)


def prompt_template(t: PromptTemplate) -> catalog_pb2.PromptTemplate:
    """A PromptTemplate message."""
    return catalog_pb2.PromptTemplate(
        id=str(t.id),
        template_name=t.template_name,
        tier=TIER_TO_PROTO[t.tier],
        arc_key=t.arc_key,
        active=t.active,
        placeholders=list(t.placeholders),
        template_text=t.template_text,
    )
