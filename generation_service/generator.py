"""The generation flow: parameters → catalog → template → model → raw blob → parse → final blob → row."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from convgen.blobs import BlobRef, BlobStore
from convgen.catalog.models import ConversationSubject, GenerationParameters, PromptTemplate
from convgen.catalog.repository import CatalogSnapshot
from convgen.catalog.selection import select_template
from convgen.catalog.templates import render
from convgen.db.database import Database, DatabaseUnavailable
from convgen.errors import ConvgenError, FailedPrecondition, NotFound
from convgen.rpc.status import status_code_for
from generation_service.catalog_cache import CatalogCache, lookup
from generation_service.conversation_format import SYSTEM_PROMPT
from generation_service.model.errors import ModelOutputInvalid
from generation_service.model.port import ModelClient, ModelRequest, ModelResponse
from generation_service.model.pricing import cost_usd
from generation_service.parsing import ParsedConversation, parse_conversation
from generation_service.request_claims import RequestClaims
from generation_service.store import claims as claim_store
from generation_service.store import conversations, failures
from generation_service.store.conversations import ConversationRow, NewConversation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationInput:
    """A valid GenerateConversation request."""

    parameters: GenerationParameters
    request_id: str
    created_by: uuid.UUID


@dataclass(frozen=True)
class GeneratorConfig:
    """What the flow needs from the settings."""

    conversation_bucket: str
    max_tokens: int


def raw_blob_key(created_by: uuid.UUID, business_key: uuid.UUID) -> str:
    """raw/{created_by}/{business_key}_raw.json, as in the original system."""
    return f"raw/{created_by}/{business_key}_raw.json"


def final_blob_key(created_by: uuid.UUID, business_key: uuid.UUID) -> str:
    """final/{created_by}/{business_key}.json."""
    return f"final/{created_by}/{business_key}.json"


class ConversationGenerator:
    """Generates and stores one conversation per request, at most once per request_id."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        model: ModelClient,
        claims: RequestClaims,
        config: GeneratorConfig,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._model = model
        self._claims = claims
        self._catalog = CatalogCache(db)
        self._config = config

    async def generate(self, request: GenerationInput, *, deadline: float | None = None) -> ConversationRow:
        """Returns the conversation stored for request.request_id, generating it when there is none yet."""
        claim = await self._claims.acquire(request.request_id, deadline=deadline)
        if claim.done_pk is not None:
            return await self._stored(claim.done_pk)
        try:
            row = await self._generate_claimed(request, await self._catalog.at_least(claim.catalog_version))
        except BaseException:
            await self._claims.release(request.request_id)
            raise
        self._claims.finished(request.request_id)
        return row

    async def _stored(self, pk: uuid.UUID) -> ConversationRow:
        async with self._db.connection() as conn:
            row = await conversations.get_by_pk(conn, pk)
        if row is None:
            raise NotFound(f"conversation {pk} was deleted", reason="CONVERSATION_NOT_FOUND")
        return row

    async def _generate_claimed(self, request: GenerationInput, catalog: CatalogSnapshot) -> ConversationRow:
        subject, template = self._resolve(request, catalog)
        prompt = render(template, subject)
        business_key = uuid.uuid4()
        attempt = _Attempt(request, subject, template, business_key, self._model.name)
        try:
            response = await self._model.complete(
                ModelRequest(
                    system=SYSTEM_PROMPT,
                    prompt=prompt,
                    subject=subject,
                    max_tokens=self._config.max_tokens,
                    request_id=request.request_id,
                )
            )
        except ConvgenError as error:
            await self._record_failure(attempt, "model_call", error)
            raise
        attempt.model = response.model
        raw_ref = await self._store_raw(attempt, response)
        try:
            parsed = parse_conversation(response.text, response.stop_reason)
        except ModelOutputInvalid as error:
            explained = ModelOutputInvalid(
                f"{error.message}; raw response kept at {raw_ref.uri}",
                reason=error.reason,
                metadata={**error.metadata, "raw_blob": raw_ref.uri},
            )
            await self._record_failure(attempt, error.metadata.get("step", "parse"), explained, raw_ref)
            raise explained from error
        final_ref = await self._store_final(attempt, parsed, response)
        return await self._insert(attempt, parsed, response, raw_ref, final_ref)

    @staticmethod
    def _resolve(request: GenerationInput, catalog: CatalogSnapshot) -> tuple[ConversationSubject, PromptTemplate]:
        """Finds persona, arc, topic and the template (explicit, or auto-selected by arc and tier)."""
        p = request.parameters
        persona, arc, topic = lookup(catalog, p.persona_id, p.emotional_arc_id, p.training_topic_id)
        missing = [
            f"{kind} {value} does not exist"
            for kind, value, found in (
                ("persona", p.persona_id, persona),
                ("emotional_arc", p.emotional_arc_id, arc),
                ("training_topic", p.training_topic_id, topic),
            )
            if found is None
        ]
        if missing:
            raise NotFound("; ".join(missing), reason="CATALOG_ENTRY_NOT_FOUND")
        assert persona is not None
        assert arc is not None
        assert topic is not None
        if not p.auto_template:
            template = catalog.templates.get(p.template_id)
            if template is None:
                raise NotFound(f"template {p.template_id} does not exist", reason="TEMPLATE_NOT_FOUND")
        else:
            template = select_template(catalog.templates.values(), arc.arc_key, p.tier)
            if template is None:
                raise FailedPrecondition(
                    f"no active prompt template for arc {arc.arc_key} (tier {p.tier.value}); "
                    "load one with `convgen catalog load`",
                    reason="NO_TEMPLATE_FOR_ARC",
                    metadata={"arc_key": arc.arc_key, "tier": p.tier.value},
                )
        return ConversationSubject(persona=persona, arc=arc, topic=topic, tier=p.tier), template

    async def _store_raw(self, attempt: _Attempt, response: ModelResponse) -> BlobRef:
        key = raw_blob_key(attempt.request.created_by, attempt.business_key)
        try:
            return await self._blobs.put(
                self._config.conversation_bucket, key, response.raw_body, content_type="application/json"
            )
        except ConvgenError as error:
            await self._record_failure(attempt, "store_raw", error)
            raise

    async def _store_final(self, attempt: _Attempt, parsed: ParsedConversation, response: ModelResponse) -> BlobRef:
        document = _final_document(attempt, parsed, response)
        key = final_blob_key(attempt.request.created_by, attempt.business_key)
        # Compact separators keep json on its C encoder (indent= falls back to the slow pure-Python one).
        data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            return await self._blobs.put(self._config.conversation_bucket, key, data, content_type="application/json")
        except ConvgenError as error:
            await self._record_failure(attempt, "store_final", error)
            raise

    async def _insert(
        self,
        attempt: _Attempt,
        parsed: ParsedConversation,
        response: ModelResponse,
        raw_ref: BlobRef,
        final_ref: BlobRef,
    ) -> ConversationRow:
        request = attempt.request
        usage = response.usage
        new = NewConversation(
            conversation_id=attempt.business_key,
            request_id=request.request_id,
            created_by=request.created_by,
            persona_id=attempt.subject.persona.id,
            emotional_arc_id=attempt.subject.arc.id,
            training_topic_id=attempt.subject.topic.id,
            tier=attempt.subject.tier,
            template_id=attempt.template.id,
            processing_status="needs_review" if parsed.warnings else "completed",
            raw_bucket=raw_ref.bucket,
            raw_key=raw_ref.key,
            final_bucket=final_ref.bucket,
            final_key=final_ref.key,
            turn_count=parsed.turn_count,
            model=response.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cost_usd=cost_usd(response.model, usage),
            validation_warnings=list(parsed.warnings),
        )
        try:
            async with self._db.transaction() as conn:
                pk, created_at = await conversations.insert(conn, new)
                await claim_store.finish(conn, request.request_id, self._claims.owner, pk)
        except asyncpg.UniqueViolationError:
            # Our lease lapsed and another call stored this request_id first: theirs is the answer.
            async with self._db.connection() as conn:
                existing = await conversations.get_by_request_id(conn, request.request_id)
            assert existing is not None
            return existing
        row = ConversationRow(
            id=pk,
            created_at=created_at,
            persona_key=attempt.subject.persona.persona_key,
            arc_key=attempt.subject.arc.arc_key,
            topic_key=attempt.subject.topic.topic_key,
            template_name=attempt.template.template_name,
            **vars(new),
        )
        assert row is not None
        logger.debug(
            "stored conversation pk=%s business_key=%s",
            row.id,
            row.conversation_id,
            extra={"request_id": request.request_id, "turns": row.turn_count, "model": row.model},
        )
        return row

    async def _record_failure(
        self, attempt: _Attempt, step: str, error: ConvgenError, raw_ref: BlobRef | None = None
    ) -> None:
        """Keeps a row saying why a generation failed; a database outage only costs the record, not the answer."""
        failure = failures.GenerationFailure(
            request_id=attempt.request.request_id,
            conversation_id=attempt.business_key,
            created_by=attempt.request.created_by,
            persona_id=attempt.subject.persona.id,
            emotional_arc_id=attempt.subject.arc.id,
            training_topic_id=attempt.subject.topic.id,
            tier=attempt.subject.tier.value,
            template_id=attempt.template.id,
            step=step,
            error_code=status_code_for(error).name,
            reason=error.reason,
            error_message=error.message,
            raw_bucket=raw_ref.bucket if raw_ref else None,
            raw_key=raw_ref.key if raw_ref else None,
            model=attempt.model,
        )
        try:
            async with self._db.connection() as conn:
                await failures.record(conn, failure)
        except DatabaseUnavailable as db_error:
            logger.warning("could not record generation failure (%s): %s", step, db_error.message)
        logger.info(
            "generation failed at %s: %s",
            step,
            error.message,
            extra={"request_id": attempt.request.request_id, "reason": error.reason},
        )


