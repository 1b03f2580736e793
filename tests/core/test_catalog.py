"""Catalog loading (idempotent, validated) and the paginated CatalogService."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from convgen.catalog.loader import load_catalog, packaged_catalog_path, read_catalog_file
from convgen.catalog.models import Tier
from convgen.catalog.templates import InvalidTemplate, TemplateDefinition
from convgen.db.database import Database
from convgen.errors import InvalidArgument
from convgen.v1 import catalog_pb2
from tests.support.services import Services, running_services, test_settings


async def counts(db: Database) -> tuple[int, ...]:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM personas), (SELECT count(*) FROM emotional_arcs), "
            "(SELECT count(*) FROM training_topics), (SELECT count(*) FROM prompt_templates)"
        )
    assert row is not None
    return tuple(row)


async def test_loading_twice_changes_nothing(db: Database) -> None:
    before = await counts(db)
    catalog, _ = read_catalog_file(packaged_catalog_path())
    async with db.connection() as conn:
        summary = await load_catalog(conn, catalog)
    assert (summary.personas, summary.emotional_arcs, summary.training_topics) == (3, 8, 20)
    assert await counts(db) == before == (3, 8, 20, summary.templates)


async def test_every_arc_has_a_template_of_its_tier(db: Database) -> None:
    async with db.connection() as conn:
        missing = await conn.fetch(
            "SELECT a.arc_key FROM emotional_arcs a WHERE NOT EXISTS "
            "(SELECT 1 FROM prompt_templates t WHERE t.arc_key = a.arc_key AND t.tier = a.tier AND t.active)"
        )
    assert missing == []


async def test_a_template_with_an_unfilled_placeholder_is_refused_at_load(db: Database) -> None:
    catalog, _ = read_catalog_file(packaged_catalog_path())
    bad = TemplateDefinition(
        template_name="bad_template",
        tier=Tier.TEMPLATE,
        arc_key="confusion_to_clarity",
        template_text="Talk with {{client_nickname}}.",
        topic_text="The topic is {{topic_name}}.",
    )
    with pytest.raises(InvalidTemplate) as caught:
        async with db.connection() as conn:
            await load_catalog(conn, catalog, [bad])
    assert "client_nickname" in caught.value.message


def test_a_malformed_catalog_file_is_explained(tmp_path: Path) -> None:
    data = json.loads(packaged_catalog_path().read_text())
    data["personas"][0]["age"] = "old"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidArgument) as caught:
        read_catalog_file(path)
    assert "personas.0.age" in caught.value.message


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with running_services(test_settings(database_url, tmp_path), batch=False) as running:
        yield running


async def test_list_topics_pages_through_all_of_them(services: Services) -> None:
    seen: list[str] = []
    token = ""
    while True:
        page = await services.catalog_stub.ListTrainingTopics(
            catalog_pb2.ListTrainingTopicsRequest(page_size=7, page_token=token)
        )
        seen += [t.topic_key for t in page.training_topics]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 20
    assert seen == sorted(seen)


async def test_list_calls_validate_page_size_and_token(services: Services) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await services.catalog_stub.ListPersonas(catalog_pb2.ListPersonasRequest(page_size=5000))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "page_size: must be at most 1000 (got 5000)"
    first = await services.catalog_stub.ListEmotionalArcs(catalog_pb2.ListEmotionalArcsRequest(page_size=2))
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await services.catalog_stub.ListTemplates(catalog_pb2.ListTemplatesRequest(page_token=first.next_page_token))
    assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert foreign.value.details() == "page_token: was issued for a request with different filters"
    templates = await services.catalog_stub.ListTemplates(catalog_pb2.ListTemplatesRequest())
    assert {t.arc_key for t in templates.templates} >= {"crisis_to_referral", "couple_conflict_to_alignment"}
    assert all("{{" in t.template_text and t.placeholders for t in templates.templates)