@dataclass
class _Attempt:
    """What one generation attempt has resolved so far."""

    request: GenerationInput
    subject: ConversationSubject
    template: PromptTemplate
    business_key: uuid.UUID
    model: str


def _final_document(attempt: _Attempt, parsed: ParsedConversation, response: ModelResponse) -> dict[str, Any]:
    """The stored conversation: the model's conversation plus the parameters that make the file self-describing."""
    subject = attempt.subject
    return {
        **parsed.document,
        "input_parameters": {
            "persona": {
                "id": str(subject.persona.id),
                "key": subject.persona.persona_key,
                "name": subject.persona.name,
            },
            "emotional_arc": {"id": str(subject.arc.id), "key": subject.arc.arc_key, "name": subject.arc.name},
            "training_topic": {"id": str(subject.topic.id), "key": subject.topic.topic_key, "name": subject.topic.name},
            "tier": attempt.subject.tier.value,
            "template": {"id": str(attempt.template.id), "name": attempt.template.template_name},
        },
        "generation": {
            "business_key": str(attempt.business_key),
            "request_id": attempt.request.request_id,
            "created_by": str(attempt.request.created_by),
            "model": response.model,
            "stop_reason": response.stop_reason,
            "model_attempts": response.attempts,
            "validation_warnings": list(parsed.warnings),
            "generated_at": datetime.now(UTC).isoformat(),
        },
    }
